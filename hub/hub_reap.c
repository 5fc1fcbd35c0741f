/* hub_reap.c -- what happens after a child dies: log, free its rows, respawn with a backoff.
 *
 * On SIGCHLD the hub reaps with waitpid(-1, WNOHANG) until nothing is left, because signals
 * coalesce. For each exit it logs the status the way nginx does ("exited with code 1", "killed by
 * signal 11 (SIGSEGV, core dumped)"), records it in the worker's shm slot, and frees every
 * connection row the dead worker owned (conntab_reclaim_worker), resetting its "connections"
 * gauge. Its other counters are kept so totals stay monotonic across respawns.
 *
 * Respawn policy, per entry:
 *   - an exit we asked for (stop, later rolling restart): nothing;
 *   - exit code 2 means "fatal configuration or layout error": never respawned; when no worker of
 *     the current generation is left to run the hub stops with exit code 1;
 *   - anything else: respawned at once the first time; if the process had lived less than
 *     HUB_STABLE_UPTIME_MS, the next delay is 100 ms, doubling up to respawn_delay_max. Living
 *     longer than that resets the backoff. Respawns due later are started from the loop, whose
 *     poll timeout is the earliest due respawn.
 * A fatally exited admin also takes the admin socket down: a socket nobody accepts on would make
 * the web server wait for its timeout, while a missing one is refused at once (502 -> 503).
 *
 * The sweep: for HUB_SWEEP_TICKS ticks after a worker died, and only while its slot has no
 * process, the hub reclaims that slot's rows again. Nothing should be found (the worker is dead
 * before waitpid returns), so anything found is logged as a warning: it would mean a row was
 * published late, e.g. by a claim that was repaired after EOWNERDEAD. Live slots are never swept,
 * so the sweep costs nothing in a healthy hub.
 *
 * During a binary upgrade (hub_upgrade.c) two hubs share the worker slots. Each supervises only
 * its own children; hub_slot_is_free() keeps either from starting a process in a slot the other
 * holds, and when one hub dies the survivor frees the rows of the dead hub's workers once they
 * are gone (hub_sweep_foreign_slots), as it would for its own.
 */
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

#include "conntab.h"
#include "hub.h"
#include "log.h"

static void hub_log_exit(const struct hub *h, const struct hub_child *c, pid_t pid, int status)
{
    char name[32];
    int expected = c->exiting || h->phase != HUB_PHASE_RUNNING;
    hub_child_name(c, name, sizeof(name));
    if (WIFEXITED(status)) {
        int code = WEXITSTATUS(status);
        enum log_level lvl = code == 0 && expected ? LOG_LEVEL_NOTICE
                             : code == 2           ? LOG_LEVEL_ERROR
                                                   : LOG_LEVEL_WARN;
        log_at(lvl, 0, "%s (pid %d) exited with code %d", name, (int)pid, code);
    } else if (WIFSIGNALED(status)) {
        int sig = WTERMSIG(status);
        log_at(expected ? LOG_LEVEL_NOTICE : LOG_LEVEL_WARN, 0,
               "%s (pid %d) killed by signal %d (SIG%s%s)", name, (int)pid, sig,
               sigabbrev_np(sig) ? sigabbrev_np(sig) : "?",
               WCOREDUMP(status) ? ", core dumped" : "");
    } else {
        log_warn(0, "%s (pid %d) ended with wait status 0x%x", name, (int)pid, (unsigned)status);
    }
}

/* Frees every row the worker slot still owns. Returns how many. */
static uint32_t hub_reclaim_rows(struct hub *h, const struct hub_child *c)
{
    struct shm_worker *w = shm_worker(&h->shm, (unsigned)c->slot);
    uint32_t n = conntab_reclaim_worker(&h->shm, (unsigned)c->slot, 0);
    atomic_store_explicit(&w->stats.connections, 0, memory_order_relaxed);
    return n;
}

static void hub_slot_exited(struct hub *h, struct hub_child *c, int status)
{
    struct shm_worker *w = shm_worker(&h->shm, (unsigned)c->slot);
    atomic_store(&w->last_exit_status, status);
    atomic_store(&w->last_exit_at_ms, shm_now_ms());
    atomic_store(&w->doorbell_armed, 0);
    atomic_store(&w->pid, 0);
    atomic_store(&w->state, SHM_WORKER_EXITED);
    uint32_t n = hub_reclaim_rows(h, c);
    log_info("worker #%d: reclaimed %u connection row%s", c->slot, n, n == 1 ? "" : "s");
    c->sweeps_left = HUB_SWEEP_TICKS;
}

