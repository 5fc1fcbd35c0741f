/* hub_upgrade.c -- the binary upgrade: SIGUSR2 starts a new hub from the binary at our path; it
 * adopts the listening sockets and the segment, starts its own workers, and once they serve the
 * old hub hands the instance over and retires.
 *
 * nginx's USR2 is the model (src/core/nginx.c ngx_exec_new_binary, ngx_add_inherited_sockets):
 * the old master forks and execs the binary at its own path with the listening sockets
 * inherited and named in an environment variable, renames its pid file to .oldbin, and both
 * masters run until the operator tells the old one to leave (WINCH, QUIT). Here the second half
 * is automatic, and it is the rolling restart (hub_restart.c) across two processes:
 *
 *   old hub                                       new hub (forked twice, no PDEATHSIG)
 *   SIGUSR2: pid file -> .oldbin, fork+exec  ---> adopts fd 3 (TCP), 4 (admin), 5 (control),
 *     with $WSHUB_UPGRADE, $WSHUB_UPGRADE_PINS      attaches the segment (same layout and epoch),
 *   SPAWNED: keeps serving and owning              writes its pid file, hdr->hub_pid, starts
 *                                                   `workers` workers in slots the old hub
 *                                                   offered, and its admin process
 *                                   <--- "ready"    CANDIDATE: once its workers are RUNNING
 *   hand-over: stops its Redis bridge, switches
 *     hdr->generation, SIGHUP to its workers
 *     (1012 spread over restart_spread), SIGTERM
 *     to its admin, MAINPID= to systemd   "handover" --->  SUCCESSOR: owns the instance, starts
 *   RETIRING: reaps its draining workers, exits 0           the Redis bridge where the old one
 *                                   (EOF) --->              stopped; NONE once the old hub is gone
 *
 * The sockets never close, so no connection attempt is refused: both hubs' workers accept from
 * the one listening socket until the old ones are told to drain. The segment is the same (same
 * epoch), so every resume point stays valid: a client closed with 1012 by an old worker resumes
 * on a new one without loss. Which hub "owns" the instance (h->owner) decides who beats the
 * heartbeat, marks the segment STOPPING, runs the Redis bridge, acts on the admin's restart
 * requests and removes the segment and the admin socket at exit; ownership moves exactly once,
 * at the hand-over. Until then the new hub is a guest: if it fails in any way before it has
 * served (binary missing, exit 2 on a bad configuration or another segment layout, a crash, not
 * serving within HUB_UPGRADE_START_MS), the old hub never stopped owning and serving; it renames
 * .oldbin back, takes hdr->hub_pid back and later frees the slots of any worker the new hub left.
 *
 * The new hub is forked twice (hub_exec_spawn's `detach`), so it is never our child: under
 * systemd it is systemd's child from its first instant, which is what makes systemd accept it as
 * a main process it can stop gracefully (a main pid that is not its child is "alien": on stop
 * systemd would not wait for it and would SIGKILL the unit at once). We watch it through a pidfd
 * instead of SIGCHLD, and read how it ended from its zombie while one is left to read.
 *
 * Control socket: an AF_UNIX SOCK_SEQPACKET pair, one short text message each way. EOF on it
 * means the other hub is gone: the new hub then takes over by itself (the old hub was killed
 * before the hand-over: its workers close their clients on PDEATHSIG and those resume here), or
 * knows the old hub has finished (after it). Requests for a rolling restart wait while two hubs
 * share the slots (hub_upgrade_defer_restart).
 *
 * What the old hub cannot undo: after the hand-over its workers are draining. If the new hub
 * dies then, the instance is down as after any hub crash (systemd restarts it; the new hub is
 * the unit's main process by then); the hand-over waits for the new workers to serve so that
 * such a failure would also have struck a fresh start. docs/upgrade.md has the procedure and the
 * failure modes.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/pidfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <fcntl.h>

#include "hub.h"
#include "hub_redis.h"
#include "log.h"

#define HUB_UPGRADE_ENV      "WSHUB_UPGRADE"
#define HUB_UPGRADE_PINS_ENV "WSHUB_UPGRADE_PINS"
#define HUB_UPGRADE_MSG_MAX  256

extern char **environ;

/* ---- both hubs ---- */

/* Records the binary a SIGUSR2 will exec: the path we were started as, like nginx's argv[0], so
 * that a package upgrade that replaced the file there is what runs (a relative path is made
 * absolute now, before anything could change the directory); without a '/' in argv[0], the
 * binary we run. */
void hub_upgrade_init(struct hub *h, const char *argv0)
{
    struct hub_upgrade *u = &h->upgrade;
    char cwd[PATH_MAX];
    u->ctl_fd = u->pidfd = -1;
    if (argv0 != NULL && argv0[0] == '/') {
        snprintf(u->self_path, sizeof(u->self_path), "%s", argv0);
    } else if (argv0 != NULL && strchr(argv0, '/') != NULL && getcwd(cwd, sizeof(cwd)) != NULL) {
        if (snprintf(u->self_path, sizeof(u->self_path), "%s/%s", cwd, argv0) >=
            (int)sizeof(u->self_path))
            u->self_path[0] = '\0';
    }
    if (u->self_path[0] == '\0') {
        ssize_t n = readlink("/proc/self/exe", u->self_path, sizeof(u->self_path) - 1);
        u->self_path[n > 0 ? n : 0] = '\0';
    }
}

const char *hub_pidfile_path(const struct hub *h)
{
    return h->upgrade.pid_renamed ? h->upgrade.oldbin : h->conf.pid_file;
}

