/* worker_deliver.c -- writing runs of whole frames from the local buffer to the connections.
 *
 * Two paths write, both through conn_send(): one lws_write(LWS_WRITE_RAW) of the whole frames
 * between the cursor and the buffer tail that are contiguous in memory, up to
 * WORKER_WRITE_BUDGET bytes but at least one frame. LWS_WRITE_RAW (== LWS_WRITE_HTTP) goes
 * straight to lws_issue_raw() without ws framing (lib/roles/ws/ops-ws.c, v4.1.6), so it needs no
 * LWS_PRE.
 *
 *   direct     worker_deliver_all(), called by the pump when new frames arrived: every idle
 *              connection is written to at once, outside any lws callback.
 *   WRITEABLE  worker_deliver_writeable(), LWS_CALLBACK_SERVER_WRITEABLE: connections the direct
 *              path skipped (lws holds part of an earlier write, more than one budget is due, or
 *              a close is due, which only a callback can do by returning -1).
 * The keepalive ping (worker_keepalive.c) is written the same way as a direct run.
 *
 * Why direct: asking lws for POLLOUT on every connection and writing from the callback costs two
 * epoll_ctl() calls (POLLOUT on, then lws's one-shot POLLOUT off) plus an epoll_wait() share per
 * delivery, three syscalls where the send() is the only one needed. Measured (1,000 subscribers,
 * 10 broadcasts/s): 3.06 -> 1.06 syscalls and 12.8 -> 8.5 us of server CPU per delivery. What
 * is left is the send() itself (~90% of the worker's CPU, most of it loopback TCP and waking the
 * reader); at high rates a write carries many frames and the cost per delivery falls with it.
 *
 * Why writing outside WRITEABLE is safe here (lws 4.1.6 source; re-check on an lws upgrade):
 *  - Whole frames only. lws_issue_raw() (lib/core-net/output.c) sends what the socket takes and
 *    copies the rest to wsi->buflist_out; any later lws_write() (ours, or lws's own pong or
 *    close) is appended behind it, and lws_handle_POLLOUT_event() (lib/core-net/service.c)
 *    flushes that buffer before anything else. We write directly only while it is empty
 *    (lws_partial_buffered()), so a control frame can only ever land between two of our frames.
 *  - No pending lws frame is overtaken harmfully. A pong lws has queued (ping_pending_flag;
 *    rops_handle_POLLOUT_ws, lib/roles/ws/ops-ws.c) goes out at the next POLLOUT, after our
 *    frame: control frames may follow any whole data frame.
 *  - Nothing after a close frame. The peer's close: LWS_CALLBACK_WS_PEER_INITIATED_CLOSE sets
 *    peer_close_code before lws echoes it, and we stop. lws's own close with a status (protocol
 *    error, our lws_close_reason()): __lws_close_free_wsi() (lib/core-net/close.c) calls
 *    LWS_CALLBACK_WS_SERVER_DROP_PROTOCOL before it queues the close frame
 *    (LRS_WAITING_TO_SEND_CLOSE) and before it shuts the socket down, and we stop at that
 *    callback (lws_closing). Our own close is planned in close_at and nothing at or past it is
 *    written. FLUSHING_BEFORE_CLOSE only happens with buflist_out non-empty, where we do not write.
 *    The same flags now also guard WRITEABLE, which lws 4.1.6 calls in LRS_AWAITING_CLOSE_ACK:
 *    the callback-only version sent every later broadcast after lws's 1002 close frame.
 *  - could_have_pending only feeds a disabled diagnostic ("if (0 && ...)" in lws_issue_raw).
 *    tx_draining_ext is only set when an extension's PAYLOAD_TX has more to give; our
 *    permessage-deflate extension (worker_deflate.c) never gets a frame to compress (our frames
 *    are LWS_WRITE_RAW, pre-compressed in worker_fanout.c) and asks for nothing; the role's
 *    write path has no other state. No TLS: send() is lws_ssl_capable_write_no_ssl().
 *  - A failed send (EPIPE, ECONNRESET) makes lws mark the socket permanently unusable; we cannot
 *    return -1 outside a callback, so we stop writing (lws_closing) and ask lws to close it from
 *    its own loop (lws_set_timeout LWS_TO_KILL_ASYNC); epoll reports the error sooner anyway.
 *  - The pump and the keepalive run from our own libev watchers (doorbell, prepare, signals,
 *    timers), never inside an lws callback, so no lws_write() is nested in lws's handling of
 *    another event.
 *
 * A connection the direct path wrote to but left behind the tail (a budget's worth, or the
 * buffer wraps between frames) asks for WRITEABLE; one with a partial write pending gets it from
 * lws when the flush completes ("always callback on writeable" in lws_issue_raw). The cost of
 * whole frames: what the socket did not take is copied to the heap by lws, at most one write per
 * connection (a budget, or one maximal frame: up to max_message bytes for a stalled client).
 *
 * Counters: the per-frame latency samples and the worker totals are tallied locally and added to
 * the shared stats once per walk (or once per WRITEABLE call), not with 4 locked increments per
 * delivery; that was under 0.2% of the worker's CPU, but the tally also keeps the stats line,
 * which admin scrapes read, from bouncing. Rows in the connection table are still updated per
 * write (each connection has its own row; ~1.5% of the worker's CPU, its cache miss).
 */
