/* admin_channels.c -- GET /admin/channels and GET /admin/channels/{channel}/presence.
 *
 * Built from the segment alone (shm_layout.h, "Channel presence"): every running worker keeps a
 * table of the channels its connections subscribe to, with the subscriber count, the messages
 * framed for the channel and a moving average of their rate; each connection row lists the
 * entries of its channels. So:
 *   - the channel list merges the workers' tables by name (subscribers add up; messages and rate
 *     are the largest any worker saw, since every worker with a subscriber frames every one of
 *     the channel's broadcasts);
 *   - a channel's presence finds the channel's entry in each worker's table, then walks the
 *     connection rows for those that list it, counting connections per user id.
 * Reads take no lock: an entry's name is read under its seqlock, the counts are atomics, and a
 * row's channel list may be caught in the middle of a change (the answer is then off by the
 * connection that was subscribing at that instant, which is what a snapshot means anyway).
 * A user's own channel ("@<id>") has no entry: per-user presence is GET /admin/connections?user=.
 */
#include "admin.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conntab.h"
#include "ring.h"

#define CHANNELS_LIMIT_DEFAULT 100
#define CHANNELS_LIMIT_MAX     10000
#define PRESENCE_USERS_MAX     10000

/* A worker slot whose table counts: its worker process is serving. */
static int slot_live(const struct shm *s, unsigned slot)
{
    const struct shm_worker *wk = shm_worker(s, slot);
    uint32_t st = atomic_load_explicit(&wk->state, memory_order_acquire);
    return atomic_load_explicit(&wk->pid, memory_order_relaxed) != 0 &&
           (st == SHM_WORKER_RUNNING || st == SHM_WORKER_DRAINING);
}

/* Copies entry i of a slot's table; 0 when it is free or changing. */
static int entry_read(const struct shm *s, unsigned slot, uint32_t i, struct admin_chan *out)
{
    const struct shm_channel *e = shm_channel(s, slot, i);
    for (int tries = 0; tries < 3; tries++) {
        uint32_t gen = atomic_load_explicit(&e->gen, memory_order_acquire);
        if (gen & 1)
            continue;
        out->subscribers = atomic_load_explicit(&e->subscribers, memory_order_relaxed);
        out->messages = atomic_load_explicit(&e->messages, memory_order_relaxed);
        out->rate_milli = atomic_load_explicit(&e->rate_milli, memory_order_relaxed);
        memcpy(out->name, e->name, sizeof(out->name));
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&e->gen, memory_order_relaxed) != gen)
            continue;
        out->name[sizeof(out->name) - 1] = '\0';
        return out->subscribers > 0;
    }
    return 0;
}

static uint32_t slot_hwm(const struct shm *s, unsigned slot)
{
    uint32_t hwm = atomic_load_explicit(&shm_worker(s, slot)->channels_hwm, memory_order_acquire);
    return hwm < s->hdr->channels_per_worker ? hwm : s->hdr->channels_per_worker;
}

static int chan_by_name(const void *a, const void *b)
{
    return strcmp(((const struct admin_chan *)a)->name, ((const struct admin_chan *)b)->name);
}

static int chan_by_subscribers(const void *a, const void *b)
{
    const struct admin_chan *x = a, *y = b;
    if (x->subscribers != y->subscribers)
        return x->subscribers < y->subscribers ? 1 : -1;
    return strcmp(x->name, y->name);
}

long admin_channels_collect(const struct shm *s, struct admin_chan **out)
{
    size_t cap = 64, n = 0;
    struct admin_chan *v = malloc(cap * sizeof(*v));
    if (v == NULL)
        return -1;
    for (unsigned slot = 0; slot < SHM_MAX_WORKERS; slot++) {
        if (!slot_live(s, slot))
            continue;
        uint32_t hwm = slot_hwm(s, slot);
        for (uint32_t i = 0; i < hwm; i++) {
            if (n == cap) {
                struct admin_chan *nv = realloc(v, 2 * cap * sizeof(*v));
                if (nv == NULL) {
                    free(v);
                    return -1;
                }
                v = nv;
                cap *= 2;
            }
            n += (size_t)entry_read(s, slot, i, &v[n]);
        }
    }
    qsort(v, n, sizeof(*v), chan_by_name);
    size_t m = 0; /* merge the workers' entries of one name */
    for (size_t i = 0; i < n; i++) {
        if (m > 0 && strcmp(v[m - 1].name, v[i].name) == 0) {
            v[m - 1].subscribers += v[i].subscribers;
            if (v[i].messages > v[m - 1].messages)
                v[m - 1].messages = v[i].messages;
            if (v[i].rate_milli > v[m - 1].rate_milli)
                v[m - 1].rate_milli = v[i].rate_milli;
        } else {
            v[m++] = v[i];
        }
    }
    qsort(v, m, sizeof(*v), chan_by_subscribers);
    *out = v;
    return (long)m;
}

