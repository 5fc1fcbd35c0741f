/* hub.c -- wshub's main: command line, start-up, the supervision loop, clean-up.
 *
 * Start-up acquires everything that must outlive a worker, in an order where each step can fail
 * cleanly (exit code 2, everything acquired so far released):
 *
 *   signals blocked -> run_dir -> pid file -> shm segment -> TCP socket -> admin socket
 *   -> doorbells -> tick timer -> hub_state RUNNING -> fork+exec workers and admin -> "ready"
 *
 * Signals are blocked first so a SIGTERM or SIGCHLD arriving during start-up waits in the
 * signalfd instead of killing the hub half-way. The segment is marked RUNNING (with a fresh
 * heartbeat) before the workers are forked, so a worker that checks the hub at start finds it
 * alive.
 *
 * The loop is poll() on two descriptors: the signalfd (hub_signal.c decides what a signal means)
 * and a HUB_TICK_MS timerfd; the poll timeout is the earliest pending respawn, so a crash-loop
 * backoff of 100 ms is kept to the millisecond rather than rounded up to the tick (and is
 * HUB_RESTART_POLL_MS while a new worker generation starts). Each tick beats the heartbeat, logs
 * workers that became ready, re-sweeps rows of dead slots, starts due respawns, advances a rolling
 * restart (hub_restart.c; also noticing the admin's requests for one) and escalates a stop. The hub
 * does no other work: it never touches a broadcast, so its loop can be this simple.
 *
 * A binary upgrade (SIGUSR2, hub_upgrade.c) adds a third descriptor to the poll, the control
 * socket between the old and the new hub. The new hub's start-up differs in one step: it adopts
 * the segment and the sockets from the old hub instead of creating them, and it owns nothing
 * (h->owner: heartbeat, hub_state, the Redis bridge, removing the segment and the admin socket
 * at exit) until the old hub hands the instance over. The old hub, once it has handed over,
 * leaves the loop when its last worker is gone.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <libgen.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "doorbell.h"
#include "hub.h"
#include "hub_redis.h"
#include "log.h"

/* Command-line flags of the hub itself (everything else belongs to conf.c). */
static int opt_test, opt_dump;

uint64_t hub_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int hub_is_own_arg(int argc, char **argv, int i)
{
    (void)argc;
    if (strcmp(argv[i], "-t") == 0) {
        opt_test = 1;
        return 1;
    }
    if (strcmp(argv[i], "-T") == 0) {
        opt_test = opt_dump = 1;
        return 1;
    }
    return 0;
}

/* -h and -v must work even when the configuration is broken, so they are found before it is
 * parsed. Also notes the config file named on the command line, for -t's messages. Returns 'h',
 * 'v' or 0. */
static int hub_prescan(int argc, char **argv, const char **file)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if ((strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) && i + 1 < argc)
            *file = argv[++i];
        else if (strncmp(a, "--config=", 9) == 0)
            *file = a + 9;
        else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0)
            return 'h';
        else if (strcmp(a, "-v") == 0 || strcmp(a, "--version") == 0)
            return 'v';
    }
    return 0;
}

