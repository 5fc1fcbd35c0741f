/* worker_channels.c -- channels: who subscribed to what, and which frames a client wants.
 *
 * A broadcast goes to everyone (no channel), to one channel, or to one user; a user is the
 * channel "@<user id>", to which every authenticated connection is subscribed automatically, so
 * one mechanism serves both. Every frame in the worker's buffers carries the key of its channel
 * (worker_fanout.c), a keyed SipHash of the name: keys are what connections and frames compare,
 * and the random per-worker hash key keeps clients from aiming collisions at the table.
 *
 * Per channel the worker keeps the list of its subscribed connections, so delivering a channel
 * message visits that channel's subscribers only (worker_deliver.c); a channel nobody here
 * subscribes to has no entry and its broadcasts cost one hash lookup. A connection keeps its
 * subscriptions in a short list (at most max_channels_per_connection), tested per frame only
 * when the frame belongs to some channel.
 *
 * Subscribing: by the URL when connecting (/ws/<channel>, ?channel=a,b; checked for form before
 * the upgrade, a bad name is a 400), and for wshub.v1 clients with commands at any time:
 *   "s <channel>"  ->  "s <channel> ok <last>"  |  "s <channel> denied <reason>"
 *   "u <channel>"  ->  "u <channel> ok"
 * Reasons: invalid-name, not-allowed (the token's channels claim), too-many (per connection),
 * server-full (max_channels on this worker). Replies are queued as whole frames and written
 * before the next broadcast (worker_deliver.c); a client that floods commands faster than it
 * reads the replies is closed with 1008.
 *
 * A subscription made by command applies to broadcasts framed from then on (sub->from); one
 * made in the URL also to what resume replays (from 0).
 */
#include "worker.h"

#include <errno.h>
#include <fnmatch.h>
#include <stdatomic.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "conntab.h"
#include "log.h"
#include "siphash.h"

#define CHAN_MIN_BUCKETS 64
#define CHAN_REPLY_MAX   4096 /* queued reply bytes before a command flood closes the client */
#define CHAN_URL_MAX     1024 /* ?channel= value */
#define CHAN_COMMAND_MAX (2 + RING_MAX_CHANNEL_LEN)
#define CHAN_USER_PREFIX '@'

/* ---- the presence table in the segment (shm_layout.h: shm_channel) ----
 *
 * Our slot's entries are ours alone to write. A channel with subscribers here holds one entry
 * (a user's own channel none: presence per user comes from the rows' user ids); each connection
 * row lists the entries of its channels, so wshub-admin can answer who is in a channel from the
 * segment alone. */

static struct shm_channel *presence(const struct worker *w, int32_t idx)
{
    return shm_channel(&w->shm, w->slot, (uint32_t)idx);
}

/* Clears what a previous process in this slot left, then readies the free list. */
static int presence_init(struct worker *w)
{
    struct worker_channels *t = &w->chans;
    uint32_t cap = w->shm.hdr->channels_per_worker;
    uint32_t hwm = atomic_load_explicit(&w->self->channels_hwm, memory_order_relaxed);
    for (uint32_t i = 0; i < hwm && i < cap; i++)
        atomic_store_explicit(&shm_channel(&w->shm, w->slot, i)->subscribers, 0,
                              memory_order_relaxed);
    atomic_store_explicit(&w->self->channels_hwm, 0, memory_order_release);
    t->shm_free = cap > 0 ? calloc(cap, sizeof(uint32_t)) : NULL;
    if (cap > 0 && t->shm_free == NULL) {
        log_error(errno, "calloc() failed for %u presence entries", cap);
        return -1;
    }
    return 0;
}

