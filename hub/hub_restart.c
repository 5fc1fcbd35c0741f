/* hub_restart.c -- the rolling restart: a new generation of workers beside the old one, then the
 * old one drains.
 *
 * Asked for by SIGHUP (hub_signal.c) or by the admin API, which increments hdr->restart_requested
 * (POST /admin/workers/restart); the hub compares that counter with the last value it acted on at
 * every tick. One restart runs at a time: requests that arrive during one are merged into a single
 * restart that begins when the current one is over, so two generations never start together.
 *
 *   IDLE --request--> re-read the configuration --invalid--> IDLE (error with file:line; nothing
 *     |                                                       changed, generation G serves on)
 *     v  fork+exec `workers` new workers of generation G+1 into free slots
 *   STARTING --all serving, or some serving after HUB_RESTART_START_MS--> hand-over:
 *     |     --none serving by then, or all exited with code 2--> abandoned: the new workers are
 *     |       stopped, the previous configuration is back, G serves on
 *     v  hdr->generation = G+1, SIGHUP to every worker of G, the admin process replaced
 *   DRAINING --every old worker reaped--> IDLE: "rolling restart to generation G+1 complete"
 *            --their restart_spread + shutdown_timeout + 2 s--> SIGKILL for those left
 *
 * Not one connection attempt is refused: the listening socket is the hub's and never closes; the
 * new workers accept from it as soon as they run, and the old ones keep accepting until their
 * SIGHUP. On SIGHUP a worker stops accepting, delivers what is queued and closes its clients with
 * 1012 (service restart) spread evenly over restart_spread (ws-worker/worker_restart.c), so they
 * reconnect to the new generation gradually instead of in one stampede. The old workers' exits
 * are expected: no respawn, no crash backoff; their slots become EXITED and their rows are freed
 * (hub_reap.c). SIGTERM during a restart stops both generations the usual way (hub_stop.c).
 *
 * The configuration is re-read exactly as at start-up (the same file, the same command-line
 * overrides). What the segment and the sockets were built from cannot change without a full
 * restart (fixed_options below): each such option whose value differs is named in a warning and
 * keeps its running value, which the children get as one more override (--name=value, applied
 * after the file). The Redis bridge's options are read once, by the hub (its thread is not
 * restarted), and are kept the same way but only in the hub. Everything else (workers, timeouts,
 * buffers, ws_path, log level, ...) is what the new workers read; backlog is applied to the open
 * socket with listen(2). The new workers are exec'd fresh, so an upgraded wshub-worker binary is
 * picked up too; one that cannot run (exit code 2, e.g. another segment layout) only abandons the
 * restart. While a binary upgrade (hub_upgrade.c) runs, two hubs share the slots: requests wait
 * until one hub is left (hub_upgrade_defer_restart), and the new hub starts with the fixed
 * options' pins of the old one (hub_restart_adopt_pins, hub_restart_pin).
 *
 * /healthz counts the RUNNING workers of hdr->generation against hdr->workers_configured. Both
 * change at the hand-over, when the new generation already serves and no old worker has stopped
 * yet, and in the order that never shows fewer running workers than configured.
 */
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/socket.h>

#include "hub.h"
#include "log.h"

/* Options that shape the segment, the sockets or the hub's own files. */
static const char *const fixed_options[] = {
    "instance",           "listen",       "max_connections",
    "max_message",        "ring_size",    "shm_mode",
    "shm_group",          "run_dir",      "admin_socket",
    "admin_socket_mode",  "pid_file",     "admin_threads",
    "admin_socket_group", "max_channels",
};
#define N_FIXED (sizeof(fixed_options) / sizeof(fixed_options[0]))
_Static_assert(N_FIXED <= HUB_MAX_PINS, "struct hub_restart has a pin per fixed option");

/* Options only the hub reads, once at start (the Redis bridge's): kept like the fixed ones but
 * not passed on, since the children ignore them and a password has no place on a command line.
 * A name the table does not know (yet) is skipped. */
