/* hub_redis_in.c -- from the stream: where to start reading, XREAD BLOCK, appending to the ring.
 *
 * The inbound connection always has one XREAD BLOCK outstanding (preceded, when the position
 * moved, by a SET of this node's cursor key, in the same write). Its replies are read only when
 * poll() says the socket is readable, so the thread never blocks here and an XREAD that does not
 * answer within BR_BLOCK_MS + redis_timeout means Redis is stuck: the breaker opens.
 *
 * Where to start. The cursor key <prefix>cursor:<node> holds the id of the last entry this node
 * appended to its ring, saved after every batch. A hub that starts (new segment, empty ring)
 * reads from there: every entry published while it was down is appended, as HISTORY, up to the
 * stream's newest id at that moment; from then on entries are delivered live. History is kept
 * for resume (issue 6) but not pushed to clients who connected after the restart and never saw
 * the messages before it. A node without a cursor (its first start) begins at the stream's end.
 * A hub that adopted the segment from the previous one (binary upgrade) goes on from the last id
 * that hub appended (the segment's bridge.last_id), live: the ring has everything before it.
 * Reconnections after an outage simply continue from last_id: what other nodes published
 * meanwhile is delivered late, in stream order, not lost. The stream is trimmed to redis_maxlen
 * entries; if entries after our cursor were trimmed before we read them, XINFO STREAM's
 * max-deleted-entry-id says so and stream_gaps counts it (the data is gone, never silently).
 *
 * Each entry is (n node, e epoch, o origin seq, d delivered-at-origin, f flags, c channel,
 * p payload). Another node's entry, or one of ours from a previous hub life, is appended with its
 * stream id. One of ours from this life is appended only if it is still waiting in the queue
 * undelivered (the normal CLOSED path: this is where local clients receive it, in stream order);
 * if it was delivered ahead, or sent with d=1, it is skipped: nothing is delivered twice.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "doorbell.h"
#include "hub_redis_int.h"
#include "log.h"

/* One stream entry's fields (pointers into the reply). */
struct br_entry {
    const char *id;
    uint64_t ms, seq;
    const redisReply *node, *epoch, *oseq, *done, *flags, *channel, *payload;
};

static int br_str_eq(const redisReply *r, const char *s)
{
    return r != NULL && (size_t)r->len == strlen(s) && memcmp(r->str, s, (size_t)r->len) == 0;
}

static uint64_t br_str_u64(const redisReply *r)
{
    char tmp[24];
    size_t n = r != NULL && (size_t)r->len < sizeof(tmp) ? (size_t)r->len : 0;

    memcpy(tmp, n ? r->str : "", n);
    tmp[n] = '\0';
    return strtoull(tmp, NULL, 10);
}

/* Reads one string reply of a synchronous command ("" for nil). */
static int br_in_get_string(struct br *b, int argc, const char **argv, char *out, size_t outlen,
                            char *err, size_t errlen)
{
    redisReply *r = br_command(b, b->in, argc, argv, NULL, err, errlen);

    if (r == NULL)
        return -1;
    out[0] = '\0';
    if (r->type == REDIS_REPLY_STRING && (size_t)r->len < outlen)
        snprintf(out, outlen, "%s", r->str);
    else if (r->type == REDIS_REPLY_ARRAY && r->elements > 0 && /* XREVRANGE: [[id, fields]] */
             r->element[0]->type == REDIS_REPLY_ARRAY && r->element[0]->elements > 0 &&
             br_reply_is_id(r->element[0]->element[0]))
        snprintf(out, outlen, "%s", r->element[0]->element[0]->str);
    freeReplyObject(r);
    return 0;
}

/* XINFO STREAM: were entries after last_id trimmed (or deleted) before we read them? */
static void br_in_gap_check(struct br *b)
{
    const char *argv[3] = {"XINFO", "STREAM", b->key_stream};
    redisReply *r = redisCommandArgv(b->in, 3, argv, NULL);

    if (r != NULL && r->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i + 1 < r->elements; i += 2) {
            const redisReply *v = r->element[i + 1];
            if (br_str_eq(r->element[i], "max-deleted-entry-id") && br_reply_is_id(v) &&
                br_id_cmp(b->last_id, v->str) < 0) {
                br_stat_add(&b->shm->hdr->bridge.stream_gaps, 1);
                log_error(0,
                          "redis bridge: entries after %s up to %s were trimmed from the "
                          "stream before this node read them (raise redis_maxlen)",
                          b->last_id, v->str);
            }
        }
    }
    if (r != NULL)
        freeReplyObject(r); /* an error reply: no stream yet, nothing to miss */
}

