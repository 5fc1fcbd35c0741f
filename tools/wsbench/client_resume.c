/* client_resume.c -- --resume: logical clients that speak wshub.v1 (docs/protocol.md), come back
 * after every lost connection, and are checked across all their connections.
 *
 * Each of the -n connections that once opened is a logical client with a position: the epoch
 * and the last sequence it processed. Every message header is parsed (proto.c). A welcome must
 * be the first message and must answer what was asked (fresh without `since`; with it, resumed
 * at exactly that position, or expired / reset); each `m` must carry a seq above the position;
 * a `g` moves the position and declares a hole. When the connection ends before STOP, whatever
 * the reason, the client schedules a new one with ?since=&epoch=: quickly (uniform 0..quick)
 * after Close 1012, else with jittered exponential backoff, growing with each failed attempt.
 * The time from the end of a connection to the welcome of the resumed one is the recovery time.
 *
 * Loss is judged at the end, against the broadcasts the server acknowledged: the parent sends
 * each broadcast's seq (from the POST's answer) with EXPECT. A client keeps one bit per
 * broadcast index (the index is in the payload), so duplicates are exact whatever the distance;
 * an acknowledged broadcast it lacks is `gapped` when its seq lies in a hole the server declared
 * (or after a reset, whose extent the client cannot know), and `lost` otherwise. A broadcast
 * received under another seq than the one acknowledged, or under two seqs, is `mislabeled`.
 *
 * Scheduled reconnects wait different times (jitter, backoff), so they sit in a binary min-heap;
 * attempts in flight all wait --connect-timeout, so their deadlines are a FIFO (client_churn.c's
 * queue). Entries carry the client's generation and are dropped when it moved on.
 */
#include "client_int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "proto.h"

#define RESUME_EVENT_DETAIL_MAX 1000 /* dup, regress and missing lines per process */
#define RESUME_MAX_BITMAP_BYTES (1ULL << 30)

/* ---- the timer heap ------------------------------------------------------------------------ */