static const char *const hub_only_options[] = {
    "redis",        "redis_user",    "redis_password", "redis_prefix",      "redis_node",
    "redis_maxlen", "redis_backlog", "redis_timeout",  "redis_backoff_max",
};
#define N_HUB_ONLY (sizeof(hub_only_options) / sizeof(hub_only_options[0]))

/* Records the running value of every fixed option as its pin. */
static void hub_restart_pins_from_conf(struct hub *h)
{
    struct hub_restart *r = &h->restart;
    char value[CONF_PATH_MAX + 1];
    for (size_t i = 0; i < N_FIXED; i++) {
        if (conf_format_value(&h->conf, fixed_options[i], value, sizeof(value)) < 0)
            value[0] = '\0'; /* cannot happen: every option fits */
        snprintf(r->pins[i], sizeof(r->pins[i]), "--%s=%s", fixed_options[i], value);
    }
    r->n_pins = (int)N_FIXED;
}

/* Records the running value of every fixed option and the admin's request counter. */
void hub_restart_init(struct hub *h)
{
    hub_restart_pins_from_conf(h);
    h->restart.requests_seen = atomic_load(&h->shm.hdr->restart_requested);
}

/* The new hub of a binary upgrade: the old hub's running values ("--name=value" lines) replace
 * the pins of the fixed options they name. Names this binary does not pin are ignored. */
void hub_restart_adopt_pins(struct hub *h, const char *lines)
{
    struct hub_restart *r = &h->restart;
    hub_restart_pins_from_conf(h);
    for (const char *p = lines; *p != '\0';) {
        const char *end = strchr(p, '\n');
        size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
        for (size_t i = 0; i < N_FIXED; i++) {
            size_t n = strlen(fixed_options[i]);
            if (len >= n + 3 && strncmp(p, "--", 2) == 0 &&
                strncmp(p + 2, fixed_options[i], n) == 0 && p[n + 2] == '=' &&
                len < sizeof(r->pins[i]))
                snprintf(r->pins[i], sizeof(r->pins[i]), "%.*s", (int)len, p);
        }
        p += len + (end != NULL);
    }
}

/* The running value of fixed option i, from its pin "--name=value". */
static const char *pin_value(const struct hub_restart *r, size_t i)
{
    return r->pins[i] + strlen(fixed_options[i]) + 3;
}

/* If option `name` differs between *nc and `running` (its value now), warns and sets it back in
 * *nc. `what` names the occasion in the warning. Returns 1 when it did, 0 when equal (or
 * unknown), -1 with the reason in err. */
static int hub_keep_option(struct conf *nc, const char *name, const char *running, const char *what,
                           char *err, size_t errlen)
{
    char value[CONF_PATH_MAX + 1], why[256];
    if (conf_format_value(nc, name, value, sizeof(value)) < 0 || strcmp(value, running) == 0)
        return 0;
    if (strstr(name, "password") != NULL)
        log_warn(0,
                 "%s: %s cannot change without a full restart of wshub; keeping the "
                 "running value",
                 what, name);
    else
        log_warn(0,
                 "%s: %s cannot change without a full restart of wshub; keeping \"%s\" "
                 "(the configuration now says \"%s\")",
                 what, name, running, value);
    if (conf_set(nc, name, running, why, sizeof(why)) < 0) {
        snprintf(err, errlen, "keeping %s: %s", name, why);
        return -1;
    }
    return 1;
}

/* Puts back in *nc the running value (r->pins) of every fixed option that differs, with a
 * warning, and passes each on to the children as an override. Returns how many were put back,
 * or -1 with the reason in err. The caller finalises *nc when the count is not 0. */