int br_in_position(struct br *b, char *err, size_t errlen)
{
    const char *get[2] = {"GET", b->key_cursor};
    const char *rev[6] = {"XREVRANGE", b->key_stream, "+", "-", "COUNT", "1"};
    char saved[BR_ID_LEN], newest[BR_ID_LEN];

    if (!b->positioned && b->adopt_id[0] != '\0') {
        /* The segment was adopted from the hub before us (binary upgrade): its ring already
         * holds everything up to adopt_id, and every client still connected has seen it, so
         * what follows is live, not history, and nothing before it is appended again. */
        snprintf(b->last_id, sizeof(b->last_id), "%s", b->adopt_id);
        log_notice("redis bridge: reading the stream from %s, where the previous hub stopped",
                   b->last_id);
        b->cursor_dirty = 1;
        b->positioned = 1;
    }
    if (!b->positioned) {
        if (br_in_get_string(b, 2, get, saved, sizeof(saved), err, errlen) < 0 ||
            br_in_get_string(b, 6, rev, newest, sizeof(newest), err, errlen) < 0)
            return -1;
        if (newest[0] == '\0')
            snprintf(newest, sizeof(newest), "0-0");
        if (saved[0] != '\0' && br_id_cmp(saved, newest) < 0) {
            snprintf(b->last_id, sizeof(b->last_id), "%s", saved);
            snprintf(b->history_until, sizeof(b->history_until), "%s", newest);
            b->in_history = 1;
            log_notice("redis bridge: catching up from %s to %s (kept as history for resume)",
                       saved, newest);
        } else {
            snprintf(b->last_id, sizeof(b->last_id), "%s", saved[0] ? saved : newest);
            log_notice("redis bridge: reading the stream from %s", b->last_id);
        }
        b->cursor_dirty = 1;
        b->positioned = 1;
    }
    br_in_gap_check(b);
    return 0;
}

int br_in_issue(struct br *b, char *err, size_t errlen)
{
    const char *set[3] = {"SET", b->key_cursor, b->last_id};
    char block[16], count[16];
    const char *xread[8] = {"XREAD", "COUNT",   count,         "BLOCK",
                            block,   "STREAMS", b->key_stream, b->last_id};
    int done = 0;

    if (b->in_replies > 0)
        return 0;
    snprintf(block, sizeof(block), "%d", BR_BLOCK_MS);
    snprintf(count, sizeof(count), "%d", BR_READ_COUNT);
    if (b->cursor_dirty) {
        if (redisAppendCommandArgv(b->in, 3, set, NULL) != REDIS_OK) {
            snprintf(err, errlen, "SET: out of memory");
            return -1;
        }
        b->in_replies++;
        b->cursor_dirty = 0;
    }
    if (redisAppendCommandArgv(b->in, 8, xread, NULL) != REDIS_OK) {
        snprintf(err, errlen, "XREAD: out of memory");
        return -1;
    }
    b->in_replies++;
    b->in_xread = 1;
    do {
        if (redisBufferWrite(b->in, &done) != REDIS_OK) {
            br_context_error(b, b->in, "XREAD", err, errlen);
            return -1;
        }
    } while (!done);
    b->in_deadline_ms = br_now_ms() + BR_BLOCK_MS + b->timeout_ms;
    return 0;
}

/* Picks the fields of one entry out of [id, [f1, v1, f2, v2, ...]]. Returns 0 or -1. */
static int br_in_fields(const redisReply *e, struct br_entry *out)
{
    const redisReply *f;

    memset(out, 0, sizeof(*out));
    if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 || !br_reply_is_id(e->element[0]))
        return -1;
    out->id = e->element[0]->str;
    br_id_parse(out->id, (size_t)e->element[0]->len, &out->ms, &out->seq);
    f = e->element[1];
    if (f->type != REDIS_REPLY_ARRAY)
        return -1;
    for (size_t i = 0; i + 1 < f->elements; i += 2) {
        const redisReply *k = f->element[i], *v = f->element[i + 1];
        const redisReply **slot = br_str_eq(k, "n")   ? &out->node
                                  : br_str_eq(k, "e") ? &out->epoch
                                  : br_str_eq(k, "o") ? &out->oseq
                                  : br_str_eq(k, "d") ? &out->done
                                  : br_str_eq(k, "f") ? &out->flags
                                  : br_str_eq(k, "c") ? &out->channel
                                  : br_str_eq(k, "p") ? &out->payload
                                                      : NULL;
        if (slot != NULL && v->type == REDIS_REPLY_STRING)
            *slot = v;
    }
    if (out->node == NULL || out->epoch == NULL || out->oseq == NULL || out->payload == NULL)
        return -1;
    return out->channel == NULL || out->channel->len <= RING_MAX_CHANNEL_LEN ? 0 : -1;
}

