/* worker_restart.c -- leaving for a new generation: the drain of a rolling restart (SIGHUP).
 *
 * The hub sends SIGHUP once a new generation of workers serves from the same listening socket
 * (hub/hub_restart.c). Like the graceful stop (worker_signal.c) this worker stops accepting and
 * marks its slot DRAINING, but it closes its clients with 1012 (service restart) instead of 1001,
 * and not all at once: they would all reconnect in the same instant. The closes are spread evenly
 * over restart_spread. A timer fires RESTART_BATCHES times over the window (every 5 to 50 ms) and
 * closes the due share of the connections not yet closing, oldest first: the share accumulates as
 * open * period / time left, so the pace stays even whatever arrives or leaves meanwhile, and at
 * the end of the window every connection left is closed.
 *
 * Each close is planned at the frame buffer's tail at that moment (worker_conn_schedule_close,
 * after a pump of the ring): a client keeps receiving every broadcast published before its own
 * close, then the close frame, so nothing it was sent is lost or sent twice, and a client that
 * resumes picks up from its last sequence on the new generation. Handshakes this worker had
 * already accepted complete (no 503 as in a stop: the client did nothing wrong) and are closed
 * in turn. The worker exits 0 when its last connection is gone; restart_spread + shutdown_timeout
 * after the signal it cuts whoever is left (counted as RESTART closes); the hub SIGKILLs it 2 s
 * after that. A SIGTERM meanwhile (the hub stopping) turns the rest of the drain into the usual
 * stop: the clients not yet closing get 1001 at once.
 */
#include "worker.h"

#include <stdatomic.h>

#include "log.h"

#define RESTART_BATCHES    100   /* close batches over restart_spread */
#define RESTART_PERIOD_MIN 0.005 /* seconds between batches, at least */
#define RESTART_PERIOD_MAX 0.05  /* and at most */

static double restart_period(const struct worker *w)
{
    double p = w->conf.restart_spread_ms / 1000.0 / RESTART_BATCHES;
    if (p < RESTART_PERIOD_MIN)
        return RESTART_PERIOD_MIN;
    return p > RESTART_PERIOD_MAX ? RESTART_PERIOD_MAX : p;
}

/* Connections not yet planned to close. */
static uint32_t restart_open(const struct worker *w)
{
    uint32_t n = 0;
    for (const struct worker_conn *c = w->conns.next; c != &w->conns; c = c->next)
        n += c->close_at == WORKER_NO_FRAME;
    return n;
}

/* Plans a close with `code` for up to n connections not yet closing, oldest first, after
 * everything published until now. */
static void restart_close(struct worker *w, uint32_t n, uint16_t code, enum shm_close_reason why)
{
    worker_fanout_pump(w);
    for (struct worker_conn *c = w->conns.next; c != &w->conns && n > 0; c = c->next) {
        if (c->close_at != WORKER_NO_FRAME)
            continue;
        worker_conn_schedule_close(c, w->fan.tail, code, why);
        n--;
    }
}

static void restart_tick_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct worker *w = ev_userdata(loop);
    (void)t;
    (void)revents;
    uint32_t open = restart_open(w);
    if (open == 0) {
        /* The timer stays while a handshake is in flight: it may yet become a connection. Its
         * end is a WSI_DESTROY, which calls nothing of ours, hence the check here. */
        worker_stop_check(w);
        return;
    }
    double left = w->restart_end - ev_now(loop), period = restart_period(w);
    uint32_t n = open;
    if (left > period) {
        w->restart_credit += open * period / left;
        n = (uint32_t)w->restart_credit;
        w->restart_credit -= n;
    }
    if (n > 0)
        restart_close(w, n, WORKER_CLOSE_SERVICE_RESTART, SHM_CLOSE_RESTART);
}

void worker_restart_begin(struct worker *w)
{
    if (w->draining)
        return; /* already leaving */
    double spread = w->conf.restart_spread_ms / 1000.0;
    log_notice("SIGHUP: a new generation serves; closing %u connections with 1012 over %u ms",
               w->nconns, w->conf.restart_spread_ms);
    w->draining = 1;
    w->restarting = 1;
    atomic_store(&w->self->state, SHM_WORKER_DRAINING);
    worker_accept_stop(w);
    w->restart_end = ev_now(w->loop) + spread;
    w->restart_credit = 0;
    if (w->conf.restart_spread_ms == 0)
        restart_close(w, UINT32_MAX, WORKER_CLOSE_SERVICE_RESTART, SHM_CLOSE_RESTART);
    double period = restart_period(w);
    ev_timer_init(&w->restart_timer, restart_tick_cb, period, period);
    ev_timer_start(w->loop, &w->restart_timer);
    worker_drain_deadline_start(w, spread + w->conf.shutdown_timeout_ms / 1000.0);
    worker_stop_check(w);
}

void worker_restart_to_stop(struct worker *w, const char *why)
{
    if (!w->restarting)
        return;
    uint32_t open = restart_open(w);
    log_notice("%s during the restart drain: %u connections not yet closing get 1001 now", why,
               open);
    w->restarting = 0;
    ev_timer_stop(w->loop, &w->restart_timer);
    restart_close(w, UINT32_MAX, LWS_CLOSE_STATUS_GOINGAWAY, SHM_CLOSE_SHUTDOWN);
    worker_stop_check(w); /* nothing may be left but a handshake that has ended since */
}
