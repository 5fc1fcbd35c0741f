/* worker_rfc6455_test.c -- unit test of the client frame validator (worker_rfc6455_rx.c).
 *
 * Every case is a byte stream fed in every chunk size from 1 byte to the whole stream, the way
 * worker_rfc6455.c feeds it (held bytes put back in front, cap = what was read + the 4 bytes it
 * keeps free): the verdict must not depend on where the reads split the stream. Valid streams
 * must come out unchanged but for their pings, which are reported in order with their payload;
 * each broken rule must end the output with an unmasked close frame of the expected code right
 * after the valid frames before it, and nothing may ever exceed cap. The UTF-8 check is compared
 * with admin-cgi's admin_utf8_valid() (itself tested against an independent decoder) on every
 * sequence of up to three bytes and on random longer ones, and the close-code table with the
 * ranges of RFC 6455 7.4 and the IANA registry.
 */
#include "worker_rfc6455.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../admin-cgi/admin.h"

static int failures;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            failures++;                                                                            \
            fprintf(stderr, "%s:%d: ", __FILE__, __LINE__);                                        \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)

/* A stream under construction. */
struct stream {
    uint8_t b[200000];
    size_t n;
};

/* Appends a client frame: masked (with a fixed key) unless mask is 0. */
static void put(struct stream *s, unsigned b0, const void *payload, size_t len, int mask)
{
    static const uint8_t key[4] = {0x37, 0xfa, 0x21, 0x3d};
    const uint8_t *p = payload;
    s->b[s->n++] = (uint8_t)b0;
    uint8_t m = mask ? 0x80 : 0;
    if (len < 126) {
        s->b[s->n++] = m | (uint8_t)len;
    } else if (len < 65536) {
        s->b[s->n++] = m | 126;
        s->b[s->n++] = (uint8_t)(len >> 8);
        s->b[s->n++] = (uint8_t)len;
    } else {
        s->b[s->n++] = m | 127;
        for (int k = 7; k >= 0; k--)
            s->b[s->n++] = (uint8_t)((uint64_t)len >> (8 * k));
    }
    if (mask) {
        memcpy(s->b + s->n, key, 4);
        s->n += 4;
    }
    for (size_t i = 0; i < len; i++)
        s->b[s->n++] = mask ? p[i] ^ key[i & 3] : p[i];
}

static void put_raw(struct stream *s, const void *bytes, size_t len)
{
    memcpy(s->b + s->n, bytes, len);
    s->n += len;
}

/* What one run produced. */
struct run {
    uint8_t out[200100];
    size_t out_len;
    char pings[4096]; /* payloads joined by '|' */
    int event;
    unsigned code;
    const char *why;
    int over_cap;
};

static const char *ping_cb(void *arg, const uint8_t *p, size_t len)
{
    struct run *r = arg;
    size_t at = strlen(r->pings);
    if (at + len + 2 < sizeof(r->pings)) {
        memcpy(r->pings + at, p, len);
        r->pings[at + len] = '|';
        r->pings[at + len + 1] = '\0';
    }
    return len == 4 && memcmp(p, "STOP", 4) == 0 ? "ping rate exceeded" : NULL;
}

static void feed_in_chunks(const struct stream *s, size_t chunk, struct run *r)
{
    struct worker_rfc6455_rx rx;
    uint8_t buf[WORKER_RFC6455_HELD_MAX + 70000 + WORKER_RFC6455_SYNTH_MIN];
    memset(&rx, 0, sizeof(rx));
    memset(r, 0, sizeof(*r));
    for (size_t pos = 0; pos < s->n && r->event == 0;) {
        size_t held = rx.held_len, n = s->n - pos < chunk ? s->n - pos : chunk;
        size_t cap = held + n + WORKER_RFC6455_SYNTH_MIN;
        memcpy(buf + held, s->b + pos, n);
        pos += n;
        struct worker_rfc6455_rx_result res;
        worker_rfc6455_rx_feed(&rx, buf, held + n, cap, ping_cb, r, &res);
        r->over_cap |= res.out > cap;
        memcpy(r->out + r->out_len, buf, res.out);
        r->out_len += res.out;
        r->event = res.event;
        r->code = res.code;
        r->why = res.why;
    }
}