/* ---- GET /admin/channels ---- */

static int query_limit(struct admin_req *r, uint64_t *limit)
{
    char v[16];
    int found = admin_query_get(r->query, "limit", v, sizeof(v));
    *limit = CHANNELS_LIMIT_DEFAULT;
    if (found == 0)
        return 0;
    char *end;
    unsigned long long n = found > 0 && v[0] >= '0' && v[0] <= '9' ? strtoull(v, &end, 10) : 0;
    if (found < 0 || n < 1 || n > CHANNELS_LIMIT_MAX || *end != '\0') {
        admin_respond_error_str(r, 400, "invalid query parameter", "limit: 1..10000");
        return -1;
    }
    *limit = n;
    return 0;
}

void admin_handle_channels(struct admin_req *r)
{
    uint64_t limit;
    if (query_limit(r, &limit) < 0)
        return;
    struct admin_seg *seg = admin_req_segment(r);
    if (seg == NULL)
        return;
    struct admin_chan *v;
    long n = admin_channels_collect(&seg->shm, &v);
    if (n < 0) {
        admin_respond_error(r, 500, "out of memory", NULL);
        return;
    }
    struct admin_buf *b = &r->thr->out;
    admin_buf_printf(b, "{\"total\":%ld,\"limit\":%llu,\"channels\":[", n,
                     (unsigned long long)limit);
    for (long i = 0; i < n && (uint64_t)i < limit; i++) {
        admin_buf_printf(b,
                         "%s{\"channel\":\"%s\",\"subscribers\":%llu,\"messages\":%llu,"
                         "\"messages_per_second\":%.3f}",
                         i ? "," : "", v[i].name, (unsigned long long)v[i].subscribers,
                         (unsigned long long)v[i].messages, v[i].rate_milli / 1000.0);
    }
    admin_buf_puts(b, "]}\n");
    free(v);
    if (b->failed)
        admin_respond_error(r, 500, "out of memory", NULL);
    else
        admin_respond(r, 200, "application/json", "", b->data, b->len);
}

/* ---- GET /admin/channels/{channel}/presence ---- */

struct user_count {
    char user[sizeof(((struct shm_conn *)0)->user)];
    uint64_t connections;
};

static int user_cmp(const void *a, const void *b)
{
    return strcmp(((const struct user_count *)a)->user, ((const struct user_count *)b)->user);
}

static int user_by_count(const void *a, const void *b)
{
    const struct user_count *x = a, *y = b;
    if (x->connections != y->connections)
        return x->connections < y->connections ? 1 : -1;
    return strcmp(x->user, y->user);
}

/* The channel name from "{channel}/presence"; 0, or -1 when the path is not that. */
static int presence_name(const char *rest, char *name, size_t len)
{
    const char *slash = strchr(rest, '/');
    size_t n = slash ? (size_t)(slash - rest) : 0;
    if (slash == NULL || strcmp(slash, "/presence") != 0 || n == 0 || n >= len)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (!ring_channel_char_ok((unsigned char)rest[i]))
            return -1;
    }
    memcpy(name, rest, n);
    name[n] = '\0';
    return 0;
}

/* Per slot, the index of the channel's entry, or -1. */
static void presence_entries(const struct shm *s, const char *name, int32_t *idx)
{
    struct admin_chan e;
    for (unsigned slot = 0; slot < SHM_MAX_WORKERS; slot++) {
        idx[slot] = -1;
        if (!slot_live(s, slot))
            continue;
        uint32_t hwm = slot_hwm(s, slot);
        for (uint32_t i = 0; i < hwm && idx[slot] < 0; i++) {
            if (entry_read(s, slot, i, &e) && strcmp(e.name, name) == 0)
                idx[slot] = (int32_t)i;
        }
    }
}

static int row_lists(const struct shm_conn *row, int32_t idx)
{
    for (unsigned i = 0; i < row->nchan; i++) {
        if (row->chan[i] == (uint16_t)idx)
            return 1;
    }
    return 0;
}

