/* hub_listen.c -- the two listening sockets the hub opens once and hands to its children.
 *
 * The TCP socket for WebSocket clients is opened once, before any worker exists, and shared by
 * every worker (they all accept from it), so a worker that dies or is respawned never closes the
 * port and its queued connections are served by the others. It is O_NONBLOCK -- a file status
 * flag, so shared with every worker's copy -- and close-on-exec; the child moves it to a fixed
 * descriptor number, which clears the flag only there.
 *
 * The admin FastCGI socket is a Unix stream socket at conf.admin_socket, handed to wshub-admin as
 * fd 0 (the FastCGI convention, which is also how spawn-fcgi and mod_fcgid start it). It stays
 * blocking: libfcgi's accept loop expects that. It is created under a tight umask and then given
 * admin_socket_mode and admin_socket_group, so it is never briefly more open than configured. A
 * stale socket file is removed only after a connect() to it is refused, so a second hub cannot
 * steal the socket of a running one.
 *
 * Both binds are retried for a few seconds on EADDRINUSE (as nginx does): after a hub is killed
 * with SIGKILL its workers need a moment to die of PDEATHSIG and release the port.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "hub.h"
#include "log.h"

#define HUB_BIND_TRIES    10
#define HUB_BIND_RETRY_MS 500

static void hub_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* Binds and listens one resolved address. Returns the fd, or -1 with errno set. */
static int hub_listen_addr(const struct addrinfo *ai, int backlog)
{
    int one = 1;
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0)
        return -1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, backlog) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

/* Tries every address getaddrinfo returned; the first that binds wins. */
static int hub_listen_first(const struct conf *c, const struct addrinfo *res)
{
    for (int attempt = 1;; attempt++) {
        int e = 0;
        for (const struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
            int fd = hub_listen_addr(ai, c->backlog);
            if (fd >= 0)
                return fd;
            e = errno;
        }
        if (e != EADDRINUSE || attempt == HUB_BIND_TRIES) {
            log_error(e, "bind(%s) failed", c->listen);
            return -1;
        }
        log_warn(e, "bind(%s) failed, retrying in %d ms", c->listen, HUB_BIND_RETRY_MS);
        hub_sleep_ms(HUB_BIND_RETRY_MS);
    }
}

/* Opens the listening TCP socket for conf.listen. "*" as host means every IPv4 address (as
 * 0.0.0.0); "[::]" gives IPv4 and IPv6 with Linux's default bindv6only=0. */
int hub_listen_tcp(const struct conf *c)
{
    char host[128], port_s[8];
    int port;
    struct addrinfo hints, *res;

    if (conf_split_hostport(c->listen, host, sizeof(host), &port) < 0) {
        log_error(0, "listen: cannot parse '%s'", c->listen);
        return -1;
    }
    snprintf(port_s, sizeof(port_s), "%d", port);
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int rc = getaddrinfo(strcmp(host, "*") == 0 ? "0.0.0.0" : host, port_s, &hints, &res);
    if (rc != 0) {
        log_error(0, "getaddrinfo(%s) failed: %s", host,
                  rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
        return -1;
    }
    int fd = hub_listen_first(c, res);
    freeaddrinfo(res);
    if (fd >= 0)
        log_notice("listening on %s (backlog %d)", c->listen, c->backlog);
    return fd;
}

/* Returns 1 if something accepts connections on the socket file `sa`, 0 if not. */
static int hub_unix_in_use(const struct sockaddr_un *sa)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    int in_use = connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) == 0;
    close(fd);
    return in_use;
}

/* Removes a stale socket file, waiting a little for a dying previous owner. Returns 0 or -1. */
static int hub_admin_unlink_stale(const struct sockaddr_un *sa)
{
    for (int attempt = 1; hub_unix_in_use(sa); attempt++) {
        if (attempt == HUB_BIND_TRIES) {
            log_error(0, "admin socket %s is in use by a running process", sa->sun_path);
            return -1;
        }
        log_warn(0, "admin socket %s is in use, retrying in %d ms", sa->sun_path,
                 HUB_BIND_RETRY_MS);
        hub_sleep_ms(HUB_BIND_RETRY_MS);
    }
    if (unlink(sa->sun_path) < 0 && errno != ENOENT) {
        log_error(errno, "unlink(%s) failed", sa->sun_path);
        return -1;
    }
    return 0;
}

static int hub_admin_permissions(const struct conf *c)
{
    if (chmod(c->admin_socket, c->admin_socket_mode) < 0) {
        log_error(errno, "chmod(%s, %04o) failed", c->admin_socket, c->admin_socket_mode);
        return -1;
    }
    if (c->admin_socket_group[0] == '\0')
        return 0;
    struct group gr, *found = NULL;
    char buf[4096];
    int e = getgrnam_r(c->admin_socket_group, &gr, buf, sizeof(buf), &found);
    if (found == NULL) {
        log_error(e, "admin_socket_group: no group named '%s'", c->admin_socket_group);
        return -1;
    }
    if (chown(c->admin_socket, (uid_t)-1, gr.gr_gid) < 0) {
        log_error(errno, "chown(%s, group %s) failed", c->admin_socket, c->admin_socket_group);
        return -1;
    }
    return 0;
}

static int hub_admin_bind(int fd, const struct sockaddr_un *sa)
{
    mode_t old = umask(0177); /* the socket file appears as 0600, then gets its real mode */
    int rc = bind(fd, (const struct sockaddr *)sa, sizeof(*sa));
    int e = errno;
    umask(old);
    if (rc < 0) {
        log_error(e, "bind(%s) failed", sa->sun_path);
        return -1;
    }
    if (listen(fd, SOMAXCONN) < 0) {
        log_error(errno, "listen(%s) failed", sa->sun_path);
        return -1;
    }
    return 0;
}

/* Creates the admin FastCGI socket. Returns a blocking, close-on-exec fd, or -1. */
int hub_listen_admin(const struct conf *c)
{
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    if (strlen(c->admin_socket) >= sizeof(sa.sun_path)) {
        log_error(0, "admin_socket: path longer than %zu bytes: %s", sizeof(sa.sun_path) - 1,
                  c->admin_socket);
        return -1;
    }
    strcpy(sa.sun_path, c->admin_socket);
    if (hub_admin_unlink_stale(&sa) < 0)
        return -1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        log_error(errno, "socket(AF_UNIX) failed");
        return -1;
    }
    if (hub_admin_bind(fd, &sa) < 0) {
        close(fd);
        return -1;
    }
    if (hub_admin_permissions(c) < 0) {
        close(fd);
        unlink(c->admin_socket);
        return -1;
    }
    log_notice("admin FastCGI socket %s (mode %04o%s%s)", c->admin_socket, c->admin_socket_mode,
               c->admin_socket_group[0] ? ", group " : "", c->admin_socket_group);
    return fd;
}
