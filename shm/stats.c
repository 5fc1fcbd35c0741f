/* stats.c -- names for the shared counters, the latency histogram, and snapshots.
 *
 * The names are metric label values (stats.json, Prometheus), so they are part of the external
 * interface: snake_case, append-only, in the order of the enums in shm_layout.h. Snapshots load
 * each counter with one relaxed atomic load; a snapshot is not a consistent cut across counters,
 * which is fine for monotonic counters scraped every few seconds.
 */
#include "stats.h"

static const char *const close_names[SHM_CLOSE_REASON_COUNT] = {
    [SHM_CLOSE_NORMAL] = "normal",
    [SHM_CLOSE_SHUTDOWN] = "shutdown",
    [SHM_CLOSE_RESTART] = "restart",
    [SHM_CLOSE_PROTOCOL] = "protocol_error",
    [SHM_CLOSE_TOO_BIG] = "too_big",
    [SHM_CLOSE_POLICY] = "policy",
    [SHM_CLOSE_SLOW_CONSUMER] = "slow_consumer",
    [SHM_CLOSE_IDLE_TIMEOUT] = "idle_timeout",
    [SHM_CLOSE_PEER_GONE] = "peer_gone",
    [SHM_CLOSE_WORKER_DIED] = "worker_died",
    [SHM_CLOSE_ADMIN] = "admin",
};

static const char *const reject_names[SHM_REJECT_REASON_COUNT] = {
    [SHM_REJECT_BAD_PATH] = "bad_path",
    [SHM_REJECT_BAD_REQUEST] = "bad_request",
    [SHM_REJECT_TABLE_FULL] = "table_full",
    [SHM_REJECT_WORKER_FULL] = "worker_full",
    [SHM_REJECT_ORIGIN] = "origin",
    [SHM_REJECT_AUTH] = "auth",
    [SHM_REJECT_LIMIT] = "limit",
    [SHM_REJECT_DRAINING] = "draining",
    [SHM_REJECT_AUTH_MISSING] = "auth_missing",
    [SHM_REJECT_AUTH_EXPIRED] = "auth_expired",
    [SHM_REJECT_ORIGIN_MISSING] = "origin_missing",
    [SHM_REJECT_LIMIT_USER] = "limit_user",
};

static const char *const worker_state_names[] = {
    [SHM_WORKER_EMPTY] = "empty",     [SHM_WORKER_STARTING] = "starting",
    [SHM_WORKER_RUNNING] = "running", [SHM_WORKER_DRAINING] = "draining",
    [SHM_WORKER_EXITED] = "exited",
};

const char *stats_close_reason_name(enum shm_close_reason r)
{
    return (unsigned)r < SHM_CLOSE_REASON_COUNT ? close_names[r] : "unknown";
}

const char *stats_reject_reason_name(enum shm_reject_reason r)
{
    return (unsigned)r < SHM_REJECT_REASON_COUNT ? reject_names[r] : "unknown";
}

const char *stats_worker_state_name(enum shm_worker_state s)
{
    unsigned n = sizeof(worker_state_names) / sizeof(worker_state_names[0]);
    return (unsigned)s < n ? worker_state_names[s] : "unknown";
}

void stats_latency_add(struct shm_worker_stats *st, uint64_t us, uint64_t count)
{
    unsigned bucket = us == 0 ? 0 : 63u - (unsigned)__builtin_clzll(us);

    if (bucket >= SHM_LATENCY_BUCKETS)
        bucket = SHM_LATENCY_BUCKETS - 1;
    stats_add(&st->latency_us[bucket], count);
}

static uint64_t ld(const _Atomic uint64_t *p)
{
    return atomic_load_explicit(p, memory_order_relaxed);
}

void stats_read_worker(const struct shm_worker *w, struct stats_snapshot *out)
{
    const struct shm_worker_stats *st = &w->stats;

    out->connections = atomic_load_explicit(&st->connections, memory_order_relaxed);
    out->accepted = ld(&st->accepted);
    out->messages_out = ld(&st->messages_out);
    out->bytes_out = ld(&st->bytes_out);
    out->writes = ld(&st->writes);
    out->messages_in = ld(&st->messages_in);
    out->bytes_in = ld(&st->bytes_in);
    out->ring_entries = ld(&st->ring_entries);
    out->ring_overruns = ld(&st->ring_overruns);
    out->slow_consumers = ld(&st->slow_consumers);
    out->last_seq = ld(&st->last_seq);
    for (int i = 0; i < SHM_CLOSE_REASON_COUNT; i++)
        out->closed[i] = ld(&st->closed[i]);
    for (int i = 0; i < SHM_REJECT_REASON_COUNT; i++)
        out->rejected[i] = ld(&st->rejected[i]);
    for (int i = 0; i < SHM_LATENCY_BUCKETS; i++)
        out->latency_us[i] = ld(&st->latency_us[i]);
}

/* Sums every slot (counters of exited workers stay, so totals are monotonic); last_seq is the
 * maximum, not a sum. */
void stats_sum(const struct shm *s, struct stats_snapshot *out)
{
    struct stats_snapshot one;

    *out = (struct stats_snapshot){0};
    for (unsigned slot = 0; slot < SHM_MAX_WORKERS; slot++) {
        stats_read_worker(shm_worker(s, slot), &one);
        out->connections += one.connections;
        out->accepted += one.accepted;
        out->messages_out += one.messages_out;
        out->bytes_out += one.bytes_out;
        out->writes += one.writes;
        out->messages_in += one.messages_in;
        out->bytes_in += one.bytes_in;
        out->ring_entries += one.ring_entries;
        out->ring_overruns += one.ring_overruns;
        out->slow_consumers += one.slow_consumers;
        if (one.last_seq > out->last_seq)
            out->last_seq = one.last_seq;
        for (int i = 0; i < SHM_CLOSE_REASON_COUNT; i++)
            out->closed[i] += one.closed[i];
        for (int i = 0; i < SHM_REJECT_REASON_COUNT; i++)
            out->rejected[i] += one.rejected[i];
        for (int i = 0; i < SHM_LATENCY_BUCKETS; i++)
            out->latency_us[i] += one.latency_us[i];
    }
}