/* A rolling restart must wait while two hubs share the worker slots. Returns 1 when the request
 * was deferred (or refused, in a hub that handed over), 0 when it may run now. */
int hub_upgrade_defer_restart(struct hub *h, const char *why)
{
    struct hub_upgrade *u = &h->upgrade;
    switch (u->phase) {
    case HUB_UPGRADE_NONE:
        return 0;
    case HUB_UPGRADE_RETIRING:
        log_notice("%s: this hub handed the instance over to pid %d; ignored here", why,
                   (int)u->peer);
        return 1;
    case HUB_UPGRADE_SPAWNED:
        log_notice("%s: a binary upgrade is in progress (the new hub reads the configuration as "
                   "it starts); a rolling restart follows only if the upgrade fails",
                   why);
        break;
    case HUB_UPGRADE_CANDIDATE:
    case HUB_UPGRADE_SUCCESSOR:
        log_notice("%s: the previous hub (pid %d) is still running; the rolling restart follows "
                   "once it has exited",
                   why, (int)u->peer);
        break;
    }
    u->hup_deferred = 1;
    return 1;
}

/* Back to a single hub: a SIGHUP that waited runs now. */
static void hub_upgrade_done(struct hub *h)
{
    struct hub_upgrade *u = &h->upgrade;
    u->phase = HUB_UPGRADE_NONE;
    u->peer = 0;
    u->sweep = 1; /* the other hub's workers, if it died, are ours to clean up after */
    if (u->ctl_fd >= 0)
        close(u->ctl_fd);
    u->ctl_fd = -1;
    if (u->pidfd >= 0)
        close(u->pidfd);
    u->pidfd = -1;
    if (u->hup_deferred && h->phase == HUB_PHASE_RUNNING) {
        u->hup_deferred = 0;
        hub_restart_request(h, "SIGHUP (received during the binary upgrade)");
    }
}

static int hub_upgrade_send(struct hub *h, const char *msg)
{
    struct hub_upgrade *u = &h->upgrade;
    if (u->ctl_fd < 0 || send(u->ctl_fd, msg, strlen(msg), MSG_NOSIGNAL) < 0) {
        log_error(u->ctl_fd < 0 ? EPIPE : errno,
                  "binary upgrade: send(\"%s\") to hub pid %d failed", msg, (int)u->peer);
        return -1;
    }
    return 0;
}

/* How the new hub (not our child: it was orphaned at birth) ended: "exited with code 2", "was
 * killed by signal 9 (SIGKILL)", from its zombie's /proc/<pid>/stat (field 52, the wait status),
 * or "has exited" when its parent (systemd, init) has reaped it already. */
static const char *hub_upgrade_status(pid_t pid, char *buf, size_t len)
{
    char path[32], stat[1024];
    snprintf(buf, len, "has exited");
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return buf;
    size_t n = fread(stat, 1, sizeof(stat) - 1, f);
    fclose(f);
    stat[n] = '\0';
    char *p = strrchr(stat, ')'), *save = NULL;
    if (p == NULL || p[1] != ' ' || p[2] != 'Z')
        return buf;
    int field = 2, status = -1; /* p + 2 is field 3, the state */
    for (char *t = strtok_r(p + 2, " ", &save); t != NULL; t = strtok_r(NULL, " ", &save)) {
        if (++field == 52)
            status = atoi(t);
    }
    if (status < 0)
        return buf;
    if (WIFEXITED(status))
        snprintf(buf, len, "exited with code %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(buf, len, "was killed by signal %d (SIG%s)", WTERMSIG(status),
                 sigabbrev_np(WTERMSIG(status)) ? sigabbrev_np(WTERMSIG(status)) : "?");
    return buf;
}

/* Signals the new hub through its pidfd (never a reused pid). */
static void hub_upgrade_signal_peer(struct hub *h, int sig)
{
    struct hub_upgrade *u = &h->upgrade;
    if (u->pidfd >= 0 && pidfd_send_signal(u->pidfd, sig, NULL, 0) < 0 && errno != ESRCH)
        log_error(errno, "pidfd_send_signal(%d, SIG%s) failed", (int)u->peer, sigabbrev_np(sig));
}

/* ---- the old hub ---- */

/* The new hub's environment: ours without stale upgrade variables, plus what it adopts. The
 * strings live in static buffers (one upgrade at a time); the array is the caller's to free. */
static char **hub_upgrade_environ(struct hub *h, const char *slots)
{
    static char env_up[512], env_pins[sizeof(h->upgrade.pins) + 32], env_notify[160];
    struct hub_restart *r = &h->restart;
    size_t n = 0, k = 0, used;
    while (environ[n] != NULL)
        n++;
    char **envp = calloc(n + 4, sizeof(*envp));
    if (envp == NULL) {
        log_error(errno, "calloc(environment) failed");
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        if (strncmp(environ[i], HUB_UPGRADE_ENV, strlen(HUB_UPGRADE_ENV)) != 0 &&
            strncmp(environ[i], "NOTIFY_SOCKET=", 14) != 0)
            envp[k++] = environ[i];
    }
    snprintf(env_up, sizeof(env_up),
             HUB_UPGRADE_ENV "=v1 pid=%d layout=%d epoch=%016" PRIx64 " generation=%u "
                             "requests=%" PRIu64 " admin=%d slots=%s",
             (int)getpid(), SHM_LAYOUT_VERSION, h->shm.hdr->epoch, h->upgrade.generation,
             r->requests_seen, h->admin_fd >= 0, slots);
    envp[k++] = env_up;
    used = (size_t)snprintf(env_pins, sizeof(env_pins), HUB_UPGRADE_PINS_ENV "=");
    for (int i = 0; i < r->n_pins && used < sizeof(env_pins); i++)
        used += (size_t)snprintf(env_pins + used, sizeof(env_pins) - used, "%s%s", i ? "\n" : "",
                                 r->pins[i]);
    envp[k++] = env_pins;
    if (hub_notify_socket()[0] != '\0') {
        snprintf(env_notify, sizeof(env_notify), "NOTIFY_SOCKET=%s", hub_notify_socket());
        envp[k++] = env_notify;
    }
    envp[k] = NULL;
    return envp;
}

