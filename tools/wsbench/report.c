/* report.c -- merging child results and printing the one JSON object (see report.h).
 *
 * A tiny streaming JSON writer is enough: keys are fixed identifiers, strings are a handful of
 * notes and URLs (escaped anyway). Non-finite numbers print as null. All latencies print in
 * milliseconds with microsecond resolution.
 */
#include "report.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct json {
    FILE *f;
    int depth;
    int comma;
};

static void json_key(struct json *j, const char *key)
{
    fputs(j->comma ? ",\n" : "\n", j->f);
    for (int i = 0; i < j->depth; i++)
        fputs("  ", j->f);
    if (key != NULL)
        fprintf(j->f, "\"%s\": ", key);
    j->comma = 1;
}

static void json_open(struct json *j, const char *key, char bracket)
{
    if (j->depth > 0 || j->comma)
        json_key(j, key);
    fputc(bracket, j->f);
    j->depth++;
    j->comma = 0;
}

static void json_close(struct json *j, char bracket)
{
    j->depth--;
    fputc('\n', j->f);
    for (int i = 0; i < j->depth; i++)
        fputs("  ", j->f);
    fputc(bracket, j->f);
    j->comma = 1;
}

static void json_u64(struct json *j, const char *key, uint64_t v)
{
    json_key(j, key);
    fprintf(j->f, "%llu", (unsigned long long)v);
}

static void json_num(struct json *j, const char *key, double v, int decimals)
{
    json_key(j, key);
    if (isfinite(v))
        fprintf(j->f, "%.*f", decimals, v);
    else
        fputs("null", j->f);
}

static void json_bool(struct json *j, const char *key, int v)
{
    json_key(j, key);
    fputs(v ? "true" : "false", j->f);
}

static void json_str(struct json *j, const char *key, const char *s)
{
    json_key(j, key);
    if (s == NULL) {
        fputs("null", j->f);
        return;
    }
    fputc('"', j->f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(j->f, "\\%c", c);
        else if (c < 0x20)
            fprintf(j->f, "\\u%04x", c);
        else
            fputc(c, j->f);
    }
    fputc('"', j->f);
}

static double ms(int64_t ns)
{
    return (double)ns / 1e6;
}

/* Every distinct delivery the server made: steady subscribers and churn sessions. */
static uint64_t report_unique_all(const struct run *r)
{
    return r->total.unique + r->total.churn_unique;
}

static void add_u64(uint64_t *into, const uint64_t *from, int n)
{
    for (int i = 0; i < n; i++)
        into[i] += from[i];
}

static void report_merge_resume(struct wire_result *t, const struct wire_result *w)
{
    t->resume_clients += w->resume_clients;
    add_u64(t->resume_lost, w->resume_lost, WIRE_CAUSES);
    add_u64(t->resume_closes, w->resume_closes, WIRE_CLOSE_CODES);
    t->resume_attempts += w->resume_attempts;
    add_u64(t->resume_failed, w->resume_failed, WIRE_FAIL_COUNT);
    add_u64(t->resume_welcome, w->resume_welcome, PROTO_STATUS_N);
    t->resume_waiting_at_stop += w->resume_waiting_at_stop;
    t->welcomes += w->welcomes;
    t->bad_welcome += w->bad_welcome;
    t->bad_envelope += w->bad_envelope;
    t->unknown_type += w->unknown_type;
    t->gap_messages += w->gap_messages;
    add_u64(t->gap_reasons, w->gap_reasons, PROTO_GAP_N);
    t->gap_seqs += w->gap_seqs;
    t->gapped += w->gapped;
    t->unacked += w->unacked;
    t->mislabeled += w->mislabeled;
    t->regressed += w->regressed;
    t->stalled += w->stalled;
    t->stalled_ended += w->stalled_ended;
    hist_merge(&t->recovery, &w->recovery);
    for (int k = 0; k < WIRE_CAUSES; k++)
        hist_merge(&t->recovery_cause[k], &w->recovery_cause[k]);
}