/* Finds a child binary: the configured path, else `name` beside /proc/self/exe. */
static int hub_resolve_binary(const char *configured, const char *name, char *out, size_t len,
                              char *err, size_t errlen)
{
    if (configured[0] != '\0') {
        snprintf(out, len, "%s", configured);
    } else {
        char self[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
        if (n < 0) {
            snprintf(err, errlen, "readlink(/proc/self/exe) failed: %s", strerror(errno));
            return -1;
        }
        self[n] = '\0';
        if (snprintf(out, len, "%s/%s", dirname(self), name) >= (int)len) {
            snprintf(err, errlen, "path of %s too long", name);
            return -1;
        }
    }
    if (access(out, X_OK) < 0) {
        snprintf(err, errlen, "%s binary %s: %s", name, out, strerror(errno));
        return -1;
    }
    return 0;
}

int hub_resolve_binaries(struct hub *h, char *err, size_t errlen)
{
    if (hub_resolve_binary(h->conf.worker_binary, "wshub-worker", h->worker_binary,
                           sizeof(h->worker_binary), err, errlen) < 0)
        return -1;
    if (h->conf.admin_threads > 0 &&
        hub_resolve_binary(h->conf.admin_binary, "wshub-admin", h->admin_binary,
                           sizeof(h->admin_binary), err, errlen) < 0)
        return -1;
    return 0;
}

/* -t / -T: report like `nginx -t` and return the exit code. */
static int hub_config_test(const struct hub *h, int ok, const char *file, const char *err)
{
    char what[CONF_PATH_MAX + 32];
    if (file != NULL)
        snprintf(what, sizeof(what), "configuration file %s", file);
    else
        snprintf(what, sizeof(what), "configuration (built-in defaults, no file)");
    if (!ok) {
        fprintf(stderr, "wshub: %s\nwshub: %s test failed\n", err, what);
        return 2;
    }
    fprintf(stderr, "wshub: %s test is successful\n", what);
    if (opt_dump) {
        fflush(stderr);
        conf_dump(&h->conf, stdout);
    }
    return 0;
}

/* Makes sure 0, 1 and 2 are open, so no socket of ours ever lands on a standard descriptor. */
static void hub_ensure_std_fds(void)
{
    for (int fd = 0; fd <= 2; fd++) {
        if (fcntl(fd, F_GETFD) < 0 && errno == EBADF && open("/dev/null", O_RDWR) != fd)
            _exit(2);
    }
}

/* Gives the new segment to shm_group, so that a wshub-admin the web server starts as another
 * user (mod_fcgid: www-data) can map it; shm_mode (0660) then lets that group in. */
static int hub_shm_set_group(const char *name, const char *group)
{
    struct group gr, *found = NULL;
    char buf[4096];
    int e = getgrnam_r(group, &gr, buf, sizeof(buf), &found);
    if (found == NULL) {
        log_error(e, "shm_group: no group named '%s'", group);
        return -1;
    }
    int fd = shm_open(name, O_RDWR | O_CLOEXEC, 0);
    if (fd < 0) {
        log_error(errno, "shm_open(%s) failed", name);
        return -1;
    }
    int rc = fchown(fd, (uid_t)-1, gr.gr_gid);
    if (rc < 0)
        log_error(errno, "fchown(%s, group %s) failed", name, group);
    close(fd);
    return rc;
}

static int hub_shm_create(struct hub *h)
{
    char name[64], err[256];
    struct shm_params p = {
        .conn_capacity = h->conf.max_connections,
        .ring_capacity = h->conf.ring_size,
        .max_payload = h->conf.max_message,
        .channels_per_worker = (uint32_t)h->conf.max_channels,
    };
    if (shm_name_for_instance(h->conf.instance, name, sizeof(name)) < 0) {
        log_error(errno, "instance name '%s' is not usable", h->conf.instance);
        return -1;
    }
    if (shm_create(&h->shm, name, &p, h->conf.shm_mode, err, sizeof(err)) < 0) {
        log_error(errno, "shm_create(%s) failed: %s", name, err);
        return -1;
    }
    h->shm_created = 1;
    h->owner = 1; /* ours to remove, also if the rest of the start fails */
    if (h->conf.shm_group[0] != '\0' && hub_shm_set_group(name, h->conf.shm_group) < 0)
        return -1;
    log_notice("shared memory %s: %zu bytes (%u connection rows, %llu byte ring)", name,
               h->shm.size, p.conn_capacity, (unsigned long long)p.ring_capacity);
    return 0;
}

static int hub_timer_open(void)
{
    struct itimerspec its = {
        .it_interval = {0, HUB_TICK_MS * 1000000L},
        .it_value = {0, HUB_TICK_MS * 1000000L},
    };
    int fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (fd < 0) {
        log_error(errno, "timerfd_create() failed");
        return -1;
    }
    if (timerfd_settime(fd, 0, &its, NULL) < 0) {
        log_error(errno, "timerfd_settime() failed");
        close(fd);
        return -1;
    }
    return fd;
}

/* Doorbells for the slots of the first generation (slots[], NULL: 0, 1, ...); later slots get
 * theirs when first used. */
static int hub_doorbells_open(struct hub *h, const int *slots)
{
    for (int i = 0; i < h->conf.workers; i++) {
        struct hub_child *c = &h->children[slots != NULL ? slots[i] : i];
        c->doorbell_fd = doorbell_open(&h->shm, (unsigned)c->slot); /* logs failures */
        if (c->doorbell_fd < 0)
            return -1;
    }
    return 0;
}

static void hub_mark_running(struct hub *h)
{
    struct shm_header *hdr = h->shm.hdr;
    atomic_store(&hdr->hub_pid, (int32_t)getpid());
    atomic_store(&hdr->hub_heartbeat_ms, shm_now_ms());
    atomic_store(&hdr->generation, h->generation);
    atomic_store(&hdr->workers_configured, (uint32_t)h->conf.workers);
    atomic_store(&hdr->hub_state, SHM_HUB_RUNNING);
}

/* The segment and the two listening sockets: created, or -- the new hub of a binary upgrade --
 * adopted from the old hub (hub_upgrade.c). */
static int hub_acquire(struct hub *h)
{
    if (h->upgrade.phase == HUB_UPGRADE_CANDIDATE)
        return hub_upgrade_adopt(h);
    if (hub_shm_create(h) < 0 || (h->listen_fd = hub_listen_tcp(&h->conf)) < 0)
        return -1;
    if (h->conf.admin_threads > 0) {
        if ((h->admin_fd = hub_listen_admin(&h->conf)) < 0)
            return -1;
        h->admin_socket_created = 1;
    }
    h->owner = 1;
    h->generation = 1;
    return 0;
}

/* Everything from the signal mask to the first children. Returns 0 or -1 (logged). */
static int hub_start(struct hub *h)
{
    int candidate = h->upgrade.phase == HUB_UPGRADE_CANDIDATE;
    const int *slots = candidate ? h->upgrade.slots : NULL;
    if ((h->signal_fd = hub_signal_open()) < 0 || hub_mkdir_p(h->conf.run_dir, 0755) < 0)
        return -1;
    if (h->conf.pid_file[0] != '\0' && (h->pid_fd = hub_pidfile_open(h->conf.pid_file)) < 0)
        return -1;
    if (hub_acquire(h) < 0)
        return -1;
    if (hub_doorbells_open(h, slots) < 0 || (h->timer_fd = hub_timer_open()) < 0)
        return -1;
    if ((h->devnull_fd = open("/dev/null", O_RDWR | O_CLOEXEC)) < 0) {
        log_error(errno, "open(/dev/null) failed");
        return -1;
    }
    if (!candidate && hub_redis_start(&h->conf, &h->shm, NULL) < 0) /* Redis bridge (issue 8) */
        return -1;
    hub_restart_init(h);
    if (candidate)
        hub_upgrade_started(h); /* hub_pid only: the old hub still owns the rest */
    else
        hub_mark_running(h);
    if (hub_children_start(h, slots) < 0)
        return -1;
    log_notice("%s: ws://%s%s, %d worker%s, generation %u%s%s",
               candidate ? "started beside the old hub" : "ready", h->conf.listen, h->conf.ws_path,
               h->conf.workers, h->conf.workers == 1 ? "" : "s", h->generation,
               h->admin_fd >= 0 ? ", admin on " : ", no admin process",
               h->admin_fd >= 0 ? h->conf.admin_socket : "");
    return 0;
}

static void hub_tick(struct hub *h)
{
    uint64_t expirations;
    if (read(h->timer_fd, &expirations, sizeof(expirations)) < 0 && errno != EAGAIN)
        log_error(errno, "read(timerfd) failed");
    uint64_t now = hub_now_ms();
    if (h->owner)
        atomic_store(&h->shm.hdr->hub_heartbeat_ms, shm_now_ms());
    hub_reap_tick(h, now);
    hub_restart_tick(h, now);
    hub_upgrade_tick(h, now);
    hub_stop_tick(h, now);
    hub_notify_tick(h);
}

/* The poll timeout: the earliest pending respawn, or sooner while a new generation starts (so
 * the hand-over follows its readiness closely), else until the next tick (-1). */
static int hub_poll_timeout(const struct hub *h)
{
    int t = hub_respawn_next_ms(h, hub_now_ms());
    int more[2] = {hub_restart_next_ms(h), hub_upgrade_next_ms(h)};
    for (int i = 0; i < 2; i++) {
        if (more[i] >= 0 && (t < 0 || more[i] < t))
            t = more[i];
    }
    return t;
}

static void hub_loop(struct hub *h)
{
    struct pollfd pfd[4] = {{.fd = h->signal_fd, .events = POLLIN},
                            {.fd = h->timer_fd, .events = POLLIN},
                            {.fd = -1, .events = POLLIN},
                            {.fd = -1, .events = POLLIN}};
    while (!hub_stop_is_done(h) && !hub_upgrade_retired(h)) {
        pfd[2].fd = h->upgrade.ctl_fd; /* the other hub of a binary upgrade, -1 when none */
        pfd[3].fd = h->upgrade.pidfd;  /* old hub: the new one's end */
        int n = poll(pfd, 4, hub_poll_timeout(h));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            log_error(errno, "poll() failed");
            h->exit_code = 1;
            return;
        }
        if (n == 0) {
            hub_respawn_due(h, hub_now_ms());
            hub_restart_tick(h, hub_now_ms());
            hub_upgrade_tick(h, hub_now_ms());
        }
        if (pfd[0].revents & POLLIN)
            hub_signal_dispatch(h);
        if (pfd[1].revents & POLLIN)
            hub_tick(h);
        if (pfd[2].fd >= 0 && pfd[2].revents != 0 && pfd[2].fd == h->upgrade.ctl_fd)
            hub_upgrade_ctl_event(h); /* unless something above already closed it */
        if (pfd[3].fd >= 0 && pfd[3].revents != 0 && pfd[3].fd == h->upgrade.pidfd)
            hub_upgrade_peer_event(h);
    }
}

