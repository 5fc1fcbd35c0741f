/* channels_test.c -- channels.c: the {c} expansion, the channel of each broadcast and
 * connection, the rank table the subscribers' windows run on, and which option sets are refused.
 */
#include "channels.h"
#include "check.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int failures; /* counted by CHECK (check.h) */

static void test_expand(void)
{
    char out[64];
    CHECK(chan_expand(out, sizeof(out), "/ws/ch{c}", 0) == 7 && strcmp(out, "/ws/ch0") == 0);
    CHECK(chan_expand(out, sizeof(out), "/ws?channel=ch{c}", 999) == 17);
    CHECK(strcmp(out, "/ws?channel=ch999") == 0);
    CHECK(chan_expand(out, sizeof(out), "/x/{c}/{c}", 42) == 8 && strcmp(out, "/x/42/42") == 0);
    CHECK(chan_expand(out, sizeof(out), "/sub/{c", 7) == 7 && strcmp(out, "/sub/{c") == 0);
    CHECK(chan_expand(out, sizeof(out), "/{c}{c}", 4294967295u) == 21);
    CHECK(strcmp(out, "/42949672954294967295") == 0);
    CHECK(chan_expand(out, 8, "/ws/ch{c}", 5) == 7 && strcmp(out, "/ws/ch5") == 0);
    CHECK(chan_expand(out, 7, "/ws/ch{c}", 5) == -1); /* the NUL must fit too */
    CHECK(chan_expand(out, 8, "/ws/ch{c}", 10) == -1);
    CHECK(chan_expand(out, 0, "", 1) == -1);
    CHECK(chan_expand(out, 1, "", 1) == 0 && out[0] == '\0');
    CHECK(chan_has_token("/pub/{c}") && !chan_has_token("/pub/c") && !chan_has_token("{ c}"));
}

static struct opts plan(uint32_t channels, enum opts_channel_pick pick, uint32_t messages,
                        uint64_t seed)
{
    struct opts o;
    memset(&o, 0, sizeof(o));
    o.mode = OPTS_MODE_FANOUT;
    o.channels = channels;
    o.channel_pick = pick;
    o.messages = messages;
    o.seed = seed;
    strcpy(o.ws.path, "/ws/ch{c}");
    strcpy(o.pub.path, "/admin/broadcast?channel=ch{c}");
    return o;
}

/* Every rank table must number each channel's broadcasts 0, 1, 2, ... in publishing order. */
static void check_ranks(const struct opts *o)
{
    uint32_t *rank = chan_ranks(o);
    uint32_t *seen = calloc(o->channels, sizeof(uint32_t));
    CHECK(rank != NULL && seen != NULL);
    if (rank == NULL || seen == NULL) {
        free(rank);
        free(seen);
        return;
    }
    int ordered = 1;
    for (uint32_t s = 0; s < o->messages; s++)
        ordered &= rank[s] == seen[chan_of(o, s)]++;
    CHECK(ordered);
    free(rank);
    free(seen);
}

static void test_round_robin(void)
{
    struct opts o = plan(1000, OPTS_CHANNEL_PICK_ROUND_ROBIN, 5000, 1);
    CHECK(chan_of(&o, 0) == 0 && chan_of(&o, 999) == 999 && chan_of(&o, 1000) == 0);
    CHECK(chan_of(&o, 4321) == 321);
    CHECK(chan_of_conn(&o, 0) == 0 && chan_of_conn(&o, 1005) == 5 && chan_of_conn(&o, 9999) == 999);
    uint32_t *rank = chan_ranks(&o);
    CHECK(rank != NULL && rank[0] == 0 && rank[1000] == 1 && rank[4321] == 4 && rank[999] == 0);
    free(rank);
    check_ranks(&o);
}

