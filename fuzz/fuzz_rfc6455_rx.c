/* fuzz_rfc6455_rx.c -- worker_rfc6455_rx_feed() (ws-worker/worker_rfc6455_rx.c), the validator
 * every byte a client sends passes before libwebsockets parses it.
 *
 * The harness drives it as worker_rfc6455.c's recv() filter does: a buffer of `len` bytes (lws's
 * read size, here just over HELD_MAX + SYNTH_MIN up to 8 KiB more), held bytes put back in
 * front, each read filling at most the room the filter leaves for its own close frame, the reads
 * cut at points chosen by the input.
 * Input: 2 bytes for len, 1 byte: the ping (0, 1, ...) whose callback refuses it (255: none,
 * as the worker's rate limit would), 1 byte: bit 7 = permessage-deflate negotiated (RSV1 allowed
 * on a message's first frame), bits 0-6 seed the read sizes; then the client's bytes.
 * Oracle: a reference reading of the same bytes in one piece, written from RFC 6455 section 5
 * and the rules in worker_rfc6455_rx.c's header (byte 0 judged as soon as it is there, byte 1
 * next, the extended length next, a data frame's header passed once it is whole with its mask,
 * a control frame only once it is whole). Whatever the cuts, the bytes handed to lws must be
 * exactly the reference's (valid frames with pings removed), the pings reported must be the
 * reference's with their payloads unmasked, and the stream must end as the reference's does:
 * still open, with the client's valid close (its code), or with our masked close frame carrying
 * the code for the first broken rule (1002, 1007 for bad UTF-8 in a close reason, 1008 for a
 * refused ping) and a UTF-8 reason (masked or not: lws takes both). res->out never exceeds the
 * buffer, nothing follows a close.
 * FUZZ_VERBOSE=1 prints how each input ended.
 */
#include "fuzz.h"
#include "worker_rfc6455.h"

#define MAX_PINGS       1400 /* a ping is at least 6 bytes, an input at most 8192 */
#define CLOSE_FRAME_MAX (2 + 4 + 2 + WORKER_RFC6455_WHY_MAX) /* ours, masked or not */

struct stream {
    uint8_t *out; /* bytes handed to lws */
    size_t out_len;
    uint8_t pings[MAX_PINGS][126]; /* [0] = length, then the unmasked payload */
    size_t n_pings;
    int event;
    unsigned code;
};

struct ping_ctx {
    struct stream *st;
    unsigned refuse_at;
};

static const char *on_ping(void *arg, const uint8_t *payload, size_t len)
{
    struct ping_ctx *pc = arg;
    struct stream *st = pc->st;
    FUZZ_CHECK(len <= 125, "ping of %zu bytes reported", len);
    if (st->n_pings == pc->refuse_at)
        return "ping refused";
    FUZZ_CHECK(st->n_pings < MAX_PINGS, "too many pings");
    st->pings[st->n_pings][0] = (uint8_t)len;
    memcpy(st->pings[st->n_pings] + 1, payload, len);
    st->n_pings++;
    return NULL;
}

/* ---- the reference: the whole stream at once ---- */

static int ref_close_code_ok(unsigned c)
{
    return !(c < 1000 || (c >= 1004 && c <= 1006) || (c >= 1015 && c <= 2999) || c >= 5000);
}

static void ref_out(struct stream *st, const uint8_t *p, size_t n)
{
    memcpy(st->out + st->out_len, p, n);
    st->out_len += n;
}

static void ref_fail(struct stream *st, unsigned code)
{
    st->event = WORKER_RFC6455_RX_FAIL;
    st->code = code;
}

/* Judges one frame at s[0..n). Returns the bytes it used, or 0 when the stream stopped (need
 * more bytes, or an event). */
