/* deflate_test.c -- --deflate and --pad json: the answers a client accepts or refuses, the
 * first bytes of a compressed message inflated back (whole or cut at the parser's prefix), the
 * frame parser letting RSV1 through only where it may be, and JSON payloads of exact sizes that
 * the clients parse and that compress like JSON (not like 'xxx'). */
#include "deflate.h"
#include "check.h"
#include "client.h"
#include "frame.h"
#include "publisher.h"

#include <stdio.h>
#include <string.h>
#include <zlib.h>

static int failures; /* counted by CHECK (check.h) */

/* A message as a permessage-deflate server sends it: raw deflate, sync flush, no trailer. */
static size_t compress_msg(const char *in, size_t len, uint8_t *out, size_t cap, int level)
{
    z_stream z;
    memset(&z, 0, sizeof(z));
    if (deflateInit2(&z, level, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return 0;
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)len;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    deflate(&z, Z_SYNC_FLUSH);
    size_t n = cap - z.avail_out;
    deflateEnd(&z);
    return n >= 4 ? n - 4 : 0;
}

static void check_answers(void)
{
#define HEAD(ext) "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n" ext "\r\n"
    const char *ok = HEAD("Sec-WebSocket-Extensions: permessage-deflate; "
                          "server_no_context_takeover; client_no_context_takeover\r\n");
    const char *ok_case = HEAD("sec-websocket-extensions:permessage-deflate;"
                               "server_no_context_takeover\r\n");
    const char *none = HEAD("");
    const char *keeps_context = HEAD("Sec-WebSocket-Extensions: permessage-deflate\r\n");
    const char *other = HEAD("Sec-WebSocket-Extensions: x-webkit-deflate-frame\r\n");
    const char *two = HEAD("Sec-WebSocket-Extensions: permessage-deflate; "
                           "server_no_context_takeover, foo\r\n");
    CHECK(deflate_accepted(ok, strlen(ok)) == 1);
    CHECK(deflate_accepted(ok_case, strlen(ok_case)) == 1);
    CHECK(deflate_accepted(none, strlen(none)) == 0);
    CHECK(deflate_accepted(keeps_context, strlen(keeps_context)) == -1);
    CHECK(deflate_accepted(other, strlen(other)) == -1);
    CHECK(deflate_accepted(two, strlen(two)) == -1);
#undef HEAD
}

static void check_prefix(void)
{
    char msg[2048];
    uint8_t z[4096], out[8192];
    size_t len = deflate_json_payload(msg, 2000, "0badcafe", 77, 123456789);
    size_t zl = compress_msg(msg, len, z, sizeof(z), 1);
    CHECK(len == 2000 && zl > 0 && zl < len / 2);
    /* whole: every byte back */
    CHECK(deflate_prefix(z, zl, 1, out, sizeof(out)) == len && memcmp(out, msg, len) == 0);
    /* cut where the frame parser stops keeping bytes: the head is there to parse */
    size_t n = deflate_prefix(z, FRAME_PREFIX_MAX, 0, out, sizeof(out));
    uint64_t seq;
    int64_t sent;
    CHECK(n > 100 && n < len && memcmp(out, msg, n) == 0);
    CHECK(client_parse_payload(out, n, "0badcafe", &seq, &sent) == 0 && seq == 77 &&
          sent == 123456789);
    /* garbage inflates to nothing */
    static const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0x00, 0x12};
    CHECK(deflate_prefix(junk, sizeof(junk), 1, out, sizeof(out)) == 0);
}

static size_t feed(struct frame_parser *fp, const uint8_t *buf, size_t len, struct frame_event *ev)
{
    return frame_parse(fp, buf, len, ev);
}

static void check_parser(void)
{
    struct frame_parser fp;
    struct frame_event ev;
    const uint8_t compressed[] = {0xC1, 0x03, 'a', 'b', 'c'};
    const uint8_t cont_rsv1[] = {0x41, 0x01, 'a', 0xC0, 0x01, 'b'};
    const uint8_t ping_rsv1[] = {0xC9, 0x00};

    frame_parser_reset(&fp); /* not negotiated: RSV1 is an error */
    feed(&fp, compressed, sizeof(compressed), &ev);
    CHECK(ev.type == FRAME_EV_ERROR);

    frame_parser_reset(&fp);
    fp.rsv1_ok = 1;
    CHECK(feed(&fp, compressed, sizeof(compressed), &ev) == sizeof(compressed));
    CHECK(ev.type == FRAME_EV_MESSAGE && ev.compressed && ev.len == 3);

    frame_parser_reset(&fp);
    fp.rsv1_ok = 1;
    size_t off = feed(&fp, cont_rsv1, sizeof(cont_rsv1), &ev);
    CHECK(ev.type == FRAME_EV_NONE || ev.type == FRAME_EV_ERROR);
    if (ev.type == FRAME_EV_NONE)
        feed(&fp, cont_rsv1 + off, sizeof(cont_rsv1) - off, &ev);
    CHECK(ev.type == FRAME_EV_ERROR); /* RSV1 on a continuation frame */

    frame_parser_reset(&fp);
    fp.rsv1_ok = 1;
    feed(&fp, ping_rsv1, sizeof(ping_rsv1), &ev);
    CHECK(ev.type == FRAME_EV_ERROR); /* RSV1 on a control frame */
}

static void check_json(void)
{
    char buf[70000], x[70000];
    uint8_t z[80000];
    for (size_t size = 60; size <= 65536; size = size * 3 / 2) {
        size_t n = deflate_json_payload(buf, size, "0badcafe", size, 42);
        uint64_t seq;
        int64_t sent;
        CHECK(n >= size && strlen(buf) == n);
        CHECK(client_parse_payload((const uint8_t *)buf, n, "0badcafe", &seq, &sent) == 0 &&
              seq == size && sent == 42);
        CHECK(buf[n - 1] == '}');
    }
    /* about 2 KiB: compresses a few times, not like padding */
    size_t n = deflate_json_payload(buf, 2048, "0badcafe", 5, 42);
    size_t m = publisher_payload(x, 2048, "0badcafe", 5, 42);
    size_t zj = compress_msg(buf, n, z, sizeof(z), 1), zx = compress_msg(x, m, z, sizeof(z), 1);
    CHECK(n == 2048 && m == 2048);
    CHECK(zj > n / 6 && zj < n / 2);
    CHECK(zx < n / 20);
    /* another sequence, other records */
    deflate_json_payload(x, 2048, "0badcafe", 6, 42);
    CHECK(memcmp(buf + 60, x + 60, 200) != 0);
}

int main(void)
{
    check_answers();
    check_prefix();
    check_parser();
    check_json();
    if (failures) {
        fprintf(stderr, "deflate_test: %d failures\n", failures);
        return 1;
    }
    printf("deflate_test: ok\n");
    return 0;
}