/* A valid stream: out == want (the stream without its pings) in every chunking. */
static void expect_valid(const char *name, const struct stream *s, const struct stream *want,
                         const char *pings, int closes)
{
    static struct run r;
    for (size_t chunk = 1; chunk <= s->n; chunk += chunk < 300 ? 1 : 997) {
        feed_in_chunks(s, chunk, &r);
        CHECK(!r.over_cap, "%s/%zu: output over cap", name, chunk);
        CHECK(r.event == (closes ? WORKER_RFC6455_RX_CLOSE : WORKER_RFC6455_RX_MORE),
              "%s/%zu: event %d (%s)", name, chunk, r.event, r.why ? r.why : "");
        CHECK(r.out_len == want->n && memcmp(r.out, want->b, want->n) == 0,
              "%s/%zu: output differs (%zu bytes, want %zu)", name, chunk, r.out_len, want->n);
        CHECK(strcmp(r.pings, pings) == 0, "%s/%zu: pings '%s', want '%s'", name, chunk, r.pings,
              pings);
        if (failures > 20)
            return;
    }
}

/* A broken rule after the valid frames `want`: the output is those frames and our close. */
static void expect_fail(const char *name, const struct stream *s, const struct stream *want,
                        unsigned code, const char *why)
{
    size_t prefix = want->n;
    static struct run r;
    for (size_t chunk = 1; chunk <= s->n; chunk++) {
        feed_in_chunks(s, chunk, &r);
        CHECK(!r.over_cap, "%s/%zu: output over cap", name, chunk);
        CHECK(r.event == WORKER_RFC6455_RX_FAIL && r.code == code && strstr(r.why, why),
              "%s/%zu: event %d code %u (%s), want FAIL %u (%s)", name, chunk, r.event, r.code,
              r.why ? r.why : "", code, why);
        CHECK(r.out_len >= prefix + 4 && memcmp(r.out, want->b, prefix) == 0,
              "%s/%zu: the frames before the bad one were not passed on", name, chunk);
        const uint8_t *c = r.out + prefix;
        size_t clen = r.out_len - prefix;
        CHECK(clen >= 4 && c[0] == 0x88 && c[1] == clen - 2 && (unsigned)(c[2] << 8 | c[3]) == code,
              "%s/%zu: no close frame with %u at the end", name, chunk, code);
        if (failures > 20)
            return;
    }
}

static void test_valid_streams(void)
{
    static struct stream s, want;
    static uint8_t big[70000];
    memset(big, 'b', sizeof(big));
    s.n = want.n = 0;
    put(&s, 0x81, "hello", 5, 1);
    put(&want, 0x81, "hello", 5, 1);
    put(&s, 0x89, "p1", 2, 1); /* a ping: removed */
    put(&s, 0x02, "frag", 4, 1);
    put(&want, 0x02, "frag", 4, 1);
    put(&s, 0x89, "", 0, 1);
    put(&s, 0x8A, "pong", 4, 1); /* a pong: passed on */
    put(&want, 0x8A, "pong", 4, 1);
    put(&s, 0x00, "ment", 4, 1);
    put(&want, 0x00, "ment", 4, 1);
    put(&s, 0x80, "ed", 2, 1);
    put(&want, 0x80, "ed", 2, 1);
    put(&s, 0x82, big, 300, 1);
    put(&want, 0x82, big, 300, 1);
    put(&s, 0x81, "", 0, 1);
    put(&want, 0x81, "", 0, 1);
    put(&s, 0x89, "p3", 2, 1);
    char p4[126];
    memset(p4, '4', 125);
    p4[125] = '\0';
    put(&s, 0x89, p4, 125, 1); /* the largest ping: held whole across reads */
    char pings[256];
    snprintf(pings, sizeof(pings), "p1||p3|%s|", p4);
    expect_valid("valid", &s, &want, pings, 0);

    s.n = want.n = 0;
    put(&s, 0x82, big, sizeof(big), 1); /* 64-bit length */
    put(&want, 0x82, big, sizeof(big), 1);
    put(&s, 0x89, "after", 5, 1);
    expect_valid("64-bit", &s, &want, "after|", 0);

    static uint8_t bye[125] = {0x03, 0xF4, 'b', 'y', 'e', ' ', 0xE2, 0x82, 0xAC};
    memset(bye + 9, '.', sizeof(bye) - 9); /* the largest close: held whole across reads */
    s.n = want.n = 0;
    put(&s, 0x81, "x", 1, 1);
    put(&want, 0x81, "x", 1, 1);
    put(&s, 0x88, bye, sizeof(bye), 1); /* 1012 with a UTF-8 reason: valid, passed on */
    put(&want, 0x88, bye, sizeof(bye), 1);
    put(&s, 0x81, "ignored", 7, 0); /* anything after a close is dropped, even this */
    expect_valid("close", &s, &want, "", 1);
}

