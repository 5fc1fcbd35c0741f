/* publisher_test.c -- the payload the publisher writes is the payload the clients parse, at
 * every size, and anything else (another run, garbage, a cut-off prefix) is refused; sizes drawn
 * from --size..--size-max stay in range, cover it, and depend only on the seed and sequence. */
#include "client.h"
#include "check.h"
#include "frame.h"
#include "publisher.h"

#include <stdio.h>
#include <string.h>

#include "opts.h"

static int failures; /* counted by CHECK (check.h) */

static void check_sizes(void)
{
    struct opts o = {.size = 100, .size_max = 3000, .seed = 42};
    uint32_t lo = UINT32_MAX, hi = 0, same = 0, again = 0;
    for (uint64_t seq = 0; seq < 10000; seq++) {
        uint32_t s = publisher_size_for(&o, seq);
        lo = s < lo ? s : lo;
        hi = s > hi ? s : hi;
        again += s == publisher_size_for(&o, seq);
        o.seed = 43;
        same += s == publisher_size_for(&o, seq);
        o.seed = 42;
    }
    CHECK(lo >= 100 && hi <= 3000);
    CHECK(lo < 110 && hi > 2990); /* 10,000 uniform draws reach both ends */
    CHECK(again == 10000);        /* a pure function of seed and sequence */
    CHECK(same < 50);             /* another seed, other sizes (~10000/2901 by chance) */
    o.size_max = 0;
    CHECK(publisher_size_for(&o, 5) == 100);
    o.size_max = 100;
    CHECK(publisher_size_for(&o, 5) == 100);
}

int main(void)
{
    static char buf[5000];
    uint64_t seq;
    int64_t t;
    static const size_t sizes[] = {1, 40, 64, 100, 4096};

    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        size_t len = publisher_payload(buf, sizes[k], "0badcafe", 99999999, 9223372036854775807LL);
        CHECK(len == strlen(buf));
        CHECK(sizes[k] < 64 || len == sizes[k]);
        CHECK(len <= FRAME_PREFIX_MAX || sizes[k] > FRAME_PREFIX_MAX);
        CHECK(buf[0] == '{' && buf[len - 1] == '}');
        size_t keep = len < FRAME_PREFIX_MAX ? len : FRAME_PREFIX_MAX; /* what a client keeps */
        CHECK(client_parse_payload((uint8_t *)buf, keep, "0badcafe", &seq, &t) == 0);
        CHECK(seq == 99999999 && t == 9223372036854775807LL);
        CHECK(client_parse_payload((uint8_t *)buf, keep, "0badcaff", &seq, &t) == -1);
    }
    publisher_payload(buf, 64, "0badcafe", 7, 1234);
    CHECK(client_parse_payload((uint8_t *)buf, 64, "0badcafe", &seq, &t) == 0 && seq == 7 &&
          t == 1234);
    CHECK(client_parse_payload((uint8_t *)buf, 20, "0badcafe", &seq, &t) == -1);
    CHECK(client_parse_payload((const uint8_t *)"hello", 5, "0badcafe", &seq, &t) == -1);
    check_sizes();
    if (failures) {
        fprintf(stderr, "publisher_test: %d failures\n", failures);
        return 1;
    }
    printf("publisher_test: ok\n");
    return 0;
}
