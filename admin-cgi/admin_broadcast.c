/* admin_broadcast.c -- POST /admin/broadcast[?channel=a,b][&user=u]: validate, append, wake.
 *
 * The request body is the message. Checks run cheapest first so a bad request costs no copying:
 * the hub must be alive and running (503), the channel well formed (400), CONTENT_LENGTH present
 * (411), non-zero (400) and within the limit (413, decided before a byte of the body is read;
 * libfcgi drains the unread rest when it closes the connection). The limit is the smaller of
 * conf.max_message and the ring's max_payload, since the hub's config may differ from ours. Then
 * the body is read into the thread's buffer; a text message (any Content-Type other than
 * application/octet-stream) must be strict UTF-8, because workers frame it as a text frame
 * without looking. ring_publish() copies it into the ring under the ring's robust mutex and
 * doorbell_ring_all() wakes workers that sleep. The answer is 202 with the sequence number.
 * Targets: no parameter = every client; each channel of ?channel= and each user of ?user= (the
 * channel "@<user>", worker_channels.c) gets its own record, and the answer lists every seq.
 * With a Redis bridge (cluster), bridge_publish() (shm/bridge.c) does the same append, as an
 * OUTBOX record while the bridge is healthy: it never waits on Redis; the seq is then this
 * node's ring position of the accepted message, not of its later delivery.
 *
 * Every refusal after the segment was found counts in hdr->broadcasts_rejected.
 */
#include "admin.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "bridge.h"
#include "log.h"
#include "ring.h"

#define BROADCAST_READ_CHUNK  (64 * 1024)
#define BROADCAST_MAX_TARGETS 16 /* channels and users of one POST */

/* Where a broadcast goes: nowhere given = everyone; else each channel of ?channel=a,b and each
 * user of ?user=u (the channel "@u", which every connection of that user is subscribed to). */
struct broadcast_targets {
    int n;
    char name[BROADCAST_MAX_TARGETS][RING_MAX_CHANNEL_LEN + 1];
};

static int target_add(struct broadcast_targets *t, const char *prefix, const char *v, size_t len)
{
    size_t plen = strlen(prefix);
    if (t->n >= BROADCAST_MAX_TARGETS || len == 0 || plen + len > RING_MAX_CHANNEL_LEN)
        return -1;
    for (size_t i = 0; i < len; i++) {
        if (prefix[0] == '\0' ? !ring_channel_char_ok((unsigned char)v[i])
                              : (v[i] == ',' || (unsigned char)v[i] < 0x21))
            return -1;
    }
    memcpy(t->name[t->n], prefix, plen);
    memcpy(t->name[t->n] + plen, v, len);
    t->name[t->n][plen + len] = '\0';
    t->n++;
    return 0;
}

/* Splits a comma-separated query value into targets. Returns 0, -1 when malformed. */
static int targets_from_query(struct admin_req *r, const char *param, const char *prefix,
                              struct broadcast_targets *t)
{
    char v[BROADCAST_MAX_TARGETS * (RING_MAX_CHANNEL_LEN + 1)];
    int found = admin_query_get(r->query, param, v, sizeof(v));
    if (found == 0)
        return 0;
    if (found < 0 || v[0] == '\0')
        return -1;
    for (const char *p = v;;) {
        size_t n = strcspn(p, ",");
        if (target_add(t, prefix, p, n) < 0)
            return -1;
        if (p[n] == '\0')
            return 0;
        p += n + 1;
    }
}

/* Reads ?channel= and ?user=. Answers 400 and returns -1 when one is malformed. */
static int broadcast_targets(struct admin_req *r, struct broadcast_targets *t)
{
    t->n = 0;
    if (targets_from_query(r, "channel", "", t) < 0) {
        char detail[160];
        snprintf(detail, sizeof(detail),
                 "channel=a,b: 1 to %d channels of 1..%d characters of [A-Za-z0-9._:-]",
                 BROADCAST_MAX_TARGETS, RING_MAX_CHANNEL_LEN);
        admin_respond_error_str(r, 400, "invalid channel", detail);
        return -1;
    }
    if (targets_from_query(r, "user", "@", t) < 0) {
        char detail[160];
        snprintf(detail, sizeof(detail),
                 "user=a,b: up to %d targets in all, user ids of 1..%d bytes without ','",
                 BROADCAST_MAX_TARGETS, RING_MAX_CHANNEL_LEN - 1);
        admin_respond_error_str(r, 400, "invalid user", detail);
        return -1;
    }
    return 0;
}

