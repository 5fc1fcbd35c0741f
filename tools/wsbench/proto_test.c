/* proto_test.c -- proto.c against the header lines of docs/protocol.md: each message type with
 * its edge values, fields a later server may append, every malformation it must refuse, and the
 * resume path. */
#include "proto.h"
#include "check.h"

#include <stdio.h>
#include <string.h>

static int failures; /* counted by CHECK (check.h) */

static enum proto_kind parse(const char *s, struct proto_msg *m)
{
    return proto_parse((const uint8_t *)s, strlen(s), strlen(s), m);
}

static void test_welcome(void)
{
    struct proto_msg m;
    CHECK(parse("w 00000000000000ff 0 fresh\n", &m) == PROTO_WELCOME);
    CHECK(m.epoch == 255 && m.last == 0 && m.status == PROTO_FRESH && m.body_off == 27);
    CHECK(parse("w ffffffffffffffff 18446744073709551615 resumed\n", &m) == PROTO_WELCOME);
    CHECK(m.epoch == UINT64_MAX && m.last == UINT64_MAX && m.status == PROTO_RESUMED);
    CHECK(parse("w 0123456789abcdef 42 expired\n", &m) == PROTO_WELCOME);
    CHECK(m.epoch == 0x0123456789abcdefULL && m.last == 42 && m.status == PROTO_EXPIRED);
    CHECK(parse("w 0123456789abcdef 7 reset later-field\n", &m) == PROTO_WELCOME);
    CHECK(m.status == PROTO_RESET && m.last == 7);

    CHECK(parse("w 0123456789ABCDEF 1 fresh\n", &m) == PROTO_BAD); /* lowercase hex only */
    CHECK(parse("w 0123456789abcde 1 fresh\n", &m) == PROTO_BAD);  /* 15 digits */
    CHECK(parse("w 0123456789abcdef0 1 fresh\n", &m) == PROTO_BAD);
    CHECK(parse("w 0123456789abcdef 18446744073709551616 fresh\n", &m) == PROTO_BAD);
    CHECK(parse("w 0123456789abcdef 000000000000000000001 fresh\n", &m) == PROTO_BAD);
    CHECK(parse("w 0123456789abcdef -1 fresh\n", &m) == PROTO_BAD);
    CHECK(parse("w 0123456789abcdef 1 stale\n", &m) == PROTO_BAD);
    CHECK(parse("w 0123456789abcdef 1  fresh\n", &m) == PROTO_BAD);
    CHECK(parse("w 0123456789abcdef 1\n", &m) == PROTO_BAD);
    CHECK(parse("w 0123456789abcdef 1 fresh", &m) == PROTO_BAD);    /* no newline */
    CHECK(parse("w 0123456789abcdef 1 fresh\nx", &m) == PROTO_BAD); /* body */
    CHECK(m.error != NULL && strstr(m.error, "body") != NULL);
}

static void test_message(void)
{
    struct proto_msg m;
    const char *s = "m 12345\n{\"r\":\"x\"}";
    CHECK(parse(s, &m) == PROTO_MESSAGE && m.seq == 12345 && m.body_off == 8);
    CHECK(strcmp(s + m.body_off, "{\"r\":\"x\"}") == 0);
    CHECK(parse("m 1 news\nbody", &m) == PROTO_MESSAGE && m.seq == 1 && m.body_off == 9);
    CHECK(parse("m 0\n", &m) == PROTO_MESSAGE && m.seq == 0); /* an empty body is a payload */
    /* Only a prefix kept: the header is inside it, the rest of the body is not. */
    CHECK(proto_parse((const uint8_t *)"m 9\nabc", 7, 5000, &m) == PROTO_MESSAGE && m.seq == 9);
    CHECK(proto_parse((const uint8_t *)"m 123456", 8, 5000, &m) == PROTO_BAD);
    CHECK(strstr(m.error, "longer") != NULL);
    CHECK(parse("m\nbody", &m) == PROTO_BAD);
    CHECK(parse("m x\nbody", &m) == PROTO_BAD);
    CHECK(parse("m 1x\nbody", &m) == PROTO_BAD);
    CHECK(parse("m  1\nbody", &m) == PROTO_BAD);
    CHECK(parse("{\"r\":1}", &m) == PROTO_BAD); /* a raw payload is not an envelope */
    CHECK(parse("", &m) == PROTO_BAD);
    CHECK(parse("\nbody", &m) == PROTO_BAD);
}

static void test_gap(void)
{
    struct proto_msg m;
    CHECK(parse("g 5 9 skipped\n", &m) == PROTO_GAP);
    CHECK(m.from == 5 && m.to == 9 && m.reason == PROTO_GAP_SKIPPED);
    CHECK(parse("g 7 7 overrun\n", &m) == PROTO_GAP && m.reason == PROTO_GAP_OVERRUN);
    CHECK(parse("g 1 2 evicted extra\n", &m) == PROTO_GAP && m.reason == PROTO_GAP_OTHER);
    CHECK(parse("g 9 5 skipped\n", &m) == PROTO_BAD);
    CHECK(parse("g 5 skipped\n", &m) == PROTO_BAD);
    CHECK(parse("g 5 9\n", &m) == PROTO_BAD);
    CHECK(parse("g 5 9 skipped\nbody", &m) == PROTO_BAD);
}

static void test_unknown_and_path(void)
{
    struct proto_msg m;
    char buf[128];
    CHECK(parse("c news subscribed\n", &m) == PROTO_UNKNOWN);
    CHECK(parse("z\n", &m) == PROTO_UNKNOWN);
    CHECK(parse("zz 1\n", &m) == PROTO_BAD);
    CHECK(parse("W 1\n", &m) == PROTO_BAD);

    CHECK(proto_resume_path(buf, sizeof(buf), "/ws", 17, 0xabcULL) > 0);
    CHECK(strcmp(buf, "/ws?since=17&epoch=0000000000000abc") == 0);
    CHECK(proto_resume_path(buf, sizeof(buf), "/ws?token=x", 0, UINT64_MAX) > 0);
    CHECK(strcmp(buf, "/ws?token=x&since=0&epoch=ffffffffffffffff") == 0);
    CHECK(proto_resume_path(buf, 20, "/ws", 17, 1) == -1);
}

int main(void)
{
    test_welcome();
    test_message();
    test_gap();
    test_unknown_and_path();
    if (failures) {
        fprintf(stderr, "proto_test: %d failures\n", failures);
        return 1;
    }
    printf("proto_test: ok\n");
    return 0;
}
