/* procstat.h -- what the server's processes cost, read from /proc.
 *
 * The server is a set of processes chosen by --server-pids, --server-tree and --server-pattern,
 * looked up afresh at every sample so respawned workers are included. Memory is the sum of Rss
 * and Pss from smaps_rollup (PSS splits shared pages among their users, so the shared segment
 * and the libraries are counted once across the set); CPU is utime + stime per process, so a
 * delta between two samples is exact for processes alive at both and counts a newcomer from
 * zero. Kernel socket buffers are not in either figure.
 */
#ifndef WSBENCH_PROCSTAT_H
#define WSBENCH_PROCSTAT_H

#include <stdint.h>
#include <sys/types.h>

#include "opts.h"

#define PROCSTAT_MAX 256

struct procstat_sample {
    int n; /* processes found */
    pid_t pid[PROCSTAT_MAX];
    uint64_t ticks[PROCSTAT_MAX]; /* utime + stime, clock ticks */
    uint64_t rss_kb, pss_kb;      /* summed */
    int64_t at_ns;                /* CLOCK_MONOTONIC of the sample */
};

/* Is any server selection configured? */
int procstat_enabled(const struct opts *o);

/* Finds the server's processes and reads their memory and CPU. Returns 0, or -1 when a
 * --server-pattern does not compile (reported on stderr). */
int procstat_sample(const struct opts *o, struct procstat_sample *s);

/* CPU seconds the server used from `a` to `b`. */
double procstat_cpu_delta(const struct procstat_sample *a, const struct procstat_sample *b);

/* Busy and total jiffies of the whole machine (first line of /proc/stat). Returns 0 or -1. */
int procstat_host(uint64_t *busy, uint64_t *total);

#endif /* WSBENCH_PROCSTAT_H */