/* Kills and waits for children left over by a failed start or a broken loop. */
static void hub_kill_leftovers(struct hub *h)
{
    if (hub_children_live(h) == 0)
        return;
    hub_children_kill(h, SIGKILL, 1);
    for (int i = 0; i < HUB_MAX_CHILDREN; i++) {
        struct hub_child *c = &h->children[i];
        while (c->pid > 0 && waitpid(c->pid, NULL, 0) < 0 && errno == EINTR)
            ;
        c->pid = 0;
    }
}

static void hub_close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

/* Closes and removes the admin FastCGI socket (at exit, or when the admin died fatally). */
void hub_admin_close(struct hub *h)
{
    hub_close_fd(&h->admin_fd);
    if (h->admin_socket_created && unlink(h->conf.admin_socket) < 0)
        log_warn(errno, "unlink(%s) failed", h->conf.admin_socket);
    else if (h->admin_socket_created && h->phase == HUB_PHASE_RUNNING)
        log_error(0, "admin API unavailable: removed %s", h->conf.admin_socket);
    h->admin_socket_created = 0;
}

/* Releases everything hub_start acquired, whatever point it reached. */
static void hub_cleanup(struct hub *h)
{
    hub_kill_leftovers(h);
    hub_redis_stop(); /* Redis bridge (issue 8): its thread uses the segment */
    if (h->shm_created && h->owner) {
        atomic_store(&h->shm.hdr->hub_state, SHM_HUB_STOPPING);
        shm_destroy(&h->shm);
    } else if (h->shm.hdr != NULL) { /* adopted, or handed over: the segment lives on */
        shm_detach(&h->shm);
    }
    h->shm_created = 0;
    hub_admin_close(h);
    hub_close_fd(&h->listen_fd);
    hub_children_close(h);
    hub_close_fd(&h->devnull_fd);
    hub_close_fd(&h->timer_fd);
    hub_close_fd(&h->signal_fd);
    hub_pidfile_remove(hub_pidfile_path(h), h->pid_fd);
    h->pid_fd = -1;
    if (h->upgrade.ctl_fd >= 0)
        close(h->upgrade.ctl_fd); /* the other hub of an upgrade sees EOF: we are gone */
    if (h->upgrade.pidfd >= 0)
        close(h->upgrade.pidfd);
    h->upgrade.ctl_fd = h->upgrade.pidfd = -1;
}