/* Takes an entry for a new channel; -1 when the table is full (presence then misses it). */
static int32_t presence_open(struct worker *w, const char *name, size_t len)
{
    struct worker_channels *t = &w->chans;
    uint32_t idx;
    if (t->shm_nfree > 0)
        idx = t->shm_free[--t->shm_nfree];
    else if (t->shm_next < w->shm.hdr->channels_per_worker)
        idx = t->shm_next++;
    else
        return -1;
    struct shm_channel *e = shm_channel(&w->shm, w->slot, idx);
    uint32_t gen = atomic_load_explicit(&e->gen, memory_order_relaxed);
    atomic_store_explicit(&e->gen, gen | 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    memset(e->name, 0, sizeof(e->name));
    memcpy(e->name, name, len);
    atomic_store_explicit(&e->messages, 0, memory_order_relaxed);
    atomic_store_explicit(&e->rate_milli, 0, memory_order_relaxed);
    atomic_store_explicit(&e->gen, (gen | 1) + 1, memory_order_release);
    if (t->shm_next > atomic_load_explicit(&w->self->channels_hwm, memory_order_relaxed))
        atomic_store_explicit(&w->self->channels_hwm, t->shm_next, memory_order_release);
    return (int32_t)idx;
}

static void presence_close(struct worker *w, int32_t idx)
{
    if (idx < 0)
        return;
    atomic_store_explicit(&presence(w, idx)->subscribers, 0, memory_order_release);
    w->chans.shm_free[w->chans.shm_nfree++] = (uint32_t)idx;
}

/* The connection row lists idx (or no longer does). */
static void row_list(struct worker *w, const struct worker_conn *c, int32_t idx, int add)
{
    if (idx < 0 || c->row == CONNTAB_NONE)
        return;
    struct shm_conn *row = shm_conn(&w->shm, c->row);
    uint8_t n = atomic_load_explicit(&row->nchan, memory_order_relaxed);
    if (add) {
        if (n < SHM_CONN_CHANNELS) {
            atomic_store_explicit(&row->chan[n], (uint16_t)idx, memory_order_relaxed);
            atomic_store_explicit(&row->nchan, (uint8_t)(n + 1), memory_order_release);
        }
        return;
    }
    for (uint8_t i = 0; i < n; i++) {
        if (atomic_load_explicit(&row->chan[i], memory_order_relaxed) == (uint16_t)idx) {
            uint16_t last = atomic_load_explicit(&row->chan[n - 1], memory_order_relaxed);
            atomic_store_explicit(&row->chan[i], last, memory_order_relaxed);
            atomic_store_explicit(&row->nchan, (uint8_t)(n - 1), memory_order_release);
            return;
        }
    }
}

void worker_channels_tick(struct worker *w)
{
    struct worker_channels *t = &w->chans;
    double now = ev_now(w->loop), dt = now - t->rate_at;
    if (t->rate_at == 0 || dt <= 0) {
        t->rate_at = now;
        return;
    }
    t->rate_at = now;
    double keep = dt >= 10 ? 0 : 1 - dt / 10; /* a 10 s exponential moving average */
    for (uint32_t b = 0; b < t->nbuckets; b++) {
        for (struct worker_chan *ch = t->buckets[b]; ch != NULL; ch = ch->hnext) {
            if (ch->shm_index < 0)
                continue;
            double rate = (double)(ch->messages - ch->rate_mark) / dt;
            ch->rate = ch->rate * keep + rate * (1 - keep);
            ch->rate_mark = ch->messages;
            atomic_store_explicit(&presence(w, ch->shm_index)->rate_milli,
                                  (uint32_t)(ch->rate * 1000 + 0.5), memory_order_relaxed);
        }
    }
}

int worker_channels_init(struct worker *w)
{
    struct worker_channels *t = &w->chans;
    if (presence_init(w) < 0)
        return -1;
    if (getrandom(t->hash_key, sizeof(t->hash_key), 0) != (ssize_t)sizeof(t->hash_key)) {
        log_error(errno, "getrandom() failed for the channel hash key");
        return -1;
    }
    t->nbuckets = CHAN_MIN_BUCKETS;
    t->buckets = calloc(t->nbuckets, sizeof(*t->buckets));
    if (t->buckets == NULL) {
        log_error(errno, "calloc() failed for the channel table");
        return -1;
    }
    return 0;
}

uint64_t worker_channel_key(const struct worker *w, const char *name, size_t len)
{
    if (len == 0)
        return WORKER_CHAN_ALL;
    uint64_t k = siphash24(w->chans.hash_key, name, len);
    return k != WORKER_CHAN_ALL ? k : 1;
}

struct worker_chan *worker_channel_find(const struct worker *w, uint64_t key)
{
    const struct worker_channels *t = &w->chans;
    for (struct worker_chan *ch = t->buckets[key & (t->nbuckets - 1)]; ch; ch = ch->hnext) {
        if (ch->key == key)
            return ch;
    }
    return NULL;
}

/* Doubles the bucket array when the table is as full as it is wide; on failure the chains just
 * grow longer. */
static void chan_grow(struct worker_channels *t)
{
    uint32_t n = t->nbuckets * 2;
    struct worker_chan **b = calloc(n, sizeof(*b));
    if (b == NULL)
        return;
    for (uint32_t i = 0; i < t->nbuckets; i++) {
        struct worker_chan *ch = t->buckets[i];
        while (ch != NULL) {
            struct worker_chan *next = ch->hnext;
            ch->hnext = b[ch->key & (n - 1)];
            b[ch->key & (n - 1)] = ch;
            ch = next;
        }
    }
    free(t->buckets);
    t->buckets = b;
    t->nbuckets = n;
}

static struct worker_chan *chan_create(struct worker *w, uint64_t key, const char *name, size_t len)
{
    struct worker_channels *t = &w->chans;
    struct worker_chan *ch = calloc(1, sizeof(*ch));
    if (ch == NULL) {
        log_error(errno, "calloc() failed for channel '%.*s'", (int)len, name);
        return NULL;
    }
    ch->key = key;
    memcpy(ch->name, name, len);
    ch->shm_index = name[0] == CHAN_USER_PREFIX ? -1 : presence_open(w, name, len);
    if (t->count >= t->nbuckets)
        chan_grow(t);
    ch->hnext = t->buckets[key & (t->nbuckets - 1)];
    t->buckets[key & (t->nbuckets - 1)] = ch;
    t->count++;
    return ch;
}

static void chan_destroy(struct worker *w, struct worker_chan *ch)
{
    struct worker_channels *t = &w->chans;
    struct worker_chan **pp = &t->buckets[ch->key & (t->nbuckets - 1)];
    while (*pp != ch)
        pp = &(*pp)->hnext;
    *pp = ch->hnext;
    t->count--;
    presence_close(w, ch->shm_index);
    free(ch);
}

/* ---- names and permissions ---- */

static int name_ok(const struct worker *w, const char *name, size_t len)
{
    if (len == 0 || len > (size_t)w->conf.max_channel_name)
        return 0;
    for (size_t i = 0; i < len; i++) {
        if (!ring_channel_char_ok((unsigned char)name[i]))
            return 0;
    }
    return 1;
}

/* The token's channels claim (c->channels: comma-separated patterns such as "room.*"), if any,
 * must match the name; '*' matches any run of characters, nothing else is special. */
static int claim_allows(const struct worker_conn *c, const char *name, size_t len)
{
    char want[RING_MAX_CHANNEL_LEN + 1], pat[256];
    if (c->channels == NULL)
        return 1;
    memcpy(want, name, len);
    want[len] = '\0';
    for (const char *p = c->channels; *p != '\0';) {
        size_t n = strcspn(p, ",");
        if (n > 0 && n < sizeof(pat)) {
            memcpy(pat, p, n);
            pat[n] = '\0';
            if (fnmatch(pat, want, FNM_NOESCAPE) == 0)
                return 1;
        }
        p += n;
        if (*p == ',')
            p++;
    }
    return 0;
}

/* ---- subscriptions ---- */

static struct worker_sub *sub_find(const struct worker_conn *c, uint64_t key)
{
    for (struct worker_sub *s = c->subs; s != NULL; s = s->next) {
        if (s->key == key)
            return s;
    }
    return NULL;
}

/* Adds c to the channel (creating it). Returns NULL with *why on refusal. */
static const char *chan_subscribe(struct worker *w, struct worker_conn *c, const char *name,
                                  size_t len, uint64_t from, int own)
{
    uint64_t key = worker_channel_key(w, name, len);
    if (sub_find(c, key) != NULL)
        return NULL; /* already subscribed: idempotent */
    if (!own && c->nsubs >= w->conf.max_channels_per_connection)
        return "too-many";
    struct worker_chan *ch = worker_channel_find(w, key);
    if (ch == NULL) {
        if (!own && w->chans.count >= (uint32_t)w->conf.max_channels)
            return "server-full"; /* a user's own channel is bounded by the connections */
        ch = chan_create(w, key, name, len);
        if (ch == NULL)
            return "server-full";
    }
    struct worker_sub *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        log_error(errno, "calloc() failed for a subscription");
        if (ch->nsubs == 0)
            chan_destroy(w, ch);
        return "server-full";
    }
    s->chan = ch;
    s->conn = c;
    s->key = key;
    s->from = from;
    s->cnext = ch->subs;
    if (ch->subs != NULL)
        ch->subs->cprev = s;
    ch->subs = s;
    ch->nsubs++;
    if (ch->shm_index >= 0) {
        atomic_store_explicit(&presence(w, ch->shm_index)->subscribers, ch->nsubs,
                              memory_order_release);
        row_list(w, c, ch->shm_index, 1);
    }
    s->next = c->subs;
    c->subs = s;
    if (!own)
        c->nsubs++;
    return NULL;
}