/* One of this hub's own messages came back. Returns 1 when it was appended. */
static int br_in_own(struct br *b, const struct br_entry *e)
{
    struct br_msg *m = br_str_eq(e->done, "1") ? NULL : br_queue_find(b, br_str_u64(e->oseq));

    if (m == NULL || m->delivered) {
        br_stat_add(&b->shm->hdr->bridge.skipped_own, 1);
        return 0;
    }
    if (br_local_deliver(b, m, e->ms, e->seq) < 0)
        return 0;
    br_queue_delivered(b, m);
    br_stat_add(&b->shm->hdr->bridge.delivered, 1);
    return 1;
}

/* Another node's message (or ours from a previous hub life). Returns 1 when appended. */
static int br_in_foreign(struct br *b, const struct br_entry *e)
{
    int history = b->in_history && br_id_cmp(e->id, b->history_until) <= 0;
    char channel[RING_MAX_CHANNEL_LEN + 1] = "";
    struct ring_pub p = {.payload = e->payload->str,
                         .len = (uint32_t)e->payload->len,
                         .channel = channel,
                         .flags = (uint16_t)(RING_F_BRIDGE | RING_F_STREAM_ID |
                                             (br_str_u64(e->flags) & RING_F_BINARY) |
                                             (history ? RING_F_HISTORY : 0)),
                         .stream_ms = e->ms,
                         .stream_seq = e->seq};

    if (e->channel != NULL)
        memcpy(channel, e->channel->str, (size_t)e->channel->len + 1);
    if (e->payload->len > (size_t)b->max_payload || ring_publish_ex(b->shm, &p, NULL, NULL) < 0) {
        br_stat_add(&b->shm->hdr->bridge.dropped, 1);
        log_warn(e->payload->len > (size_t)b->max_payload ? 0 : errno,
                 "redis bridge: stream entry %s (%zu bytes) not appended (max_message here: %u)",
                 e->id, (size_t)e->payload->len, b->max_payload);
        return 0;
    }
    br_stat_add(history ? &b->shm->hdr->bridge.history : &b->shm->hdr->bridge.delivered, 1);
    return !history;
}

static int br_in_entry(struct br *b, const redisReply *raw)
{
    struct br_entry e;

    br_stat_add(&b->shm->hdr->bridge.received, 1);
    if (br_in_fields(raw, &e) < 0) {
        br_stat_add(&b->shm->hdr->bridge.dropped, 1);
        log_warn(0, "redis bridge: malformed stream entry %s skipped",
                 e.id != NULL ? e.id : "(no id)");
        if (e.id != NULL)
            snprintf(b->last_id, sizeof(b->last_id), "%s", e.id);
        return 0;
    }
    snprintf(b->last_id, sizeof(b->last_id), "%s", e.id);
    br_stat_set(&b->shm->hdr->bridge.last_id_ms, e.ms);
    br_stat_set(&b->shm->hdr->bridge.last_id_seq, e.seq);
    if (br_str_eq(e.node, b->node) && br_str_eq(e.epoch, b->epoch))
        return br_in_own(b, &e);
    return br_in_foreign(b, &e);
}

/* Applies an XREAD reply: nil (nothing within BLOCK) or [[key, [entry, ...]]]. */
static void br_in_apply(struct br *b, const redisReply *r)
{
    const redisReply *entries;
    int appended = 0;

    if (r->type != REDIS_REPLY_ARRAY || r->elements == 0 ||
        r->element[0]->type != REDIS_REPLY_ARRAY || r->element[0]->elements != 2)
        return;
    entries = r->element[0]->element[1];
    for (size_t i = 0; entries->type == REDIS_REPLY_ARRAY && i < entries->elements; i++)
        appended |= br_in_entry(b, entries->element[i]);
    if (appended)
        doorbell_ring_all(b->shm);
    b->cursor_dirty = 1;
    br_queue_gauges(b);
    if (b->in_history && br_id_cmp(b->last_id, b->history_until) >= 0) {
        b->in_history = 0;
        log_notice("redis bridge: caught up at %s (%" PRIu64 " entries kept as history)",
                   b->last_id, atomic_load(&b->shm->hdr->bridge.history));
    }
}

int br_in_read(struct br *b, char *err, size_t errlen)
{
    void *v;

    if (redisBufferRead(b->in) != REDIS_OK) {
        br_context_error(b, b->in, "XREAD", err, errlen);
        return -1;
    }
    for (;;) {
        if (redisGetReplyFromReader(b->in, &v) != REDIS_OK) {
            br_context_error(b, b->in, "XREAD", err, errlen);
            return -1;
        }
        if (v == NULL)
            return 0;
        redisReply *r = v;
        b->in_replies--;
        if (r->type == REDIS_REPLY_ERROR) {
            snprintf(err, errlen, "%s: %s", b->in_replies == 0 ? "XREAD" : "SET", r->str);
            freeReplyObject(r);
            return -1;
        }
        if (b->in_replies == 0 && b->in_xread) {
            b->in_xread = 0;
            br_in_apply(b, r);
        }
        freeReplyObject(r);
    }
}