int hub_restart_pin(struct hub *h, struct conf *nc, const char *what, char *err, size_t errlen)
{
    struct hub_restart *r = &h->restart;
    int kept = 0, k;
    for (size_t i = 0; i < N_FIXED; i++) {
        if ((k = hub_keep_option(nc, fixed_options[i], pin_value(r, i), what, err, errlen)) < 0)
            return -1;
        if (k == 0)
            continue;
        if (nc->n_overrides >= CONF_MAX_OVERRIDES) {
            snprintf(err, errlen, "too many command-line options to keep %s", fixed_options[i]);
            return -1;
        }
        nc->overrides[nc->n_overrides++] = r->pins[i]; /* the children get it too */
        kept++;
    }
    return kept;
}

/* Re-reads the configuration into *nc as at start-up and puts back the running value of every
 * fixed or hub-only option that differs, with a warning. Returns 0, or -1 with the reason in
 * err. */
static int hub_reload_conf(struct hub *h, struct conf *nc, char *err, size_t errlen)
{
    char running[CONF_PATH_MAX + 1];
    int kept, k;

    if (conf_from_args(nc, h->argc, h->argv, hub_is_own_arg, err, errlen) < 0)
        return -1;
    if ((kept = hub_restart_pin(h, nc, "reload", err, errlen)) < 0)
        return -1;
    for (size_t i = 0; i < N_HUB_ONLY; i++) {
        if (conf_format_value(&h->conf, hub_only_options[i], running, sizeof(running)) < 0)
            continue;
        if ((k = hub_keep_option(nc, hub_only_options[i], running, "reload", err, errlen)) < 0)
            return -1;
        kept += k;
    }
    return kept > 0 ? conf_finalize(nc, err, errlen) : 0;
}

/* Applies what the hub itself uses of a new configuration (`was` is the one before). */
static void hub_conf_apply(struct hub *h, const struct conf *was)
{
    struct conf *c = &h->conf;
    enum log_level lvl;
    if (strcmp(c->log_file, was->log_file) != 0 && log_open_file(c->log_file) < 0)
        log_error(errno, "reload: open(%s) failed for log_file; the hub keeps logging to %s",
                  c->log_file, was->log_file[0] ? was->log_file : "stderr");
    if (strcmp(c->log_level, was->log_level) != 0 && log_level_parse(c->log_level, &lvl) == 0)
        log_set_level(lvl);
    if (c->backlog != was->backlog && listen(h->listen_fd, c->backlog) < 0) {
        log_warn(errno, "reload: listen(%s, %d) failed; the backlog stays %d", c->listen,
                 c->backlog, was->backlog);
        c->backlog = was->backlog;
    }
}

/* Picks `n` worker slots used by no process and no generation; returns how many were found. */
static int hub_free_slots(const struct hub *h, int n, int *slots)
{
    int found = 0;
    for (int i = 0; i < SHM_MAX_WORKERS && found < n; i++) {
        if (hub_slot_is_free(h, i))
            slots[found++] = i;
    }
    return found;
}

/* Worker entries of generation `gen` that are wanted: how many, serving, exited fatally. */
static void hub_restart_count(const struct hub *h, uint32_t gen, int *wanted, int *serving,
                              int *failed)
{
    *wanted = *serving = *failed = 0;
    for (int i = 0; i < SHM_MAX_WORKERS; i++) {
        const struct hub_child *c = &h->children[i];
        if (!c->wanted || c->generation != gen)
            continue;
        (*wanted)++;
        *failed += c->fatal;
        *serving += c->pid > 0 &&
                    atomic_load(&shm_worker(&h->shm, (unsigned)i)->state) == SHM_WORKER_RUNNING;
    }
}

/* Sends `sig` to every process of generation `gen` and expects their exits. */
static int hub_generation_signal(struct hub *h, uint32_t gen, int sig)
{
    int n = 0;
    for (int i = 0; i < SHM_MAX_WORKERS; i++) {
        struct hub_child *c = &h->children[i];
        if (c->generation != gen || (!c->wanted && c->pid == 0))
            continue;
        c->wanted = 0;
        c->respawn_pending = 0;
        if (c->pid <= 0)
            continue;
        c->exiting = 1;
        n++;
        if (kill(c->pid, sig) < 0 && errno != ESRCH)
            log_error(errno, "kill(%d, SIG%s) failed", (int)c->pid, sigabbrev_np(sig));
    }
    return n;
}