void report_merge(struct run *r, const struct wire_result *w, const int64_t *msg_max)
{
    struct wire_result *t = &r->total;

    t->attempted += w->attempted;
    t->ok += w->ok;
    for (int i = 0; i < WIRE_FAIL_COUNT; i++)
        t->failed[i] += w->failed[i];
    for (int i = 0; i < WIRE_DROP_COUNT; i++)
        t->dropped[i] += w->dropped[i];
    t->open_at_stop += w->open_at_stop;
    t->subscribed += w->subscribed;
    t->received += w->received;
    t->unique += w->unique;
    t->lost += w->lost;
    t->duplicated += w->duplicated;
    t->out_of_order += w->out_of_order;
    t->foreign += w->foreign;
    t->bad_size += w->bad_size;
    t->fragmented += w->fragmented;
    t->pings += w->pings;
    t->pongs_sent += w->pongs_sent;
    t->closes_echoed += w->closes_echoed;
    t->data_after_close += w->data_after_close;
    t->closed_clean += w->closed_clean;
    if (w->first_recv_ns != 0 && (t->first_recv_ns == 0 || w->first_recv_ns < t->first_recv_ns))
        t->first_recv_ns = w->first_recv_ns;
    if (w->last_recv_ns > t->last_recv_ns)
        t->last_recv_ns = w->last_recv_ns;
    t->churn_pool += w->churn_pool;
    t->churn_left += w->churn_left;
    t->churn_rejoined += w->churn_rejoined;
    for (int i = 0; i < WIRE_FAIL_COUNT; i++)
        t->churn_failed[i] += w->churn_failed[i];
    t->churn_closes_answered += w->churn_closes_answered;
    t->churn_closes_cut += w->churn_closes_cut;
    t->churn_received += w->churn_received;
    t->churn_unique += w->churn_unique;
    t->churn_gaps += w->churn_gaps;
    t->chan_expected += w->chan_expected;
    t->chan_wrong += w->chan_wrong;
    hist_merge(&t->churn_rejoin, &w->churn_rejoin);
    report_merge_resume(t, w);
    t->cpu_total_s += w->cpu_total_s;
    t->cpu_phase_s += w->cpu_phase_s;
    if (w->window_ns > 0) {
        double frac = (double)w->window_cpu_ns / (double)w->window_ns;
        if (frac > r->busiest_window_frac)
            r->busiest_window_frac = frac;
    }
    if (w->phase_ns > 0) {
        double frac = w->cpu_phase_s / ((double)w->phase_ns / 1e9);
        if (frac > r->busiest_child_frac)
            r->busiest_child_frac = frac;
    }
    hist_merge(&t->latency, &w->latency);
    for (uint32_t i = 0; msg_max != NULL && i < r->msg_tracked; i++)
        if (msg_max[i] > r->msg_max[i])
            r->msg_max[i] = msg_max[i];
    r->results++;
}

/* [upper edge ms, cumulative fraction] per non-empty bucket. */
static void report_cdf(struct json *j, const struct hist *h)
{
    uint64_t seen = 0;
    json_open(j, "cdf", '[');
    for (unsigned i = 0; i < HIST_BUCKETS && h->count > 0; i++) {
        if (h->bucket[i] == 0)
            continue;
        seen += h->bucket[i];
        json_key(j, NULL);
        fprintf(j->f, "[%.4f, %.6f]", ms(hist_bucket_upper(i)), (double)seen / (double)h->count);
    }
    json_close(j, ']');
}

static void report_latency(struct json *j, const char *key, const struct hist *h, int cdf)
{
    json_open(j, key, '{');
    json_u64(j, "count", h->count);
    json_num(j, "p50", ms(hist_quantile(h, 0.50)), 3);
    json_num(j, "p90", ms(hist_quantile(h, 0.90)), 3);
    json_num(j, "p99", ms(hist_quantile(h, 0.99)), 3);
    json_num(j, "p999", ms(hist_quantile(h, 0.999)), 3);
    json_num(j, "max", ms(h->max_ns), 3);
    json_num(j, "min", h->count ? ms(h->min_ns) : 0, 3);
    json_num(j, "mean", h->count ? ms((int64_t)(h->sum_ns / h->count)) : 0, 3);
    if (cdf)
        report_cdf(j, h);
    json_close(j, '}');
}

