/* admin_bridge.c -- the Redis bridge's status (shm_header.bridge) in stats.json and /metrics.
 *
 * Read-only, relaxed loads like the rest of admin_stats.c; the last error string is copied under
 * its seqlock (bridge_error_get). Without redis in the config stats.json says
 * "redis_bridge":null (the stats page shows "not configured") and /metrics has the state "off"
 * with every counter 0, so dashboards need no special case for a single node.
 *
 * stats.json: "redis_bridge":{"state","node","state_since_ms","last_error","last_error_at_ms",
 * "backlog","backlog_bytes","backlog_limit_bytes","backlog_overflow","trips","connects","sent",
 * "received","delivered","history","skipped_own","delivered_ahead","dropped","stream_gaps",
 * "lost_acked","ring_overruns","last_id"} -- meanings in shm_layout.h and docs/redis-bridge.md.
 */
#include "admin_bridge.h"

#include <stddef.h>
#include <stdio.h>

#include "bridge.h"

static uint64_t ld(const _Atomic uint64_t *p)
{
    return atomic_load_explicit(p, memory_order_relaxed);
}

/* Counters printed the same way in both formats: JSON key, metric name, help. */
struct bridge_counter {
    const char *key;
    const char *metric;
    const char *help;
    size_t offset; /* into struct shm_bridge */
};

static const struct bridge_counter bridge_counters[] = {
    {"backlog_overflow", "wshub_bridge_backlog_overflow_total",
     "Local messages dropped from a full backlog: delivered here, never sent to other nodes.",
     offsetof(struct shm_bridge, backlog_overflow)},
    {"trips", "wshub_bridge_trips_total", "Times the Redis circuit breaker opened.",
     offsetof(struct shm_bridge, trips)},
    {"connects", "wshub_bridge_connects_total", "Successful (re)connections to Redis.",
     offsetof(struct shm_bridge, connects)},
    {"sent", "wshub_bridge_sent_messages_total", "Local messages confirmed in the stream.",
     offsetof(struct shm_bridge, sent)},
    {"received", "wshub_bridge_received_entries_total", "Stream entries read.",
     offsetof(struct shm_bridge, received)},
    {"delivered", "wshub_bridge_delivered_messages_total",
     "Stream entries appended to the ring for delivery.", offsetof(struct shm_bridge, delivered)},
    {"history", "wshub_bridge_history_entries_total",
     "Stream entries kept as history (catch-up after a hub start), not delivered live.",
     offsetof(struct shm_bridge, history)},
    {"skipped_own", "wshub_bridge_skipped_own_total",
     "Own stream entries not appended because they were already delivered here.",
     offsetof(struct shm_bridge, skipped_own)},
    {"delivered_ahead", "wshub_bridge_delivered_ahead_total",
     "Local messages delivered before the stream had them (breaker not closed).",
     offsetof(struct shm_bridge, delivered_ahead)},
    {"dropped", "wshub_bridge_dropped_entries_total",
     "Stream entries unusable here (malformed, or larger than max_message).",
     offsetof(struct shm_bridge, dropped)},
    {"stream_gaps", "wshub_bridge_stream_gaps_total",
     "Times stream entries were trimmed before this node read them.",
     offsetof(struct shm_bridge, stream_gaps)},
    {"lost_acked", "wshub_bridge_lost_acked_total",
     "Own messages Redis acknowledged and then lost (restart without them).",
     offsetof(struct shm_bridge, lost_acked)},
    {"ring_overruns", "wshub_bridge_ring_overruns_total",
     "Local messages lapped in the ring before the bridge read them (upper bound).",
     offsetof(struct shm_bridge, ring_overruns)},
};

#define N_BRIDGE_COUNTERS (sizeof(bridge_counters) / sizeof(bridge_counters[0]))

static uint64_t counter_value(const struct shm_bridge *br, const struct bridge_counter *c)
{
    return ld((const _Atomic uint64_t *)((const char *)br + c->offset));
}