static uint64_t hub_backoff_ms(const struct hub *h, uint32_t quick_deaths)
{
    if (quick_deaths <= 1)
        return 0;
    uint64_t d = HUB_BACKOFF_MIN_MS;
    for (uint32_t i = 2; i < quick_deaths && d < h->conf.respawn_delay_max_ms; i++)
        d *= 2;
    return d < h->conf.respawn_delay_max_ms ? d : h->conf.respawn_delay_max_ms;
}

static void hub_schedule_respawn(struct hub *h, struct hub_child *c, uint64_t now)
{
    char name[32];
    if (now - c->started_ms >= HUB_STABLE_UPTIME_MS)
        c->quick_deaths = 0;
    c->quick_deaths++;
    uint64_t delay = hub_backoff_ms(h, c->quick_deaths);
    c->respawn_pending = 1;
    c->respawn_at_ms = now + delay;
    if (delay > 0)
        log_warn(0, "%s died %u times in a row within %d s of starting; respawning in %llu ms",
                 hub_child_name(c, name, sizeof(name)), c->quick_deaths,
                 HUB_STABLE_UPTIME_MS / 1000, (unsigned long long)delay);
}

/* Stops the hub when no worker of the current generation can run any more. */
static void hub_check_all_fatal(struct hub *h)
{
    for (int i = 0; i < SHM_MAX_WORKERS; i++) {
        const struct hub_child *c = &h->children[i];
        if (c->wanted && !c->fatal)
            return;
    }
    log_error(0, "every worker exited with the fatal code 2; stopping");
    h->exit_code = 1;
    hub_stop_begin(h, "no workers left");
}

static void hub_reap_one(struct hub *h, struct hub_child *c, pid_t pid, int status, uint64_t now)
{
    char name[32];
    hub_log_exit(h, c, pid, status);
    c->pid = 0;
    if (c->role == HUB_ROLE_WORKER)
        hub_slot_exited(h, c, status);
    if (c->exiting || h->phase != HUB_PHASE_RUNNING) {
        c->exiting = 0;
        return;
    }
    if (c->fatal || (WIFEXITED(status) && WEXITSTATUS(status) == 2)) {
        if (!c->fatal)
            log_error(0, "%s exited with the fatal code 2: not respawning it",
                      hub_child_name(c, name, sizeof(name)));
        c->fatal = 1;
        if (c->role == HUB_ROLE_WORKER)
            hub_check_all_fatal(h);
        else
            hub_admin_close(h);
        return;
    }
    hub_schedule_respawn(h, c, now);
}

/* Starts every respawn that is due. None while a binary upgrade's new hub starts: it has taken
 * hdr->hub_pid, which a new worker of ours would refuse; the respawn waits for the outcome. */
void hub_respawn_due(struct hub *h, uint64_t now)
{
    char name[32];
    if (h->upgrade.phase == HUB_UPGRADE_SPAWNED)
        return;
    for (int i = 0; i < HUB_MAX_CHILDREN; i++) {
        struct hub_child *c = &h->children[i];
        if (!c->respawn_pending || c->respawn_at_ms > now || c->pid > 0)
            continue;
        c->respawn_pending = 0;
        if (h->phase != HUB_PHASE_RUNNING || !c->wanted || c->fatal)
            continue;
        c->restarts++;
        if (c->role == HUB_ROLE_WORKER)
            atomic_fetch_add(&shm_worker(&h->shm, (unsigned)c->slot)->restarts, 1);
        log_notice("respawning %s (restart %u)", hub_child_name(c, name, sizeof(name)),
                   c->restarts);
        if (hub_child_spawn(h, c) < 0) {
            c->started_ms = now; /* count the failed start as a quick death */
            hub_schedule_respawn(h, c, now);
        }
    }
}

/* Milliseconds until the earliest pending respawn, -1 if none: the loop's poll timeout, so a
 * 100 ms backoff is not rounded up to the tick. */
