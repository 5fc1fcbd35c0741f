/* channels.c -- `--channels`: the channel plan and a subscriber's check (see channels.h).
 *
 * Nothing about channels is stored per connection: a connection's channel is its index mod C,
 * a broadcast's channel a function of its sequence number, and its rank in the channel comes
 * from one table per process (4 bytes per broadcast, built once by replaying the plan). A
 * process keeps C counters of expected broadcasts, filled at EXPECT. So 10,000 subscribers on
 * 1,000 channels cost what 10,000 subscribers of one broadcast cost, plus a table lookup and a
 * modulo per receipt.
 *
 * Trade-off: with --channel-pick random the per-channel loads differ (a binomial spread around
 * M/C), as with real traffic; round-robin gives every channel the same count, which makes a
 * server's per-channel cost easiest to read. Both are repeatable with --seed.
 */
#include "channels.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client_int.h"
#include "publisher.h"

int chan_has_token(const char *s)
{
    return strstr(s, CHAN_TOKEN) != NULL;
}

int chan_expand(char *out, size_t cap, const char *tmpl, uint32_t k)
{
    size_t tl = sizeof(CHAN_TOKEN) - 1, n = 0;
    char num[16];
    int nl = snprintf(num, sizeof(num), "%u", k);

    for (const char *s = tmpl; *s;) {
        const char *add = s;
        size_t len = 1;
        if (strncmp(s, CHAN_TOKEN, tl) == 0) {
            add = num;
            len = (size_t)nl;
            s += tl;
        } else {
            s++;
        }
        if (n + len >= cap)
            return -1;
        memcpy(out + n, add, len);
        n += len;
    }
    if (cap == 0)
        return -1;
    out[n] = '\0';
    return (int)n;
}

uint32_t chan_of(const struct opts *o, uint64_t seq)
{
    if (o->channel_pick == OPTS_CHANNEL_PICK_RANDOM) {
        uint64_t st = o->seed ^ (seq * 0x9fb21c651e98df25ULL) ^ 0xc4a7u;
        return (uint32_t)(publisher_mix(&st) % o->channels);
    }
    return (uint32_t)(seq % o->channels);
}

uint32_t chan_of_conn(const struct opts *o, uint32_t global_index)
{
    return global_index % o->channels;
}

uint32_t *chan_ranks(const struct opts *o)
{
    uint32_t *rank = malloc((o->messages ? o->messages : 1) * sizeof(uint32_t));
    uint32_t *next = calloc(o->channels, sizeof(uint32_t));

    if (rank != NULL && next != NULL)
        for (uint32_t s = 0; s < o->messages; s++)
            rank[s] = next[chan_of(o, s)]++;
    free(next);
    if (next == NULL) {
        free(rank);
        return NULL;
    }
    return rank;
}

const char *chan_ws_path(const struct opts *o, uint32_t global_index, char *buf, size_t cap)
{
    if (o->channels == 0)
        return o->ws.path;
    return chan_expand(buf, cap, o->ws.path, chan_of_conn(o, global_index)) < 0 ? NULL : buf;
}

const char *chan_pub_path(const struct opts *o, uint64_t seq, char *buf, size_t cap)
{
    if (o->channels == 0)
        return o->pub.path;
    return chan_expand(buf, cap, o->pub.path, chan_of(o, seq)) < 0 ? NULL : buf;
}

static int chan_refuse(const char *why)
{
    fprintf(stderr, "wsbench: %s (see wsbench --help, CHANNELS)\n", why);
    return -1;
}

int chan_resolve(struct opts *o)
{
    char buf[sizeof(o->ws.path) + 16];
    int fanout = o->mode == OPTS_MODE_FANOUT;

    if (o->channels == 0) {
        if (chan_has_token(o->ws.path) || (fanout && chan_has_token(o->pub.path)))
            return chan_refuse("a URL has the channel token {c} but --channels is not given");
        return 0;
    }
    if (!chan_has_token(o->ws.path))
        return chan_refuse("--channels needs {c} in --url (e.g. ws://H/ws/ch{c})");
    if (fanout && !chan_has_token(o->pub.path))
        return chan_refuse("--channels needs {c} in --publish-url (e.g. "
                           "http://H/admin/broadcast?channel=ch{c})");
    if (o->resume)
        return chan_refuse("--channels and --resume do not combine (a resuming client checks "
                           "every broadcast of the run)");
    if (fanout && o->messages > CHAN_MAX_MESSAGES)
        return chan_refuse("--channels keeps a rank per broadcast: -m at most 16777216");
    if (chan_expand(buf, sizeof(o->ws.path), o->ws.path, o->channels - 1) < 0 ||
        chan_expand(buf, sizeof(o->pub.path), o->pub.path, o->channels - 1) < 0)
        return chan_refuse("a URL is too long once {c} is expanded");
    return 0;
}

int chan_client_init(struct client *cl)
{
    const struct opts *o = cl->o;
    if (o->channels == 0 || o->mode != OPTS_MODE_FANOUT)
        return 0;
    cl->chan_rank = chan_ranks(o);
    cl->chan_expect = calloc(o->channels, sizeof(uint32_t));
    return cl->chan_rank != NULL && cl->chan_expect != NULL ? 0 : -1;
}

int chan_read_expect(struct client *cl, int fd)
{
    return wire_read_all(fd, cl->chan_expect, (size_t)cl->o->channels * sizeof(uint32_t));
}

int chan_on_receipt(struct client *cl, const struct conn *c, uint64_t seq, uint64_t *pos)
{
    const struct opts *o = cl->o;
    if (cl->chan_rank == NULL) {
        *pos = seq;
        return 0;
    }
    uint32_t mine = chan_of_conn(o, cl->first + (uint32_t)(c - cl->conns));
    if (chan_of(o, seq) != mine) {
        cl->res.chan_wrong++;
        return -1;
    }
    *pos = cl->chan_rank[seq];
    return 0;
}

int64_t chan_expected(const struct client *cl, const struct conn *c)
{
    if (cl->chan_expect == NULL || cl->expected < 0)
        return cl->expected;
    return cl->chan_expect[chan_of_conn(cl->o, cl->first + (uint32_t)(c - cl->conns))];
}