void admin_bridge_json(struct admin_buf *b, const struct shm *s)
{
    const struct shm_bridge *br = &s->hdr->bridge;
    char err[SHM_BRIDGE_ERROR_LEN], node[SHM_BRIDGE_NODE_LEN];
    uint64_t err_at = 0, id_ms = ld(&br->last_id_ms), id_seq = ld(&br->last_id_seq);

    uint32_t st = atomic_load_explicit(&br->state, memory_order_relaxed);

    if (st == SHM_BRIDGE_OFF) {
        admin_buf_puts(b, "\"redis_bridge\":null,");
        return;
    }
    bridge_error_get(s, err, sizeof(err), &err_at);
    snprintf(node, sizeof(node), "%s", br->node);
    admin_buf_printf(b, "\"redis_bridge\":{\"state\":\"%s\",\"node\":", bridge_state_name(st));
    admin_buf_json_str(b, node);
    admin_buf_printf(
        b, ",\"state_since_ms\":%llu,\"last_error\":", (unsigned long long)ld(&br->state_since_ms));
    if (err_at != 0)
        admin_buf_json_str(b, err);
    else
        admin_buf_puts(b, "null");
    admin_buf_printf(b,
                     ",\"last_error_at_ms\":%llu,\"backlog\":%llu,\"backlog_bytes\":%llu,"
                     "\"backlog_limit_bytes\":%llu",
                     (unsigned long long)err_at, (unsigned long long)ld(&br->backlog),
                     (unsigned long long)ld(&br->backlog_bytes),
                     (unsigned long long)ld(&br->backlog_limit));
    for (size_t i = 0; i < N_BRIDGE_COUNTERS; i++)
        admin_buf_printf(b, ",\"%s\":%llu", bridge_counters[i].key,
                         (unsigned long long)counter_value(br, &bridge_counters[i]));
    if (id_ms != 0 || id_seq != 0)
        admin_buf_printf(b, ",\"last_id\":\"%llu-%llu\"},", (unsigned long long)id_ms,
                         (unsigned long long)id_seq);
    else
        admin_buf_puts(b, ",\"last_id\":null},");
}

static void prom_head(struct admin_buf *b, const char *name, const char *type, const char *help)
{
    admin_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void prom_gauge(struct admin_buf *b, const char *name, const char *help, uint64_t v)
{
    prom_head(b, name, "gauge", help);
    admin_buf_printf(b, "%s %llu\n", name, (unsigned long long)v);
}

void admin_bridge_prom(struct admin_buf *b, const struct shm *s)
{
    const struct shm_bridge *br = &s->hdr->bridge;
    uint32_t st = atomic_load_explicit(&br->state, memory_order_relaxed);
    uint64_t err_at = ld(&br->last_error_ms);

    prom_head(b, "wshub_bridge_state", "gauge",
              "Redis circuit breaker: 1 for the current state (off = single node).");
    for (uint32_t i = 0; i < SHM_BRIDGE_STATE_COUNT; i++)
        admin_buf_printf(b, "wshub_bridge_state{state=\"%s\"} %d\n", bridge_state_name(i), i == st);
    prom_head(b, "wshub_bridge_state_change_time_seconds", "gauge",
              "When the breaker last changed state, Unix time.");
    admin_buf_printf(b, "wshub_bridge_state_change_time_seconds %.3f\n",
                     (double)ld(&br->state_since_ms) / 1000.0);
    prom_head(b, "wshub_bridge_last_error_time_seconds", "gauge",
              "When the bridge last saw a Redis error, Unix time (0: never).");
    admin_buf_printf(b, "wshub_bridge_last_error_time_seconds %.3f\n", (double)err_at / 1000.0);
    prom_gauge(b, "wshub_bridge_backlog_messages",
               "Local messages not yet confirmed by the cluster stream.", ld(&br->backlog));
    prom_gauge(b, "wshub_bridge_backlog_bytes", "Memory held by the backlog.",
               ld(&br->backlog_bytes));
    prom_gauge(b, "wshub_bridge_backlog_limit_bytes", "Configured bound of the backlog.",
               ld(&br->backlog_limit));
    for (size_t i = 0; i < N_BRIDGE_COUNTERS; i++) {
        prom_head(b, bridge_counters[i].metric, "counter", bridge_counters[i].help);
        admin_buf_printf(b, "%s %llu\n", bridge_counters[i].metric,
                         (unsigned long long)counter_value(br, &bridge_counters[i]));
    }
}