static size_t ref_frame(struct stream *st, const uint8_t *s, size_t n, int *in_message,
                        unsigned refuse_at, int deflate)
{
    unsigned fin = s[0] >> 7, op = s[0] & 0x0F, control = op >= 8;
    int known = op == 0 || op == 1 || op == 2 || op == 8 || op == 9 || op == 10;
    /* RSV2/RSV3: never; RSV1: only on a message's first frame with permessage-deflate */
    int rsv_bad = (s[0] & 0x30) || ((s[0] & 0x40) && !(deflate && (op == 1 || op == 2)));
    if (rsv_bad || !known || (control && !fin) || (op == 0 && !*in_message) ||
        ((op == 1 || op == 2) && *in_message)) {
        ref_fail(st, 1002);
        return 0;
    }
    if (n < 2)
        return 0;
    unsigned masked = s[1] >> 7, len7 = s[1] & 0x7F;
    if (!masked || (control && len7 > 125)) {
        ref_fail(st, 1002);
        return 0;
    }
    size_t ext = len7 == 126 ? 2 : len7 == 127 ? 8 : 0;
    if (n < 2 + ext)
        return 0;
    uint64_t plen = len7;
    if (ext) {
        plen = 0;
        for (size_t k = 0; k < ext; k++)
            plen = plen * 256 + s[2 + k];
        if ((ext == 2 && plen < 126) || (ext == 8 && (plen < 65536 || plen > INT64_MAX))) {
            ref_fail(st, 1002);
            return 0;
        }
    }
    size_t hlen = 2 + ext + 4;
    if (n < hlen)
        return 0;
    const uint8_t *key = s + 2 + ext;
    if (!control || op == 10) {
        size_t take = plen < n - hlen ? (size_t)plen : n - hlen; /* payload as it comes */
        ref_out(st, s, hlen + take);
        if (op == 1 || op == 2)
            *in_message = !fin;
        else if (op == 0 && fin)
            *in_message = 0;
        return take < plen ? 0 : hlen + take; /* 0: the input ends inside the payload */
    }
    if (n < hlen + plen)
        return 0;
    uint8_t pl[125];
    for (size_t k = 0; k < plen; k++)
        pl[k] = s[hlen + k] ^ key[k % 4];
    if (op == 9) {
        if (st->n_pings == refuse_at) {
            ref_fail(st, 1008);
            return 0;
        }
        FUZZ_CHECK(st->n_pings < MAX_PINGS, "input too long for this harness: too many pings");
        st->pings[st->n_pings][0] = (uint8_t)plen;
        memcpy(st->pings[st->n_pings] + 1, pl, (size_t)plen);
        st->n_pings++;
        return hlen + (size_t)plen;
    }
    size_t bad;
    unsigned code = plen >= 2 ? (unsigned)pl[0] * 256 + pl[1] : 0;
    if (plen == 1 || (plen >= 2 && !ref_close_code_ok(code))) {
        ref_fail(st, 1002);
        return 0;
    }
    if (plen > 2 && !fuzz_utf8_valid(pl + 2, (size_t)plen - 2, &bad)) {
        ref_fail(st, 1007);
        return 0;
    }
    ref_out(st, s, hlen + (size_t)plen);
    st->event = WORKER_RFC6455_RX_CLOSE;
    st->code = code;
    return 0;
}

static void ref_run(struct stream *st, const uint8_t *s, size_t n, unsigned refuse_at, int deflate)
{
    int in_message = 0;
    for (size_t i = 0; i < n;) {
        size_t used = ref_frame(st, s + i, n - i, &in_message, refuse_at, deflate);
        if (used == 0)
            break;
        i += used;
    }
}

/* ---- the real thing, read by read ---- */

static uint32_t next_rand(uint32_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 17;
    *x ^= *x << 5;
    return *x;
}

static void real_run(struct stream *st, const uint8_t *s, size_t n, size_t len, uint32_t seed,
                     unsigned refuse_at, int deflate)
{
    struct worker_rfc6455_rx rx;
    struct ping_ctx pc = {st, refuse_at};
    uint8_t *buf = malloc(len);
    FUZZ_CHECK(buf != NULL, "malloc");
    memset(&rx, 0, sizeof(rx));
    rx.rsv1_ok = (uint8_t)deflate;
    uint32_t x = seed * 2654435761u | 1;
    size_t i = 0;
    int done = 0;
    while (i < n || done == 1) {
        size_t held = rx.held_len;
        FUZZ_CHECK(held < WORKER_RFC6455_HELD_MAX, "held %zu bytes", held);
        size_t room = len - held - WORKER_RFC6455_SYNTH_MIN; /* worker_rfc6455.c's read */
        uint32_t r = next_rand(&x);
        size_t want = (r & 3) == 0 ? 1 : (r & 3) == 1 ? r % 16 + 1 : room;
        size_t got = want < room ? want : room;
        if (got > n - i)
            got = n - i;
        memcpy(buf + held, s + i, got);
        i += got;
        struct worker_rfc6455_rx_result res;
        worker_rfc6455_rx_feed(&rx, buf, held + got, len, on_ping, &pc, &res);
        FUZZ_CHECK(res.out <= len, "out %zu > buffer %zu", res.out, len);
        if (done) { /* a feed after the end: everything discarded */
            FUZZ_CHECK(res.out == 0 && res.event == WORKER_RFC6455_RX_MORE, "bytes after a close");
            break;
        }
        memcpy(st->out + st->out_len, buf, res.out);
        st->out_len += res.out;
        if (res.event != WORKER_RFC6455_RX_MORE) {
            FUZZ_CHECK(rx.state == WORKER_RFC6455_RX_DONE, "event %d but not done", res.event);
            FUZZ_CHECK(res.event != WORKER_RFC6455_RX_FAIL ||
                           (res.why != NULL && strlen(res.why) <= WORKER_RFC6455_WHY_MAX),
                       "no usable reason");
            st->event = res.event;
            st->code = res.code;
            done = 1;
        }
    }
    free(buf);
}

