/* hub_redis_local.c -- the bridge's local side: what producers append here, and the backlog.
 *
 * The bridge reads the ring like a worker, with its own cursor, skipping what it appended itself
 * (RING_F_BRIDGE). Every other message is local: a producer's OUTBOX record (not yet delivered
 * anywhere) or a record already delivered here because the breaker was not CLOSED. Each becomes
 * a br_msg in the queue, in ring order, until the stream has confirmed it and it has been
 * delivered here. Delivery here happens exactly once per message, by whichever comes first:
 *
 *   - its echo: the stream returns it (hub_redis_in.c) and it is appended at its stream position;
 *   - "ahead": the breaker is not CLOSED (or the queue is full, or the hub stops), and it is
 *     appended at once, before the stream has it.
 *
 * The queue is bounded by redis_backlog (payload plus ~100 bytes per message). A local message
 * that does not fit is delivered here if it was not yet, counted in backlog_overflow and never
 * sent to the other nodes: memory stays bounded through an outage of any length, and what was
 * lost to the cluster is visible in stats.json and /metrics. The oldest messages are the ones
 * kept, so the other nodes receive a gap-free prefix of this node's outage traffic.
 *
 * If the bridge's cursor is lapped (it could not keep up, e.g. blocked on a slow Redis while
 * more than the ring's capacity was published), the lapped messages are lost: an OUTBOX record
 * there was delivered nowhere. ring_cursor_recover() says how many sequence numbers were
 * skipped (an upper bound: some were the bridge's own); they are counted in ring_overruns.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "doorbell.h"
#include "hub_redis_int.h"
#include "log.h"

int br_local_init(struct br *b)
{
    b->buf = malloc(b->max_payload > 0 ? b->max_payload : 1);
    if (b->buf == NULL) {
        log_error(errno, "malloc(%u) for the redis bridge failed", b->max_payload);
        return -1;
    }
    ring_cursor_at_tail(b->shm, &b->cur);
    return 0;
}

static uint64_t br_msg_cost(const struct br_msg *m)
{
    return sizeof(*m) + m->len;
}

void br_queue_gauges(struct br *b)
{
    br_stat_set(&b->shm->hdr->bridge.backlog, b->q.unconfirmed);
    br_stat_set(&b->shm->hdr->bridge.backlog_bytes, b->q.bytes);
}

static void br_queue_push(struct br *b, struct br_msg *m)
{
    struct br_queue *q = &b->q;

    m->prev = q->tail;
    m->next = NULL;
    if (q->tail != NULL)
        q->tail->next = m;
    else
        q->head = m;
    q->tail = m;
    if (q->unsent == NULL)
        q->unsent = m; /* new messages are never confirmed */
    q->count++;
    q->unconfirmed++;
    q->undelivered += !m->delivered;
    q->bytes += br_msg_cost(m);
}

/* Unlinks and frees a message that is delivered and confirmed. */
static void br_queue_remove(struct br *b, struct br_msg *m)
{
    struct br_queue *q = &b->q;

    if (m->prev != NULL)
        m->prev->next = m->next;
    else
        q->head = m->next;
    if (m->next != NULL)
        m->next->prev = m->prev;
    else
        q->tail = m->prev;
    q->count--;
    q->bytes -= br_msg_cost(m);
    free(m);
}

void br_queue_delivered(struct br *b, struct br_msg *m)
{
    if (!m->delivered) {
        m->delivered = 1;
        b->q.undelivered--;
    }
    if (m->confirmed)
        br_queue_remove(b, m);
}

void br_queue_confirm_first(struct br *b)
{
    struct br_msg *m = b->q.unsent;

    if (m == NULL)
        return;
    b->q.unsent = m->next; /* everything after it is unconfirmed too */
    m->confirmed = 1;
    b->q.unconfirmed--;
    b->confirmed_total++;
    if (m->delivered)
        br_queue_remove(b, m);
}

struct br_msg *br_queue_find(struct br *b, uint64_t oseq)
{
    struct br_msg *m = b->q.head;

    /* Echoes come in oseq order and messages leave in order, so this stops at once. */
    while (m != NULL && m->oseq < oseq)
        m = m->next;
    return m != NULL && m->oseq == oseq ? m : NULL;
}

uint64_t br_queue_oldest_undelivered_ms(const struct br *b)
{
    if (b->q.undelivered == 0)
        return 0;
    for (const struct br_msg *m = b->q.head; m != NULL; m = m->next) {
        if (!m->delivered)
            return m->published_ms;
    }
    return 0;
}