/* Offers the new hub every free worker slot. Their doorbells are closed here, so that the new hub
 * can bind them (a slot's doorbell is reopened when it is next used). Returns how many. */
static int hub_upgrade_offer_slots(struct hub *h, char *list, size_t len)
{
    int n = 0;
    size_t used = 0;
    list[0] = '\0';
    for (int i = 0; i < SHM_MAX_WORKERS; i++) {
        struct hub_child *c = &h->children[i];
        if (!hub_slot_is_free(h, i))
            continue;
        if (c->doorbell_fd >= 0)
            close(c->doorbell_fd);
        c->doorbell_fd = -1;
        used += (size_t)snprintf(list + used, len - used, "%s%d", n ? "," : "", i);
        n++;
    }
    return n;
}

/* Forks and execs the new hub. Returns 0 (it runs, or its exec failed and its exit will be
 * reaped), or -1 (logged; nothing was started and nothing changed). */
static int hub_upgrade_spawn(struct hub *h, uint64_t now)
{
    struct hub_upgrade *u = &h->upgrade;
    char slots[SHM_MAX_WORKERS * 3 + 1];
    int sv[2], err;

    u->generation =
        (h->restart.new_generation > h->generation ? h->restart.new_generation : h->generation) + 1;
    int n_slots = hub_upgrade_offer_slots(h, slots, sizeof(slots));
    if (n_slots == 0) {
        log_error(0, "SIGUSR2: binary upgrade refused: no free worker slot for the new hub");
        return -1;
    }
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
        log_error(errno, "SIGUSR2: socketpair() failed; no binary upgrade");
        return -1;
    }
    char **envp = hub_upgrade_environ(h, slots);
    if (envp == NULL) {
        close(sv[0]);
        close(sv[1]);
        return -1;
    }
    if (h->conf.pid_file[0] != '\0') {
        snprintf(u->oldbin, sizeof(u->oldbin), "%s.oldbin", h->conf.pid_file);
        if (hub_pidfile_rename(h->conf.pid_file, u->oldbin) < 0) {
            free(envp);
            close(sv[0]);
            close(sv[1]);
            return -1;
        }
        u->pid_renamed = 1;
    }
    struct hub_exec x = {
        .path = u->self_path,
        .argv = h->argv,
        .envp = envp,
        .from = {h->devnull_fd, h->listen_fd, sv[1], h->admin_fd},
        .to = {STDIN_FILENO, HUB_UPGRADE_LISTEN_FD, HUB_UPGRADE_CTL_FD, HUB_UPGRADE_ADMIN_FD},
        .n_fds = h->admin_fd >= 0 ? 4 : 3,
        .first_closed = HUB_UPGRADE_CTL_FD + 1,
        .pdeathsig = 0, /* the new hub must outlive us */
        .detach = 1,    /* and be systemd's child, not ours (hub_child.c says why) */
    };
    pid_t pid = hub_exec_spawn(&x, &err);
    free(envp);
    close(sv[1]);
    if (pid < 0) {
        close(sv[0]);
        if (u->pid_renamed && hub_pidfile_rename(u->oldbin, h->conf.pid_file) == 0)
            u->pid_renamed = 0;
        return -1;
    }
    u->peer = pid;
    u->ctl_fd = sv[0];
    /* Its end is noticed through a pidfd: it is not our child, so there is no SIGCHLD. If it is
     * already gone (and reaped), the first tick finds the pidfd missing and restores. */
    if ((u->pidfd = pidfd_open(pid, 0)) < 0)
        log_error(errno, "pidfd_open(%d) failed", (int)pid);
    u->phase = HUB_UPGRADE_SPAWNED;
    u->begun_ms = now;
    u->deadline_ms = now + HUB_UPGRADE_START_MS;
    u->stage = 0;
    if (err != 0) /* it exits 2; its pidfd says so and everything is put back */
        log_error(err, "binary upgrade: execve(%s) failed", u->self_path);
    else
        log_notice("binary upgrade (SIGUSR2): started %s as pid %d (generation %u, %d free "
                   "slots); this hub serves until the new one is ready",
                   u->self_path, (int)pid, u->generation, n_slots);
    return 0;
}