static int report_cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Per broadcast: POST to the last subscriber's receipt. */
static void report_per_broadcast(struct json *j, const struct run *r)
{
    int64_t *v = malloc((r->msg_tracked ? r->msg_tracked : 1) * sizeof(int64_t));
    uint32_t n = 0;

    for (uint32_t i = 0; v != NULL && i < r->msg_tracked; i++)
        if (r->msg_max[i] >= 0)
            v[n++] = r->msg_max[i];
    json_open(j, "post_to_last_delivery_ms", '{');
    json_u64(j, "broadcasts", n);
    if (n > 0) {
        qsort(v, n, sizeof(*v), report_cmp_i64);
        json_num(j, "p50", ms(v[(n - 1) / 2]), 3);
        json_num(j, "p90", ms(v[(uint32_t)ceil(0.90 * n) - 1]), 3);
        json_num(j, "p99", ms(v[(uint32_t)ceil(0.99 * n) - 1]), 3);
        json_num(j, "max", ms(v[n - 1]), 3);
    }
    json_close(j, '}');
    free(v);
}

static void report_params(struct json *j, const struct run *r)
{
    const struct opts *o = r->o;
    json_open(j, "params", '{');
    json_str(j, "url", o->ws.url);
    json_u64(j, "connections", o->connections);
    json_u64(j, "processes", o->processes);
    json_u64(j, "source_addrs", o->source_addrs);
    json_num(j, "connect_rate", o->connect_rate, 1);
    json_u64(j, "max_pending", o->max_pending);
    json_num(j, "connect_timeout_s", (double)o->connect_timeout_ns / 1e9, 3);
    if (o->mode == OPTS_MODE_HOLD) {
        json_num(j, "hold_s", (double)o->hold_ns / 1e9, 3);
    } else {
        json_str(j, "publish_url", o->pub.url);
        json_u64(j, "messages", o->messages);
        json_num(j, "rate", o->rate, 3);
        json_u64(j, "size", o->size);
        json_u64(j, "size_max", o->size_max > o->size ? o->size_max : o->size);
        json_str(j, "arrivals", o->arrivals == OPTS_ARRIVALS_POISSON ? "poisson" : "fixed");
        json_num(j, "settle_s", (double)o->settle_ns / 1e9, 3);
        json_num(j, "drain_timeout_s", (double)o->drain_timeout_ns / 1e9, 3);
        json_u64(j, "pub_connections", o->pub_connections);
        json_str(j, "run_id", r->run_id);
    }
    json_u64(j, "seed", o->seed);
    json_num(j, "churn", o->churn, 3);
    json_bool(j, "resume", o->resume);
    if (o->resume) {
        json_num(j, "reconnect_quick_s", (double)o->reconnect_quick_ns / 1e9, 3);
        json_num(j, "reconnect_min_s", (double)o->reconnect_min_ns / 1e9, 3);
        json_num(j, "reconnect_max_s", (double)o->reconnect_max_ns / 1e9, 3);
    }
    json_num(j, "stalled", o->stalled, 4);
    json_u64(j, "channels", o->channels);
    if (o->churn > 0) {
        json_num(j, "churn_pool", o->churn_pool, 4);
        json_num(j, "churn_away_s", (double)o->churn_away_ns / 1e9, 3);
    }
    json_close(j, '}');
}