static void sub_remove(struct worker *w, struct worker_conn *c, struct worker_sub *s)
{
    struct worker_chan *ch = s->chan;
    struct worker_sub **pp = &c->subs;
    while (*pp != s)
        pp = &(*pp)->next;
    *pp = s->next;
    if (s->cprev != NULL)
        s->cprev->cnext = s->cnext;
    else
        ch->subs = s->cnext;
    if (s->cnext != NULL)
        s->cnext->cprev = s->cprev;
    if (ch->name[0] != CHAN_USER_PREFIX)
        c->nsubs--;
    free(s);
    row_list(w, c, ch->shm_index, 0);
    if (--ch->nsubs == 0)
        chan_destroy(w, ch);
    else if (ch->shm_index >= 0)
        atomic_store_explicit(&presence(w, ch->shm_index)->subscribers, ch->nsubs,
                              memory_order_release);
}

void worker_channels_closed(struct worker *w, struct worker_conn *c)
{
    free(c->cmd);
    c->cmd = NULL;
    while (c->subs != NULL)
        sub_remove(w, c, c->subs);
    free(c->reply);
    c->reply = NULL;
    c->reply_len = 0;
}

/* ---- the handshake ---- */

/* The channel named by the path after ws_path ("/ws/room.1"), or NULL with *len 0. */
static const char *path_channel(struct worker *w, struct lws *wsi, char *uri, size_t urilen,
                                size_t *len)
{
    size_t base = strlen(w->conf.ws_path);
    *len = 0;
    if (lws_hdr_copy(wsi, uri, (int)urilen, WSI_TOKEN_GET_URI) <= 0)
        return NULL;
    if (strncmp(uri, w->conf.ws_path, base) != 0 || uri[base] != '/')
        return NULL;
    *len = strlen(uri + base + 1);
    return uri + base + 1;
}

