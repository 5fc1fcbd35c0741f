/* worker_keepalive.c -- pings quiet clients and hangs up on silent ones with one periodic walk.
 *
 * lws 4.1.6 can do this itself (retry_and_idle_policy), but it keeps each connection's validity
 * timer on the one sorted timer list of the thread, and lws_dll2_add_sorted()
 * (lib/core/lws_dll2.c) inserts by walking from the head. A new validity deadline is the
 * furthest one, so every insert walks the whole list: at each connect, each ping sent, each pong
 * and each lws_validity_confirmed() (then called for every client message). That is O(n) per
 * event and O(n^2) per ping cycle. Measured with 10,000 idle clients on 2 workers: 1.3 s of
 * worker CPU per 30 s cycle (130 us per connection per ping), in bursts of ~0.5 s per worker
 * during which no broadcast is written; at 50,000 per worker the per-connection cost would be 10
 * times that. So lws's policy is disabled (secs_since_valid_hangup = 0, worker.c) and a timer of
 * our own walks the connection list every (idle_timeout - ping_interval) / 4, between 100 ms and
 * 1 s:
 *
 *   silent for idle_timeout   hang up without a close frame, as lws's policy did (IDLE_TIMEOUT)
 *   silent for ping_interval  one ping, unless one went out since the last sign of life (up to a
 *                             quarter earlier, a fixed offset per connection: no ping bursts)
 *
 * The period keeps a ping at most a quarter of the answer time late, so a client has at least
 * three quarters of idle_timeout - ping_interval to answer (when that is 400 ms or more). A walk
 * costs a few ns per connection (~0.5 ms at 50,000), once a second with the defaults.
 *
 * A sign of life is a pong or any client message (worker_proto.c sets last_valid_ms and clears
 * ping_outstanding). The ping is a 4-byte frame written like a broadcast run, only when
 * the connection may be written to directly (worker_deliver.c); one whose earlier write lws is
 * still flushing is pinged at a later walk. A hang-up is carried out by lws up to 1 s later
 * (LWS_TO_KILL_ASYNC on lws's timer list: see worker.c, lws timers).
 */
#include "worker.h"

#include "log.h"

/* Closes a silent connection from lws's own loop; nothing more is written to it. */
static void keepalive_hang_up(struct worker_conn *c, uint64_t idle_ms)
{
    log_debug("no sign of life for %llu ms: hanging up", (unsigned long long)idle_ms);
    c->hung_up = 1;
    c->lws_closing = 1;
    lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
}

/* Up to a quarter of ping_interval earlier, fixed per connection: clients that connected
 * together (after a restart, a deploy) would otherwise all be pinged in the same walk, a burst
 * of thousands of writes that delays broadcasts (W8 measured p99.9 183 ms with it, 17 ms
 * without pings). */
static uint64_t keepalive_jitter_ms(const struct worker *w, const struct worker_conn *c)
{
    uint64_t span = w->conf.ping_interval_ms / 4;
    uint64_t h = ((uint64_t)(uintptr_t)c >> 4) * 0x9E3779B97F4A7C15ULL;
    return span > 0 ? (h >> 32) % span : 0;
}

static void keepalive_sweep_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct worker *w = ev_userdata(loop);
    (void)t;
    (void)revents;
    uint64_t now = shm_mono_ns() / 1000000u;
    for (struct worker_conn *c = w->conns.next; c != &w->conns; c = c->next) {
        if (c->lws_closing || c->peer_close_code != 0)
            continue; /* already on its way out */
        uint64_t idle = now > c->last_valid_ms ? now - c->last_valid_ms : 0;
        if (idle >= w->conf.idle_timeout_ms)
            keepalive_hang_up(c, idle);
        else if (idle + keepalive_jitter_ms(w, c) >= w->conf.ping_interval_ms &&
                 !c->ping_outstanding)
            worker_deliver_ping(c);
    }
}

void worker_keepalive_start(struct worker *w)
{
    double period = (w->conf.idle_timeout_ms - w->conf.ping_interval_ms) / 4000.0;
    if (period < WORKER_KEEPALIVE_MIN_PERIOD)
        period = WORKER_KEEPALIVE_MIN_PERIOD;
    if (period > WORKER_KEEPALIVE_MAX_PERIOD)
        period = WORKER_KEEPALIVE_MAX_PERIOD;
    ev_timer_init(&w->keepalive_timer, keepalive_sweep_cb, period, period);
    ev_timer_start(w->loop, &w->keepalive_timer);
}
