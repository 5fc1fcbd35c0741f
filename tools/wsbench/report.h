/* report.h -- what a run measured, merged from every process, and its JSON rendering.
 *
 * The parent fills one struct run as the phases pass (timestamps, server samples, publisher
 * statistics) and merges each child's wire_result into it; report_print then derives every
 * figure in one place, so a number in the output has exactly one definition.
 */
#ifndef WSBENCH_REPORT_H
#define WSBENCH_REPORT_H

#include <stdint.h>
#include <stdio.h>

#include "opts.h"
#include "procstat.h"
#include "publisher.h"
#include "wire.h"

struct run {
    const struct opts *o;
    const char *run_id;
    const char *aborted;      /* NULL, or why the run stopped early */
    uint32_t children_lost;   /* client processes that died without a result */
    uint32_t results;         /* results merged */
    struct wire_result total; /* sums over children (latency merged) */
    int64_t *msg_max;         /* per broadcast: max latency over all children, -1 if none */
    uint32_t msg_tracked;
    double busiest_child_frac;  /* max over children of phase CPU / phase wall */
    double busiest_window_frac; /* max over children of CPU / wall while broadcasts arrived */
    double client_cpu_s;        /* getrusage SELF + CHILDREN at the end */
    double parent_phase_cpu_s;  /* the parent (publisher) during the measured phase */
    int64_t t_start, t_connected, t_phase_start, t_phase_end, t_end; /* CLOCK_MONOTONIC ns */
    struct procstat_sample before, after, end;
    uint64_t host_busy[2], host_total[2]; /* /proc/stat at phase start and end */
    const struct publisher_stats *pub;    /* NULL in hold mode */
};

/* Adds one child's result (and its per-broadcast maxima, msg_tracked entries) into r. */
void report_merge(struct run *r, const struct wire_result *w, const int64_t *msg_max);

/* Prints the JSON object. */
void report_print(const struct run *r, FILE *out);

#endif /* WSBENCH_REPORT_H */
