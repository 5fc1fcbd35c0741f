/* stats.h -- names for the counters in shm_layout.h and helpers to read them.
 *
 * Counters live in the segment (struct shm_worker_stats, one per worker slot, written only by
 * that worker with relaxed atomics). This module gives them stable names for stats.json and
 * Prometheus, and sums them across workers.
 */
#ifndef WSHUB_STATS_H
#define WSHUB_STATS_H

#include <stdatomic.h>
#include <stdint.h>

#include "shm.h"

/* Metric label values, e.g. "slow_consumer"; index by the enums in shm_layout.h. */
const char *stats_close_reason_name(enum shm_close_reason r);
const char *stats_reject_reason_name(enum shm_reject_reason r);
const char *stats_worker_state_name(enum shm_worker_state s);

/* Relaxed increments for the owning worker. */
static inline void stats_add(_Atomic uint64_t *counter, uint64_t n)
{
    atomic_fetch_add_explicit(counter, n, memory_order_relaxed);
}

/* Records one latency sample (microseconds) into a log2 histogram. */
void stats_latency_add(struct shm_worker_stats *st, uint64_t us, uint64_t count);

/* A plain snapshot of one worker's counters, summed over all slots by stats_sum(). */
struct stats_snapshot {
    int64_t connections;
    uint64_t accepted, messages_out, bytes_out, writes, messages_in, bytes_in;
    uint64_t ring_entries, ring_overruns, slow_consumers, last_seq;
    uint64_t closed[SHM_CLOSE_REASON_COUNT];
    uint64_t rejected[SHM_REJECT_REASON_COUNT];
    uint64_t latency_us[SHM_LATENCY_BUCKETS];
};

void stats_read_worker(const struct shm_worker *w, struct stats_snapshot *out);
void stats_sum(const struct shm *s, struct stats_snapshot *out);

#endif /* WSHUB_STATS_H */