static void report_connections(struct json *j, const struct run *r)
{
    const struct wire_result *t = &r->total;
    json_open(j, "connections", '{');
    json_u64(j, "attempted", t->attempted);
    json_u64(j, "ok", t->ok);
    uint64_t nf = 0;
    for (int i = 0; i < WIRE_FAIL_COUNT; i++)
        nf += t->failed[i];
    json_u64(j, "failed_total", nf);
    json_open(j, "failed", '{');
    for (int i = 0; i < WIRE_FAIL_COUNT; i++)
        json_u64(j, wire_fail_names[i], t->failed[i]);
    json_close(j, '}');
    json_num(j, "connect_s", (double)(r->t_connected - r->t_start) / 1e9, 3);
    json_u64(j, "survived", t->open_at_stop);
    json_open(j, "dropped", '{');
    for (int i = 0; i < WIRE_DROP_COUNT; i++)
        json_u64(j, wire_drop_names[i], t->dropped[i]);
    json_close(j, '}');
    json_u64(j, "pings_answered", t->pongs_sent);
    json_u64(j, "server_closes_echoed", t->closes_echoed);
    json_u64(j, "data_after_server_close", t->data_after_close);
    json_u64(j, "closed_clean_at_end", t->closed_clean);
    json_close(j, '}');
}

static void report_publish(struct json *j, const struct run *r)
{
    const struct publisher_stats *p = r->pub;
    static const char *const cls[6] = {"unparsed", "1xx", "2xx", "3xx", "4xx", "5xx"};
    json_open(j, "publish", '{');
    json_u64(j, "sent", p->sent);
    json_u64(j, "ok", p->ok);
    json_u64(j, "failed", p->failed);
    json_u64(j, "unanswered", p->unanswered);
    json_open(j, "status", '{');
    for (int i = 0; i < 6; i++)
        if (p->status_class[i] > 0)
            json_u64(j, cls[i], p->status_class[i]);
    json_close(j, '}');
    json_u64(j, "first_bad_status", (uint64_t)p->first_bad_status);
    json_u64(j, "http_connections", p->connections);
    json_u64(j, "connect_failed", p->connect_failed);
    json_num(j, "send_span_s", (double)(p->last_send_ns - p->first_send_ns) / 1e9, 3);
    json_num(j, "achieved_rate",
             p->sent > 1 && p->last_send_ns > p->first_send_ns
                 ? (double)(p->sent - 1) / ((double)(p->last_send_ns - p->first_send_ns) / 1e9)
                 : 0,
             2);
    json_num(j, "schedule_span_s", (double)p->schedule_span_ns / 1e9, 3);
    json_open(j, "interval_ms", '{');
    double n = p->sent > 1 ? (double)(p->sent - 1) : 0, mean = n ? p->gap_sum_ms / n : 0;
    double var = n ? p->gap_sq_ms / n - mean * mean : 0;
    json_num(j, "mean", mean, 3);
    json_num(j, "cv", mean > 0 ? sqrt(var > 0 ? var : 0) / mean : 0, 3);
    json_close(j, '}');
    report_latency(j, "answer_ms", &p->answer, 0);
    json_close(j, '}');
}

static void report_deliveries(struct json *j, const struct run *r)
{
    const struct wire_result *t = &r->total;
    const struct publisher_stats *p = r->pub;
    json_open(j, "deliveries", '{');
    json_u64(j, "subscribers", t->subscribed);
    json_u64(j, "expected", r->o->channels > 0 ? t->chan_expected : p->ok * t->subscribed);
    json_u64(j, "received", t->received);
    json_u64(j, "unique", t->unique);
    json_u64(j, "lost", t->lost);
    json_u64(j, "duplicated", t->duplicated);
    json_u64(j, "out_of_order", t->out_of_order);
    json_u64(j, "foreign", t->foreign);
    json_u64(j, "bad_size", t->bad_size);
    json_u64(j, "fragmented", t->fragmented);
    if (r->o->channels > 0)
        json_u64(j, "wrong_channel", t->chan_wrong);
    json_close(j, '}');
    double span = (double)(t->last_recv_ns - p->first_send_ns) / 1e9;
    json_num(j, "delivered_per_sec",
             t->last_recv_ns > p->first_send_ns ? (double)report_unique_all(r) / span : 0, 1);
    report_latency(j, "latency_ms", &t->latency, r->o->cdf);
    report_per_broadcast(j, r);
    json_num(j, "last_delivery_ms",
             t->last_recv_ns > 0 ? ms(t->last_recv_ns - p->first_send_ns) : 0, 3);
}