/* A bad frame after a valid text frame and a ping (answered, and removed from the output); the
 * first `passed` bytes of `bad` are valid frames that must be passed on too. */
static void fail_case(const char *name, unsigned code, const char *why, const void *bad,
                      size_t badlen, size_t passed)
{
    static struct stream s, want;
    s.n = want.n = 0;
    put(&s, 0x81, "ok", 2, 1);
    put(&want, 0x81, "ok", 2, 1);
    put(&s, 0x89, "ping", 4, 1);
    put_raw(&s, bad, badlen);
    put_raw(&want, bad, passed);
    expect_fail(name, &s, &want, code, why);
}

static void test_broken_rules(void)
{
    static struct stream b;
    static const uint8_t zero[126];
    static const uint8_t c1[] = {0x03}, c1005[] = {0x03, 0xED}, c999[] = {0x03, 0xE7},
                         c5000[] = {0x13, 0x88}, cbad[] = {0x03, 0xE8, 'x', 0xFF};
#define BAD(name, code, why, ...)                                                                  \
    do {                                                                                           \
        b.n = 0;                                                                                   \
        __VA_ARGS__;                                                                               \
        fail_case(name, code, why, b.b, b.n, 0);                                                   \
    } while (0)
    BAD("unmasked", 1002, "unmasked", put(&b, 0x81, "x", 1, 0));
    BAD("rsv1", 1002, "reserved bits", put(&b, 0xC1, "x", 1, 1));
    BAD("rsv3", 1002, "reserved bits", put(&b, 0x91, "x", 1, 1));
    BAD("opcode3", 1002, "reserved opcode", put(&b, 0x83, "x", 1, 1));
    BAD("opcodeB", 1002, "reserved opcode", put(&b, 0x8B, "x", 1, 1));
    BAD("ping126", 1002, "too long", put(&b, 0x89, zero, 126, 1));
    BAD("close126", 1002, "too long", put(&b, 0x88, zero, 126, 1));
    BAD("fragping", 1002, "fragmented control", put(&b, 0x09, "x", 1, 1));
    BAD("orphan", 1002, "orphan", put(&b, 0x80, "x", 1, 1));
    b.n = 0;
    put(&b, 0x01, "a", 1, 1); /* the first fragment is fine and passed on */
    size_t first = b.n;
    put(&b, 0x82, "b", 1, 1);
    fail_case("newinfrag", 1002, "expected continuation", b.b, b.n, first);
    BAD("close1", 1002, "1 byte", put(&b, 0x88, c1, 1, 1));
    BAD("close999", 1002, "close code", put(&b, 0x88, c999, 2, 1));
    BAD("close1005", 1002, "close code", put(&b, 0x88, c1005, 2, 1));
    BAD("close5000", 1002, "close code", put(&b, 0x88, c5000, 2, 1));
    BAD("closeutf8", 1007, "UTF-8", put(&b, 0x88, cbad, sizeof(cbad), 1));
    BAD("len16", 1002, "length", put_raw(&b, "\x82\xFE\x00\x7D\x01\x02\x03\x04", 8));
    BAD("len64", 1002, "length", put_raw(&b, "\x82\xFF\0\0\0\0\0\0\xFF\xFF\1\2\3\4", 14));
    BAD("len63", 1002, "length", put_raw(&b, "\x82\xFF\x80\0\0\0\0\0\0\0\1\2\3\4", 14));
    BAD("pingrate", 1008, "ping rate", put(&b, 0x89, "STOP", 4, 1));
#undef BAD
}