/* Calls fn for each requested channel; stops at the first non-NULL return. */
typedef const char *(*chan_each_fn)(struct worker *w, void *ctx, const char *name, size_t len);
static const char *requested_each(struct worker *w, struct lws *wsi, void *ctx, chan_each_fn fn)
{
    char uri[sizeof(w->conf.ws_path) + RING_MAX_CHANNEL_LEN + 64], list[CHAN_URL_MAX];
    size_t len;
    const char *why, *name = path_channel(w, wsi, uri, sizeof(uri), &len);
    if (name != NULL && (why = fn(w, ctx, name, len)) != NULL)
        return why;
    const char *v = lws_get_urlarg_by_name(wsi, "channel=", list, sizeof(list));
    if (v == NULL)
        return NULL;
    for (const char *p = v;;) {
        size_t n = strcspn(p, ",");
        if ((why = fn(w, ctx, p, n)) != NULL)
            return why;
        if (p[n] == '\0')
            return NULL;
        p += n + 1;
    }
}

static const char *check_one(struct worker *w, void *ctx, const char *name, size_t len)
{
    int *n = ctx;
    if (!name_ok(w, name, len))
        return "invalid channel name";
    if (++*n > w->conf.max_channels_per_connection)
        return "too many channels";
    return NULL;
}

unsigned worker_channels_check(struct worker *w, struct lws *wsi, const char **why)
{
    int n = 0;
    const char *r = requested_each(w, wsi, &n, check_one);
    if (r == NULL)
        return 0;
    *why = r;
    return HTTP_STATUS_BAD_REQUEST;
}

static const char *subscribe_url(struct worker *w, void *ctx, const char *name, size_t len)
{
    struct worker_conn *c = ctx;
    if (!claim_allows(c, name, len))
        return "channel not allowed by the token";
    if (chan_subscribe(w, c, name, len, 0, 0) != NULL)
        return "too many channels on this server";
    return NULL;
}