void hub_upgrade_request(struct hub *h)
{
    struct hub_upgrade *u = &h->upgrade;
    if (h->phase != HUB_PHASE_RUNNING) {
        log_notice("SIGUSR2: the hub is stopping; no binary upgrade");
        return;
    }
    if (u->phase == HUB_UPGRADE_SPAWNED || u->phase == HUB_UPGRADE_RETIRING) {
        log_notice("SIGUSR2: a binary upgrade is already under way (new hub pid %d)", (int)u->peer);
        return;
    }
    if (u->phase != HUB_UPGRADE_NONE) {
        log_notice("SIGUSR2: the previous hub (pid %d) is still running; send SIGUSR2 again "
                   "once it has exited",
                   (int)u->peer);
        return;
    }
    if (h->restart.phase != HUB_RESTART_IDLE) {
        log_warn(0,
                 "SIGUSR2: a rolling restart to generation %u is in progress; send SIGUSR2 "
                 "again once it is complete",
                 h->restart.new_generation);
        return;
    }
    uint64_t backlog = hub_redis_backlog(&h->shm);
    if (backlog > 0) {
        log_error(0,
                  "SIGUSR2: binary upgrade refused: the Redis bridge is not connected and "
                  "holds %" PRIu64 " local message%s the cluster stream has not confirmed; the "
                  "new hub could not send them. Retry when the breaker is closed",
                  backlog, backlog == 1 ? "" : "s");
        return;
    }
    if (u->self_path[0] == '\0') {
        log_error(0, "SIGUSR2: binary upgrade refused: the path of the wshub binary is unknown");
        return;
    }
    hub_notify_reloading();
    if (hub_upgrade_spawn(h, hub_now_ms()) < 0)
        hub_notify_reloaded();
}

/* The new hub failed before the hand-over: this hub never stopped owning the instance. */
static void hub_upgrade_restore(struct hub *h)
{
    struct hub_upgrade *u = &h->upgrade;
    atomic_store(&h->shm.hdr->hub_pid, (int32_t)getpid()); /* the new hub had taken it */
    if (u->pid_renamed && hub_pidfile_rename(u->oldbin, h->conf.pid_file) == 0)
        u->pid_renamed = 0;
    if (h->phase == HUB_PHASE_RUNNING) /* after STOPPING=1, systemd needs nothing more */
        hub_notify_reloaded();
    hub_upgrade_done(h);
}

/* The new hub serves: hand the instance over and drain our workers, as a rolling restart does
 * with an old generation. */
static void hub_upgrade_handover(struct hub *h, uint32_t generation, int workers)
{
    struct hub_upgrade *u = &h->upgrade;
    struct shm_header *hdr = h->shm.hdr;
    struct hub_redis_resume rr;
    char msg[HUB_UPGRADE_MSG_MAX], status[96];
    uint64_t now;
    int n = 0;

    memset(&rr, 0, sizeof(rr));
    int bridge = hub_redis_stop_at(&rr); /* before the new one starts: one bridge at a time */
    if ((uint32_t)workers < atomic_load(&hdr->workers_configured)) { /* /healthz stays 200 */
        atomic_store(&hdr->workers_configured, (uint32_t)workers);
        atomic_store(&hdr->generation, generation);
    } else {
        atomic_store(&hdr->generation, generation);
        atomic_store(&hdr->workers_configured, (uint32_t)workers);
    }
    for (int i = 0; i < HUB_MAX_CHILDREN; i++) {
        struct hub_child *c = &h->children[i];
        c->wanted = 0;
        c->respawn_pending = 0;
        if (c->pid <= 0)
            continue;
        c->exiting = 1;
        n += c->role == HUB_ROLE_WORKER;
        int sig = c->role == HUB_ROLE_WORKER ? SIGHUP : SIGTERM;
        if (kill(c->pid, sig) < 0 && errno != ESRCH)
            log_error(errno, "kill(%d, SIG%s) failed", (int)c->pid, sigabbrev_np(sig));
    }
    snprintf(msg, sizeof(msg), "handover %d %" PRIu64 " %" PRIu64, bridge && rr.have_local,
             rr.local.pos, rr.local.seq);
    hub_upgrade_send(h, msg); /* if it is lost, the new hub takes over at our exit (EOF) */
    h->owner = 0;
    h->shm.owner = 0;
    h->admin_socket_created = 0; /* the socket is the new hub's to remove */
    snprintf(status, sizeof(status), "binary upgrade: hub pid %d serves generation %u",
             (int)u->peer, generation);
    hub_notify_mainpid(u->peer, status);
    now = hub_now_ms();
    u->phase = HUB_UPGRADE_RETIRING;
    u->stage = 0;
    u->deadline_ms =
        now + h->conf.restart_spread_ms + h->conf.shutdown_timeout_ms + HUB_STOP_GRACE_MS;
    log_notice("binary upgrade: the new hub (pid %d) serves generation %u (%d worker%s, %llu ms "
               "after SIGUSR2) and owns the instance now; SIGHUP to %d worker%s of this hub: they "
               "close their clients with 1012 over %u ms, then this hub exits",
               (int)u->peer, generation, workers, workers == 1 ? "" : "s",
               (unsigned long long)(now - u->begun_ms), n, n == 1 ? "" : "s",
               h->conf.restart_spread_ms);
}

/* The new hub has ended (its pidfd is readable, or there is none). */
static void hub_upgrade_peer_ended(struct hub *h)
{
    struct hub_upgrade *u = &h->upgrade;
    char how[64];
    hub_upgrade_status(u->peer, how, sizeof(how));
    if (u->pidfd >= 0)
        close(u->pidfd);
    u->pidfd = -1;
    if (u->phase == HUB_UPGRADE_SPAWNED) {
        log_error(0,
                  "binary upgrade failed: the new hub (pid %d, %s) %s before it served; this hub "
                  "(pid %d) keeps serving generation %u",
                  (int)u->peer, u->self_path, how, (int)getpid(), h->generation);
        hub_upgrade_restore(h);
    } else if (strcmp(how, "exited with code 0") == 0) {
        log_notice("the new hub (pid %d) %s: it was stopped", (int)u->peer, how);
        u->peer = 0;
    } else {
        log_error(0,
                  "the new hub (pid %d), which owns the instance since the hand-over, %s; this "
                  "hub only drains its own workers: restart wshub",
                  (int)u->peer, how);
        u->peer = 0;
    }
}

