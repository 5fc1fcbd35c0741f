/* hub_redis_out.c -- to the stream: local messages in MULTI/EXEC batches, and the resync.
 *
 * One batch is one round trip on the outbound connection:
 *
 *   MULTI
 *   XADD <prefix>stream MAXLEN ~ <redis_maxlen> * n <node> e <epoch> o <oseq> d 0|1 f <flags>
 *        [c <channel>] p <payload>                                  (up to BR_BATCH of these)
 *   HSET <prefix>sent <node> <epoch>:<last oseq>:<messages confirmed in this epoch>
 *   EXEC
 *
 * n/e/o is the message's origin id; d=1 says it was already delivered at its origin (sent from
 * the backlog after an outage) so the origin skips it when the stream returns it. The HSET rides
 * in the same transaction, so Redis holds "how far this node got" exactly as far as its stream
 * got. That settles the one ambiguous case of any network protocol, a batch whose EXEC reply
 * never arrived: after reconnecting, HGET says whether it landed (br_out_resync), so it is
 * neither lost nor added twice. The count also reveals a Redis that came back without writes it
 * had acknowledged (a crash with appendfsync everysec or no persistence): counted in lost_acked.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hub_redis_int.h"
#include "log.h"

#define BR_XADD_MAX_ARGS    20
#define BR_BATCHES_PER_CALL 16 /* then back to the loop, so the inbound side is read too */

/* A command's arguments, built up one by one. */
struct br_args {
    int n;
    const char *argv[BR_XADD_MAX_ARGS];
    size_t lens[BR_XADD_MAX_ARGS];
};

static void br_arg(struct br_args *a, const void *s, size_t len)
{
    a->argv[a->n] = s;
    a->lens[a->n] = len;
    a->n++;
}

static void br_arg_str(struct br_args *a, const char *s)
{
    br_arg(a, s, strlen(s));
}

/* Appends one XADD for m to the connection's output buffer (hiredis copies the arguments).
 * Returns REDIS_OK, or REDIS_ERR when hiredis ran out of memory. */
static int br_out_append_xadd(struct br *b, const struct br_msg *m)
{
    static const char *const fixed[] = {"XADD", NULL, "MAXLEN", "~", NULL, "*"};
    struct br_args a = {0};
    char oseq[24], flags[8];

    snprintf(oseq, sizeof(oseq), "%" PRIu64, m->oseq);
    snprintf(flags, sizeof(flags), "%u", (unsigned)m->flags);
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
        br_arg_str(&a, i == 1 ? b->key_stream : i == 4 ? b->maxlen : fixed[i]);
    br_arg_str(&a, "n");
    br_arg_str(&a, b->node);
    br_arg_str(&a, "e");
    br_arg_str(&a, b->epoch);
    br_arg_str(&a, "o");
    br_arg_str(&a, oseq);
    br_arg_str(&a, "d");
    br_arg_str(&a, m->delivered ? "1" : "0");
    br_arg_str(&a, "f");
    br_arg_str(&a, flags);
    if (m->channel[0] != '\0') {
        br_arg_str(&a, "c");
        br_arg_str(&a, m->channel);
    }
    br_arg_str(&a, "p");
    br_arg(&a, m->payload, m->len);
    return redisAppendCommandArgv(b->out, a.n, a.argv, a.lens);
}

static int br_out_append_marker(struct br *b, uint64_t last_oseq, uint64_t count)
{
    char value[96];
    const char *argv[4] = {"HSET", b->key_sent, b->node, value};

    snprintf(value, sizeof(value), "%s:%" PRIu64 ":%" PRIu64, b->epoch, last_oseq, count);
    return redisAppendCommandArgv(b->out, 4, argv, NULL);
}