static void hub_init(struct hub *h)
{
    memset(h, 0, sizeof(*h));
    h->listen_fd = h->admin_fd = h->devnull_fd = h->signal_fd = h->timer_fd = h->pid_fd = -1;
    h->upgrade.ctl_fd = h->upgrade.pidfd = -1;
    hub_children_init(h);
}

/* Parses the command line; handles -h, -v, -t and -T. Returns -1 to go on, else an exit code. */
static int hub_parse_args(struct hub *h, int argc, char **argv)
{
    const char *file = NULL;
    char err[512];
    int early = hub_prescan(argc, argv, &file);
    if (early == 'h') {
        hub_usage(stdout);
        return 0;
    }
    if (early == 'v') {
        hub_version(stdout);
        return 0;
    }
    if (file == NULL && access(CONF_DEFAULT_FILE, R_OK) == 0)
        file = CONF_DEFAULT_FILE;
    int ok = conf_from_args(&h->conf, argc, argv, hub_is_own_arg, err, sizeof(err)) == 0 &&
             hub_resolve_binaries(h, err, sizeof(err)) == 0;
    if (opt_test)
        return hub_config_test(h, ok, file, err);
    if (!ok) {
        fprintf(stderr, "wshub: %s\n", err);
        return 2;
    }
    return -1;
}

