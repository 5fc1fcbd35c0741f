/* frame_test.c -- frame.c against hand-made frames: whole, byte by byte, every length
 * encoding, fragments with an interleaved ping, and each protocol violation it must refuse. */
#include "frame.h"
#include "check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures; /* counted by CHECK (check.h) */

/* What one event may carry: a control payload or a message's kept prefix. */
#define COPY_MAX (FRAME_PREFIX_MAX > FRAME_CTL_MAX ? FRAME_PREFIX_MAX : FRAME_CTL_MAX)

/* Unmasked server frame header + payload into out. Returns its length. */
static size_t server_frame(uint8_t *out, uint8_t b0, const uint8_t *p, size_t len)
{
    size_t n = 0;
    out[n++] = b0;
    if (len < 126) {
        out[n++] = (uint8_t)len;
    } else if (len <= 0xffff) {
        out[n++] = 126;
        out[n++] = (uint8_t)(len >> 8);
        out[n++] = (uint8_t)len;
    } else {
        out[n++] = 127;
        for (int i = 7; i >= 0; i--)
            out[n++] = (uint8_t)((uint64_t)len >> (8 * i));
    }
    memcpy(out + n, p, len);
    return n + len;
}

/* Feeds buf in chunks of `step` bytes and collects up to 8 events. */
static int feed(struct frame_parser *fp, const uint8_t *buf, size_t len, size_t step,
                struct frame_event *evs, uint8_t copies[][COPY_MAX])
{
    int n = 0;
    for (size_t off = 0; off < len;) {
        size_t chunk = len - off < step ? len - off : step, used = 0;
        while (used < chunk) {
            struct frame_event ev;
            used += frame_parse(fp, buf + off + used, chunk - used, &ev);
            if (ev.type != FRAME_EV_NONE && n < 8) {
                memcpy(copies[n], ev.data, ev.data_len <= COPY_MAX ? ev.data_len : 0);
                evs[n] = ev;
                evs[n].data = copies[n];
                n++;
                if (ev.type == FRAME_EV_ERROR)
                    return n;
            }
        }
        off += chunk;
    }
    return n;
}

static void test_lengths(void)
{
    static const size_t lens[] = {0, 5, 125, 126, 1000, 65535, 65536, 300000};
    static uint8_t payload[300000], buf[300100];
    for (size_t i = 0; i < sizeof(payload); i++)
        payload[i] = (uint8_t)('a' + i % 26);
    for (size_t k = 0; k < sizeof(lens) / sizeof(lens[0]); k++) {
        for (size_t step = 1; step <= 4096; step *= 64) {
            struct frame_parser fp;
            struct frame_event evs[8];
            uint8_t copies[8][COPY_MAX];
            frame_parser_reset(&fp);
            size_t n = server_frame(buf, 0x81, payload, lens[k]);
            int ne = feed(&fp, buf, n, step, evs, copies);
            CHECK(ne == 1);
            CHECK(evs[0].type == FRAME_EV_MESSAGE && evs[0].len == lens[k]);
            CHECK(evs[0].opcode == FRAME_OP_TEXT && evs[0].frames == 1);
            size_t keep = lens[k] < FRAME_PREFIX_MAX ? lens[k] : FRAME_PREFIX_MAX;
            CHECK(evs[0].data_len == keep && memcmp(copies[0], payload, keep) == 0);
        }
    }
}

static void test_fragments_with_ping(void)
{
    uint8_t buf[256];
    size_t n = 0;
    n += server_frame(buf + n, 0x02, (const uint8_t *)"hello ", 6);   /* binary, no FIN */
    n += server_frame(buf + n, 0x89, (const uint8_t *)"pp", 2);       /* ping in between */
    n += server_frame(buf + n, 0x00, (const uint8_t *)"big ", 4);     /* continuation */
    n += server_frame(buf + n, 0x80, (const uint8_t *)"world", 5);    /* final continuation */
    n += server_frame(buf + n, 0x88, (const uint8_t *)"\x03\xe8", 2); /* close 1000 */
    for (size_t step = 1; step <= n; step++) {
        struct frame_parser fp;
        struct frame_event evs[8];
        uint8_t copies[8][COPY_MAX];
        frame_parser_reset(&fp);
        int ne = feed(&fp, buf, n, step, evs, copies);
        CHECK(ne == 3);
        CHECK(evs[0].type == FRAME_EV_PING && evs[0].data_len == 2 && !memcmp(copies[0], "pp", 2));
        CHECK(evs[1].type == FRAME_EV_MESSAGE && evs[1].opcode == FRAME_OP_BINARY);
        CHECK(evs[1].len == 15 && evs[1].frames == 3 && !memcmp(copies[1], "hello big world", 15));
        CHECK(evs[2].type == FRAME_EV_CLOSE && evs[2].data_len == 2);
    }
}