int br_local_deliver(struct br *b, struct br_msg *m, uint64_t stream_ms, uint64_t stream_seq)
{
    int with_id = stream_ms != 0 || stream_seq != 0;
    struct ring_pub p = {
        .payload = m->payload,
        .len = m->len,
        .channel = m->channel,
        .flags = (uint16_t)(RING_F_BRIDGE | m->flags | (with_id ? RING_F_STREAM_ID : 0)),
        .stream_ms = stream_ms,
        .stream_seq = stream_seq};

    if ((b->locked ? ring_publish_locked(b->shm, &p, NULL)
                   : ring_publish_ex(b->shm, &p, NULL, NULL)) < 0) {
        log_error(errno, "redis bridge: ring_publish(%u bytes) failed", m->len);
        return -1;
    }
    return 0;
}

/* Delivers m here now, before the stream has it. */
static void br_deliver_ahead(struct br *b, struct br_msg *m)
{
    br_local_deliver(b, m, 0, 0);
    br_stat_add(&b->shm->hdr->bridge.delivered_ahead, 1);
}

static struct br_msg *br_msg_new(const struct ring_msg *rm, const void *payload)
{
    struct br_msg *m = malloc(sizeof(*m) + rm->payload_len);

    if (m == NULL)
        return NULL;
    memset(m, 0, sizeof(*m));
    m->oseq = rm->seq;
    m->published_ms = rm->published_ns / 1000000;
    m->len = rm->payload_len;
    m->flags = rm->flags & RING_F_BINARY;
    m->delivered = !(rm->flags & RING_F_OUTBOX);
    memcpy(m->channel, rm->channel, (size_t)rm->channel_len + 1);
    memcpy(m->payload, payload, rm->payload_len);
    return m;
}

/* One local record into the queue. Returns 1 when it was delivered here just now. */
static int br_local_take(struct br *b, const struct ring_msg *rm)
{
    struct br_msg *m = br_msg_new(rm, b->buf);
    int ahead = 0;

    if (m == NULL) {
        log_error(errno, "redis bridge: malloc(%u) failed; seq %llu stays on this node",
                  rm->payload_len, (unsigned long long)rm->seq);
        br_stat_add(&b->shm->hdr->bridge.backlog_overflow, 1);
        return 0; /* an OUTBOX record is lost here too: nothing left to deliver it from */
    }
    if (!m->delivered && b->state != SHM_BRIDGE_CLOSED) {
        br_deliver_ahead(b, m);
        m->delivered = ahead = 1;
    }
    if (b->q.bytes + br_msg_cost(m) > b->q.limit) {
        if (!m->delivered) {
            br_deliver_ahead(b, m);
            ahead = 1;
        }
        if (atomic_fetch_add_explicit(&b->shm->hdr->bridge.backlog_overflow, 1,
                                      memory_order_relaxed) == 0)
            log_error(0,
                      "redis bridge: backlog full (%llu bytes): local messages from seq %llu "
                      "are delivered here only",
                      (unsigned long long)b->q.limit, (unsigned long long)m->oseq);
        free(m);
        return ahead;
    }
    br_queue_push(b, m);
    return ahead;
}

void br_local_drain(struct br *b)
{
    struct ring_msg rm;
    enum ring_status st;
    int ahead = 0;

    while ((st = ring_read_mask(b->shm, &b->cur, &rm, b->buf, b->max_payload, RING_F_BRIDGE)) !=
           RING_EMPTY) {
        if (st == RING_OVERRUN) {
            uint64_t from = b->cur.seq, n = ring_cursor_recover(b->shm, &b->cur);
            br_stat_add(&b->shm->hdr->bridge.ring_overruns, n);
            log_error(0,
                      "redis bridge: lapped by the ring: up to %llu messages from seq %llu "
                      "never reach the cluster",
                      (unsigned long long)n, (unsigned long long)from);
            continue;
        }
        if (!(rm.flags & RING_F_HISTORY))
            ahead |= br_local_take(b, &rm);
    }
    if (ahead)
        doorbell_ring_all(b->shm);
    br_queue_gauges(b);
}

void br_local_deliver_all(struct br *b)
{
    struct br_msg *m = b->q.head, *next;
    int any = 0;

    while (m != NULL) {
        next = m->next; /* m may be freed */
        if (!m->delivered) {
            br_deliver_ahead(b, m);
            br_queue_delivered(b, m);
            any = 1;
        }
        m = next;
    }
    if (any)
        doorbell_ring_all(b->shm);
    br_queue_gauges(b);
}

void br_local_free(struct br *b)
{
    struct br_msg *m = b->q.head, *next;

    while (m != NULL) {
        next = m->next;
        free(m);
        m = next;
    }
    memset(&b->q, 0, sizeof(b->q));
    free(b->buf);
    b->buf = NULL;
}
