/* admin.c -- wshub-admin's main: configuration, the FastCGI socket, request threads, signals.
 *
 *   wshub-admin [-c FILE] [--option=value ...]
 *
 * The listening socket is fd 0 when the hub, spawn-fcgi or mod_fcgid started us (checked with
 * SO_ACCEPTCONN); otherwise we open conf.admin_socket ourselves, under a tight umask, and then
 * apply admin_socket_mode and admin_socket_group.
 *
 * Threads follow libfcgi's examples/threaded.c: conf.admin_threads threads, each with its own
 * FCGX_Request, accept under one mutex so one thread at a time waits on the socket. The waiting
 * thread poll()s the socket together with stop_fd, an eventfd that becomes readable on SIGTERM,
 * and accepts itself (the listening socket is non-blocking: another process sharing it may take
 * a connection first; EAGAIN just sends the thread back to poll()). It then gives the
 * connection its timeouts (admin_request_timeout) and lets FCGX_Accept_r() read the request
 * from it, outside the mutex, so a peer that connects and sends nothing (or trickles) holds one
 * thread for at most that long, never the whole process (thread_next_request). No signal has
 * to interrupt libfcgi (whose own shutdown flag would also fail the reads of requests in
 * flight). A connection the web server keeps open (FCGI_KEEP_CONN) is polled the same way by
 * the thread that owns it, without the mutex. (Accepted sockets inherit neither O_NONBLOCK nor,
 * for Unix sockets, the timeouts, on Linux.)
 *
 * Signals are blocked in every thread and taken by the main thread with sigwait(): TERM/INT
 * stop (threads finish their current request, then exit; bounded by shutdown_timeout), USR1/HUP
 * reopen the log file. SIGPIPE is ignored so a web server that hangs up mid-response only makes
 * a write fail. FCGX_Init() installs libfcgi's handlers for TERM, USR1 and PIPE; it runs first
 * and our dispositions and mask override them.
 *
 * Exit codes: 0 clean stop, 1 runtime failure, 2 bad configuration.
 */
#include "admin.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

#define ADMIN_SOCKET_BACKLOG 1024

static pthread_mutex_t admin_accept_lock = PTHREAD_MUTEX_INITIALIZER;

/* Request threads still running, so the stopping main thread can wait for them. */
static pthread_mutex_t admin_alive_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t admin_alive_cond = PTHREAD_COND_INITIALIZER;
static int admin_alive;
static atomic_int admin_fatal; /* a thread hit an unrecoverable accept error */

/* ---- command line ---- */

static int want_help, want_version;

static int admin_own_arg(int argc, char **argv, int i)
{
    (void)argc;
    if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
        want_help = 1;
        return 1;
    }
    if (strcmp(argv[i], "-v") == 0 || strcmp(argv[i], "--version") == 0) {
        want_version = 1;
        return 1;
    }
    return 0;
}

static void admin_usage(FILE *out)
{
    fprintf(out,
            "Usage: wshub-admin [-c FILE] [--option=value ...]\n"
            "\n"
            "The wshub admin FastCGI program. Routes (on REQUEST_URI):\n"
            "  GET    /admin/                          the stats page (page.js, page.css)\n"
            "  POST   /admin/broadcast[?channel=a,b][&user=u]  body = message; 202 {\"seq\":N}\n"
            "  GET    /admin/stats.json                hub, ring, connections, workers\n"
            "  GET    /admin/connections[?user=&limit=&offset=]  connection table rows\n"
            "  DELETE /admin/connections/ID[?code=N]   close one connection (default 1008)\n"
            "  POST   /admin/workers/restart           ask the hub for a rolling restart\n"
            "  GET    /admin/channels[?limit=N]        channels, subscribers, messages/s\n"
            "  GET    /admin/channels/NAME/presence    users and connections of one channel\n"
            "  GET    /metrics                         Prometheus text format\n"
            "  GET    /healthz                         200 when the hub and all workers run\n"
            "\n"
            "With admin_token set, requests need \"Authorization: Bearer <token>\" (the page\n"
            "shell, and /metrics and /healthz unless made private, excepted).\n"
            "\n"
            "It serves the FastCGI socket on fd 0 when started by wshub, spawn-fcgi or\n"
            "mod_fcgid; otherwise it opens admin_socket itself. SIGTERM stops it after the\n"
            "requests in progress; SIGUSR1 reopens the log file.\n"
            "\n"
            "  -c, --config FILE  configuration file (default %s if it exists)\n"
            "  -h, --help         print this help\n"
            "  -v, --version      print the version\n"
            "\n"
            "Options (in the file: \"name value\"; on the command line: --name=value):\n",
            CONF_DEFAULT_FILE);
    conf_print_options(out);
}

