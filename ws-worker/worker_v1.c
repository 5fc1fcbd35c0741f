/* worker_v1.c -- the wshub.v1 subprotocol: envelopes, the welcome, gap notices, resume.
 *
 * docs/protocol.md is the contract; this file is its server side. A client that offers
 * wshub.v1 is bound by lws to protocols[WORKER_PROTO_V1] and reads the V1 encoding of every
 * broadcast ("m <seq>\n" + payload), built once per worker in worker_fanout.c, never per client.
 *
 * Resume. `?since=S&epoch=E` is checked for form in CONFIRM_UPGRADE (a malformed value is a
 * 400, before the upgrade) and decided at ESTABLISHED against this worker's frame buffer:
 *   - E is not this segment's epoch, or S was never issued (S >= the ring's next sequence):
 *     "reset", live from now;
 *   - S + 1 < fan.base_seq, i.e. some broadcast after S is no longer buffered here: "expired",
 *     live from now;
 *   - else "resumed": the cursor goes to the first buffered frame after S. Frames this worker
 *     has not pumped yet come later anyway; skip_through drops any numbered <= S (a client that
 *     saw S on a faster worker may be ahead of this one).
 * A new worker frames everything the ring still holds before it accepts (worker_fanout_init), so
 * the clients of a killed worker find their messages on whichever worker they land.
 *
 * Control messages are tiny text frames written straight before the next run of frames
 * (worker_deliver.c): the welcome first, then any gap notice. They are built on demand from the
 * connection's few numbers, so a pending message costs no memory.
 */
#include "worker.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "worker_resume.h"
#include "worker_rfc6455.h"

static const char *const welcome_names[] = {"fresh", "resumed", "expired", "reset"};
static const char *const gap_names[] = {"skipped", "overrun"};

static int v1_subprotocol_ok(struct lws *wsi, const char **why)
{
    char offer[256];
    int total = lws_hdr_total_length(wsi, WSI_TOKEN_PROTOCOL);
    if (total <= 0)
        return 1; /* no offer: raw payloads */
    if (total >= (int)sizeof(offer) ||
        lws_hdr_copy(wsi, offer, sizeof(offer), WSI_TOKEN_PROTOCOL) < 0) {
        *why = "Sec-WebSocket-Protocol offer too long";
        return 0;
    }
    /* lws drops the TCP connection without a status when nothing matches: answer here */
    if (!worker_rfc6455_token_listed(offer, WORKER_SUBPROTOCOL_V1, 0) &&
        !worker_rfc6455_token_listed(offer, "wshub.raw", 0)) {
        *why = "unsupported subprotocol: offer wshub.v1, or none";
        return 0;
    }
    return 1;
}

/* Reads ?since= and ?epoch=. Returns 0, or -1 with *why for a malformed value. */
static int v1_resume_point(struct lws *wsi, struct resume_point *rp, const char **why)
{
    char since[32], epoch[32];
    const char *s = lws_get_urlarg_by_name(wsi, "since=", since, sizeof(since));
    const char *e = lws_get_urlarg_by_name(wsi, "epoch=", epoch, sizeof(epoch));
    return resume_parse(s, e, rp, why);
}

unsigned worker_v1_check(struct worker *w, struct lws *wsi, const char **why)
{
    struct resume_point rp;
    (void)w;
    if (!v1_subprotocol_ok(wsi, why))
        return HTTP_STATUS_BAD_REQUEST;
    if (v1_resume_point(wsi, &rp, why) < 0)
        return HTTP_STATUS_BAD_REQUEST;
    return 0;
}