/* permessage-deflate negotiated: RSV1 on a message's first frame only. */
static void test_rsv1_with_deflate(void)
{
    static struct stream s, want;
    static struct run r;
    struct worker_rfc6455_rx rx;
    uint8_t buf[256];
    struct worker_rfc6455_rx_result res;
    s.n = want.n = 0;
    put(&s, 0xC1, "z1", 2, 1); /* compressed text, one frame */
    put(&s, 0x42, "z2", 2, 1); /* compressed binary, first of two */
    put(&s, 0x89, "p", 1, 1);
    put(&s, 0x80, "z3", 2, 1);
    memcpy(want.b, s.b, 8);
    want.n = 8;
    put(&want, 0x42, "z2", 2, 1);
    put(&want, 0x80, "z3", 2, 1);
    memset(&rx, 0, sizeof(rx));
    rx.rsv1_ok = 1;
    memcpy(buf, s.b, s.n);
    memset(&r, 0, sizeof(r));
    worker_rfc6455_rx_feed(&rx, buf, s.n, sizeof(buf), ping_cb, &r, &res);
    CHECK(res.event == WORKER_RFC6455_RX_MORE && res.out == want.n &&
              memcmp(buf, want.b, want.n) == 0 && strcmp(r.pings, "p|") == 0,
          "deflate: valid RSV1 frames refused (%s)", res.why ? res.why : "");
    /* RSV1 on a continuation (with and without FIN) and on a ping; RSV2; RSV3 */
    static const unsigned bad[] = {0x40, 0xC0, 0xC9, 0xA0, 0x90};
    for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
        s.n = 0;
        put(&s, 0x01, "a", 1, 1); /* an open message, for the continuation case */
        put(&s, bad[k], "x", 1, 1);
        memset(&rx, 0, sizeof(rx));
        rx.rsv1_ok = 1;
        memcpy(buf, s.b, s.n);
        worker_rfc6455_rx_feed(&rx, buf, s.n, sizeof(buf), ping_cb, &r, &res);
        CHECK(res.event == WORKER_RFC6455_RX_FAIL && res.code == 1002 &&
                  strstr(res.why, "reserved bits") != NULL,
              "deflate: first byte %#x accepted", bad[k]);
    }
}

static void test_utf8(void)
{
    uint8_t s[8];
    for (unsigned v = 0; v < (1u << 24); v++) {
        for (size_t n = 1; n <= 3; n++) {
            if (n < 3 && (v >> (8 * n)) != 0)
                continue;
            for (size_t k = 0; k < n; k++)
                s[k] = (uint8_t)(v >> (8 * k));
            int want = admin_utf8_valid(s, n, NULL);
            CHECK(worker_rfc6455_utf8_ok(s, n) == want, "utf8 %06x/%zu: want %d", v, n, want);
        }
        if (failures > 20)
            return;
    }
    srand(6455);
    for (int i = 0; i < 2000000; i++) {
        size_t n = 4 + (size_t)(rand() % 5);
        for (size_t k = 0; k < n; k++) /* biased towards lead and continuation bytes */
            s[k] = (uint8_t)(rand() % 3 ? 0x80 + rand() % 0x80 : rand() % 0x100);
        int want = admin_utf8_valid(s, n, NULL);
        CHECK(worker_rfc6455_utf8_ok(s, n) == want, "utf8 random #%d: want %d", i, want);
        if (failures > 20)
            return;
    }
}

static void test_close_codes(void)
{
    for (unsigned code = 0; code < 65536; code++) {
        int want = (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
                   (code >= 3000 && code <= 4999);
        CHECK(worker_rfc6455_close_code_ok(code) == want, "close code %u", code);
    }
}

int main(void)
{
    test_valid_streams();
    test_broken_rules();
    test_rsv1_with_deflate();
    test_utf8();
    test_close_codes();
    if (failures) {
        printf("worker_rfc6455_test: %d failures\n", failures);
        return 1;
    }
    printf("worker_rfc6455_test: ok\n");
    return 0;
}