void hub_upgrade_peer_event(struct hub *h)
{
    struct hub_upgrade *u = &h->upgrade;
    if (u->pidfd >= 0 && (u->phase == HUB_UPGRADE_SPAWNED || u->phase == HUB_UPGRADE_RETIRING))
        hub_upgrade_peer_ended(h);
}

int hub_upgrade_child_live(const struct hub *h)
{
    return h->upgrade.phase == HUB_UPGRADE_SPAWNED && h->upgrade.pidfd >= 0;
}

/* The old hub stops while the new one starts: it stops too (its own workers with it). sig 0:
 * it was SIGKILLed and is still not reaped; forget it. */
void hub_upgrade_stop(struct hub *h, int sig)
{
    struct hub_upgrade *u = &h->upgrade;
    if (!hub_upgrade_child_live(h))
        return;
    if (sig == 0) {
        hub_upgrade_restore(h);
        return;
    }
    log_notice("binary upgrade abandoned: sending SIG%s to the new hub (pid %d)", sigabbrev_np(sig),
               (int)u->peer);
    hub_upgrade_signal_peer(h, sig);
}

int hub_upgrade_retired(const struct hub *h)
{
    return h->upgrade.phase == HUB_UPGRADE_RETIRING && hub_children_live(h) == 0;
}

/* SPAWNED: the new hub must serve by its deadline, else it is stopped, then killed. */
static void hub_upgrade_spawned_tick(struct hub *h, uint64_t now)
{
    struct hub_upgrade *u = &h->upgrade;
    if (u->pidfd < 0) { /* pidfd_open failed: it had already gone */
        hub_upgrade_peer_ended(h);
        return;
    }
    if (now < u->deadline_ms || h->phase != HUB_PHASE_RUNNING)
        return;
    if (u->stage == 0) {
        log_error(0,
                  "binary upgrade: the new hub (pid %d) is not serving %d s after SIGUSR2; "
                  "stopping it",
                  (int)u->peer, HUB_UPGRADE_START_MS / 1000);
        hub_upgrade_signal_peer(h, SIGTERM);
        u->deadline_ms = now + h->conf.shutdown_timeout_ms + HUB_STOP_GRACE_MS;
    } else if (u->stage == 1) {
        log_warn(0, "binary upgrade: the new hub (pid %d) did not stop: SIGKILL", (int)u->peer);
        hub_upgrade_signal_peer(h, SIGKILL);
        u->deadline_ms = now + HUB_KILL_WAIT_MS;
    } else {
        log_error(0,
                  "binary upgrade: the new hub (pid %d) still there %d ms after SIGKILL; giving "
                  "up on it",
                  (int)u->peer, HUB_KILL_WAIT_MS);
        hub_upgrade_restore(h);
        return;
    }
    u->stage++;
}

/* RETIRING: our workers drain like an old generation; SIGKILL at the same deadline. */
static void hub_upgrade_retiring_tick(struct hub *h, uint64_t now)
{
    struct hub_upgrade *u = &h->upgrade;
    char name[32];
    if (now < u->deadline_ms || hub_children_live(h) == 0)
        return;
    if (u->stage == 0) {
        for (int i = 0; i < HUB_MAX_CHILDREN; i++) {
            struct hub_child *c = &h->children[i];
            if (c->pid <= 0)
                continue;
            log_warn(0, "%s (pid %d) still draining after the binary upgrade: SIGKILL",
                     hub_child_name(c, name, sizeof(name)), (int)c->pid);
            if (kill(c->pid, SIGKILL) < 0 && errno != ESRCH)
                log_error(errno, "kill(%d, SIGKILL) failed", (int)c->pid);
        }
        u->stage = 1;
        u->deadline_ms = now + HUB_KILL_WAIT_MS;
        h->exit_code = 1; /* as in a stop that had to kill */
        return;
    }
    log_error(0, "%d process%s not reaped %d ms after SIGKILL; giving up on them",
              hub_children_live(h), hub_children_live(h) == 1 ? "" : "es", HUB_KILL_WAIT_MS);
    for (int i = 0; i < HUB_MAX_CHILDREN; i++)
        h->children[i].pid = 0;
}

/* ---- the new hub ---- */

static int hub_upgrade_parse_slots(struct hub_upgrade *u, const char *v)
{
    u->n_slots = 0;
    for (const char *p = v; *p != '\0';) {
        char *end;
        long s = strtol(p, &end, 10);
        if (end == p || s < 0 || s >= SHM_MAX_WORKERS || u->n_slots >= SHM_MAX_WORKERS)
            return -1;
        u->slots[u->n_slots++] = (int)s;
        p = *end == ',' ? end + 1 : end;
        if (*end != ',' && *end != '\0')
            return -1;
    }
    return u->n_slots > 0 ? 0 : -1;
}