/* Reads one reply of the pipeline; NULL (error in err) unless it is of type `want`. */
static redisReply *br_out_reply(struct br *b, int want, const char *what, char *err, size_t errlen)
{
    void *v = NULL;
    redisReply *r;

    if (redisGetReply(b->out, &v) != REDIS_OK || v == NULL) {
        br_context_error(b, b->out, what, err, errlen);
        return NULL;
    }
    r = v;
    if (r->type != want) {
        snprintf(err, errlen, "%s: %s", what,
                 r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply type");
        freeReplyObject(r);
        return NULL;
    }
    return r;
}

/* Sends the first n unconfirmed messages in one transaction and confirms them. */
static int br_out_batch(struct br *b, char *err, size_t errlen)
{
    const char *multi = "MULTI", *exec = "EXEC";
    struct br_msg *m = b->q.unsent;
    uint64_t last = 0;
    redisReply *r;
    int n, ok;

    ok = redisAppendCommandArgv(b->out, 1, &multi, NULL) == REDIS_OK;
    for (n = 0; m != NULL && n < BR_BATCH; m = m->next, n++) {
        ok = ok && br_out_append_xadd(b, m) == REDIS_OK;
        last = m->oseq;
    }
    ok = ok && br_out_append_marker(b, last, b->confirmed_total + (uint64_t)n) == REDIS_OK;
    ok = ok && redisAppendCommandArgv(b->out, 1, &exec, NULL) == REDIS_OK;
    if (!ok) { /* the connection is dropped with the trip: nothing half-sent survives */
        snprintf(err, errlen, "MULTI: out of memory building the batch");
        return -1;
    }

    if ((r = br_out_reply(b, REDIS_REPLY_STATUS, "MULTI", err, errlen)) == NULL)
        return -1;
    freeReplyObject(r);
    for (int i = 0; i <= n; i++) {
        if ((r = br_out_reply(b, REDIS_REPLY_STATUS, i < n ? "XADD" : "HSET", err, errlen)) == NULL)
            return -1;
        freeReplyObject(r);
    }
    if ((r = br_out_reply(b, REDIS_REPLY_ARRAY, "EXEC", err, errlen)) == NULL)
        return -1;
    for (int i = 0; i < n; i++) {
        if (i >= (int)r->elements || !br_reply_is_id(r->element[i])) {
            snprintf(err, errlen, "XADD: %s",
                     i < (int)r->elements && r->element[i]->type == REDIS_REPLY_ERROR
                         ? r->element[i]->str
                         : "no stream id in the EXEC reply");
            freeReplyObject(r);
            return -1;
        }
        br_queue_confirm_first(b);
    }
    freeReplyObject(r);
    br_stat_add(&b->shm->hdr->bridge.sent, (uint64_t)n);
    return 0;
}

int br_out_send(struct br *b, uint64_t deadline_ms, char *err, size_t errlen)
{
    for (int i = 0; i < BR_BATCHES_PER_CALL && b->q.unsent != NULL; i++) {
        if (deadline_ms != 0 && br_now_ms() >= deadline_ms)
            break;
        if (br_out_batch(b, err, errlen) < 0)
            return -1;
        b->last_ok_ms = br_now_ms();
    }
    br_queue_gauges(b);
    return 0;
}

/* Parses "<epoch>:<oseq>:<count>"; returns 0 when it is this epoch's marker. */
static int br_out_parse_marker(const struct br *b, const char *v, uint64_t *oseq, uint64_t *count)
{
    size_t elen = strlen(b->epoch);
    char *end;

    if (strncmp(v, b->epoch, elen) != 0 || v[elen] != ':')
        return -1;
    *oseq = strtoull(v + elen + 1, &end, 10);
    if (*end != ':')
        return -1;
    *count = strtoull(end + 1, &end, 10);
    return *end == '\0' ? 0 : -1;
}

int br_out_resync(struct br *b, char *err, size_t errlen)
{
    const char *argv[3] = {"HGET", b->key_sent, b->node};
    redisReply *r = br_command(b, b->out, 3, argv, NULL, err, errlen);
    uint64_t oseq = 0, count = 0, confirmed = 0;

    if (r == NULL)
        return -1;
    if (r->type == REDIS_REPLY_STRING && br_out_parse_marker(b, r->str, &oseq, &count) == 0) {
        if (b->adopt_marker) /* the previous hub of this segment counted this epoch so far */
            b->confirmed_total = count;
        while (b->q.unsent != NULL && b->q.unsent->oseq <= oseq) {
            br_queue_confirm_first(b); /* its EXEC landed, the reply did not */
            confirmed++;
        }
    }
    freeReplyObject(r);
    b->adopt_marker = 0;
    if (confirmed > 0) {
        br_stat_add(&b->shm->hdr->bridge.sent, confirmed);
        log_notice("redis bridge: %" PRIu64 " message%s sent before the connection broke did "
                   "reach the stream",
                   confirmed, confirmed == 1 ? "" : "s");
    }
    if (count < b->confirmed_total) {
        br_stat_add(&b->shm->hdr->bridge.lost_acked, b->confirmed_total - count);
        log_error(0,
                  "redis bridge: Redis lost %" PRIu64 " acknowledged message%s of this node "
                  "(restarted without them: use appendonly yes + appendfsync always)",
                  b->confirmed_total - count, b->confirmed_total - count == 1 ? "" : "s");
        b->confirmed_total = count;
    }
    br_queue_gauges(b);
    return 0;
}

int br_out_ping(struct br *b, char *err, size_t errlen)
{
    const char *argv[1] = {"PING"};
    redisReply *r = br_command(b, b->out, 1, argv, NULL, err, errlen);

    if (r == NULL)
        return -1;
    freeReplyObject(r);
    b->last_ok_ms = br_now_ms();
    return 0;
}