/* Loads the configuration and sets up logging; exits on --help, --version or an error. */
static void admin_configure(struct admin_ctx *ctx, int argc, char **argv)
{
    char err[512];
    enum log_level level;
    int rc = conf_from_args(&ctx->conf, argc, argv, admin_own_arg, err, sizeof(err));
    if (want_help) {
        admin_usage(stdout);
        exit(0);
    }
    if (want_version) {
        printf("wshub-admin %s (shm layout %d)\n", ADMIN_VERSION, SHM_LAYOUT_VERSION);
        exit(0);
    }
    log_set_role("admin", -1);
    if (rc < 0) {
        log_error(0, "configuration: %s", err);
        exit(2);
    }
    if (log_level_parse(ctx->conf.log_level, &level) == 0)
        log_set_level(level);
    if (log_open_file(ctx->conf.log_file) < 0) {
        log_error(errno, "open(%s) failed for the log file", ctx->conf.log_file);
        exit(2);
    }
    if (ctx->conf.admin_threads < 1)
        ctx->conf.admin_threads = 1;
    if (admin_auth_init(&ctx->conf) < 0)
        exit(2);
}

/* ---- the listening socket ---- */

static int fd_is_listening(int fd)
{
    int v = 0;
    socklen_t len = sizeof(v);
    return getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &len) == 0 && v;
}

/* True when some process already accepts on the Unix socket at path. */
static int unix_socket_in_use(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path))
        return 0;
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    int in_use = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    close(fd);
    return in_use;
}

static void socket_apply_owner(const struct conf *c)
{
    if (chmod(c->admin_socket, c->admin_socket_mode) < 0)
        log_error(errno, "chmod(%s, %04o) failed", c->admin_socket, c->admin_socket_mode);
    if (c->admin_socket_group[0] == '\0')
        return;
    struct group gr, *found = NULL;
    char buf[4096];
    int rc = getgrnam_r(c->admin_socket_group, &gr, buf, sizeof(buf), &found);
    if (found == NULL) {
        log_error(rc, "getgrnam_r(%s) failed: no such group", c->admin_socket_group);
        return;
    }
    if (chown(c->admin_socket, (uid_t)-1, gr.gr_gid) < 0)
        log_error(errno, "chown(%s, group %s) failed", c->admin_socket, c->admin_socket_group);
}

static int set_nonblocking(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
        log_error(errno, "fcntl(%d, O_NONBLOCK) failed", fd);
        return -1;
    }
    return 0;
}

/* Request timeout: SO_RCVTIMEO and SO_SNDTIMEO on an accepted connection, so each read and write
 * libfcgi makes on it gives up after `ms`: a peer that sends nothing, stops sending mid-request
 * or stops reading our answer costs its thread that long, not forever (libfcgi then drops the
 * connection). */
static int set_io_timeouts(int fd, uint32_t ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0) {
        log_error(errno, "setsockopt(SO_RCVTIMEO/SO_SNDTIMEO, %u ms) failed", ms);
        return -1;
    }
    return 0;
}

/* Opens conf.admin_socket. Returns the fd and sets *created for a Unix socket path. */
static int admin_open_socket(const struct conf *c, int *created)
{
    int is_unix = strchr(c->admin_socket, ':') == NULL; /* libfcgi's rule: ':' means TCP */
    if (is_unix && unix_socket_in_use(c->admin_socket)) {
        log_error(0, "another process is already serving %s", c->admin_socket);
        return -1;
    }
    mode_t old = umask(0177); /* nobody else may connect before the chmod below */
    int fd = FCGX_OpenSocket(c->admin_socket, ADMIN_SOCKET_BACKLOG);
    int e = errno;
    umask(old);
    if (fd < 0) {
        log_error(e, "FCGX_OpenSocket(%s) failed", c->admin_socket);
        return -1;
    }
    if (is_unix) {
        socket_apply_owner(c);
        *created = 1;
    }
    log_info("listening on %s", c->admin_socket);
    return fd;
}

