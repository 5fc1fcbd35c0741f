/* hub_stop.c -- stopping the hub: graceful first, then SIGKILL.
 *
 *   RUNNING --SIGTERM/INT/QUIT--> DRAINING --deadline or 2nd signal--> KILLING --all reaped--> exit
 *
 * DRAINING: hub_state becomes STOPPING in the segment (producers refuse broadcasts with 503),
 * pending respawns are cancelled and every child gets SIGTERM; workers deliver what is in the
 * ring, close their clients with 1001 and exit 0. The deadline is shutdown_timeout (the workers'
 * own drain limit) plus HUB_STOP_GRACE_MS. Unlike nginx we do not re-send SIGTERM at growing
 * intervals: our children act on the first one, so repeating it would only add log noise.
 *
 * KILLING: every child still running is named in the log and gets SIGKILL; the hub then waits up
 * to HUB_KILL_WAIT_MS for the reaps (a process in uninterruptible sleep can outlive SIGKILL; the
 * hub then gives up rather than hang). Having had to kill anything makes the exit code 1.
 *
 * During a binary upgrade (hub_upgrade.c) only the hub that owns the instance marks the segment
 * STOPPING, stops the Redis bridge and tells systemd: a new hub that has not taken over, or an old
 * one that already handed over, stops its own children and nothing else. The old hub stops a new
 * hub that is still starting along with its own children.
 */
#include <signal.h>
#include <stdatomic.h>

#include "hub.h"
#include "hub_redis.h"
#include "log.h"

void hub_stop_begin(struct hub *h, const char *why)
{
    if (h->phase != HUB_PHASE_RUNNING)
        return;
    if (h->owner) { /* not the new hub of an upgrade before the hand-over, nor the old one after */
        atomic_store(&h->shm.hdr->hub_state, SHM_HUB_STOPPING);
        hub_redis_stop(); /* Redis bridge (issue 8): deliver what waits for the stream, first */
    }
    hub_upgrade_stop(h, SIGTERM); /* a new hub still starting is stopped with us */
    for (int i = 0; i < HUB_MAX_CHILDREN; i++) {
        struct hub_child *c = &h->children[i];
        c->respawn_pending = 0;
        c->wanted = 0;
        if (c->pid > 0)
            c->exiting = 1;
    }
    h->phase = HUB_PHASE_DRAINING;
    if (h->owner)
        hub_notify_stopping();
    h->phase_deadline_ms = hub_now_ms() + h->conf.shutdown_timeout_ms + HUB_STOP_GRACE_MS;
    log_notice("stopping (%s): sending SIGTERM to %d process%s, waiting up to %u ms", why,
               hub_children_live(h), hub_children_live(h) == 1 ? "" : "es",
               h->conf.shutdown_timeout_ms + HUB_STOP_GRACE_MS);
    hub_children_kill(h, SIGTERM, 0);
}

/* SIGKILLs every child still running and waits for the reaps. */
static void hub_stop_kill(struct hub *h)
{
    if (hub_children_live(h) > 0) {
        h->exit_code = 1;
        hub_children_kill(h, SIGKILL, 1);
    }
    hub_upgrade_stop(h, SIGKILL);
    h->phase = HUB_PHASE_KILLING;
    h->phase_deadline_ms = hub_now_ms() + HUB_KILL_WAIT_MS;
}

/* A second stop signal: no more waiting. */
void hub_stop_force(struct hub *h)
{
    if (h->phase == HUB_PHASE_RUNNING)
        hub_stop_begin(h, "forced");
    if (h->phase == HUB_PHASE_KILLING)
        return;
    h->exit_code = 1;
    hub_stop_kill(h);
}

void hub_stop_tick(struct hub *h, uint64_t now)
{
    if (h->phase == HUB_PHASE_DRAINING && now >= h->phase_deadline_ms) {
        log_warn(0, "%d process%s still running %u ms after SIGTERM", hub_children_live(h),
                 hub_children_live(h) == 1 ? "" : "es",
                 h->conf.shutdown_timeout_ms + HUB_STOP_GRACE_MS);
        hub_stop_kill(h);
    } else if (h->phase == HUB_PHASE_KILLING && now >= h->phase_deadline_ms &&
               (hub_children_live(h) > 0 || hub_upgrade_child_live(h))) {
        int n = hub_children_live(h) + hub_upgrade_child_live(h);
        log_error(0, "%d process%s not reaped %d ms after SIGKILL; giving up on them", n,
                  n == 1 ? "" : "es", HUB_KILL_WAIT_MS);
        for (int i = 0; i < HUB_MAX_CHILDREN; i++)
            h->children[i].pid = 0;
        hub_upgrade_stop(h, 0); /* 0: forget it */
    }
}

/* True once a stop was requested and no child is left (or the ones left were given up on),
 * including the new hub of a binary upgrade that had not taken over yet. */
int hub_stop_is_done(const struct hub *h)
{
    return h->phase != HUB_PHASE_RUNNING && hub_children_live(h) == 0 && !hub_upgrade_child_live(h);
}