static void test_random(void)
{
    struct opts a = plan(100, OPTS_CHANNEL_PICK_RANDOM, 100000, 7);
    struct opts b = plan(100, OPTS_CHANNEL_PICK_RANDOM, 100000, 7);
    struct opts c = plan(100, OPTS_CHANNEL_PICK_RANDOM, 100000, 8);
    uint32_t count[100] = {0};
    int same = 1, differs = 0, rr_like = 1;

    for (uint32_t s = 0; s < a.messages; s++) {
        uint32_t k = chan_of(&a, s);
        count[k < 100 ? k : 0]++;
        same &= k == chan_of(&b, s);
        differs |= k != chan_of(&c, s);
        rr_like &= k == s % 100;
    }
    CHECK(same);     /* the same seed, the same plan: publisher and subscribers agree */
    CHECK(differs);  /* another seed, another plan */
    CHECK(!rr_like); /* random is not round-robin in disguise */
    /* 1,000 per channel expected; binomial sd ~31: 6 sd either way */
    uint32_t lo = UINT32_MAX, hi = 0;
    for (int k = 0; k < 100; k++) {
        lo = count[k] < lo ? count[k] : lo;
        hi = count[k] > hi ? count[k] : hi;
    }
    CHECK(lo > 810 && hi < 1190);
    check_ranks(&a);
}

static void test_paths(void)
{
    struct opts o = plan(1000, OPTS_CHANNEL_PICK_ROUND_ROBIN, 10, 1);
    char buf[600];
    CHECK(strcmp(chan_ws_path(&o, 2042, buf, sizeof(buf)), "/ws/ch42") == 0);
    CHECK(strcmp(chan_pub_path(&o, 7, buf, sizeof(buf)), "/admin/broadcast?channel=ch7") == 0);
    CHECK(chan_ws_path(&o, 2042, buf, 5) == NULL);
    o.channels = 0;
    strcpy(o.ws.path, "/ws");
    CHECK(chan_ws_path(&o, 2042, buf, sizeof(buf)) == o.ws.path); /* off: untouched */
}

/* chan_resolve with its refusal (printed on stderr) kept out of the test's output. */
static int resolve(struct opts *o)
{
    int saved = dup(2), null = open("/dev/null", O_WRONLY);
    if (saved >= 0 && null >= 0)
        dup2(null, 2);
    int rc = chan_resolve(o);
    if (saved >= 0) {
        dup2(saved, 2);
        close(saved);
    }
    if (null >= 0)
        close(null);
    return rc;
}

static void test_resolve(void)
{
    struct opts o = plan(1000, OPTS_CHANNEL_PICK_ROUND_ROBIN, 100, 1);
    CHECK(resolve(&o) == 0);
    strcpy(o.pub.path, "/admin/broadcast");
    CHECK(resolve(&o) == -1); /* publishing to one place: not a channel workload */
    o.mode = OPTS_MODE_HOLD;
    CHECK(resolve(&o) == 0); /* hold never publishes */
    o = plan(1000, OPTS_CHANNEL_PICK_ROUND_ROBIN, 100, 1);
    strcpy(o.ws.path, "/ws");
    CHECK(resolve(&o) == -1);
    o = plan(1000, OPTS_CHANNEL_PICK_ROUND_ROBIN, 100, 1);
    o.resume = 1;
    CHECK(resolve(&o) == -1);
    o = plan(1000, OPTS_CHANNEL_PICK_ROUND_ROBIN, CHAN_MAX_MESSAGES + 1, 1);
    CHECK(resolve(&o) == -1);
    o = plan(0, OPTS_CHANNEL_PICK_ROUND_ROBIN, 100, 1); /* {c} without --channels */
    CHECK(resolve(&o) == -1);
    strcpy(o.ws.path, "/ws");
    strcpy(o.pub.path, "/pub");
    CHECK(resolve(&o) == 0);
    o = plan(10000, OPTS_CHANNEL_PICK_ROUND_ROBIN, 100, 1); /* fits only before expansion */
    memset(o.ws.path, 'a', sizeof(o.ws.path) - 1);
    o.ws.path[sizeof(o.ws.path) - 1] = '\0';
    memcpy(o.ws.path + sizeof(o.ws.path) - 4, "{c}", 3);
    CHECK(resolve(&o) == -1);
}

int main(void)
{
    test_expand();
    test_round_robin();
    test_random();
    test_paths();
    test_resolve();
    if (failures) {
        fprintf(stderr, "channels_test: %d failures\n", failures);
        return 1;
    }
    printf("channels_test: ok\n");
    return 0;
}