/* Returns the non-blocking listening fd: 0 when inherited, else a socket we opened (and
 * *created = 1 when there is a path to unlink at exit). */
static int admin_listen(const struct conf *c, int *created)
{
    int fd = 0;
    *created = 0;
    if (fd_is_listening(0))
        log_info("serving the FastCGI socket inherited on fd 0");
    else
        fd = admin_open_socket(c, created);
    if (fd < 0 || set_nonblocking(fd) < 0)
        return -1;
    return fd;
}

/* ---- request threads ---- */

/* Waits until fd is readable (1) or stop_fd is (0). Returns -1 on a poll error. */
static int wait_readable(int fd, int stop_fd)
{
    struct pollfd p[2] = {{.fd = fd, .events = POLLIN}, {.fd = stop_fd, .events = POLLIN}};
    for (;;) {
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            log_error(errno, "poll() failed");
            return -1;
        }
        if (p[1].revents)
            return 0;
        if (p[0].revents)
            return 1;
    }
}

/* FCGI_WEB_SERVER_ADDRS, as libfcgi's own accept honours it: for a TCP admin socket, the
 * comma-separated IPv4 addresses allowed to connect (unset: any). */
static int peer_allowed(const struct sockaddr_storage *ss)
{
    const char *list = getenv("FCGI_WEB_SERVER_ADDRS");
    char ip[INET_ADDRSTRLEN];
    if (list == NULL || ss->ss_family != AF_INET)
        return 1;
    if (inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, ip, sizeof(ip)) == NULL)
        return 0;
    size_t n = strlen(ip);
    for (const char *p = list; *p;) {
        size_t len = strcspn(p, ",");
        if (len == n && strncmp(p, ip, n) == 0)
            return 1;
        p += len + (p[len] == ',');
    }
    return 0;
}

/* Accepts one connection under the accept lock. Returns the fd, -1 when there was nothing to
 * take (another thread or process was quicker; call again), -2 to stop, -3 on a fatal error. */