static void hub_restart_done(struct hub *h)
{
    struct hub_restart *r = &h->restart;
    r->phase = HUB_RESTART_IDLE;
    hub_notify_reloaded();
    if (r->queued > 0) {
        log_notice("starting the rolling restart requested meanwhile (%s%s)", r->queued_why,
                   r->queued > 1 ? " and earlier ones, merged" : "");
        r->queued = 0;
        hub_restart_request(h, r->queued_why);
    }
}

/* Forks the new generation. Returns 0, or -1 with the reason in err (nothing was started). */
static int hub_restart_spawn(struct hub *h, uint64_t now, char *err, size_t errlen)
{
    struct hub_restart *r = &h->restart;
    int slots[CONF_MAX_WORKERS];
    int n = h->conf.workers;
    if (hub_free_slots(h, n, slots) < n) {
        snprintf(err, errlen, "fewer than %d free worker slots (old workers still exiting?)", n);
        return -1;
    }
    for (int k = 0; k < n; k++) {
        struct hub_child *c = &h->children[slots[k]];
        c->generation = r->new_generation;
        c->wanted = 1;
        c->fatal = 0;
        c->quick_deaths = 0;
        if (hub_child_spawn(h, c) < 0) { /* fork failed: retry like a respawn */
            c->started_ms = now;
            c->respawn_pending = 1;
            c->respawn_at_ms = now + HUB_BACKOFF_MIN_MS;
        }
    }
    return 0;
}

/* Reads the configuration and starts the new generation beside the serving one. */
static void hub_restart_begin(struct hub *h, const char *why)
{
    static struct conf nc; /* a few KB: not on the stack */
    struct hub_restart *r = &h->restart;
    char err[512];
    uint64_t now = hub_now_ms();

    hub_notify_reloading();
    snprintf(r->why, sizeof(r->why), "%s", why);
    log_notice("rolling restart (%s): reading the configuration%s%s", why,
               h->conf.file[0] ? " from " : " (no file)", h->conf.file);
    if (hub_reload_conf(h, &nc, err, sizeof(err)) < 0) {
        log_error(0, "reload failed: %s; generation %u keeps running, configuration unchanged", err,
                  h->generation);
        hub_notify_reloaded();
        return;
    }
    r->old_conf = h->conf;
    memcpy(r->old_worker_binary, h->worker_binary, sizeof(h->worker_binary));
    memcpy(r->old_admin_binary, h->admin_binary, sizeof(h->admin_binary));
    h->conf = nc;
    r->old_generation = h->generation;
    r->new_generation = (r->new_generation > h->generation ? r->new_generation : h->generation) + 1;
    r->new_workers = h->conf.workers;
    r->old_drain_ms = r->old_conf.restart_spread_ms + r->old_conf.shutdown_timeout_ms;
    if (hub_resolve_binaries(h, err, sizeof(err)) < 0 ||
        hub_restart_spawn(h, now, err, sizeof(err)) < 0) {
        log_error(0, "reload failed: %s; generation %u keeps running, configuration unchanged", err,
                  h->generation);
        h->conf = r->old_conf;
        memcpy(h->worker_binary, r->old_worker_binary, sizeof(h->worker_binary));
        memcpy(h->admin_binary, r->old_admin_binary, sizeof(h->admin_binary));
        hub_notify_reloaded();
        return;
    }
    hub_conf_apply(h, &r->old_conf);
    r->phase = HUB_RESTART_STARTING;
    r->begun_ms = now;
    r->deadline_ms = now + HUB_RESTART_START_MS;
    log_notice("rolling restart (%s): generation %u (%d worker%s, %s) starting beside "
               "generation %u",
               why, r->new_generation, r->new_workers, r->new_workers == 1 ? "" : "s",
               h->worker_binary, r->old_generation);
}