/* Reads one "key=value" of $WSHUB_UPGRADE. Returns 0, or -1 for an unknown key or bad value. */
static int hub_upgrade_parse_kv(struct hub *h, const char *key, const char *val, long *pid,
                                long *layout, long *admin)
{
    struct hub_upgrade *u = &h->upgrade;
    char *end;
    if (strcmp(key, "pid") == 0)
        *pid = strtol(val, &end, 10);
    else if (strcmp(key, "layout") == 0)
        *layout = strtol(val, &end, 10);
    else if (strcmp(key, "admin") == 0)
        *admin = strtol(val, &end, 10);
    else if (strcmp(key, "epoch") == 0)
        u->epoch = strtoull(val, &end, 16);
    else if (strcmp(key, "generation") == 0)
        u->generation = (uint32_t)strtoul(val, &end, 10);
    else if (strcmp(key, "requests") == 0)
        u->requests_seen = strtoull(val, &end, 10);
    else if (strcmp(key, "slots") == 0)
        return hub_upgrade_parse_slots(u, val);
    else
        return -1;
    return *end == '\0' && end != val ? 0 : -1;
}

/* Started by an old hub's SIGUSR2? Reads and removes $WSHUB_UPGRADE and $WSHUB_UPGRADE_PINS
 * (the children must not see them). Returns 0 (also when not an upgrade), or -1 with err. */
int hub_upgrade_from_env(struct hub *h, char *err, size_t errlen)
{
    struct hub_upgrade *u = &h->upgrade;
    char buf[512], *save = NULL;
    long pid = 0, layout = -1, admin = -1;
    const char *v = getenv(HUB_UPGRADE_ENV), *pins = getenv(HUB_UPGRADE_PINS_ENV);
    if (v == NULL)
        return 0;
    snprintf(buf, sizeof(buf), "%s", v);
    snprintf(u->pins, sizeof(u->pins), "%s", pins != NULL ? pins : "");
    unsetenv(HUB_UPGRADE_ENV);
    unsetenv(HUB_UPGRADE_PINS_ENV);
    char *tok = strtok_r(buf, " ", &save);
    if (tok == NULL || strcmp(tok, "v1") != 0) {
        snprintf(err, errlen, "$" HUB_UPGRADE_ENV " is not version v1: \"%s\"", v);
        return -1;
    }
    while ((tok = strtok_r(NULL, " ", &save)) != NULL) {
        char *eq = strchr(tok, '=');
        if (eq != NULL)
            *eq = '\0';
        if (eq == NULL || hub_upgrade_parse_kv(h, tok, eq + 1, &pid, &layout, &admin) < 0) {
            snprintf(err, errlen, "bad item \"%s\" in $" HUB_UPGRADE_ENV, tok);
            return -1;
        }
    }
    if (layout != SHM_LAYOUT_VERSION) {
        snprintf(err, errlen,
                 "refused: the running instance uses shared-memory layout %ld and this wshub "
                 "uses layout %d; an in-place upgrade needs the same layout. Restart wshub "
                 "instead (this disconnects every client)",
                 layout, SHM_LAYOUT_VERSION);
        return -1;
    }
    /* The control socket's creator, recorded by the kernel at socketpair(): the hub named in
     * the variable, even if it has died since (then we take over). A variable inherited by
     * accident names a process that made no socket on our fd 5. */
    struct ucred cred;
    socklen_t len = sizeof(cred);
    if (getsockopt(HUB_UPGRADE_CTL_FD, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
        cred.pid = 0;
    if (pid <= 0 || cred.pid != (pid_t)pid || u->n_slots == 0 || u->generation == 0 || admin < 0) {
        snprintf(err, errlen,
                 "$" HUB_UPGRADE_ENV " is set, but this process was not started by the hub it "
                 "names (pid %ld; the control socket on fd %d is %d's) or the value is "
                 "incomplete",
                 pid, HUB_UPGRADE_CTL_FD, (int)cred.pid);
        return -1;
    }
    u->phase = HUB_UPGRADE_CANDIDATE;
    u->peer = (pid_t)pid;
    u->ctl_fd = HUB_UPGRADE_CTL_FD;
    h->listen_fd = HUB_UPGRADE_LISTEN_FD;
    h->admin_fd = admin ? HUB_UPGRADE_ADMIN_FD : -1;
    return 0;
}

/* After the configuration was read: the options that shaped the segment and the sockets keep
 * the old hub's values, as in a reload (a warning names each one that differs). */
int hub_upgrade_pin_conf(struct hub *h, char *err, size_t errlen)
{
    struct hub_upgrade *u = &h->upgrade;
    if (u->phase != HUB_UPGRADE_CANDIDATE)
        return 0;
    hub_restart_adopt_pins(h, u->pins);
    int kept = hub_restart_pin(h, &h->conf, "binary upgrade", err, errlen);
    if (kept < 0 || (kept > 0 && conf_finalize(&h->conf, err, errlen) < 0))
        return -1;
    if ((h->conf.admin_threads > 0) != (h->admin_fd >= 0)) {
        snprintf(err, errlen, "admin_threads is %d but the old hub %s an admin socket",
                 h->conf.admin_threads, h->admin_fd >= 0 ? "has" : "has no");
        return -1;
    }
    if (h->conf.workers > u->n_slots) {
        snprintf(err, errlen, "%d workers configured but the old hub left only %d free slots",
                 h->conf.workers, u->n_slots);
        return -1;
    }
    return 0;
}

/* Checks an inherited descriptor: a socket of this type, listening if asked; close-on-exec. */
static int hub_upgrade_check_fd(int fd, int type, int listening, const char *what)
{
    int v = 0;
    socklen_t len = sizeof(v);
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &v, &len) < 0 || v != type) {
        log_error(errno, "binary upgrade: fd %d is not the %s", fd, what);
        return -1;
    }
    len = sizeof(v);
    if (listening && (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &len) < 0 || v != 1)) {
        log_error(errno, "binary upgrade: fd %d (%s) is not listening", fd, what);
        return -1;
    }
    if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
        log_error(errno, "fcntl(%d, F_SETFD) failed", fd);
        return -1;
    }
    return 0;
}