static int accept_connection(struct admin_ctx *ctx)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    int fd = -1;
    pthread_mutex_lock(&admin_accept_lock);
    int ready = wait_readable(ctx->listen_fd, ctx->stop_fd);
    if (ready > 0)
        fd = accept4(ctx->listen_fd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC);
    int e = errno;
    pthread_mutex_unlock(&admin_accept_lock);
    if (ready == 0)
        return -2;
    if (ready < 0 || (fd < 0 && (e == EBADF || e == ENOTSOCK || e == EINVAL))) {
        log_error(ready < 0 ? 0 : e, "accept4() failed on the listening socket, stopping");
        return -3;
    }
    if (fd < 0) {
        if (e != EAGAIN && e != EWOULDBLOCK && e != EINTR && e != ECONNABORTED) {
            log_error(e, "accept4() failed");
            struct timespec pause = {0, 100 * 1000 * 1000}; /* e.g. EMFILE: do not spin */
            nanosleep(&pause, NULL);
        }
        return -1;
    }
    if (!peer_allowed(&ss) || set_io_timeouts(fd, ctx->conf.admin_request_timeout_ms) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Waits for and reads the next request. Returns 1 when one is ready, 0 to stop, -1 when there
 * was nothing usable after all (call again).
 *
 * We accept the connection ourselves rather than letting FCGX_Accept_r() do it, for two
 * reasons: the accept lock is held for the accept only, not while libfcgi reads the request
 * (a peer that connects and sends nothing would otherwise stop every thread), and the socket
 * gets its SO_RCVTIMEO/SO_SNDTIMEO before the first read (Unix sockets do not inherit them from
 * the listener). FCGX_Accept_r() then reads from thr->fcgi.ipcFd as from a kept connection;
 * keepConnection = 1 stops its opening FCGX_Finish_r() from closing that fd. The request was
 * initialised with no listening socket (-1), so libfcgi never accepts by itself: when a
 * connection fails it returns an error, which here only means "next one". */
static int thread_next_request(struct admin_thread *thr)
{
    struct admin_ctx *ctx = thr->ctx;
    if (thr->fcgi.ipcFd < 0) {
        int fd = accept_connection(ctx);
        if (fd < 0) {
            if (fd == -3) {
                atomic_store(&admin_fatal, 1); /* exit 1: whoever started us may respawn us */
                kill(getpid(), SIGTERM);
            }
            return fd == -1 ? -1 : 0;
        }
        thr->fcgi.ipcFd = fd;
        thr->fcgi.keepConnection = 1;
    } else if (wait_readable(thr->fcgi.ipcFd, ctx->stop_fd) <= 0) {
        return 0; /* stopping (or a poll error, logged) */
    }
    if (FCGX_Accept_r(&thr->fcgi) >= 0)
        return 1;
    if (thr->fcgi.ipcFd >= 0) { /* cannot happen: libfcgi closes a failed connection */
        close(thr->fcgi.ipcFd);
        thr->fcgi.ipcFd = -1;
    }
    return -1; /* the peer went away, timed out or spoke no FastCGI */
}

/* On a kept connection the next request follows this one's body: a handler that answered
 * without reading all of it (413, 400) leaves bytes that must be consumed first. (libfcgi
 * drains a connection it closes by itself.) At most ADMIN_DRAIN_MAX bytes: beyond that the
 * connection is closed instead, its read side shut first so that libfcgi's lingering close
 * does not read the rest either (a body cap that ends in reading the whole body caps nothing). */
static void drain_kept_request(FCGX_Request *req)
{
    char scratch[4096];
    size_t drained = 0;
    int n = 0;
    if (!req->keepConnection)
        return;
    while (drained < ADMIN_DRAIN_MAX && (n = FCGX_GetStr(scratch, sizeof(scratch), req->in)) > 0)
        drained += (size_t)n;
    if (drained >= ADMIN_DRAIN_MAX) {
        req->keepConnection = 0;
        if (req->ipcFd >= 0 && shutdown(req->ipcFd, SHUT_RD) < 0)
            log_warn(errno, "shutdown(SHUT_RD) of an oversized request failed");
    }
}

static void *admin_thread_main(void *arg)
{
    struct admin_thread *thr = arg;
    if (FCGX_InitRequest(&thr->fcgi, -1, 0) != 0) { /* -1: we accept (thread_next_request) */
        log_error(0, "FCGX_InitRequest() failed in thread %d", thr->index);
    } else {
        while (!atomic_load(&thr->ctx->stopping)) {
            int rc = thread_next_request(thr);
            if (rc == 0)
                break;
            if (rc < 0)
                continue;
            admin_http_serve(thr);
            drain_kept_request(&thr->fcgi);
            FCGX_Finish_r(&thr->fcgi);
        }
        FCGX_Free(&thr->fcgi, 1); /* closes a kept connection, if any */
    }
    admin_buf_free(&thr->out);
    admin_buf_free(&thr->body);
    pthread_mutex_lock(&admin_alive_lock);
    admin_alive--;
    pthread_cond_signal(&admin_alive_cond);
    pthread_mutex_unlock(&admin_alive_lock);
    return NULL;
}

static struct admin_thread *admin_start_threads(struct admin_ctx *ctx)
{
    int n = ctx->conf.admin_threads;
    struct admin_thread *thr = calloc((size_t)n, sizeof(*thr));
    if (thr == NULL) {
        log_error(errno, "calloc() failed for %d threads", n);
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        thr[i].ctx = ctx;
        thr[i].index = i;
        pthread_mutex_lock(&admin_alive_lock);
        admin_alive++;
        pthread_mutex_unlock(&admin_alive_lock);
        int rc = pthread_create(&thr[i].tid, NULL, admin_thread_main, &thr[i]);
        if (rc != 0) {
            log_error(rc, "pthread_create() failed");
            exit(1); /* threads already started hold no state worth a clean stop */
        }
    }
    return thr;
}

/* Waits up to timeout_ms for every request thread to finish. Returns how many still run. */
static int admin_wait_threads(uint32_t timeout_ms)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += timeout_ms / 1000;
    deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&admin_alive_lock);
    while (admin_alive > 0) {
        if (pthread_cond_timedwait(&admin_alive_cond, &admin_alive_lock, &deadline) == ETIMEDOUT)
            break;
    }
    int left = admin_alive;
    pthread_mutex_unlock(&admin_alive_lock);
    return left;
}