#include "worker.h"

#include <string.h>

#include "conntab.h"
#include "stats.h"

/* Counters gathered over several writes, then added to the shared stats at once. */
struct deliver_tally {
    uint64_t messages, bytes, writes;
    uint64_t latency[SHM_LATENCY_BUCKETS];
};

/* The histogram bucket of shm_layout.h: bucket i holds [2^i, 2^(i+1)) microseconds, 0 in 0. */
static unsigned latency_bucket(uint64_t us)
{
    unsigned b = us == 0 ? 0 : 63u - (unsigned)__builtin_clzll(us);
    return b < SHM_LATENCY_BUCKETS ? b : SHM_LATENCY_BUCKETS - 1;
}

static void tally_flush(struct worker *w, struct deliver_tally *t)
{
    if (t->writes == 0)
        return;
    stats_add(&w->stats->messages_out, t->messages);
    stats_add(&w->stats->bytes_out, t->bytes);
    stats_add(&w->stats->writes, t->writes);
    for (unsigned i = 0; i < SHM_LATENCY_BUCKETS; i++) {
        if (t->latency[i] != 0)
            stats_add(&w->stats->latency_us[i], t->latency[i]);
    }
    memset(t, 0, sizeof(*t));
}

/* The wshub.v1 control messages due before the next frame: the welcome, then replies to the
 * client's commands, then a gap notice. */
static int conn_send_control(struct worker *w, struct worker_conn *c, struct deliver_tally *t)
{
    uint8_t buf[WORKER_V1_CONTROL_MAX];
    size_t len;
    while ((c->pending != 0 || c->reply_len != 0) && !lws_partial_buffered(c->wsi)) {
        if (c->reply_len > 0 && !(c->pending & WORKER_PENDING_WELCOME)) {
            /* replies to commands (worker_channels.c), after the welcome */
            if (lws_write(c->wsi, c->reply, c->reply_len, LWS_WRITE_RAW) < (int)c->reply_len)
                return -1;
            free(c->reply);
            c->reply = NULL;
            c->reply_len = 0;
        } else if ((len = worker_v1_control(w, c, buf, sizeof(buf))) > 0) {
            if (lws_write(c->wsi, buf, len, LWS_WRITE_RAW) < (int)len)
                return -1;
        } else {
            break;
        }
        t->writes++;
    }
    return 0;
}

/* Moves the cursor over frames c does not want (other channels, or seen before a resume); a
 * connection that reaches the tail wants nothing buffered and is no longer busy. */
static void conn_skip_unwanted(const struct worker_fanout *f, struct worker_conn *c, uint64_t limit)
{
    while (c->cursor < limit) {
        const struct worker_frame *fr = worker_fanout_frame(f, c->cursor);
        if (fr->seq > c->skip_through && worker_conn_wants(c, c->cursor, fr->chan_key))
            break;
        c->cursor++;
    }
    if (c->cursor >= f->tail)
        c->busy = 0;
}

/* Writes pending control messages, then one run of whole frames from the cursor up to `limit`,
 * and tallies it. Returns 0, or -1 when lws reports the socket broken. */
static int conn_send(struct worker *w, struct worker_conn *c, uint64_t limit,
                     struct deliver_tally *t)
{
    const struct worker_fanout *f = &w->fan;
    const uint8_t *ptr;
    size_t len;
    if (c->pending != 0 || c->reply_len != 0) {
        if (conn_send_control(w, c, t) < 0)
            return -1;
        if (lws_partial_buffered(c->wsi))
            return 0; /* the frames follow once lws has flushed it */
    }
    conn_skip_unwanted(f, c, limit);
    if (c->cursor >= limit)
        return 0;
    uint64_t n = worker_fanout_gather(f, c, c->cursor, limit, WORKER_WRITE_BUDGET, &ptr, &len);
    if (len > 0 && lws_write(c->wsi, (unsigned char *)ptr, len, LWS_WRITE_RAW) < (int)len)
        return -1;
    uint64_t now = shm_mono_ns(), payload = 0, messages = 0;
    for (uint64_t k = c->cursor; k < c->cursor + n; k++) {
        const struct worker_frame *fr = worker_fanout_frame(f, k);
        if (fr->kind == WORKER_FRAME_GAP) {
            c->last_seq = fr->gap_to;
            continue;
        }
        c->last_seq = fr->seq;
        messages++;
        payload += fr->payload_len;
        uint64_t age = now > fr->published_ns ? now - fr->published_ns : 0;
        t->latency[latency_bucket(age / 1000u)]++;
    }
    c->cursor += n;
    conn_skip_unwanted(f, c, limit);
    t->messages += messages;
    t->bytes += payload;
    t->writes += len > 0;
    if (c->row != CONNTAB_NONE && messages > 0)
        conntab_note_out(&w->shm, c->row, messages, payload);
    return 0;
}

