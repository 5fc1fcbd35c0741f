/* admin_stats.c -- GET /admin/stats.json, GET /metrics and GET /healthz, read from the segment.
 *
 * All three only read shared memory: relaxed loads of counters that their owners update with
 * relaxed stores (shm_layout.h), so a response is a near-instant snapshot, not a transaction;
 * counters may move between two lines of one response. Where two numbers must agree (histogram
 * buckets, +Inf and _count) they are derived from one copy taken first.
 *
 * stats.json: hub, ring, connection table, totals over all workers (stats_sum()) and one object
 * per worker slot ever used. Prometheus text format 0.0.4: wshub_ prefix, base units, _total
 * counters, per-worker series labelled worker="N", reasons as reason="...". The delivery-latency
 * histogram is summed over workers; workers keep only log2 microsecond buckets, so _sum is
 * estimated from bucket midpoints, and the last bucket (which also holds anything larger) is
 * reported only under +Inf. The broadcast-size histogram comes from the ring's log2 buckets,
 * whose bounds are exact powers of two (bucket i: up to 2^i bytes), and its _sum is the ring's
 * published_bytes. healthz: ok when the hub is alive and every worker slot of the current
 * generation is RUNNING.
 *
 * stats.json also carries the CSRF token in an X-CSRF-Token header, so the stats page follows a
 * hub restart (new segment, new token) without a reload; only same-origin scripts can read it.
 *
 * Responses are built in the thread's output buffer and sent with one admin_respond().
 */
#include "admin.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "admin_bridge.h"
#include "conntab.h"
#include "ring.h"
#include "stats.h"

static const char *hub_state_name(uint32_t st)
{
    switch (st) {
    case SHM_HUB_STARTING:
        return "starting";
    case SHM_HUB_RUNNING:
        return "running";
    case SHM_HUB_STOPPING:
        return "stopping";
    default:
        return "unknown";
    }
}

static uint64_t load64(const _Atomic uint64_t *p)
{
    return atomic_load_explicit(p, memory_order_relaxed);
}

static uint32_t load32(const _Atomic uint32_t *p)
{
    return atomic_load_explicit(p, memory_order_relaxed);
}

static double age_seconds(uint64_t now_ms, uint64_t then_ms)
{
    return now_ms > then_ms ? (double)(now_ms - then_ms) / 1000.0 : 0.0;
}

/* Counts the worker slots of the current generation and how many of them are RUNNING. */
static void count_current_workers(const struct shm *s, unsigned *slots, unsigned *running)
{
    uint32_t gen = load32(&s->hdr->generation);
    *slots = *running = 0;
    for (unsigned i = 0; i < SHM_MAX_WORKERS; i++) {
        const struct shm_worker *w = shm_worker(s, i);
        uint32_t st = load32(&w->state);
        if (st == SHM_WORKER_EMPTY || w->generation != gen)
            continue;
        (*slots)++;
        if (st == SHM_WORKER_RUNNING)
            (*running)++;
    }
}

static void send_buffer(struct admin_req *r, int status, const char *content_type)
{
    struct admin_buf *b = &r->thr->out;
    if (b->failed)
        admin_respond_error(r, 500, "out of memory", NULL);
    else
        admin_respond(r, status, content_type, "", b->data, b->len);
}

/* ---- stats.json ---- */

static void json_hub(struct admin_buf *b, const struct shm *s, uint64_t now)
{
    const struct shm_header *h = s->hdr;
    uint64_t beat = load64(&h->hub_heartbeat_ms);
    admin_buf_printf(b,
                     "\"hub\":{\"pid\":%d,\"state\":\"%s\",\"epoch\":\"%016llx\","
                     "\"generation\":%u,\"workers_configured\":%u,\"started_at_ms\":%llu,"
                     "\"uptime_s\":%.3f,\"heartbeat_age_ms\":%llu,\"restart_requested\":%llu},",
                     (int)atomic_load_explicit(&h->hub_pid, memory_order_relaxed),
                     hub_state_name(load32(&h->hub_state)), (unsigned long long)h->epoch,
                     load32(&h->generation), load32(&h->workers_configured),
                     (unsigned long long)h->created_at_ms, age_seconds(now, h->created_at_ms),
                     (unsigned long long)(now > beat ? now - beat : 0),
                     (unsigned long long)load64(&h->restart_requested));
}

