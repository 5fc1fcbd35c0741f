/* hist.h -- a fixed-size log-linear latency histogram (HdrHistogram's layout, simplified).
 *
 * Values are nanoseconds. Each power of two from 2^10 ns (~1 us) to 2^37 ns (~137 s) is split
 * into 64 equal sub-buckets, so a bucket is at most 1/64 (1.6%) wide relative to its value; values
 * below 1 us land in the first bucket and above 137 s in the last. Exact count, sum, min and max
 * are kept beside the buckets. The struct has no pointers and a fixed size, so a child process
 * sends it to the parent as bytes and the parent merges by adding.
 */
#ifndef WSBENCH_HIST_H
#define WSBENCH_HIST_H

#include <stdint.h>

#define HIST_SUB_BITS 6
#define HIST_MIN_EXP  10
#define HIST_MAX_EXP  37
#define HIST_BUCKETS  ((HIST_MAX_EXP - HIST_MIN_EXP + 1) << HIST_SUB_BITS)

struct hist {
    uint64_t count;
    uint64_t sum_ns;
    int64_t min_ns; /* INT64_MAX while empty */
    int64_t max_ns; /* 0 while empty */
    uint64_t bucket[HIST_BUCKETS];
};

void hist_init(struct hist *h);
void hist_record(struct hist *h, int64_t ns);
void hist_merge(struct hist *into, const struct hist *from);

/* The value at quantile q (0..1): the midpoint of the bucket holding the ceil(q * count)-th
 * smallest value, clamped to [min, max]; the exact max for the largest rank. 0 when empty. */
int64_t hist_quantile(const struct hist *h, double q);

/* Upper edge (ns, exclusive) of bucket idx, for printing the distribution. */
int64_t hist_bucket_upper(unsigned idx);

#endif /* WSBENCH_HIST_H */