static int resume_heap_push(struct client *cl, struct resume_timer t)
{
    if (cl->n_timers == cl->cap_timers) {
        uint32_t cap = cl->cap_timers ? cl->cap_timers * 2 : 256;
        struct resume_timer *nt = realloc(cl->timers, cap * sizeof(*nt));
        if (nt == NULL)
            return -1;
        cl->timers = nt;
        cl->cap_timers = cap;
    }
    uint32_t i = cl->n_timers++;
    while (i > 0 && cl->timers[(i - 1) / 2].at > t.at) {
        cl->timers[i] = cl->timers[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    cl->timers[i] = t;
    return 0;
}

static struct resume_timer resume_heap_pop(struct client *cl)
{
    struct resume_timer top = cl->timers[0], last = cl->timers[--cl->n_timers];
    uint32_t i = 0, n = cl->n_timers;
    for (;;) {
        uint32_t k = 2 * i + 1;
        if (k >= n)
            break;
        if (k + 1 < n && cl->timers[k + 1].at < cl->timers[k].at)
            k++;
        if (cl->timers[k].at >= last.at)
            break;
        cl->timers[i] = cl->timers[k];
        i = k;
    }
    if (n > 0)
        cl->timers[i] = last;
    return top;
}

/* ---- events (--events) --------------------------------------------------------------------- */

static void resume_event(struct client *cl, struct resume_event ev)
{
    if (cl->o->events_path == NULL)
        return;
    if (cl->n_events == cl->cap_events) {
        uint32_t cap = cl->cap_events ? cl->cap_events * 2 : 1024;
        struct resume_event *ne = realloc(cl->events, cap * sizeof(*ne));
        if (ne == NULL)
            return; /* the record is best effort; the counters are not */
        cl->events = ne;
        cl->cap_events = cap;
    }
    cl->events[cl->n_events++] = ev;
}

static uint32_t resume_conn_id(const struct client *cl, const struct conn *c)
{
    return cl->first + (uint32_t)(c - cl->conns);
}

static struct resume *resume_of(struct client *cl, const struct conn *c)
{
    return &cl->rs[c - cl->conns];
}

/* ---- setup --------------------------------------------------------------------------------- */

int resume_init(struct client *cl)
{
    const struct opts *o = cl->o;
    if (!o->resume)
        return 0;
    cl->seen_words = (o->messages + 63) / 64;
    uint64_t bytes = (uint64_t)cl->count * cl->seen_words * sizeof(uint64_t);
    if (bytes > RESUME_MAX_BITMAP_BYTES) {
        log_error(0,
                  "--resume: %u clients x %u broadcasts need %llu MiB of bitmaps in one "
                  "process; raise -p or lower -m",
                  cl->count, o->messages, (unsigned long long)(bytes >> 20));
        return -1;
    }
    cl->rs = calloc(cl->count ? cl->count : 1, sizeof(*cl->rs));
    uint64_t *bits = calloc(bytes ? bytes / sizeof(uint64_t) : 1, sizeof(uint64_t));
    cl->seq_seen = malloc((o->messages ? o->messages : 1) * sizeof(uint64_t));
    cl->acked_seq = malloc((o->messages ? o->messages : 1) * sizeof(uint64_t));
    if (cl->rs == NULL || bits == NULL || cl->seq_seen == NULL || cl->acked_seq == NULL)
        return -1;
    for (uint32_t i = 0; i < cl->count; i++)
        cl->rs[i].seen = bits + (uint64_t)i * cl->seen_words;
    for (uint32_t m = 0; m < o->messages; m++)
        cl->seq_seen[m] = cl->acked_seq[m] = RESUME_NOT_ACKED;
    return 0;
}

/* The 101 came: a new logical client, or a reconnect that now waits for its welcome. */
void resume_on_open(struct client *cl, struct conn *c, int64_t now)
{
    (void)now;
    if (!c->resumer) {
        c->resumer = 1;
        cl->res.resume_clients++;
    }
    c->reconnecting = 0;
    resume_of(cl, c)->welcomed = 0;
}

/* ---- completion ---------------------------------------------------------------------------- */

int resume_is_complete(const struct client *cl, const struct conn *c)
{
    const struct resume *rs = &cl->rs[c - cl->conns];
    return c->resumer && rs->known && cl->expected >= 0 && rs->pos >= cl->max_acked;
}

static void resume_check_complete(struct client *cl, struct conn *c, int64_t now)
{
    if (c->subscribed && !c->complete && resume_is_complete(cl, c)) {
        c->complete = 1;
        cl->complete++;
        client_check_complete(cl, now);
    }
}

void resume_on_expect(struct client *cl, int64_t now)
{
    cl->max_acked = 0;
    for (uint32_t m = 0; m < cl->o->messages; m++)
        if (cl->acked_seq[m] != RESUME_NOT_ACKED && cl->acked_seq[m] > cl->max_acked)
            cl->max_acked = cl->acked_seq[m];
    for (uint32_t i = 0; i < cl->count; i++) {
        struct conn *c = &cl->conns[i];
        if (!c->subscribed)
            continue;
        c->complete = resume_is_complete(cl, c);
        if (c->complete)
            cl->complete++;
    }
    client_check_complete(cl, now);
}

/* ---- reconnecting -------------------------------------------------------------------------- */

/* How long to wait before the next attempt (see the top comment). */
static int64_t resume_delay(struct client *cl, const struct resume *rs)
{
    const struct opts *o = cl->o;
    if (rs->attempts == 0 && rs->close_code == 1012)
        return (int64_t)(client_rand(cl) % (uint64_t)(o->reconnect_quick_ns + 1));
    int64_t d = o->reconnect_min_ns;
    for (uint32_t k = 0; k < rs->attempts && d < o->reconnect_max_ns; k++)
        d *= 2;
    if (d > o->reconnect_max_ns)
        d = o->reconnect_max_ns;
    return d / 2 + (int64_t)(client_rand(cl) % (uint64_t)(d / 2 + 1));
}

static void resume_schedule(struct client *cl, struct conn *c, int64_t now)
{
    struct resume *rs = resume_of(cl, c);
    rs->gen++;
    rs->waiting = 1;
    struct resume_timer t = {
        .at = now + resume_delay(cl, rs), .idx = (uint32_t)(c - cl->conns), .gen = rs->gen};
    if (resume_heap_push(cl, t) < 0) {
        log_error(ENOMEM, "scheduling a reconnect failed");
        rs->waiting = 0;
    }
}

void resume_on_lost(struct client *cl, struct conn *c, enum resume_cause cause, uint16_t code,
                    int64_t now)
{
    struct resume *rs = resume_of(cl, c);
    if (cl->phase == PHASE_CLOSING || !c->resumer)
        return;
    if (code == 0)
        code = 1006;
    cl->res.resume_lost[cause]++;
    cl->res.resume_closes[wire_close_slot(code)]++;
    if (rs->lost_ns == 0) { /* the first end since the last welcome: recovery starts here */
        rs->lost_ns = now;
        rs->cause = (uint8_t)cause;
        rs->close_code = code;
    } else {
        rs->attempts++; /* opened but ended before its welcome: a failed attempt */
    }
    rs->welcomed = 0;
    if (!rs->waiting)
        resume_schedule(cl, c, now);
}

void resume_attempt_failed(struct client *cl, struct conn *c, enum wire_fail why, int64_t now)
{
    struct resume *rs = resume_of(cl, c);
    resume_event(cl,
                 (struct resume_event){
                     .kind = EV_FAIL, .a = (uint8_t)why, .conn = resume_conn_id(cl, c), .t0 = now});
    rs->attempts++;
    if (cl->phase != PHASE_CLOSING)
        resume_schedule(cl, c, now);
}

static void resume_start_attempt(struct client *cl, uint32_t idx, int64_t now)
{
    struct conn *c = &cl->conns[idx];
    struct resume *rs = &cl->rs[idx];

    rs->waiting = 0;
    if (c->state == CONN_CLOSING || c->state == CONN_SERVER_CLOSING)
        conn_release(cl, c); /* the old connection's closing handshake is cut short */
    if (c->state != CONN_DONE && c->state != CONN_IDLE)
        return;
    c->reconnecting = 1;
    rs->attempt_ns = now;
    cl->res.resume_attempts++;
    conn_start(cl, idx, now); /* a synchronous failure reschedules through conn_fail */
    if (c->reconnecting && (c->state == CONN_CONNECTING || c->state == CONN_HANDSHAKE) &&
        churn_push(&cl->attempts, idx, rs->gen, c->deadline_ns) < 0)
        log_error(ENOMEM, "queueing a reconnect deadline failed");
}

void resume_tick(struct client *cl, int64_t now)
{
    const struct churn_ent *h;

    if (cl->rs == NULL)
        return;
    while (cl->n_timers > 0 && cl->timers[0].at <= now) {
        struct resume_timer t = resume_heap_pop(cl);
        struct resume *rs = &cl->rs[t.idx];
        if (rs->waiting && rs->gen == t.gen)
            resume_start_attempt(cl, t.idx, now);
    }
    while ((h = churn_head(&cl->attempts)) != NULL) {
        struct conn *c = &cl->conns[h->idx];
        if (cl->rs[h->idx].gen == h->gen && c->reconnecting &&
            (c->state == CONN_CONNECTING || c->state == CONN_HANDSHAKE)) {
            if (c->deadline_ns > now)
                break;
            conn_fail(cl, c, WIRE_FAIL_TIMEOUT, 0);
        }
        churn_pop(&cl->attempts);
    }
}

int64_t resume_next_wake(const struct client *cl)
{
    int64_t until = -1;
    const struct churn_ent *h;
    if (cl->rs == NULL)
        return -1;
    if (cl->n_timers > 0)
        until = cl->timers[0].at;
    if ((h = churn_head(&cl->attempts)) != NULL && (until < 0 || h->at < until))
        until = h->at;
    return until;
}

/* ---- messages ------------------------------------------------------------------------------ */

static void resume_add_gap(struct client *cl, struct resume *rs, uint64_t from, uint64_t to)
{
    if (rs->n_gaps == rs->cap_gaps) {
        uint32_t cap = rs->cap_gaps ? rs->cap_gaps * 2 : 4;
        struct resume_gap *g = realloc(rs->gaps, cap * sizeof(*g));
        if (g == NULL) {
            log_error(ENOMEM, "recording a gap failed");
            return;
        }
        rs->gaps = g;
        rs->cap_gaps = cap;
    }
    rs->gaps[rs->n_gaps++] = (struct resume_gap){.from = from, .to = to};
    cl->res.gap_seqs += to - from + 1;
}

static void resume_log_once(int *flag, const char *what, const char *detail)
{
    if (*flag)
        return;
    *flag = 1;
    log_warn(0, "first %s in this process: %s", what, detail);
}

static int resume_on_welcome(struct client *cl, struct conn *c, const struct proto_msg *m,
                             int64_t now)
{
    static int logged_bad;
    struct resume *rs = resume_of(cl, c);
    int asked = rs->known; /* the attempt carried since/epoch (conn_connected) */
    int ok = 1;
    char why[160] = "";

    cl->res.welcomes++;
    if (rs->welcomed) {
        cl->res.bad_welcome++;
        resume_log_once(&logged_bad, "bad welcome", "a second welcome on one connection");
        return 0;
    }
    rs->welcomed = 1;
    if (!asked) {
        ok = m->status == PROTO_FRESH;
        snprintf(why, sizeof(why), "status %s to a request without since",
                 proto_status_names[m->status]);
    } else {
        cl->res.resume_welcome[m->status]++;
        switch (m->status) {
        case PROTO_RESUMED:
            ok = m->epoch == rs->epoch && m->last == rs->pos;
            snprintf(why, sizeof(why),
                     "resumed at %" PRIu64 " epoch %016" PRIx64 " to since=%" PRIu64
                     " epoch=%016" PRIx64,
                     m->last, m->epoch, rs->pos, rs->epoch);
            break;
        case PROTO_EXPIRED:
            ok = m->epoch == rs->epoch && m->last >= rs->pos;
            snprintf(why, sizeof(why),
                     "expired with last %" PRIu64 " below since=%" PRIu64 " or another epoch",
                     m->last, rs->pos);
            if (m->last > rs->pos) {
                resume_add_gap(cl, rs, rs->pos + 1, m->last);
                resume_event(cl, (struct resume_event){.kind = EV_GAP,
                                                       .a = PROTO_GAP_N, /* "expired" */
                                                       .conn = resume_conn_id(cl, c),
                                                       .t0 = now,
                                                       .x = rs->pos + 1,
                                                       .y = m->last});
            }
            break;
        case PROTO_RESET:
            rs->reset = 1;
            break;
        default:
            ok = 0;
            snprintf(why, sizeof(why), "status fresh to a request with since");
            break;
        }
    }
    if (!ok) {
        cl->res.bad_welcome++;
        resume_log_once(&logged_bad, "bad welcome", why);
    }
    if (!asked || m->status != PROTO_RESUMED || !ok)
        rs->pos = m->last;
    rs->epoch = m->epoch;
    rs->known = 1;
    if (rs->lost_ns != 0) {
        int64_t d = now - rs->lost_ns;
        hist_record(&cl->res.recovery, d);
        hist_record(&cl->res.recovery_cause[rs->cause], d);
        resume_event(cl, (struct resume_event){.kind = EV_WELCOME,
                                               .a = (uint8_t)m->status,
                                               .b = rs->cause,
                                               .code = rs->close_code,
                                               .conn = resume_conn_id(cl, c),
                                               .n = rs->attempts,
                                               .t0 = rs->lost_ns,
                                               .t1 = rs->attempt_ns,
                                               .t2 = now});
        rs->lost_ns = 0;
    }
    rs->attempts = 0;
    resume_check_complete(cl, c, now);
    return 0;
}

static void resume_on_gap(struct client *cl, struct conn *c, const struct proto_msg *m, int64_t now)
{
    static int logged;
    struct resume *rs = resume_of(cl, c);
    cl->res.gap_messages++;
    cl->res.gap_reasons[m->reason]++;
    if (!rs->welcomed || m->from <= rs->pos) {
        cl->res.bad_envelope++;
        resume_log_once(&logged, "gap not after the position",
                        "g before the welcome or "
                        "starting at or below the last sequence");
    }
    resume_add_gap(cl, rs, m->from, m->to);
    resume_event(cl, (struct resume_event){.kind = EV_GAP,
                                           .a = (uint8_t)m->reason,
                                           .conn = resume_conn_id(cl, c),
                                           .t0 = now,
                                           .x = m->from,
                                           .y = m->to});
    if (m->to > rs->pos)
        rs->pos = m->to;
    resume_check_complete(cl, c, now);
}

int resume_on_message(struct client *cl, struct conn *c, const struct frame_event *ev, int64_t now)
{
    static int logged_bad, logged_early;
    struct resume *rs = resume_of(cl, c);
    struct proto_msg m;

    switch (proto_parse(ev->data, ev->data_len, ev->len, &m)) {
    case PROTO_BAD:
        cl->res.bad_envelope++;
        resume_log_once(&logged_bad, "bad message header", m.error);
        return 0;
    case PROTO_UNKNOWN:
        cl->res.unknown_type++;
        return 0;
    case PROTO_WELCOME:
        return resume_on_welcome(cl, c, &m, now);
    case PROTO_GAP:
        resume_on_gap(cl, c, &m, now);
        return 0;
    case PROTO_MESSAGE:
        break;
    }
    if (!rs->welcomed) {
        cl->res.bad_welcome++;
        resume_log_once(&logged_early, "bad welcome", "a message before the welcome");
    }
    int regress = rs->known && m.seq <= rs->pos;
    if (regress) {
        cl->res.regressed++;
        resume_event(cl, (struct resume_event){.kind = EV_REGRESS,
                                               .conn = resume_conn_id(cl, c),
                                               .t0 = now,
                                               .x = rs->pos,
                                               .y = m.seq});
    } else {
        rs->pos = m.seq;
    }
    int r = conn_on_payload(cl, c, ev->data + m.body_off, ev->data_len - m.body_off,
                            ev->len - m.body_off, ev->frames, m.seq, now);
    if (regress && r == 0)
        cl->res.out_of_order++;
    resume_check_complete(cl, c, now);
    return 0;
}

/* A payload of this run arrived on a resuming connection under seq `env_seq`. Returns 1 for a
 * duplicate, else 0 (conn_on_payload). */
int resume_on_receipt(struct client *cl, struct conn *c, uint64_t idx, uint64_t env_seq,
                      int64_t now)
{
    struct resume *rs = resume_of(cl, c);
    uint64_t bit = 1ULL << (idx & 63), *w = &rs->seen[idx >> 6];
    if (*w & bit) {
        cl->res.duplicated++;
        resume_event(cl, (struct resume_event){.kind = EV_DUP,
                                               .conn = resume_conn_id(cl, c),
                                               .n = (uint32_t)idx,
                                               .t0 = now,
                                               .x = env_seq});
        return 1;
    }
    *w |= bit;
    c->unique++;
    if (cl->seq_seen[idx] == RESUME_NOT_ACKED)
        cl->seq_seen[idx] = env_seq;
    else if (cl->seq_seen[idx] != env_seq)
        cl->res.mislabeled++;
    return 0;
}

/* ---- the end ------------------------------------------------------------------------------- */

static int resume_in_gaps(const struct resume *rs, uint64_t seq)
{
    for (uint32_t k = 0; k < rs->n_gaps; k++)
        if (seq >= rs->gaps[k].from && seq <= rs->gaps[k].to)
            return 1;
    return 0;
}

static void resume_account(struct client *cl)
{
    struct wire_result *r = &cl->res;
    uint32_t detail = 0;

    for (uint32_t m = 0; m < cl->o->messages; m++)
        if (cl->seq_seen[m] != RESUME_NOT_ACKED && cl->acked_seq[m] != RESUME_NOT_ACKED &&
            cl->seq_seen[m] != cl->acked_seq[m])
            r->mislabeled++;
    for (uint32_t i = 0; i < cl->count; i++) {
        struct conn *c = &cl->conns[i];
        struct resume *rs = &cl->rs[i];
        if (!c->subscribed)
            continue;
        for (uint32_t m = 0; m < cl->o->messages; m++) {
            int have = (rs->seen[m >> 6] >> (m & 63)) & 1;
            uint64_t seq = cl->acked_seq[m];
            if (have && seq == RESUME_NOT_ACKED) {
                r->unacked++;
            } else if (!have && seq != RESUME_NOT_ACKED) {
                if (rs->reset || resume_in_gaps(rs, seq)) {
                    r->gapped++;
                } else {
                    r->lost++;
                    if (detail++ < RESUME_EVENT_DETAIL_MAX)
                        resume_event(
                            cl, (struct resume_event){
                                    .kind = EV_MISSING, .conn = cl->first + i, .n = m, .x = seq});
                }
            }
        }
    }
}

/* Writes the events as text lines, appended in whole-line chunks: lines of several processes
 * may alternate in the file, but never mix. */
static void resume_write_events(struct client *cl)
{
    char buf[65536];
    size_t len = 0;
    uint32_t detail[EV_MISSING + 1] = {0};

    if (cl->o->events_path == NULL)
        return;
    int fd = open(cl->o->events_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        log_error(errno, "open(%s) failed", cl->o->events_path);
        return;
    }
    for (uint32_t k = 0; k < cl->n_events; k++) {
        const struct resume_event *e = &cl->events[k];
        char line[256];
        int n = 0;
        if ((e->kind == EV_DUP || e->kind == EV_REGRESS) &&
            detail[e->kind]++ >= RESUME_EVENT_DETAIL_MAX)
            continue;
        switch (e->kind) {
        case EV_WELCOME:
            n = snprintf(line, sizeof(line),
                         "welcome %u %s %s %u %" PRId64 " %" PRId64 " %" PRId64 " %u\n", e->conn,
                         proto_status_names[e->a], wire_cause_names[e->b], e->code, e->t0, e->t1,
                         e->t2, e->n);
            break;
        case EV_FAIL:
            n = snprintf(line, sizeof(line), "fail %u %s %" PRId64 "\n", e->conn,
                         wire_fail_names[e->a], e->t0);
            break;
        case EV_GAP:
            n = snprintf(line, sizeof(line), "gap %u %" PRIu64 " %" PRIu64 " %s %" PRId64 "\n",
                         e->conn, e->x, e->y,
                         e->a < PROTO_GAP_N ? proto_gap_names[e->a] : "expired", e->t0);
            break;
        case EV_DUP:
            n = snprintf(line, sizeof(line), "dup %u %" PRIu64 " %u %" PRId64 "\n", e->conn, e->x,
                         e->n, e->t0);
            break;
        case EV_REGRESS:
            n = snprintf(line, sizeof(line), "regress %u %" PRIu64 " %" PRIu64 " %" PRId64 "\n",
                         e->conn, e->x, e->y, e->t0);
            break;
        case EV_MISSING:
            n = snprintf(line, sizeof(line), "missing %u %" PRIu64 " %u\n", e->conn, e->x, e->n);
            break;
        }
        if (n <= 0 || (size_t)n >= sizeof(line))
            continue;
        if (len + (size_t)n > sizeof(buf)) {
            if (wire_write_all(fd, buf, len) < 0)
                log_error(errno, "write(%s) failed", cl->o->events_path);
            len = 0;
        }
        memcpy(buf + len, line, (size_t)n);
        len += (size_t)n;
    }
    if (len > 0 && wire_write_all(fd, buf, len) < 0)
        log_error(errno, "write(%s) failed", cl->o->events_path);
    if (close(fd) < 0)
        log_warn(errno, "close(%s) failed", cl->o->events_path);
}

void resume_finish(struct client *cl)
{
    if (cl->rs == NULL)
        return;
    if (cl->expected >= 0)
        resume_account(cl);
    resume_write_events(cl);
}