/* Checks that out[at..) is our close frame (masked or not), with the event's code and a UTF-8
 * reason. */
static void check_synth_close(const struct stream *st, size_t at)
{
    size_t n = st->out_len - at, bad;
    const uint8_t *p = st->out + at;
    FUZZ_CHECK(at <= st->out_len && n >= 4 && n <= CLOSE_FRAME_MAX,
               "FAIL must end with our close frame: %zu bytes after the valid ones", n);
    size_t masked = p[1] >> 7, plen = p[1] & 0x7F, hlen = 2 + 4 * masked;
    FUZZ_CHECK(p[0] == 0x88 && plen >= 2 && hlen + plen == n, "close header %02x %02x, %zu bytes",
               p[0], p[1], n);
    uint8_t pl[CLOSE_FRAME_MAX];
    for (size_t j = 0; j < plen; j++)
        pl[j] = p[hlen + j] ^ (masked ? p[2 + j % 4] : 0);
    FUZZ_CHECK((unsigned)(pl[0] << 8 | pl[1]) == st->code, "close frame with %u, event code %u",
               (unsigned)(pl[0] << 8 | pl[1]), st->code);
    FUZZ_CHECK(fuzz_utf8_valid(pl + 2, plen - 2, &bad), "reason not UTF-8");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4)
        return 0;
    size_t len = WORKER_RFC6455_HELD_MAX + WORKER_RFC6455_SYNTH_MIN + 1 +
                 (size_t)(data[0] | data[1] << 8) % 8192;
    int deflate = data[3] >> 7;
    unsigned refuse_at = data[2] == 255 ? UINT32_MAX : data[2];
    const uint8_t *s = data + 4;
    size_t n = size - 4;
    static struct stream want_s, got_s; /* big: kept, and only their counters reset */
    struct stream *want = &want_s, *got = &got_s;
    want->out_len = got->out_len = want->n_pings = got->n_pings = 0;
    want->event = got->event = WORKER_RFC6455_RX_MORE;
    want->code = got->code = 0;
    want->out = malloc(n + 1);
    got->out = malloc(n + CLOSE_FRAME_MAX); /* the client's bytes + our close frame */
    FUZZ_CHECK(want->out && got->out, "malloc");

    ref_run(want, s, n, refuse_at, deflate);
    real_run(got, s, n, len, data[3] & 0x7F, refuse_at, deflate);

    if (getenv("FUZZ_VERBOSE"))
        fprintf(stderr, "event %d code %u, %zu bytes passed, %zu pings\n", got->event, got->code,
                got->out_len, got->n_pings);
    FUZZ_CHECK(got->event == want->event && got->code == want->code,
               "ended with event %d code %u, reference %d code %u", got->event, got->code,
               want->event, want->code);
    size_t valid = got->event == WORKER_RFC6455_RX_FAIL ? want->out_len : got->out_len;
    FUZZ_CHECK(valid == want->out_len && valid <= got->out_len &&
                   memcmp(got->out, want->out, valid) == 0,
               "%zu bytes passed to lws, reference %zu", got->out_len, want->out_len);
    if (got->event == WORKER_RFC6455_RX_FAIL)
        check_synth_close(got, valid);
    FUZZ_CHECK(got->n_pings == want->n_pings, "%zu pings reported, reference %zu", got->n_pings,
               want->n_pings);
    for (size_t k = 0; k < got->n_pings; k++)
        FUZZ_CHECK(memcmp(got->pings[k], want->pings[k], 1 + want->pings[k][0]) == 0,
                   "ping %zu payload differs", k);
    free(want->out);
    free(got->out);
    return 0;
}