static void report_churn(struct json *j, const struct run *r)
{
    const struct wire_result *t = &r->total;
    uint64_t nf = 0;
    for (int i = 0; i < WIRE_FAIL_COUNT; i++)
        nf += t->churn_failed[i];
    json_open(j, "churn", '{');
    json_u64(j, "pool", t->churn_pool);
    json_u64(j, "left", t->churn_left);
    json_u64(j, "rejoined", t->churn_rejoined);
    json_u64(j, "rejoin_failed_total", nf);
    json_open(j, "rejoin_failed", '{');
    for (int i = 0; i < WIRE_FAIL_COUNT; i++)
        json_u64(j, wire_fail_names[i], t->churn_failed[i]);
    json_close(j, '}');
    json_u64(j, "closes_answered", t->churn_closes_answered);
    json_u64(j, "closes_cut", t->churn_closes_cut);
    if (r->pub != NULL) {
        json_u64(j, "received", t->churn_received);
        json_u64(j, "unique", t->churn_unique);
        json_u64(j, "session_gaps", t->churn_gaps);
    }
    report_latency(j, "rejoin_ms", &t->churn_rejoin, 0);
    json_close(j, '}');
}

static uint64_t report_sum(const uint64_t *v, int n)
{
    uint64_t s = 0;
    for (int i = 0; i < n; i++)
        s += v[i];
    return s;
}

static void report_resume(struct json *j, const struct run *r)
{
    const struct wire_result *t = &r->total;
    json_open(j, "resume", '{');
    json_u64(j, "clients", t->resume_clients);
    json_open(j, "ended", '{');
    for (int i = 0; i < WIRE_CAUSES; i++)
        json_u64(j, wire_cause_names[i], t->resume_lost[i]);
    json_close(j, '}');
    json_open(j, "closes", '{');
    for (int i = 0; i < WIRE_CLOSE_CODES; i++)
        json_u64(j, wire_close_names[i], t->resume_closes[i]);
    json_close(j, '}');
    json_u64(j, "attempts", t->resume_attempts);
    json_u64(j, "attempts_failed_total", report_sum(t->resume_failed, WIRE_FAIL_COUNT));
    json_open(j, "attempts_failed", '{');
    for (int i = 0; i < WIRE_FAIL_COUNT; i++)
        json_u64(j, wire_fail_names[i], t->resume_failed[i]);
    json_close(j, '}');
    json_u64(j, "reconnects", report_sum(t->resume_welcome, PROTO_STATUS_N));
    json_open(j, "welcome", '{');
    for (int i = 0; i < PROTO_STATUS_N; i++)
        json_u64(j, proto_status_names[i], t->resume_welcome[i]);
    json_close(j, '}');
    json_u64(j, "welcomes_total", t->welcomes);
    json_u64(j, "waiting_at_stop", t->resume_waiting_at_stop);
    json_u64(j, "bad_welcomes", t->bad_welcome);
    json_u64(j, "bad_envelopes", t->bad_envelope);
    json_u64(j, "unknown_types", t->unknown_type);
    json_u64(j, "gap_messages", t->gap_messages);
    json_open(j, "gap_reasons", '{');
    for (int i = 0; i < PROTO_GAP_N; i++)
        json_u64(j, proto_gap_names[i], t->gap_reasons[i]);
    json_close(j, '}');
    json_u64(j, "gap_seqs", t->gap_seqs);
    json_u64(j, "gapped", t->gapped);
    json_u64(j, "unacknowledged_deliveries", t->unacked);
    json_u64(j, "mislabeled", t->mislabeled);
    json_u64(j, "regressed", t->regressed);
    if (r->pub != NULL)
        json_u64(j, "acked_without_seq", r->pub->seq_missing);
    report_latency(j, "recovery_ms", &t->recovery, 0);
    json_open(j, "recovery_by_cause_ms", '{');
    for (int i = 0; i < WIRE_CAUSES; i++)
        report_latency(j, wire_cause_names[i], &t->recovery_cause[i], 0);
    json_close(j, '}');
    json_close(j, '}');
}