static void expect_error(const uint8_t *buf, size_t len, const char *what)
{
    struct frame_parser fp;
    struct frame_event evs[8];
    uint8_t copies[8][COPY_MAX];
    frame_parser_reset(&fp);
    int ne = feed(&fp, buf, len, len, evs, copies);
    CHECK(ne >= 1 && evs[ne - 1].type == FRAME_EV_ERROR);
    if (ne >= 1 && evs[ne - 1].type == FRAME_EV_ERROR && strstr(evs[ne - 1].error, what) == NULL) {
        fprintf(stderr, "error '%s' does not mention '%s'\n", evs[ne - 1].error, what);
        failures++;
    }
}

static void test_violations(void)
{
    uint8_t masked[] = {0x81, 0x82, 1, 2, 3, 4, 'a', 'b'};
    uint8_t rsv[] = {0xC1, 0x00};
    uint8_t reserved[] = {0x83, 0x00};
    uint8_t long_ping[2 + 126] = {0x89, 126, 0, 126};
    uint8_t frag_ping[] = {0x09, 0x00};
    uint8_t lone_cont[] = {0x80, 0x01, 'x'};
    uint8_t nested[] = {0x01, 0x01, 'a', 0x81, 0x01, 'b'};
    uint8_t huge[] = {0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 1};
    expect_error(masked, sizeof(masked), "masked");
    expect_error(rsv, sizeof(rsv), "RSV");
    expect_error(reserved, sizeof(reserved), "reserved");
    expect_error(long_ping, sizeof(long_ping), "125");
    expect_error(frag_ping, sizeof(frag_ping), "fragmented control");
    expect_error(lone_cont, sizeof(lone_cont), "continuation");
    expect_error(nested, sizeof(nested), "inside a fragmented");
    expect_error(huge, sizeof(huge), "top bit");
}

static void test_build(void)
{
    static uint8_t payload[70000], out[70100];
    static const size_t lens[] = {0, 2, 125, 126, 65535, 65536};
    for (size_t i = 0; i < sizeof(payload); i++)
        payload[i] = (uint8_t)(i * 7);
    for (size_t k = 0; k < sizeof(lens) / sizeof(lens[0]); k++) {
        size_t len = lens[k];
        size_t n = frame_build(out, FRAME_OP_PONG, payload, len, 0x11223344);
        size_t hdr = len < 126 ? 2 : len <= 0xffff ? 4 : 10;
        CHECK(n == hdr + 4 + len);
        CHECK(out[0] == 0x8A && (out[1] & 0x80));
        CHECK(memcmp(out + hdr, "\x11\x22\x33\x44", 4) == 0);
        uint64_t l = out[1] & 0x7f;
        if (l == 126)
            l = (uint64_t)out[2] << 8 | out[3];
        else if (l == 127)
            for (int i = 2, j = 0; j < 8; i++, j++)
                l = (j == 0 ? 0 : l << 8) | out[i];
        CHECK(l == len);
        int same = 1;
        for (size_t i = 0; i < len; i++)
            same &= (uint8_t)(out[hdr + 4 + i] ^ out[hdr + (i & 3)]) == payload[i];
        CHECK(same);
    }
}

int main(void)
{
    test_lengths();
    test_fragments_with_ping();
    test_violations();
    test_build();
    if (failures) {
        fprintf(stderr, "frame_test: %d failures\n", failures);
        return 1;
    }
    printf("frame_test: ok\n");
    return 0;
}