/* Whether frames may be written to c right now, outside a callback (see the top comment). */
static int conn_may_write(const struct worker_conn *c)
{
    return c->on_list && !c->lws_closing && c->peer_close_code == 0 &&
           !lws_partial_buffered(c->wsi);
}

/* A write outside a callback failed: lws marked the socket unusable and must close it itself. */
static void conn_write_failed(struct worker_conn *c)
{
    c->lws_closing = 1;
    lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
}

/* The direct path for one connection that is behind the tail and may be written to. */
static void conn_deliver_direct(struct worker *w, struct worker_conn *c, struct deliver_tally *t)
{
    const struct worker_fanout *f = &w->fan;
    if ((c->cursor < f->head && worker_fanout_lapped(w, c) < 0) || c->cursor >= c->close_at) {
        lws_callback_on_writable(c->wsi); /* its close is due: only WRITEABLE can close it */
        return;
    }
    uint64_t limit = c->close_at < f->tail ? c->close_at : f->tail;
    if (conn_send(w, c, limit, t) < 0) {
        conn_write_failed(c);
        return;
    }
    if ((c->cursor < f->tail || c->cursor >= c->close_at) && !lws_partial_buffered(c->wsi))
        lws_callback_on_writable(c->wsi);
}

/* c wants a frame numbered >= from: a connection that wanted nothing before may have a stale
 * cursor, which moves to `from` (every earlier frame was unwanted or sent). */
static void deliver_visit(struct worker *w, struct worker_conn *c, uint64_t from,
                          struct deliver_tally *t)
{
    if (!c->busy && c->cursor < from)
        c->cursor = from;
    if (c->cursor >= w->fan.tail)
        return; /* already sent past it */
    c->busy = 1;
    if (conn_may_write(c))
        conn_deliver_direct(w, c, t);
}

/* A broadcast to everyone visits every connection once per pump; a channel's broadcast visits
 * that channel's subscribers only. */
void worker_deliver_all(struct worker *w, uint64_t from)
{
    const struct worker_fanout *f = &w->fan;
    struct deliver_tally t;
    uint64_t last_key = WORKER_CHAN_ALL;
    int all = 0;
    memset(&t, 0, sizeof(t));
    for (uint64_t k = from; k < f->tail && !all; k++)
        all = worker_fanout_frame(f, k)->chan_key == WORKER_CHAN_ALL;
    if (all) {
        for (struct worker_conn *c = w->conns.next; c != &w->conns; c = c->next)
            deliver_visit(w, c, from, &t);
    }
    for (uint64_t k = from; k < f->tail; k++) {
        uint64_t key = worker_fanout_frame(f, k)->chan_key;
        if (key == WORKER_CHAN_ALL || key == last_key)
            continue;
        last_key = key;
        struct worker_chan *ch = worker_channel_find(w, key);
        for (struct worker_sub *s = ch != NULL ? ch->subs : NULL; s != NULL; s = s->cnext)
            deliver_visit(w, s->conn, from, &t);
    }
    tally_flush(w, &t);
}

int worker_deliver_writeable(struct worker *w, struct worker_conn *c)
{
    struct deliver_tally t;
    if (!c->on_list || c->lws_closing || lws_partial_buffered(c->wsi))
        return 0; /* closing, or lws is still flushing the last write: it calls us again */
    if (c->cursor < w->fan.head)
        worker_fanout_lapped(w, c); /* skips ahead, or plans the 1013 close */
    uint64_t limit = c->close_at < w->fan.tail ? c->close_at : w->fan.tail;
    if (c->cursor < limit || ((c->pending != 0 || c->reply_len != 0) && c->cursor < c->close_at)) {
        memset(&t, 0, sizeof(t));
        int rc = conn_send(w, c, limit, &t);
        tally_flush(w, &t);
        if (rc < 0)
            return -1;
    }
    if (c->cursor >= c->close_at) {
        if (lws_partial_buffered(c->wsi))
            return 0; /* close after the flush */
        return worker_conn_close_now(c);
    }
    if (c->cursor < w->fan.tail)
        lws_callback_on_writable(c->wsi);
    return 0;
}

void worker_deliver_ping(struct worker_conn *c)
{
    /* FIN + ping, unmasked, 2-byte payload: lws 4.1.6 drops an empty pong before our
     * LWS_CALLBACK_RECEIVE_PONG (lws_ws_rx_sm, "PONG && !pmdrx.eb_in.len"), so it must echo
     * something. */
    uint8_t ping[4] = {0x89, 0x02, 'k', 'a'};
    if (!conn_may_write(c))
        return; /* lws is flushing an earlier write: a later tick tries again */
    if (lws_write(c->wsi, ping, sizeof(ping), LWS_WRITE_RAW) < (int)sizeof(ping)) {
        conn_write_failed(c);
        return;
    }
    c->ping_outstanding = 1;
}