int hub_respawn_next_ms(const struct hub *h, uint64_t now)
{
    int64_t best = -1;
    if (h->upgrade.phase == HUB_UPGRADE_SPAWNED)
        return -1;
    for (int i = 0; i < HUB_MAX_CHILDREN; i++) {
        const struct hub_child *c = &h->children[i];
        if (!c->respawn_pending)
            continue;
        int64_t left = c->respawn_at_ms > now ? (int64_t)(c->respawn_at_ms - now) : 0;
        if (best < 0 || left < best)
            best = left;
    }
    return best > HUB_TICK_MS ? HUB_TICK_MS : (int)best;
}

void hub_reap(struct hub *h)
{
    uint64_t now = hub_now_ms();
    for (;;) {
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid == 0)
            break;
        if (pid < 0) {
            if (errno == EINTR)
                continue;
            if (errno != ECHILD)
                log_error(errno, "waitpid() failed");
            break;
        }
        struct hub_child *c = hub_child_by_pid(h, pid);
        if (c == NULL) {
            log_notice("reaped unknown child pid %d (status 0x%x)", (int)pid, (unsigned)status);
            continue;
        }
        hub_reap_one(h, c, pid, status, now);
    }
    hub_respawn_due(h, now);
}

/* True when worker slot `slot` can take a new process: nothing of ours runs or is due there,
 * and no other hub's process holds it (during a binary upgrade two hubs share the slots). */
int hub_slot_is_free(const struct hub *h, int slot)
{
    const struct hub_child *c = &h->children[slot];
    if (c->wanted || c->pid != 0 || c->respawn_pending)
        return 0;
    return atomic_load(&shm_worker(&h->shm, (unsigned)slot)->pid) == 0;
}

/* True when `pid` no longer runs: no such process, or a zombie nobody has reaped yet (an orphan
 * whose new parent does not reap: its descriptors and mappings are released already). */
static int hub_pid_is_gone(pid_t pid)
{
    char path[32], buf[256];
    if (kill(pid, 0) < 0 && errno == ESRCH)
        return 1;
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return errno == ENOENT;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *paren = strrchr(buf, ')'); /* the command name may contain anything */
    return paren != NULL && paren[1] == ' ' && (paren[2] == 'Z' || paren[2] == 'X');
}

/* After the other hub of a binary upgrade died: the slots its workers held are ours to clean.
 * A slot whose recorded process no longer exists (not even as a zombie) has its rows freed and
 * becomes EXITED. Returns how many slots still belong to a live process of the other hub. */
int hub_sweep_foreign_slots(struct hub *h)
{
    int left = 0;
    for (int i = 0; i < SHM_MAX_WORKERS; i++) {
        struct hub_child *c = &h->children[i];
        struct shm_worker *w = shm_worker(&h->shm, (unsigned)i);
        pid_t pid = atomic_load(&w->pid);
        if (pid == 0 || pid == c->pid)
            continue;
        if (!hub_pid_is_gone(pid)) {
            left++;
            continue;
        }
        atomic_store(&w->doorbell_armed, 0);
        atomic_store(&w->pid, 0);
        atomic_store(&w->state, SHM_WORKER_EXITED);
        uint32_t n = hub_reclaim_rows(h, c);
        log_notice("worker #%d (pid %d) of the other hub is gone: reclaimed %u connection row%s", i,
                   (int)pid, n, n == 1 ? "" : "s");
    }
    return left;
}

/* Per tick: log workers that became ready, re-sweep dead slots, start due respawns. */
void hub_reap_tick(struct hub *h, uint64_t now)
{
    for (int i = 0; i < SHM_MAX_WORKERS; i++) {
        struct hub_child *c = &h->children[i];
        const struct shm_worker *w = shm_worker(&h->shm, (unsigned)i);
        if (c->pid > 0 && !c->ready_logged && atomic_load(&w->state) == SHM_WORKER_RUNNING) {
            c->ready_logged = 1;
            log_info("worker #%d (pid %d) is serving, %llu ms after start", i, (int)c->pid,
                     (unsigned long long)(now - c->started_ms));
        }
        if (c->pid == 0 && c->sweeps_left > 0) {
            c->sweeps_left--;
            uint32_t n = hub_reclaim_rows(h, c);
            if (n > 0)
                log_warn(0, "worker #%d: swept %u orphaned connection row%s after its exit", i, n,
                         n == 1 ? "" : "s");
        }
    }
    hub_respawn_due(h, now);
}