/* --channels: the plan and how evenly the accepted broadcasts fell on the channels. */
static void report_channels(struct json *j, const struct run *r)
{
    const struct opts *o = r->o;
    const struct publisher_stats *p = r->pub;
    uint32_t lo = UINT32_MAX, hi = 0;

    json_open(j, "channels", '{');
    json_u64(j, "count", o->channels);
    json_str(j, "pick", o->channel_pick == OPTS_CHANNEL_PICK_RANDOM ? "random" : "round-robin");
    json_open(j, "subscribers_per_channel", '{');
    json_u64(j, "min", o->connections / o->channels);
    json_u64(j, "max", (o->connections + o->channels - 1) / o->channels);
    json_close(j, '}');
    if (p != NULL && p->chan_ok != NULL) {
        for (uint32_t k = 0; k < o->channels; k++) {
            lo = p->chan_ok[k] < lo ? p->chan_ok[k] : lo;
            hi = p->chan_ok[k] > hi ? p->chan_ok[k] : hi;
        }
        json_open(j, "accepted_per_channel", '{');
        json_u64(j, "min", lo);
        json_u64(j, "max", hi);
        json_close(j, '}');
        double span = (double)(p->last_send_ns - p->first_send_ns) / 1e9;
        json_num(j, "accepted_per_sec", p->ok > 1 && span > 0 ? (double)(p->ok - 1) / span : 0, 2);
    }
    json_close(j, '}');
}

static void report_mem(struct json *j, const char *key, const struct procstat_sample *s)
{
    json_open(j, key, '{');
    json_u64(j, "processes", (uint64_t)s->n);
    json_u64(j, "rss_kb", s->rss_kb);
    json_u64(j, "pss_kb", s->pss_kb);
    json_close(j, '}');
}

static void report_server(struct json *j, const struct run *r)
{
    const struct procstat_sample *b = &r->before, *a = &r->after, *e = &r->end;
    uint64_t ok = r->total.ok;
    double phase_cpu = procstat_cpu_delta(a, e);

    json_open(j, "server", '{');
    json_bool(j, "measured", procstat_enabled(r->o));
    json_open(j, "pids", '[');
    for (int i = 0; i < e->n; i++) {
        json_key(j, NULL);
        fprintf(j->f, "%d", (int)e->pid[i]);
    }
    json_close(j, ']');
    json_open(j, "memory", '{');
    report_mem(j, "before", b);
    report_mem(j, "after", a);
    report_mem(j, "end", e);
    json_num(j, "per_connection_bytes",
             ok ? ((double)a->pss_kb - (double)b->pss_kb) * 1024 / ok : 0, 1);
    json_num(j, "per_connection_rss_bytes",
             ok ? ((double)a->rss_kb - (double)b->rss_kb) * 1024 / ok : 0, 1);
    json_close(j, '}');
    json_open(j, "cpu_s", '{');
    json_num(j, "connect", procstat_cpu_delta(b, a), 2);
    json_num(j, "phase", phase_cpu, 2);
    json_num(j, "total", procstat_cpu_delta(b, e), 2);
    if (r->pub != NULL && report_unique_all(r) > 0)
        json_num(j, "us_per_delivery", phase_cpu * 1e6 / (double)report_unique_all(r), 3);
    json_close(j, '}');
    json_close(j, '}');
}