/* Counts the connections per user that list the channel. Returns users, -1 out of memory. */
static long presence_users(const struct shm *s, const int32_t *idx, struct user_count **out,
                           uint64_t *connections)
{
    size_t cap = 16, n = 0;
    struct user_count *u = malloc(cap * sizeof(*u));
    if (u == NULL)
        return -1;
    *connections = 0;
    for (uint32_t i = 0; i < s->hdr->conntab.capacity; i++) {
        struct shm_conn row;
        if (!conntab_read(s, i, &row) || row.worker >= SHM_MAX_WORKERS || idx[row.worker] < 0 ||
            !row_lists(&row, idx[row.worker]))
            continue;
        (*connections)++;
        if (n == cap) {
            struct user_count *nu = realloc(u, 2 * cap * sizeof(*u));
            if (nu == NULL) {
                free(u);
                return -1;
            }
            u = nu;
            cap *= 2;
        }
        memcpy(u[n].user, row.user, sizeof(u[n].user));
        u[n++].connections = 1;
    }
    qsort(u, n, sizeof(*u), user_cmp);
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (m > 0 && strcmp(u[m - 1].user, u[i].user) == 0)
            u[m - 1].connections++;
        else
            u[m++] = u[i];
    }
    qsort(u, m, sizeof(*u), user_by_count);
    *out = u;
    return (long)m;
}

void admin_handle_presence(struct admin_req *r)
{
    char name[SHM_CHANNEL_NAME_LEN];
    int32_t idx[SHM_MAX_WORKERS];
    if (presence_name(r->path_rest, name, sizeof(name)) < 0) {
        admin_respond_error_str(r, 404, "not found",
                                "GET /admin/channels/{channel}/presence, channel of "
                                "[A-Za-z0-9._:-]");
        return;
    }
    struct admin_seg *seg = admin_req_segment(r);
    if (seg == NULL)
        return;
    presence_entries(&seg->shm, name, idx);
    struct user_count *u;
    uint64_t conns;
    long n = presence_users(&seg->shm, idx, &u, &conns);
    if (n < 0) {
        admin_respond_error(r, 500, "out of memory", NULL);
        return;
    }
    struct admin_buf *b = &r->thr->out;
    admin_buf_printf(b, "{\"channel\":\"%s\",\"connections\":%llu,\"users\":[", name,
                     (unsigned long long)conns);
    for (long i = 0; i < n && i < PRESENCE_USERS_MAX; i++) {
        admin_buf_printf(b, "%s{\"user\":", i ? "," : "");
        admin_buf_json_str(b, u[i].user);
        admin_buf_printf(b, ",\"connections\":%llu}", (unsigned long long)u[i].connections);
    }
    admin_buf_printf(b, "],\"users_total\":%ld}\n", n);
    free(u);
    if (b->failed)
        admin_respond_error(r, 500, "out of memory", NULL);
    else
        admin_respond(r, 200, "application/json", "", b->data, b->len);
}

/* ---- in the connection list ---- */

void admin_channels_of_row(struct admin_buf *b, const struct shm *s, const struct shm_conn *row)
{
    struct admin_chan e;
    admin_buf_puts(b, "[");
    for (unsigned i = 0, k = 0; i < row->nchan && row->worker < SHM_MAX_WORKERS; i++) {
        if (row->chan[i] >= s->hdr->channels_per_worker ||
            !entry_read(s, row->worker, row->chan[i], &e))
            continue;
        admin_buf_printf(b, "%s\"%s\"", k++ ? "," : "", e.name);
    }
    admin_buf_puts(b, "]");
}

/* ---- /metrics ---- */

/* wshub_channels, and per channel for the ADMIN_METRICS_CHANNELS most subscribed only: the
 * label set stays bounded however many channels clients invent. */
void admin_channels_prom(struct admin_buf *b, const struct shm *s)
{
    struct admin_chan *v;
    long n = admin_channels_collect(s, &v);
    if (n < 0)
        return;
    long top = n < ADMIN_METRICS_CHANNELS ? n : ADMIN_METRICS_CHANNELS;
    admin_buf_printf(b,
                     "# HELP wshub_channels Channels with at least one subscriber.\n"
                     "# TYPE wshub_channels gauge\nwshub_channels %ld\n",
                     n);
    admin_buf_printf(b,
                     "# HELP wshub_channel_subscribers Subscribers of the %d most subscribed "
                     "channels.\n# TYPE wshub_channel_subscribers gauge\n",
                     ADMIN_METRICS_CHANNELS);
    for (long i = 0; i < top; i++)
        admin_buf_printf(b, "wshub_channel_subscribers{channel=\"%s\"} %llu\n", v[i].name,
                         (unsigned long long)v[i].subscribers);
    admin_buf_printf(b,
                     "# HELP wshub_channel_messages_per_second Broadcasts per second to the "
                     "%d most subscribed channels (10 s average).\n"
                     "# TYPE wshub_channel_messages_per_second gauge\n",
                     ADMIN_METRICS_CHANNELS);
    for (long i = 0; i < top; i++)
        admin_buf_printf(b, "wshub_channel_messages_per_second{channel=\"%s\"} %.3f\n", v[i].name,
                         v[i].rate_milli / 1000.0);
    free(v);
}