static void json_ring(struct admin_buf *b, const struct shm *s)
{
    const struct shm_header *h = s->hdr;
    admin_buf_printf(b,
                     "\"ring\":{\"capacity\":%llu,\"max_payload\":%u,\"used_bytes\":%llu,"
                     "\"next_seq\":%llu,\"oldest_seq\":%llu,\"published\":%llu,"
                     "\"published_bytes\":%llu,\"lock_recoveries\":%llu,"
                     "\"broadcasts_rejected\":%llu},",
                     (unsigned long long)h->ring.capacity, h->ring.max_payload,
                     (unsigned long long)ring_used_bytes(s), (unsigned long long)ring_next_seq(s),
                     (unsigned long long)ring_oldest_seq(s),
                     (unsigned long long)load64(&h->ring.published),
                     (unsigned long long)load64(&h->ring.published_bytes),
                     (unsigned long long)load64(&h->ring.lock_recoveries),
                     (unsigned long long)load64(&h->broadcasts_rejected));
}

/* What one client can have queued outside the worker's shared frame buffer: the kernel's send
 * buffer (Linux reserves twice SO_SNDBUF) plus the one write lws may hold when the socket is
 * full (a gathered batch, or one largest frame). From our configuration: the workers read the
 * same file. */
static uint64_t send_bound(const struct conf *cf, const struct shm *s)
{
    uint64_t frame = (uint64_t)s->hdr->ring.max_payload + 10 + 80; /* header, wshub.v1 envelope */
    return 2ULL * cf->client_send_buffer + (frame > CONF_WRITE_BUDGET ? frame : CONF_WRITE_BUDGET);
}

static void json_conntab(struct admin_buf *b, const struct shm *s, const struct conf *cf)
{
    const struct shm_conntab_ctl *c = &s->hdr->conntab;
    admin_buf_printf(b,
                     "\"connections\":{\"capacity\":%u,\"in_use\":%u,\"reclaimed\":%llu,"
                     "\"lock_recoveries\":%llu,\"send_buffer_bound\":%llu},",
                     c->capacity, conntab_in_use(s), (unsigned long long)load64(&c->reclaimed),
                     (unsigned long long)load64(&c->lock_recoveries),
                     (unsigned long long)send_bound(cf, s));
}

static void json_totals(struct admin_buf *b, const struct shm *s)
{
    struct stats_snapshot t;
    stats_sum(s, &t);
    admin_buf_printf(b,
                     "\"totals\":{\"connections\":%lld,\"accepted\":%llu,\"messages_out\":%llu,"
                     "\"bytes_out\":%llu,\"writes\":%llu,\"messages_in\":%llu,\"bytes_in\":%llu,"
                     "\"ring_overruns\":%llu,\"slow_consumers\":%llu,\"closed\":{",
                     (long long)t.connections, (unsigned long long)t.accepted,
                     (unsigned long long)t.messages_out, (unsigned long long)t.bytes_out,
                     (unsigned long long)t.writes, (unsigned long long)t.messages_in,
                     (unsigned long long)t.bytes_in, (unsigned long long)t.ring_overruns,
                     (unsigned long long)t.slow_consumers);
    for (int i = 0; i < SHM_CLOSE_REASON_COUNT; i++)
        admin_buf_printf(b, "%s\"%s\":%llu", i ? "," : "",
                         stats_close_reason_name((enum shm_close_reason)i),
                         (unsigned long long)t.closed[i]);
    admin_buf_puts(b, "},\"rejected\":{");
    for (int i = 0; i < SHM_REJECT_REASON_COUNT; i++)
        admin_buf_printf(b, "%s\"%s\":%llu", i ? "," : "",
                         stats_reject_reason_name((enum shm_reject_reason)i),
                         (unsigned long long)t.rejected[i]);
    admin_buf_puts(b, "}},");
}