static void report_client(struct json *j, const struct run *r)
{
    double phase_s = (double)(r->t_phase_end - r->t_phase_start) / 1e9;
    double parent_frac = phase_s > 0 ? r->parent_phase_cpu_s / phase_s : 0;
    double busiest = r->busiest_child_frac > parent_frac ? r->busiest_child_frac : parent_frac;
    int limited = busiest > 0.9 || r->busiest_window_frac > 0.9;
    char note[256];

    if (busiest > 0.9)
        snprintf(note, sizeof(note),
                 "a client process used %.0f%% of a core during the measured phase: figures "
                 "may describe the client, not the server; raise --processes",
                 100 * busiest);
    else if (limited)
        snprintf(note, sizeof(note),
                 "a client process was busy %.0f%% of the time while broadcasts were arriving: "
                 "it, not the server, paced the delivery bursts; raise --processes",
                 100 * r->busiest_window_frac);
    else
        snprintf(note, sizeof(note), "no client process above 90%% of a core");
    json_open(j, "client", '{');
    json_u64(j, "processes", r->o->processes);
    json_num(j, "cpu_s", r->client_cpu_s, 2);
    json_num(j, "phase_cpu_s", r->total.cpu_phase_s + r->parent_phase_cpu_s, 2);
    if (r->pub != NULL && report_unique_all(r) > 0)
        json_num(
            j, "us_per_delivery",
            (r->total.cpu_phase_s + r->parent_phase_cpu_s) * 1e6 / (double)report_unique_all(r), 3);
    json_num(j, "busiest_process_cpu_frac", r->busiest_child_frac, 3);
    json_num(j, "publisher_cpu_frac", parent_frac, 3);
    json_num(j, "busiest_process_burst_cpu_frac", r->busiest_window_frac, 3);
    json_bool(j, "client_limited", limited);
    json_str(j, "note", note);
    json_close(j, '}');
}

/* The whole machine during the measured phase, and how much of it neither the server nor
 * wsbench used: on a shared box that share is what makes a run unrepeatable. */
static void report_host(struct json *j, const struct run *r)
{
    long cores = sysconf(_SC_NPROCESSORS_ONLN), hz = sysconf(_SC_CLK_TCK);
    uint64_t tot = r->host_total[1] - r->host_total[0];
    double busy = tot ? (double)(r->host_busy[1] - r->host_busy[0]) / (double)tot : 0;
    double busy_s = (double)(r->host_busy[1] - r->host_busy[0]) / (double)(hz > 0 ? hz : 100);
    double server_s = procstat_cpu_delta(&r->after, &r->end);
    double client_s = r->total.cpu_phase_s + r->parent_phase_cpu_s;
    double others_s = busy_s - server_s - client_s;
    char note[256] = "";

    if (busy > 0.95)
        snprintf(note, sizeof(note),
                 "the host's %ld cores were %.0f%% busy (%.1f CPU s by other processes): client "
                 "and server competed for CPU",
                 cores, 100 * busy, others_s > 0 ? others_s : 0);
    json_open(j, "host", '{');
    json_u64(j, "cores", (uint64_t)cores);
    json_num(j, "cpu_busy_frac", busy, 3);
    json_num(j, "busy_cpu_s", busy_s, 2);
    json_num(j, "others_cpu_s", others_s > 0 ? others_s : 0, 2);
    json_bool(j, "saturated", busy > 0.95);
    json_str(j, "note", note);
    json_close(j, '}');
}

void report_print(const struct run *r, FILE *out)
{
    struct json j = {.f = out};

    json_open(&j, NULL, '{');
    json_str(&j, "tool", "wsbench");
    json_str(&j, "mode", r->o->mode == OPTS_MODE_HOLD ? "hold" : "fanout");
    json_str(&j, "aborted", r->aborted);
    json_u64(&j, "client_processes_lost", r->children_lost);
    report_params(&j, r);
    report_connections(&j, r);
    if (r->pub != NULL) {
        report_publish(&j, r);
        report_deliveries(&j, r);
    }
    if (r->o->churn > 0)
        report_churn(&j, r);
    if (r->o->resume)
        report_resume(&j, r);
    if (r->o->channels > 0)
        report_channels(&j, r);
    if (r->o->stalled > 0) {
        json_open(&j, "stalled", '{');
        json_u64(&j, "connections", r->total.stalled);
        json_u64(&j, "ended_by_server", r->total.stalled_ended);
        json_close(&j, '}');
    }
    json_num(&j, "phase_s", (double)(r->t_phase_end - r->t_phase_start) / 1e9, 3);
    json_num(&j, "wall_s", (double)(r->t_end - r->t_start) / 1e9, 3);
    report_server(&j, r);
    report_client(&j, r);
    report_host(&j, r);
    json_close(&j, '}');
    fputc('\n', out);
    fflush(out);
}