/* The new generation did not come up: stop it and go back to the previous configuration. */
static void hub_restart_abandon(struct hub *h, const char *reason)
{
    static struct conf was;
    struct hub_restart *r = &h->restart;
    int stopped = hub_generation_signal(h, r->new_generation, SIGTERM);
    was = h->conf;
    h->conf = r->old_conf;
    memcpy(h->worker_binary, r->old_worker_binary, sizeof(h->worker_binary));
    memcpy(h->admin_binary, r->old_admin_binary, sizeof(h->admin_binary));
    hub_conf_apply(h, &was);
    log_error(0,
              "rolling restart to generation %u abandoned: %s; %d of its processes stopped, "
              "generation %u keeps serving with the previous configuration",
              r->new_generation, reason, stopped, h->generation);
    hub_restart_done(h);
}

/* A new admin process on the same socket (it reads the new configuration), then SIGTERM to the
 * old one, which finishes the requests it has. The socket listens throughout. */
static void hub_restart_admin(struct hub *h, uint64_t now)
{
    struct hub_child *cur = &h->children[HUB_ADMIN_INDEX];
    struct hub_child *old = &h->children[HUB_ADMIN_OLD_INDEX];
    if (h->admin_fd < 0 || !cur->wanted || cur->fatal)
        return;
    if (old->pid > 0) {
        log_warn(0,
                 "the admin process a previous reload replaced (pid %d) is still running; "
                 "keeping the current one (pid %d)",
                 (int)old->pid, (int)cur->pid);
        return;
    }
    if (cur->pid > 0) {
        *old = *cur;
        old->wanted = 0;
        old->exiting = 1;
        cur->pid = 0;
    }
    cur->respawn_pending = 0;
    cur->quick_deaths = 0;
    if (hub_child_spawn(h, cur) < 0) {
        cur->started_ms = now;
        cur->respawn_pending = 1;
        cur->respawn_at_ms = now + HUB_BACKOFF_MIN_MS;
    }
    if (old->pid > 0 && kill(old->pid, SIGTERM) < 0 && errno != ESRCH)
        log_error(errno, "kill(%d, SIGTERM) failed", (int)old->pid);
}

/* The new generation serves: make it current, then tell the old one to drain. */
static void hub_restart_handover(struct hub *h, uint64_t now, int serving)
{
    struct hub_restart *r = &h->restart;
    struct shm_header *hdr = h->shm.hdr;
    uint32_t n = (uint32_t)r->new_workers;
    if (n < atomic_load(&hdr->workers_configured)) {
        atomic_store(&hdr->workers_configured, n);
        atomic_store(&hdr->generation, r->new_generation);
    } else {
        atomic_store(&hdr->generation, r->new_generation);
        atomic_store(&hdr->workers_configured, n);
    }
    h->generation = r->new_generation;
    int old = hub_generation_signal(h, r->old_generation, SIGHUP);
    hub_restart_admin(h, now);
    r->phase = HUB_RESTART_DRAINING;
    r->killed = 0;
    r->deadline_ms = now + r->old_drain_ms + HUB_STOP_GRACE_MS;
    log_notice("generation %u serving (%d of %d workers, %llu ms after the request); SIGHUP to "
               "%d worker%s of generation %u: they close their clients with 1012 over %u ms",
               r->new_generation, serving, r->new_workers, (unsigned long long)(now - r->begun_ms),
               old, old == 1 ? "" : "s", r->old_generation, r->old_conf.restart_spread_ms);
}

static void hub_restart_starting_tick(struct hub *h, uint64_t now)
{
    struct hub_restart *r = &h->restart;
    int wanted, serving, failed;
    hub_restart_count(h, r->new_generation, &wanted, &serving, &failed);
    if (wanted > 0 && serving == wanted) {
        hub_restart_handover(h, now, serving);
    } else if (wanted == 0 || failed == wanted) {
        hub_restart_abandon(h, "its workers exited with the fatal code 2");
    } else if (now >= r->deadline_ms && serving == 0) {
        hub_restart_abandon(h, "no new worker was serving after 10 s");
    } else if (now >= r->deadline_ms) {
        log_warn(0,
                 "only %d of %d workers of generation %u serving %d ms after the request; "
                 "handing over anyway",
                 serving, wanted, r->new_generation, HUB_RESTART_START_MS);
        hub_restart_handover(h, now, serving);
    }
}