/* "exited with code N", "killed by signal N" or null, from a raw waitpid() status. */
static void json_last_exit(struct admin_buf *b, const struct shm_worker *w)
{
    int status = atomic_load_explicit(&w->last_exit_status, memory_order_relaxed);
    if (load64(&w->last_exit_at_ms) == 0)
        admin_buf_puts(b, "null");
    else if (WIFEXITED(status))
        admin_buf_printf(b, "\"exited with code %d\"", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        admin_buf_printf(b, "\"killed by signal %d\"", WTERMSIG(status));
    else
        admin_buf_puts(b, "null");
}

static void json_worker(struct admin_buf *b, const struct shm_worker *w, unsigned slot,
                        uint64_t now)
{
    struct stats_snapshot st;
    stats_read_worker(w, &st);
    int32_t pid = atomic_load_explicit(&w->pid, memory_order_relaxed);
    uint64_t started = load64(&w->started_at_ms);
    admin_buf_printf(b,
                     "{\"slot\":%u,\"pid\":%d,\"generation\":%u,\"state\":\"%s\","
                     "\"connections\":%lld,\"accepted\":%llu,\"messages_out\":%llu,"
                     "\"bytes_out\":%llu,\"uptime_s\":",
                     slot, (int)pid, w->generation,
                     stats_worker_state_name((enum shm_worker_state)load32(&w->state)),
                     (long long)st.connections, (unsigned long long)st.accepted,
                     (unsigned long long)st.messages_out, (unsigned long long)st.bytes_out);
    if (pid > 0 && started > 0)
        admin_buf_printf(b, "%.3f", age_seconds(now, started));
    else
        admin_buf_puts(b, "null");
    admin_buf_printf(b, ",\"restarts\":%u,\"last_exit\":", load32(&w->restarts));
    json_last_exit(b, w);
    admin_buf_puts(b, "}");
}

void admin_handle_stats_json(struct admin_req *r)
{
    const struct shm *s = admin_req_segment(r) ? &r->seg->shm : NULL;
    if (s == NULL)
        return;
    struct admin_buf *b = &r->thr->out;
    uint64_t now = shm_now_ms();
    admin_buf_printf(b, "{\"generated_at_ms\":%llu,\"instance\":", (unsigned long long)now);
    admin_buf_json_str(b, r->ctx->conf.instance);
    admin_buf_puts(b, ",");
    json_hub(b, s, now);
    json_ring(b, s);
    json_conntab(b, s, &r->ctx->conf);
    json_totals(b, s);
    admin_bridge_json(b, s);   /* Redis bridge (issue 8): "redis_bridge":{...} */
    admin_security_json(b, s); /* admin_security.c: "security":{...} */
    admin_buf_puts(b, "\"workers\":[");
    int first = 1;
    for (unsigned i = 0; i < SHM_MAX_WORKERS; i++) {
        const struct shm_worker *w = shm_worker(s, i);
        if (load32(&w->state) == SHM_WORKER_EMPTY)
            continue;
        if (!first)
            admin_buf_puts(b, ",");
        first = 0;
        json_worker(b, w, i, now);
    }
    admin_buf_puts(b, "]}\n");
    char token[ADMIN_CSRF_TOKEN_LEN + 1], hdr[ADMIN_CSRF_TOKEN_LEN + 32] = "";
    if (admin_csrf_token(&r->seg->shm, token, sizeof(token)) == 0)
        snprintf(hdr, sizeof(hdr), "X-CSRF-Token: %s\r\n", token);
    if (b->failed)
        admin_respond_error(r, 500, "out of memory", NULL);
    else
        admin_respond(r, 200, "application/json", hdr, b->data, b->len);
}

/* ---- /metrics ---- */

static void prom_family(struct admin_buf *b, const char *name, const char *type, const char *help)
{
    admin_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void prom_value(struct admin_buf *b, const char *name, const char *type, const char *help,
                       unsigned long long v)
{
    prom_family(b, name, type, help);
    admin_buf_printf(b, "%s %llu\n", name, v);
}

static void prom_hub(struct admin_buf *b, const struct shm *s, uint64_t now)
{
    const struct shm_header *h = s->hdr;
    unsigned slots, running;
    count_current_workers(s, &slots, &running);
    prom_family(b, "wshub_hub_info", "gauge", "Constant 1; labels identify the running hub.");
    admin_buf_printf(b, "wshub_hub_info{pid=\"%d\",epoch=\"%016llx\"} 1\n",
                     (int)atomic_load_explicit(&h->hub_pid, memory_order_relaxed),
                     (unsigned long long)h->epoch);
    prom_family(b, "wshub_hub_start_time_seconds", "gauge",
                "When the hub created the shared-memory segment, Unix time.");
    admin_buf_printf(b, "wshub_hub_start_time_seconds %.3f\n", (double)h->created_at_ms / 1000.0);
    prom_family(b, "wshub_hub_heartbeat_age_seconds", "gauge",
                "Time since the hub's last heartbeat.");
    admin_buf_printf(b, "wshub_hub_heartbeat_age_seconds %.3f\n",
                     age_seconds(now, load64(&h->hub_heartbeat_ms)));
    prom_value(b, "wshub_worker_generation", "gauge", "Current worker generation.",
               load32(&h->generation));
    prom_value(b, "wshub_workers_configured", "gauge", "Workers of the current generation.",
               load32(&h->workers_configured));
    prom_value(b, "wshub_workers_running", "gauge",
               "Worker slots of the current generation in state running.", running);
    prom_value(b, "wshub_restart_requests_total", "counter",
               "Rolling restarts requested through the admin API.", load64(&h->restart_requested));
}

static void prom_ring(struct admin_buf *b, const struct shm *s)
{
    const struct shm_header *h = s->hdr;
    prom_value(b, "wshub_ring_capacity_bytes", "gauge", "Size of the broadcast ring.",
               h->ring.capacity);
    prom_value(b, "wshub_ring_used_bytes", "gauge", "Bytes of the ring holding intact records.",
               ring_used_bytes(s));
    prom_value(b, "wshub_ring_max_payload_bytes", "gauge", "Largest broadcast the ring accepts.",
               h->ring.max_payload);
    prom_value(b, "wshub_ring_next_sequence", "gauge",
               "Sequence number the next broadcast will get.", ring_next_seq(s));
    prom_value(b, "wshub_ring_oldest_sequence", "gauge",
               "Oldest sequence number still intact in the ring.", ring_oldest_seq(s));
    prom_value(b, "wshub_ring_published_messages_total", "counter",
               "Broadcasts appended to the ring.", load64(&h->ring.published));
    prom_value(b, "wshub_ring_published_bytes_total", "counter",
               "Payload bytes appended to the ring.", load64(&h->ring.published_bytes));
    prom_value(b, "wshub_ring_lock_recoveries_total", "counter",
               "Ring lock repairs after a producer died holding it.",
               load64(&h->ring.lock_recoveries));
    prom_value(b, "wshub_broadcasts_rejected_total", "counter",
               "Broadcast requests refused (invalid, too large, hub stopping).",
               load64(&h->broadcasts_rejected));
}

static void prom_conntab(struct admin_buf *b, const struct shm *s)
{
    const struct shm_conntab_ctl *c = &s->hdr->conntab;
    prom_value(b, "wshub_connection_table_capacity", "gauge", "Rows in the connection table.",
               c->capacity);
    prom_value(b, "wshub_connection_table_in_use", "gauge", "Connection table rows claimed.",
               conntab_in_use(s));
    prom_value(b, "wshub_connection_table_reclaimed_total", "counter",
               "Rows freed by the hub after their worker died.", load64(&c->reclaimed));
    prom_value(b, "wshub_connection_table_lock_recoveries_total", "counter",
               "Connection table lock repairs after a process died holding it.",
               load64(&c->lock_recoveries));
}

/* Per-worker counters: one family each, one series per used slot. */
struct prom_worker_metric {
    const char *name;
    const char *type;
    const char *help;
    size_t offset; /* into struct stats_snapshot; connections is int64, the rest uint64 */
};

static const struct prom_worker_metric prom_worker_metrics[] = {
    {"wshub_connections", "gauge", "Open WebSocket connections.",
     offsetof(struct stats_snapshot, connections)},
    {"wshub_connections_accepted_total", "counter", "WebSocket upgrades completed.",
     offsetof(struct stats_snapshot, accepted)},
    {"wshub_messages_sent_total", "counter",
     "Messages delivered, one per connection per broadcast.",
     offsetof(struct stats_snapshot, messages_out)},
    {"wshub_sent_bytes_total", "counter", "Payload bytes delivered to clients.",
     offsetof(struct stats_snapshot, bytes_out)},
    {"wshub_socket_writes_total", "counter", "Write calls issued (one may carry several frames).",
     offsetof(struct stats_snapshot, writes)},
    {"wshub_messages_received_total", "counter", "Data messages received from clients.",
     offsetof(struct stats_snapshot, messages_in)},
    {"wshub_received_bytes_total", "counter", "Payload bytes received from clients.",
     offsetof(struct stats_snapshot, bytes_in)},
    {"wshub_ring_entries_consumed_total", "counter", "Ring entries a worker consumed.",
     offsetof(struct stats_snapshot, ring_entries)},
    {"wshub_ring_overruns_total", "counter", "Times a worker was lapped by the ring.",
     offsetof(struct stats_snapshot, ring_overruns)},
    {"wshub_slow_consumers_total", "counter",
     "Connections that fell behind their worker's buffer (closed with 1013, or skipped ahead).",
     offsetof(struct stats_snapshot, slow_consumers)},
    {"wshub_worker_last_sequence", "gauge", "Newest ring sequence a worker has framed.",
     offsetof(struct stats_snapshot, last_seq)},
};

#define N_WORKER_METRICS (sizeof(prom_worker_metrics) / sizeof(prom_worker_metrics[0]))

struct prom_workers {
    unsigned n;
    unsigned slot[SHM_MAX_WORKERS];
    struct stats_snapshot st[SHM_MAX_WORKERS];
};

static void prom_worker_counters(struct admin_buf *b, const struct prom_workers *pw)
{
    for (size_t m = 0; m < N_WORKER_METRICS; m++) {
        const struct prom_worker_metric *pm = &prom_worker_metrics[m];
        prom_family(b, pm->name, pm->type, pm->help);
        for (unsigned i = 0; i < pw->n; i++) {
            const char *field = (const char *)&pw->st[i] + pm->offset;
            if (pm->offset == offsetof(struct stats_snapshot, connections))
                admin_buf_printf(b, "%s{worker=\"%u\"} %lld\n", pm->name, pw->slot[i],
                                 (long long)*(const int64_t *)field);
            else
                admin_buf_printf(b, "%s{worker=\"%u\"} %llu\n", pm->name, pw->slot[i],
                                 (unsigned long long)*(const uint64_t *)field);
        }
    }
}

static void prom_worker_reasons(struct admin_buf *b, const struct prom_workers *pw)
{
    prom_family(b, "wshub_connections_closed_total", "counter", "Connections ended, by reason.");
    for (unsigned i = 0; i < pw->n; i++)
        for (int k = 0; k < SHM_CLOSE_REASON_COUNT; k++)
            admin_buf_printf(b,
                             "wshub_connections_closed_total{worker=\"%u\",reason=\"%s\"} %llu\n",
                             pw->slot[i], stats_close_reason_name((enum shm_close_reason)k),
                             (unsigned long long)pw->st[i].closed[k]);
    prom_family(b, "wshub_handshakes_rejected_total", "counter",
                "WebSocket handshakes refused before the upgrade, by reason.");
    for (unsigned i = 0; i < pw->n; i++)
        for (int k = 0; k < SHM_REJECT_REASON_COUNT; k++)
            admin_buf_printf(b,
                             "wshub_handshakes_rejected_total{worker=\"%u\",reason=\"%s\"} %llu\n",
                             pw->slot[i], stats_reject_reason_name((enum shm_reject_reason)k),
                             (unsigned long long)pw->st[i].rejected[k]);
}

/* Slot-level facts the hub writes: state, start time, restarts. */
static void prom_worker_slots(struct admin_buf *b, const struct shm *s,
                              const struct prom_workers *pw)
{
    prom_family(b, "wshub_worker_info", "gauge",
                "Constant 1 per used worker slot; labels say "
                "its state and generation.");
    for (unsigned i = 0; i < pw->n; i++) {
        const struct shm_worker *w = shm_worker(s, pw->slot[i]);
        admin_buf_printf(
            b, "wshub_worker_info{worker=\"%u\",state=\"%s\",generation=\"%u\"} 1\n", pw->slot[i],
            stats_worker_state_name((enum shm_worker_state)load32(&w->state)), w->generation);
    }
    prom_family(b, "wshub_worker_start_time_seconds", "gauge",
                "When the slot's current process was started, Unix time.");
    for (unsigned i = 0; i < pw->n; i++)
        admin_buf_printf(b, "wshub_worker_start_time_seconds{worker=\"%u\"} %.3f\n", pw->slot[i],
                         (double)load64(&shm_worker(s, pw->slot[i])->started_at_ms) / 1000.0);
    prom_family(b, "wshub_worker_restarts_total", "counter",
                "Times the hub respawned the slot after a crash.");
    for (unsigned i = 0; i < pw->n; i++)
        admin_buf_printf(b, "wshub_worker_restarts_total{worker=\"%u\"} %u\n", pw->slot[i],
                         load32(&shm_worker(s, pw->slot[i])->restarts));
}

/* Writes 2^exp microseconds as exact decimal seconds, e.g. 0.000128. */
static void prom_le_seconds(char *out, size_t outlen, unsigned exp)
{
    unsigned long long us = 1ULL << exp;
    snprintf(out, outlen, "%llu.%06llu", us / 1000000ULL, us % 1000000ULL);
    char *end = out + strlen(out) - 1;
    while (*end == '0')
        *end-- = '\0';
    if (*end == '.')
        *end = '\0';
}

static void prom_latency(struct admin_buf *b, const struct prom_workers *pw)
{
    uint64_t bucket[SHM_LATENCY_BUCKETS] = {0};
    for (unsigned i = 0; i < pw->n; i++)
        for (int k = 0; k < SHM_LATENCY_BUCKETS; k++)
            bucket[k] += pw->st[i].latency_us[k];
    prom_family(b, "wshub_delivery_latency_seconds", "histogram",
                "Time from ring append to socket write per delivered message, all workers. "
                "_sum is approximate: estimated from log2 bucket midpoints.");
    uint64_t cum = 0;
    double sum_us = 0;
    char le[32];
    for (unsigned k = 0; k < SHM_LATENCY_BUCKETS; k++) {
        cum += bucket[k];
        sum_us += (double)bucket[k] * 1.5 * (double)(1ULL << k);
        if (k + 1 == SHM_LATENCY_BUCKETS)
            break; /* the last bucket is open-ended: +Inf only */
        prom_le_seconds(le, sizeof(le), k + 1);
        admin_buf_printf(b, "wshub_delivery_latency_seconds_bucket{le=\"%s\"} %llu\n", le,
                         (unsigned long long)cum);
    }
    admin_buf_printf(b, "wshub_delivery_latency_seconds_bucket{le=\"+Inf\"} %llu\n",
                     (unsigned long long)cum);
    admin_buf_printf(b, "wshub_delivery_latency_seconds_sum %.6f\n", sum_us / 1e6);
    admin_buf_printf(b, "wshub_delivery_latency_seconds_count %llu\n", (unsigned long long)cum);
}

/* Broadcast payload sizes from the ring's buckets: bucket k holds sizes up to 2^k bytes. */
static void prom_message_size(struct admin_buf *b, const struct shm *s)
{
    const struct shm_ring_ctl *rc = &s->hdr->ring;
    uint64_t bucket[SHM_SIZE_BUCKETS], cum = 0;
    for (int k = 0; k < SHM_SIZE_BUCKETS; k++)
        bucket[k] = load64(&rc->size_hist[k]);
    prom_family(b, "wshub_broadcast_message_size_bytes", "histogram",
                "Payload size of each broadcast appended to the ring.");
    for (unsigned k = 0; k < SHM_SIZE_BUCKETS; k++) {
        cum += bucket[k];
        if (k + 1 == SHM_SIZE_BUCKETS)
            break; /* the last bucket is open-ended: +Inf only */
        admin_buf_printf(b, "wshub_broadcast_message_size_bytes_bucket{le=\"%llu\"} %llu\n",
                         1ULL << k, (unsigned long long)cum);
    }
    admin_buf_printf(b, "wshub_broadcast_message_size_bytes_bucket{le=\"+Inf\"} %llu\n",
                     (unsigned long long)cum);
    admin_buf_printf(b, "wshub_broadcast_message_size_bytes_sum %llu\n",
                     (unsigned long long)load64(&rc->published_bytes));
    admin_buf_printf(b, "wshub_broadcast_message_size_bytes_count %llu\n", (unsigned long long)cum);
}

static void prom_workers_read(const struct shm *s, struct prom_workers *pw)
{
    pw->n = 0;
    for (unsigned i = 0; i < SHM_MAX_WORKERS; i++) {
        const struct shm_worker *w = shm_worker(s, i);
        if (load32(&w->state) == SHM_WORKER_EMPTY)
            continue;
        pw->slot[pw->n] = i;
        stats_read_worker(w, &pw->st[pw->n]);
        pw->n++;
    }
}

void admin_handle_metrics(struct admin_req *r)
{
    static _Thread_local struct prom_workers pw; /* ~32 KB: keep it off the stack */
    const struct shm *s = admin_req_segment(r) ? &r->seg->shm : NULL;
    if (s == NULL)
        return;
    struct admin_buf *b = &r->thr->out;
    prom_workers_read(s, &pw);
    prom_hub(b, s, shm_now_ms());
    prom_ring(b, s);
    prom_conntab(b, s);
    prom_worker_slots(b, s, &pw);
    prom_worker_counters(b, &pw);
    prom_worker_reasons(b, &pw);
    prom_latency(b, &pw);
    prom_message_size(b, s);
    admin_bridge_prom(b, s);   /* Redis bridge (issue 8): wshub_bridge_* */
    admin_security_prom(b, s); /* admin_security.c: wshub_auth_enforced, wshub_connlimit_* */
    admin_channels_prom(b, s); /* admin_channels.c: wshub_channel_* for the top channels */
    send_buffer(r, 200, "text/plain; version=0.0.4; charset=utf-8");
}

/* ---- /healthz ---- */

static void healthz_unavailable(struct admin_req *r, const char *reason, const char *detail)
{
    struct admin_buf *b = &r->thr->out;
    admin_buf_reset(b);
    admin_buf_puts(b, "{\"status\":\"unavailable\",\"reason\":");
    admin_buf_json_str(b, reason);
    admin_buf_puts(b, ",\"detail\":");
    if (detail)
        admin_buf_json_str(b, detail);
    else
        admin_buf_puts(b, "null");
    admin_buf_puts(b, "}\n");
    if (b->failed)
        admin_respond_error(r, 500, "out of memory", NULL);
    else
        admin_respond(r, 503, "application/json", "Retry-After: 1\r\n", b->data, b->len);
}

void admin_handle_healthz(struct admin_req *r)
{
    enum admin_seg_status st;
    char why[256] = "";
    r->seg = admin_segment_get(&r->ctx->segs, &st, why, sizeof(why));
    if (r->seg == NULL) {
        healthz_unavailable(r,
                            st == ADMIN_SEG_STOPPING ? "hub stopping"
                            : st == ADMIN_SEG_LAYOUT ? "shared-memory layout mismatch"
                                                     : "hub not running",
                            admin_segment_public_detail(st, why));
        return;
    }
    const struct shm *s = &r->seg->shm;
    unsigned slots, running;
    count_current_workers(s, &slots, &running);
    uint32_t configured = load32(&s->hdr->workers_configured);
    if (configured == 0 || running < configured) {
        char reason[96];
        snprintf(reason, sizeof(reason), "%u of %u workers running", running, configured);
        healthz_unavailable(r, reason, NULL);
        return;
    }
    char body[64];
    int n = snprintf(body, sizeof(body), "{\"status\":\"ok\",\"workers\":%u}\n", running);
    admin_respond(r, 200, "application/json", "", body, (size_t)n);
}