int worker_channels_established(struct worker *w, struct worker_conn *c, struct lws *wsi,
                                const char *user, const char **why)
{
    char own[1 + RING_MAX_CHANNEL_LEN + 1];
    size_t ulen = strlen(user);
    if (ulen > 0 && ulen < RING_MAX_CHANNEL_LEN) {
        own[0] = CHAN_USER_PREFIX;
        memcpy(own + 1, user, ulen);
        chan_subscribe(w, c, own, ulen + 1, 0, 1); /* a user's own messages */
    }
    *why = requested_each(w, wsi, c, subscribe_url);
    return *why == NULL ? 0 : -1;
}

/* ---- commands from wshub.v1 clients ---- */

/* Queues one text frame "<text>\n" for the client. Returns 0, or -1 when too much is queued. */
static int reply_queue(struct worker_conn *c, const char *a, const char *b, size_t blen,
                       const char *d)
{
    char text[128];
    int n = snprintf(text, sizeof(text), "%s %.*s%s%s\n", a, (int)blen, b, d[0] ? " " : "", d);
    if (n < 0 || n > 125)
        return -1;
    if (c->reply_len + (size_t)n + 2 > CHAN_REPLY_MAX)
        return -1;
    uint8_t *r = realloc(c->reply, c->reply_len + (size_t)n + 2);
    if (r == NULL)
        return -1;
    r[c->reply_len] = 0x81;
    r[c->reply_len + 1] = (uint8_t)n;
    memcpy(r + c->reply_len + 2, text, (size_t)n);
    c->reply = r;
    c->reply_len = (uint16_t)(c->reply_len + n + 2);
    return 0;
}

static int channels_command(struct worker *w, struct worker_conn *c, const uint8_t *msg, size_t len,
                            const char **why)
{
    const char *m = (const char *)msg, *verdict = NULL;
    char ok[32];
    *why = "too many commands queued";
    if (len > 0 && m[len - 1] == '\n')
        len--;
    if (len < 3 || len > CHAN_COMMAND_MAX || m[1] != ' ' || (m[0] != 's' && m[0] != 'u'))
        return reply_queue(c, "e", "unknown-command", 15, "") < 0 ? -1 : 0;
    const char *name = m + 2;
    size_t nlen = len - 2;
    if (!name_ok(w, name, nlen)) {
        verdict = "denied invalid-name";
    } else if (m[0] == 'u') {
        struct worker_sub *s = sub_find(c, worker_channel_key(w, name, nlen));
        if (s != NULL)
            sub_remove(w, c, s);
        verdict = "ok";
    } else if (!claim_allows(c, name, nlen)) {
        verdict = "denied not-allowed";
    } else {
        const char *r = chan_subscribe(w, c, name, nlen, w->fan.tail, 0);
        /* "ok <last>": the subscription applies to the channel's broadcasts after <last> */
        snprintf(ok, sizeof(ok), "ok %" PRIu64, w->fan.cursor.seq - 1);
        verdict = r == NULL                    ? ok
                  : strcmp(r, "too-many") == 0 ? "denied too-many"
                                               : "denied server-full";
    }
    return reply_queue(c, m[0] == 's' ? "s" : "u", name, nlen, verdict) < 0 ? -1 : 0;
}

/* lws hands a message over in pieces as its small receive buffer fills (or a frame is split):
 * a command is gathered until the message ends. Longer than any command: "e unknown-command". */
int worker_channels_receive(struct worker *w, struct worker_conn *c, const uint8_t *in, size_t len,
                            int final, const char **why)
{
    if (c->cmd == NULL && final)
        return channels_command(w, c, in, len, why); /* whole: the usual case */
    if (c->cmd == NULL && (c->cmd = malloc(CHAN_COMMAND_MAX + 2)) == NULL) {
        *why = "out of memory";
        return -1;
    }
    size_t room = CHAN_COMMAND_MAX + 2 - c->cmd_len, n = len < room ? len : room;
    if (n > 0) /* an empty fragment comes with in == NULL */
        memcpy(c->cmd + c->cmd_len, in, n);
    c->cmd_len = (uint8_t)(c->cmd_len + n);
    c->cmd_over |= len > room;
    if (!final)
        return 0;
    int rc;
    if (c->cmd_over) {
        *why = "too many commands queued";
        rc = reply_queue(c, "e", "unknown-command", 15, "");
    } else {
        rc = channels_command(w, c, c->cmd, c->cmd_len, why);
    }
    free(c->cmd);
    c->cmd = NULL;
    c->cmd_len = 0;
    c->cmd_over = 0;
    return rc < 0 ? -1 : 0;
}