static int hub_setup_log(const struct conf *c)
{
    enum log_level lvl = LOG_LEVEL_INFO;
    log_level_parse(c->log_level, &lvl); /* conf_finalize already validated it */
    log_set_role("hub", -1);
    log_set_level(lvl);
    if (log_open_file(c->log_file) < 0) {
        fprintf(stderr, "wshub: cannot open log file %s: %s\n", c->log_file, strerror(errno));
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    static struct hub hub;
    struct hub *h = &hub;

    hub_ensure_std_fds();
    hub_init(h);
    h->argc = argc;
    h->argv = argv;
    hub_upgrade_init(h, argv[0]);
    char err[512];
    if (hub_upgrade_from_env(h, err, sizeof(err)) < 0) { /* started by an old hub's SIGUSR2? */
        fprintf(stderr, "wshub: binary upgrade: %s\n", err);
        return 2;
    }
    int rc = hub_parse_args(h, argc, argv);
    if (rc >= 0)
        return rc;
    if (hub_setup_log(&h->conf) < 0)
        return 2;
    if (hub_upgrade_pin_conf(h, err, sizeof(err)) < 0) { /* after the log: it may warn */
        log_error(0, "binary upgrade: %s; exiting with code 2", err);
        return 2;
    }
    hub_notify_init();
    log_notice("wshub %s starting%s: instance %s, %d worker%s, pid %d", WSHUB_VERSION,
               h->upgrade.phase == HUB_UPGRADE_CANDIDATE ? " (binary upgrade)" : "",
               h->conf.instance, h->conf.workers, h->conf.workers == 1 ? "" : "s", (int)getpid());
    if (hub_start(h) < 0) {
        log_error(0, "start-up failed; exiting with code 2");
        hub_cleanup(h);
        return 2;
    }
    hub_loop(h);
    hub_cleanup(h);
    if (hub_upgrade_retired(h))
        log_notice("binary upgrade: every worker of this hub has left; exiting (code %d)",
                   h->exit_code);
    else
        log_notice("stopped; exit code %d", h->exit_code);
    return h->exit_code;
}