/* Parses CONTENT_LENGTH against limit. Answers 411/400/413 and returns -1 when unusable. */
static int broadcast_length(struct admin_req *r, uint32_t limit, size_t *len)
{
    const char *cl = admin_req_param(r, "CONTENT_LENGTH");
    if (cl == NULL || cl[0] == '\0') {
        admin_respond_error_str(r, 411, "length required", "send the message with Content-Length");
        return -1;
    }
    uint64_t v = 0;
    int too_big = 0;
    for (const char *p = cl; *p; p++) {
        if (*p < '0' || *p > '9') {
            admin_respond_error_str(r, 400, "invalid Content-Length", cl);
            return -1;
        }
        v = v * 10 + (uint64_t)(*p - '0');
        if (v > limit)
            too_big = 1; /* stop growing: no overflow on absurd lengths */
        if (too_big)
            v = (uint64_t)limit + 1;
    }
    if (v == 0) {
        admin_respond_error_str(r, 400, "empty message", "the request body is the message");
        return -1;
    }
    if (too_big) {
        char detail[96];
        snprintf(detail, sizeof(detail), "{\"limit\":%u,\"content_length\":\"%.40s\"}", limit, cl);
        admin_respond_error(r, 413, "message too large", detail);
        return -1;
    }
    *len = (size_t)v;
    return 0;
}

/* Reads exactly len body bytes into the thread's body buffer, within admin_request_timeout:
 * each read gives up after that long (SO_RCVTIMEO, admin.c) and the deadline is checked between
 * chunks, so a sender trickling a body costs at most the timeout plus one chunk's reads. */
static int broadcast_read_body(struct admin_req *r, size_t len)
{
    struct admin_buf *b = &r->thr->body;
    admin_buf_reset(b);
    if (admin_buf_reserve(b, len) < 0) {
        admin_respond_error(r, 500, "out of memory", NULL);
        return -1;
    }
    uint64_t deadline = shm_mono_ns() / 1000000u + r->ctx->conf.admin_request_timeout_ms;
    int late = 0;
    while (b->len < len && !(late = shm_mono_ns() / 1000000u > deadline)) {
        size_t want = len - b->len;
        int chunk = want > BROADCAST_READ_CHUNK ? BROADCAST_READ_CHUNK : (int)want;
        int got = FCGX_GetStr(b->data + b->len, chunk, r->fcgi->in);
        if (got <= 0)
            break;
        b->len += (size_t)got;
    }
    if (b->len < len && (late || FCGX_GetError(r->fcgi->in) != 0)) {
        log_info("408 for %s %s: body not received within admin_request_timeout (%zu of %zu)",
                 r->method, r->path, b->len, len);
        admin_respond_error(r, 408, "request timeout", NULL);
        return -1;
    }
    if (b->len < len) {
        char detail[96];
        snprintf(detail, sizeof(detail), "{\"content_length\":%zu,\"received\":%zu}", len, b->len);
        admin_respond_error(r, 400, "body shorter than Content-Length", detail);
        return -1;
    }
    return 0;
}

/* True for "application/octet-stream", any case, parameters ignored. */
static int is_binary_type(const char *ct)
{
    static const char bin[] = "application/octet-stream";
    if (ct == NULL)
        return 0;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    if (strncasecmp(ct, bin, sizeof(bin) - 1) != 0)
        return 0;
    char next = ct[sizeof(bin) - 1];
    return next == '\0' || next == ';' || next == ' ' || next == '\t';
}

static int broadcast_check_text(struct admin_req *r)
{
    size_t bad = 0;
    const struct admin_buf *b = &r->thr->body;
    if (admin_utf8_valid((const uint8_t *)b->data, b->len, &bad))
        return 0;
    char detail[160];
    snprintf(detail, sizeof(detail),
             "{\"offset\":%zu,\"hint\":\"send binary data with Content-Type: "
             "application/octet-stream\"}",
             bad);
    admin_respond_error(r, 400, "invalid UTF-8 in text message", detail);
    return -1;
}

