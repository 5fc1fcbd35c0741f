/* hist.c -- log-linear histogram (see hist.h). Integer arithmetic only: recording costs a
 * count-leading-zeros and a shift, cheap enough to do for every delivery. */
#include "hist.h"

#include <string.h>

void hist_init(struct hist *h)
{
    memset(h, 0, sizeof(*h));
    h->min_ns = INT64_MAX;
}

static unsigned hist_index(int64_t ns)
{
    uint64_t v = ns < 0 ? 0 : (uint64_t)ns;
    const uint64_t lo = 1ULL << HIST_MIN_EXP, hi = (1ULL << (HIST_MAX_EXP + 1)) - 1;

    if (v < lo)
        v = lo;
    if (v > hi)
        v = hi;
    unsigned e = 63u - (unsigned)__builtin_clzll(v);
    unsigned sub = (unsigned)(v >> (e - HIST_SUB_BITS)) & ((1u << HIST_SUB_BITS) - 1);
    return ((e - HIST_MIN_EXP) << HIST_SUB_BITS) + sub;
}

static int64_t hist_bucket_mid(unsigned idx)
{
    unsigned e = (idx >> HIST_SUB_BITS) + HIST_MIN_EXP;
    uint64_t sub = idx & ((1u << HIST_SUB_BITS) - 1);
    uint64_t width = 1ULL << (e - HIST_SUB_BITS);
    return (int64_t)(((1ULL << HIST_SUB_BITS) + sub) * width + width / 2);
}

int64_t hist_bucket_upper(unsigned idx)
{
    unsigned e = (idx >> HIST_SUB_BITS) + HIST_MIN_EXP;
    uint64_t sub = idx & ((1u << HIST_SUB_BITS) - 1);
    uint64_t width = 1ULL << (e - HIST_SUB_BITS);
    return (int64_t)(((1ULL << HIST_SUB_BITS) + sub + 1) * width);
}

void hist_record(struct hist *h, int64_t ns)
{
    if (ns < 0)
        ns = 0;
    h->bucket[hist_index(ns)]++;
    h->count++;
    h->sum_ns += (uint64_t)ns;
    if (ns < h->min_ns)
        h->min_ns = ns;
    if (ns > h->max_ns)
        h->max_ns = ns;
}

void hist_merge(struct hist *into, const struct hist *from)
{
    for (unsigned i = 0; i < HIST_BUCKETS; i++)
        into->bucket[i] += from->bucket[i];
    into->count += from->count;
    into->sum_ns += from->sum_ns;
    if (from->min_ns < into->min_ns)
        into->min_ns = from->min_ns;
    if (from->max_ns > into->max_ns)
        into->max_ns = from->max_ns;
}

int64_t hist_quantile(const struct hist *h, double q)
{
    if (h->count == 0)
        return 0;
    uint64_t rank = (uint64_t)(q * (double)h->count);
    if ((double)rank < q * (double)h->count)
        rank++;
    if (rank < 1)
        rank = 1;
    if (rank >= h->count)
        return h->max_ns; /* the largest value is known exactly */
    uint64_t seen = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += h->bucket[i];
        if (seen >= rank) {
            int64_t v = hist_bucket_mid(i);
            return v < h->min_ns ? h->min_ns : v > h->max_ns ? h->max_ns : v;
        }
    }
    return h->max_ns;
}