/* ---- signals and main ---- */

static void admin_signals_block(sigset_t *set)
{
    struct sigaction ign = {.sa_handler = SIG_IGN};
    sigemptyset(&ign.sa_mask);
    if (sigaction(SIGPIPE, &ign, NULL) < 0)
        log_error(errno, "sigaction(SIGPIPE) failed");
    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGUSR1);
    sigaddset(set, SIGHUP);
    int rc = pthread_sigmask(SIG_BLOCK, set, NULL);
    if (rc != 0) {
        log_error(rc, "pthread_sigmask() failed");
        exit(1);
    }
}

/* Runs until SIGTERM or SIGINT. */
static void admin_signal_loop(const sigset_t *set, const struct conf *c)
{
    for (;;) {
        int sig;
        int rc = sigwait(set, &sig);
        if (rc != 0) {
            log_error(rc, "sigwait() failed");
            return;
        }
        if (sig == SIGTERM || sig == SIGINT)
            return;
        if (log_open_file(c->log_file) < 0)
            log_error(errno, "reopening log file %s failed", c->log_file);
        else
            log_info("log file reopened (signal %d)", sig);
    }
}

/* Stops the request threads; frees what they used once all have finished. */
static void admin_stop(struct admin_ctx *ctx, struct admin_thread *threads)
{
    atomic_store(&ctx->stopping, 1);
    if (eventfd_write(ctx->stop_fd, 1) < 0)
        log_error(errno, "eventfd_write() failed");
    int left = admin_wait_threads(ctx->conf.shutdown_timeout_ms);
    if (left > 0) {
        /* exit() ends them; nothing they touch is freed before that */
        log_warn(0, "%d request threads still busy after %u ms, exiting anyway", left,
                 ctx->conf.shutdown_timeout_ms);
        return;
    }
    for (int i = 0; i < ctx->conf.admin_threads; i++)
        pthread_join(threads[i].tid, NULL);
    free(threads);
    admin_segments_destroy(&ctx->segs);
}

int main(int argc, char **argv)
{
    static struct admin_ctx ctx;
    sigset_t set;
    int created;
    admin_configure(&ctx, argc, argv);
    int rc = FCGX_Init();
    if (rc != 0) {
        log_error(0, "FCGX_Init() failed (%d)", rc);
        return 1;
    }
    admin_signals_block(&set); /* before any thread exists, so all inherit the mask */
    if (admin_segments_init(&ctx.segs, ctx.conf.instance) < 0) {
        log_error(errno, "instance name '%s' is not usable", ctx.conf.instance);
        return 2;
    }
    ctx.stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (ctx.stop_fd < 0) {
        log_error(errno, "eventfd() failed");
        return 1;
    }
    ctx.listen_fd = admin_listen(&ctx.conf, &created);
    if (ctx.listen_fd < 0)
        return 1;
    log_notice("wshub-admin %s starting %d request threads, segment %s", ADMIN_VERSION,
               ctx.conf.admin_threads, ctx.segs.name);
    struct admin_thread *threads = admin_start_threads(&ctx);
    if (threads == NULL)
        return 1;
    admin_signal_loop(&set, &ctx.conf);
    log_notice("stopping");
    admin_stop(&ctx, threads);
    if (created && unlink(ctx.conf.admin_socket) < 0)
        log_error(errno, "unlink(%s) failed", ctx.conf.admin_socket);
    if (atomic_load(&admin_fatal))
        return 1;
    log_notice("stopped");
    return 0;
}