/* hub_start's step for the new hub: the sockets and the segment of the old hub. */
int hub_upgrade_adopt(struct hub *h)
{
    struct hub_upgrade *u = &h->upgrade;
    char name[64], err[256];
    if (hub_upgrade_check_fd(h->listen_fd, SOCK_STREAM, 1, "listening socket") < 0 ||
        (h->admin_fd >= 0 &&
         hub_upgrade_check_fd(h->admin_fd, SOCK_STREAM, 1, "admin FastCGI socket") < 0) ||
        hub_upgrade_check_fd(u->ctl_fd, SOCK_SEQPACKET, 0, "control socket") < 0)
        return -1;
    if (shm_name_for_instance(h->conf.instance, name, sizeof(name)) < 0) {
        log_error(errno, "instance name '%s' is not usable", h->conf.instance);
        return -1;
    }
    if (shm_attach(&h->shm, name, err, sizeof(err)) < 0) {
        log_error(0, "binary upgrade refused: shm_attach(%s) failed: %s", name, err);
        return -1;
    }
    const struct shm_header *hdr = h->shm.hdr;
    if (hdr->epoch != u->epoch) {
        log_error(0,
                  "binary upgrade refused: segment %s has epoch %016" PRIx64 ", the old hub's "
                  "is %016" PRIx64,
                  name, hdr->epoch, u->epoch);
        return -1;
    }
    if (hdr->conn_capacity != h->conf.max_connections || hdr->ring.capacity != h->conf.ring_size ||
        hdr->ring.max_payload != h->conf.max_message) {
        log_error(0,
                  "binary upgrade refused: segment %s was sized for max_connections %u, "
                  "ring_size %" PRIu64 ", max_message %u; this configuration differs",
                  name, hdr->conn_capacity, (uint64_t)hdr->ring.capacity, hdr->ring.max_payload);
        return -1;
    }
    for (int i = 0; i < h->conf.workers; i++) {
        if (!hub_slot_is_free(h, u->slots[i])) {
            log_error(0, "binary upgrade refused: worker slot %d is in use", u->slots[i]);
            return -1;
        }
    }
    h->generation = u->generation;
    h->restart.new_generation = u->generation;
    log_notice("binary upgrade: adopted the listening socket%s and segment %s (epoch %016" PRIx64
               ", layout %d) from hub pid %d; generation %u",
               h->admin_fd >= 0 ? ", the admin socket" : "", name, hdr->epoch, SHM_LAYOUT_VERSION,
               (int)u->peer, u->generation);
    return 0;
}

/* After the segment state is known and before the workers start: they check that their parent
 * is hdr->hub_pid. The old hub's workers keep the pid they read at their own start. */
void hub_upgrade_started(struct hub *h)
{
    h->upgrade.begun_ms = hub_now_ms();
    h->restart.requests_seen = h->upgrade.requests_seen;
    atomic_store(&h->shm.hdr->hub_pid, (int32_t)getpid());
}

/* Owning the instance: what the old hub did until now is ours. */
static void hub_upgrade_own(struct hub *h, const struct hub_redis_resume *rr)
{
    h->owner = 1;
    h->shm_created = 1;
    h->shm.owner = 1;
    h->admin_socket_created = h->admin_fd >= 0;
    atomic_store(&h->shm.hdr->hub_pid, (int32_t)getpid());
    atomic_store(&h->shm.hdr->hub_heartbeat_ms, shm_now_ms());
    if (hub_redis_start(&h->conf, &h->shm, rr) < 0)
        log_error(0, "binary upgrade: the Redis bridge did not start; this node delivers its "
                     "own broadcasts only");
}

/* The old hub's pid file, if it died and left it: removed once no process holds its lock.
 * Returns 1 while a process still holds it (the old hub's descriptors may be closed after the
 * control socket's, so the lock can outlive the EOF by a moment), else 0. */
static int hub_upgrade_remove_stale_oldbin(struct hub *h)
{
    char path[PATH_MAX];
    int held = 0;
    if (h->conf.pid_file[0] == '\0' ||
        snprintf(path, sizeof(path), "%s.oldbin", h->conf.pid_file) >= (int)sizeof(path))
        return 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        held = errno == EWOULDBLOCK;
    } else if (unlink(path) < 0) {
        log_warn(errno, "unlink(%s) failed", path);
    } else {
        log_notice("removed %s, left by the old hub", path);
    }
    close(fd);
    return held;
}

/* "handover <bridge> <pos> <seq>" from the old hub. */
static void hub_upgrade_take_over(struct hub *h, const char *msg)
{
    struct hub_upgrade *u = &h->upgrade;
    struct hub_redis_resume rr;
    int bridge = 0;
    memset(&rr, 0, sizeof(rr));
    if (sscanf(msg, "handover %d %" SCNu64 " %" SCNu64, &bridge, &rr.local.pos, &rr.local.seq) != 3)
        log_warn(0, "binary upgrade: unexpected hand-over message \"%s\"", msg);
    rr.have_local = bridge == 1;
    if (h->phase != HUB_PHASE_RUNNING) {
        /* We were told to stop after telling the old hub we were ready, and it has handed over
         * meanwhile: nobody else will clean up, so own the instance and stop it. */
        log_warn(0,
                 "binary upgrade: hub pid %d handed the instance over while this hub stops; "
                 "stopping the instance",
                 (int)u->peer);
        h->owner = 1;
        h->shm_created = 1;
        h->shm.owner = 1;
        h->admin_socket_created = h->admin_fd >= 0;
        atomic_store(&h->shm.hdr->hub_state, SHM_HUB_STOPPING);
        u->phase = HUB_UPGRADE_SUCCESSOR;
        return;
    }
    hub_upgrade_own(h, &rr);
    u->phase = HUB_UPGRADE_SUCCESSOR;
    log_notice("binary upgrade: hub pid %d handed the instance over; this hub (pid %d) owns it "
               "and serves generation %u",
               (int)u->peer, (int)getpid(), h->generation);
}