static void hub_restart_draining_tick(struct hub *h, uint64_t now)
{
    struct hub_restart *r = &h->restart;
    char name[32];
    int left = 0;
    for (int i = 0; i < SHM_MAX_WORKERS; i++)
        left += h->children[i].generation == r->old_generation && h->children[i].pid > 0;
    if (left == 0) {
        log_notice("rolling restart to generation %u complete (%d worker%s, %llu ms)",
                   r->new_generation, r->new_workers, r->new_workers == 1 ? "" : "s",
                   (unsigned long long)(now - r->begun_ms));
        hub_restart_done(h);
        return;
    }
    if (now < r->deadline_ms)
        return;
    if (r->killed) {
        log_error(0,
                  "%d worker%s of generation %u not reaped %d ms after SIGKILL; giving up on "
                  "them",
                  left, left == 1 ? "" : "s", r->old_generation, HUB_KILL_WAIT_MS);
        hub_restart_done(h);
        return;
    }
    for (int i = 0; i < SHM_MAX_WORKERS; i++) {
        struct hub_child *c = &h->children[i];
        if (c->generation != r->old_generation || c->pid <= 0)
            continue;
        log_warn(0, "%s (pid %d, generation %u) still draining %u ms after SIGHUP: SIGKILL",
                 hub_child_name(c, name, sizeof(name)), (int)c->pid, c->generation,
                 r->old_drain_ms + HUB_STOP_GRACE_MS);
        if (kill(c->pid, SIGKILL) < 0 && errno != ESRCH)
            log_error(errno, "kill(%d, SIGKILL) failed", (int)c->pid);
    }
    r->killed = 1;
    r->deadline_ms = now + HUB_KILL_WAIT_MS;
}

void hub_restart_request(struct hub *h, const char *why)
{
    struct hub_restart *r = &h->restart;
    if (h->phase != HUB_PHASE_RUNNING) {
        log_notice("%s: the hub is stopping; no rolling restart", why);
        return;
    }
    if (hub_upgrade_defer_restart(h, why))
        return;
    if (r->phase != HUB_RESTART_IDLE) {
        r->queued++;
        snprintf(r->queued_why, sizeof(r->queued_why), "%s", why);
        log_notice("%s: a rolling restart to generation %u is in progress; another one follows it",
                   why, r->new_generation);
        return;
    }
    hub_restart_begin(h, why);
}

/* Per tick (and after reaps, and every HUB_RESTART_POLL_MS while a generation starts). */
void hub_restart_tick(struct hub *h, uint64_t now)
{
    struct hub_restart *r = &h->restart;
    if (h->phase != HUB_PHASE_RUNNING)
        return;
    uint64_t requested = atomic_load(&h->shm.hdr->restart_requested);
    /* During a binary upgrade a request waits: the hub that owns the instance once only one is
     * left acts on it (hub_upgrade.c passes requests_seen on to the new hub). */
    if (requested != r->requests_seen && h->owner && h->upgrade.phase == HUB_UPGRADE_NONE) {
        char why[48];
        r->requests_seen = requested;
        snprintf(why, sizeof(why), "admin request %llu", (unsigned long long)requested);
        hub_restart_request(h, why);
    }
    if (r->phase == HUB_RESTART_STARTING)
        hub_restart_starting_tick(h, now);
    else if (r->phase == HUB_RESTART_DRAINING)
        hub_restart_draining_tick(h, now);
}

int hub_restart_next_ms(const struct hub *h)
{
    return h->phase == HUB_PHASE_RUNNING && h->restart.phase == HUB_RESTART_STARTING
               ? HUB_RESTART_POLL_MS
               : -1;
}