/* Appends one record; answers the error and returns -1 on failure. */
static int broadcast_append(struct admin_req *r, struct shm *s, const char *chan, uint16_t flags,
                            uint64_t *seq)
{
    const struct admin_buf *b = &r->thr->body;
    /* Redis bridge hook (issue 8): ring_publish + doorbell_ring_all when no bridge runs. */
    if (bridge_publish(s, b->data, (uint32_t)b->len, chan, flags, seq) < 0) {
        int e = errno;
        if (e == EMSGSIZE)
            admin_respond_error(r, 413, "message too large", NULL);
        else if (e == EINVAL)
            admin_respond_error_str(r, 400, "invalid channel", NULL);
        else {
            log_error(e, "ring_publish(%zu bytes) failed", b->len);
            admin_respond_error(r, 500, "broadcast failed", NULL); /* details in the log */
        }
        return -1;
    }
    log_debug("broadcast seq %llu: %zu bytes, %s, channel %s", (unsigned long long)*seq, b->len,
              (flags & RING_F_BINARY) ? "binary" : "text", chan ? chan : "(all)");
    return 0;
}

/* One record per target (a client subscribed to two of the channels gets it from each, the
 * wshub.v1 header naming the channel). 202 with the first sequence and, for several, all. */
static int broadcast_publish(struct admin_req *r, struct shm *s, const struct broadcast_targets *t,
                             uint16_t flags)
{
    uint64_t seqs[BROADCAST_MAX_TARGETS];
    int n = t->n > 0 ? t->n : 1;
    for (int i = 0; i < n; i++) {
        if (broadcast_append(r, s, t->n > 0 ? t->name[i] : NULL, flags, &seqs[i]) < 0)
            return -1;
    }
    char body[64 + BROADCAST_MAX_TARGETS * 24];
    int len = snprintf(body, sizeof(body), "{\"seq\":%llu", (unsigned long long)seqs[0]);
    if (n > 1) {
        len += snprintf(body + len, sizeof(body) - (size_t)len, ",\"seqs\":[");
        for (int i = 0; i < n; i++)
            len += snprintf(body + len, sizeof(body) - (size_t)len, "%s%llu", i ? "," : "",
                            (unsigned long long)seqs[i]);
        len += snprintf(body + len, sizeof(body) - (size_t)len, "]");
    }
    len += snprintf(body + len, sizeof(body) - (size_t)len, "}\n");
    admin_respond(r, 202, "application/json", "", body, (size_t)len);
    return 0;
}

/* The smaller of our configured limit and what the ring accepts. */
static uint32_t broadcast_limit(const struct admin_req *r, const struct shm *s)
{
    uint32_t ring_max = s->hdr->ring.max_payload;
    uint32_t mine = r->ctx->conf.max_message;
    return ring_max < mine ? ring_max : mine;
}

void admin_handle_broadcast(struct admin_req *r)
{
    struct broadcast_targets targets;
    size_t len;
    struct admin_seg *seg = admin_req_segment(r);
    if (seg == NULL)
        return;
    struct shm *s = &seg->shm;
    int binary = is_binary_type(admin_req_param(r, "CONTENT_TYPE"));
    if (broadcast_targets(r, &targets) < 0 ||
        broadcast_length(r, broadcast_limit(r, s), &len) < 0 || broadcast_read_body(r, len) < 0 ||
        (!binary && broadcast_check_text(r) < 0))
        goto rejected;
    /* The body may have taken a while to arrive: do not append for a hub that began stopping. */
    if (atomic_load_explicit(&s->hdr->hub_state, memory_order_relaxed) != SHM_HUB_RUNNING) {
        admin_respond_error_str(r, 503, "hub stopping", NULL);
        goto rejected;
    }
    if (broadcast_publish(r, s, &targets, binary ? RING_F_BINARY : 0) < 0)
        goto rejected;
    return;
rejected:
    atomic_fetch_add_explicit(&s->hdr->broadcasts_rejected, 1, memory_order_relaxed);
}