/* EOF on the control socket in the new hub: the old hub has exited. */
static void hub_upgrade_peer_exited(struct hub *h)
{
    struct hub_upgrade *u = &h->upgrade;
    struct shm_header *hdr = h->shm.hdr;
    if (u->phase == HUB_UPGRADE_CANDIDATE) {
        int wanted = 0;
        for (int i = 0; i < SHM_MAX_WORKERS; i++)
            wanted += h->children[i].wanted;
        log_warn(0,
                 "binary upgrade: the old hub (pid %d) is gone before handing over; this hub "
                 "takes the instance over (its workers close their clients, which resume here)",
                 (int)u->peer);
        atomic_store(&hdr->generation, h->generation);
        atomic_store(&hdr->workers_configured, (uint32_t)wanted);
        hub_upgrade_own(h, NULL); /* the old bridge's position in the ring died with it */
    } else {
        log_notice("binary upgrade complete: the old hub (pid %d) has exited", (int)u->peer);
    }
    h->upgrade.oldbin_ticks = HUB_SWEEP_TICKS * 5; /* checked from the tick until removed */
    hub_upgrade_done(h);
}

/* CANDIDATE: "ready" once every worker serves (or some do after HUB_RESTART_START_MS). */
static void hub_upgrade_candidate_tick(struct hub *h, uint64_t now)
{
    struct hub_upgrade *u = &h->upgrade;
    char msg[HUB_UPGRADE_MSG_MAX];
    int wanted = 0, serving = 0;
    if (u->stage != 0 || h->phase != HUB_PHASE_RUNNING)
        return;
    for (int i = 0; i < SHM_MAX_WORKERS; i++) {
        const struct hub_child *c = &h->children[i];
        if (!c->wanted)
            continue;
        wanted++;
        serving += c->pid > 0 &&
                   atomic_load(&shm_worker(&h->shm, (unsigned)i)->state) == SHM_WORKER_RUNNING;
    }
    if (serving == 0 || (serving < wanted && now < u->begun_ms + HUB_RESTART_START_MS))
        return;
    snprintf(msg, sizeof(msg), "ready %u %d", h->generation, wanted);
    if (hub_upgrade_send(h, msg) == 0) {
        u->stage = 1;
        log_notice("binary upgrade: %d of %d workers serving; told the old hub (pid %d)", serving,
                   wanted, (int)u->peer);
    }
}

/* ---- both, from the loop ---- */

void hub_upgrade_ctl_event(struct hub *h)
{
    struct hub_upgrade *u = &h->upgrade;
    char msg[HUB_UPGRADE_MSG_MAX];
    unsigned gen = 0;
    int workers = 0;
    ssize_t n = recv(u->ctl_fd, msg, sizeof(msg) - 1, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        if (n < 0)
            log_error(errno, "binary upgrade: recv(control socket) failed");
        close(u->ctl_fd);
        u->ctl_fd = -1;
        if (u->phase == HUB_UPGRADE_CANDIDATE || u->phase == HUB_UPGRADE_SUCCESSOR)
            hub_upgrade_peer_exited(h);
        return; /* the old hub learns of the new one's end from its exit status */
    }
    msg[n] = '\0';
    if (u->phase == HUB_UPGRADE_SPAWNED && sscanf(msg, "ready %u %d", &gen, &workers) == 2) {
        if (h->phase == HUB_PHASE_RUNNING && gen == u->generation && workers > 0)
            hub_upgrade_handover(h, gen, workers);
    } else if (u->phase == HUB_UPGRADE_CANDIDATE && strncmp(msg, "handover ", 9) == 0) {
        hub_upgrade_take_over(h, msg);
    } else {
        log_warn(0, "binary upgrade: unexpected message \"%s\" from hub pid %d", msg, (int)u->peer);
    }
}

void hub_upgrade_tick(struct hub *h, uint64_t now)
{
    struct hub_upgrade *u = &h->upgrade;
    if (u->phase == HUB_UPGRADE_SPAWNED)
        hub_upgrade_spawned_tick(h, now);
    else if (u->phase == HUB_UPGRADE_RETIRING)
        hub_upgrade_retiring_tick(h, now);
    else if (u->phase == HUB_UPGRADE_CANDIDATE)
        hub_upgrade_candidate_tick(h, now);
    if (u->sweep && u->phase == HUB_UPGRADE_NONE && hub_sweep_foreign_slots(h) == 0)
        u->sweep = 0;
    if (u->oldbin_ticks > 0 && hub_upgrade_remove_stale_oldbin(h) == 0)
        u->oldbin_ticks = 0;
    else if (u->oldbin_ticks > 0)
        u->oldbin_ticks--;
}

int hub_upgrade_next_ms(const struct hub *h)
{
    return h->upgrade.phase == HUB_UPGRADE_CANDIDATE && h->upgrade.stage == 0 &&
                   h->phase == HUB_PHASE_RUNNING
               ? HUB_RESTART_POLL_MS
               : -1;
}
