/* hub_notify.c -- tells systemd (Type=notify) when the hub is ready, reloading or stopping.
 *
 * The sd_notify(3) protocol is one datagram of "KEY=value\n" lines to the AF_UNIX socket named
 * in $NOTIFY_SOCKET: a path, or "@name" for the abstract namespace. It is implemented here in a
 * few lines instead of linking libsystemd, so the hub keeps depending on libc alone and runs the
 * same with or without systemd: without $NOTIFY_SOCKET every call is a no-op.
 *
 * The variable is read once at start and removed from the environment, so the workers and the
 * admin process (which inherit the hub's environment through execv) cannot claim readiness for
 * the service; systemd's NotifyAccess=main would ignore them anyway.
 *
 * What is sent, and when:
 *   READY=1      once, when every wanted worker is serving (its slot's state is RUNNING in the
 *                segment), checked each tick: `systemctl start` then returns when clients can
 *                connect, not merely when the processes were forked.
 *   STATUS=...   whenever the number of serving workers changes (shown by `systemctl status`).
 *   RELOADING=1  when a rolling restart begins (SIGHUP or the admin API), then READY=1 when it
 *                is over: the old generation gone, or the reload refused or abandoned
 *                (hub_restart.c).
 *   STOPPING=1   when a graceful stop begins (hub_stop.c).
 *   MAINPID=...  at a binary upgrade's hand-over (hub_upgrade.c): the old hub names the new one
 *                as the main process, then stays silent. The new hub gets $NOTIFY_SOCKET back in
 *                its environment and reports nothing until it owns the instance.
 * A failed send is logged once at warn level and otherwise ignored: readiness reporting must
 * never take the server down.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "hub.h"
#include "log.h"

static struct sockaddr_un notify_addr;
static char notify_env[sizeof(notify_addr.sun_path) + 1]; /* $NOTIFY_SOCKET, for a new hub */
static socklen_t notify_addr_len; /* 0: no $NOTIFY_SOCKET, nothing is ever sent */
static int notify_ready_sent;
static int notify_serving = -1; /* serving workers last reported in STATUS */
static int notify_warned;

/* Reads and unsets $NOTIFY_SOCKET. An unusable value is logged and ignored. */
void hub_notify_init(void)
{
    const char *v = getenv("NOTIFY_SOCKET");
    if (v == NULL)
        return;
    size_t n = strlen(v);
    if ((v[0] != '/' && v[0] != '@') || n < 2 || n >= sizeof(notify_addr.sun_path)) {
        log_warn(0, "NOTIFY_SOCKET=\"%s\" is not a socket path or @name; not notifying", v);
    } else {
        memcpy(notify_env, v, n + 1);
        memset(&notify_addr, 0, sizeof(notify_addr));
        notify_addr.sun_family = AF_UNIX;
        memcpy(notify_addr.sun_path, v, n);
        if (v[0] == '@')
            notify_addr.sun_path[0] = '\0'; /* abstract: no terminating NUL counted */
        notify_addr_len =
            (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (v[0] == '@' ? 0 : 1));
    }
    if (unsetenv("NOTIFY_SOCKET") < 0)
        log_warn(errno, "unsetenv(NOTIFY_SOCKET) failed");
}

/* Sends one notification (printf-style text of "KEY=value" lines). */
static void hub_notify_send(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void hub_notify_send(const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    if (notify_addr_len == 0)
        return;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(msg))
        n = (int)strlen(msg);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        log_warn(errno, "socket(AF_UNIX, SOCK_DGRAM) for sd_notify failed");
        return;
    }
    if (sendto(fd, msg, (size_t)n, MSG_NOSIGNAL, (const struct sockaddr *)&notify_addr,
               notify_addr_len) < 0 &&
        !notify_warned) {
        notify_warned = 1;
        log_warn(errno, "sendto(NOTIFY_SOCKET) failed; systemd may not see the service state");
    }
    close(fd);
}

/* Workers wanted now, and how many of them are serving. */
static void hub_notify_count(const struct hub *h, int *wanted, int *serving)
{
    *wanted = *serving = 0;
    for (int i = 0; i < SHM_MAX_WORKERS; i++) {
        const struct hub_child *c = &h->children[i];
        if (!c->wanted)
            continue;
        (*wanted)++;
        if (c->pid > 0 &&
            atomic_load(&shm_worker(&h->shm, (unsigned)i)->state) == SHM_WORKER_RUNNING)
            (*serving)++;
    }
}

/* Per tick while running: READY=1 once all workers serve; STATUS when the count changes. */
void hub_notify_tick(const struct hub *h)
{
    int wanted, serving;
    if (notify_addr_len == 0 || h->phase != HUB_PHASE_RUNNING || !h->owner)
        return;
    hub_notify_count(h, &wanted, &serving);
    if (!notify_ready_sent && wanted > 0 && serving == wanted) {
        notify_ready_sent = 1;
        notify_serving = serving;
        hub_notify_send("READY=1\nMAINPID=%d\nSTATUS=%d of %d workers serving on %s", (int)getpid(),
                        serving, wanted, h->conf.listen);
    } else if (notify_ready_sent && serving != notify_serving) {
        notify_serving = serving;
        hub_notify_send("STATUS=%d of %d workers serving on %s", serving, wanted, h->conf.listen);
    }
}

/* Around a reload: RELOADING=1 (with the clock systemd 253+ asks for), then READY=1. */
void hub_notify_reloading(void)
{
    struct timespec ts;
    if (!notify_ready_sent)
        return; /* still starting: the first READY=1 comes from hub_notify_tick */
    clock_gettime(CLOCK_MONOTONIC, &ts);
    hub_notify_send("RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading",
                    (unsigned long long)ts.tv_sec * 1000000ULL +
                        (unsigned long long)ts.tv_nsec / 1000ULL);
}

void hub_notify_reloaded(void)
{
    if (!notify_ready_sent)
        return;
    notify_serving = -1; /* the next tick reports the current count */
    hub_notify_send("READY=1\nSTATUS=reload finished");
}

void hub_notify_stopping(void)
{
    hub_notify_send("STOPPING=1\nSTATUS=stopping");
}

/* A binary upgrade's hand-over: the new hub is the service's main process from now on. Sent by
 * the old (main) hub, since NotifyAccess=main ignores everyone else; systemd accepts a new main
 * pid of the same cgroup. */
void hub_notify_mainpid(pid_t pid, const char *status)
{
    hub_notify_send("MAINPID=%d\nREADY=1\nSTATUS=%s", (int)pid, status);
}

/* The $NOTIFY_SOCKET this hub was started with ("" if none), for the environment of a new hub. */
const char *hub_notify_socket(void)
{
    return notify_env;
}