static enum worker_welcome v1_resume(struct worker *w, struct worker_conn *c,
                                     const struct resume_point *rp)
{
    const struct worker_fanout *f = &w->fan;
    if (!rp->has_since)
        return WORKER_WELCOME_FRESH;
    if ((rp->has_epoch && rp->epoch != w->shm.hdr->epoch) || rp->since >= ring_next_seq(&w->shm))
        return WORKER_WELCOME_RESET;
    if (rp->since + 1 < f->base_seq)
        return WORKER_WELCOME_EXPIRED;
    c->cursor = worker_fanout_after(f, rp->since);
    c->busy = c->cursor < f->tail; /* worker_deliver.c skips what its channels do not want */
    c->skip_through = rp->since;
    c->last_seq = rp->since;
    return WORKER_WELCOME_RESUMED;
}

void worker_v1_established(struct worker *w, struct worker_conn *c, struct lws *wsi)
{
    struct resume_point rp;
    const char *why = NULL;
    c->last_seq = w->fan.cursor.seq - 1; /* everything framed so far is before this client */
    const struct lws_protocols *p = lws_get_protocol(wsi);
    if (p == NULL || strcmp(p->name, WORKER_SUBPROTOCOL_V1) != 0) { /* lws copies protocols[] */
        c->variant = WORKER_VARIANT_RAW;
        return;
    }
    c->variant = WORKER_VARIANT_V1;
    if (v1_resume_point(wsi, &rp, &why) < 0)
        memset(&rp, 0, sizeof(rp)); /* checked in CONFIRM_UPGRADE: cannot happen */
    c->welcome_status = (uint8_t)v1_resume(w, c, &rp);
    c->pending |= WORKER_PENDING_WELCOME;
    if (c->welcome_status == WORKER_WELCOME_EXPIRED || c->welcome_status == WORKER_WELCOME_RESET)
        log_debug("resume from %" PRIu64 " refused: %s", rp.since,
                  welcome_names[c->welcome_status]);
    lws_callback_on_writable(wsi);
}

static size_t v1_text_frame(uint8_t *buf, size_t cap, const char *text, int n)
{
    if (n < 0 || n > 125 || (size_t)n + 2 > cap)
        return 0;  /* cannot happen with 20-digit numbers */
    buf[0] = 0x81; /* FIN + text */
    buf[1] = (uint8_t)n;
    memcpy(buf + 2, text, (size_t)n);
    return (size_t)n + 2;
}

size_t worker_v1_control(struct worker *w, struct worker_conn *c, uint8_t *buf, size_t cap)
{
    char text[WORKER_V1_CONTROL_MAX];
    int n;
    if (c->pending & WORKER_PENDING_WELCOME) {
        c->pending &= (uint8_t)~WORKER_PENDING_WELCOME;
        n = snprintf(text, sizeof(text), "w %016" PRIx64 " %" PRIu64 " %s\n", w->shm.hdr->epoch,
                     c->last_seq, welcome_names[c->welcome_status]);
        return v1_text_frame(buf, cap, text, n);
    }
    if (c->pending & WORKER_PENDING_GAP) {
        c->pending &= (uint8_t)~WORKER_PENDING_GAP;
        n = (int)worker_v1_gap_text(c->gap_from, c->gap_to, c->gap_reason, (uint8_t *)text);
        return v1_text_frame(buf, cap, text, n);
    }
    return 0;
}

uint32_t worker_v1_prefix(uint64_t seq, const char *channel, uint8_t *out)
{
    char tmp[WORKER_V1_PREFIX_MAX + 1];
    int n = channel[0] != '\0' ? snprintf(tmp, sizeof(tmp), "m %" PRIu64 " %s\n", seq, channel)
                               : snprintf(tmp, sizeof(tmp), "m %" PRIu64 "\n", seq);
    memcpy(out, tmp, (size_t)n);
    return (uint32_t)n;
}

uint32_t worker_v1_gap_text(uint64_t from, uint64_t to, enum worker_gap_reason r, uint8_t *out)
{
    char tmp[WORKER_V1_CONTROL_MAX];
    int n = snprintf(tmp, sizeof(tmp), "g %" PRIu64 " %" PRIu64 " %s\n", from, to, gap_names[r]);
    memcpy(out, tmp, (size_t)n);
    return (uint32_t)n;
}
