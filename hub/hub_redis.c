/* hub_redis.c -- the Redis bridge: several wshub instances deliver every broadcast exactly once,
 * in one order, through a Redis stream; a circuit breaker keeps local delivery going without it.
 *
 * Why a stream and not Pub/Sub. Pub/Sub forgets: whatever is published while an instance is
 * disconnected is gone for it. A stream (XADD ... MAXLEN ~ N, XREAD BLOCK ... STREAMS key <last
 * id>) keeps the last N entries, so an instance that reconnects, or restarts, reads on from the
 * last id it saw and misses nothing that is still retained. Its ids are also a cluster-wide order.
 *
 * The path of a broadcast, breaker CLOSED (docs/redis-bridge.md has the pictures):
 *
 *   admin POST -> ring: OUTBOX record (workers skip it) -> bridge doorbell
 *   bridge thread: ring -> queue -> MULTI / XADD ... / HSET marker / EXEC      (outbound conn)
 *   Redis stream, one order for everybody
 *   bridge thread on every node: XREAD BLOCK -> ring record with the stream id (inbound conn)
 *   -> workers deliver it, on every node in stream order, including the node it came from
 *
 * The stream order is the delivery order everywhere, because even local messages are delivered
 * only when the stream returns them. The cost is the added latency of two Redis round trips.
 *
 * Circuit breaker. CLOSED: as above. Any error or timeout (redis_timeout per command; an XREAD
 * without an answer for BLOCK + timeout; a local message whose echo is later than the timeout;
 * a PING every BR_PING_MS while idle) opens it:
 *
 *   OPEN       producers deliver at once (ring_publish_ex drops OUTBOX, decided under the ring
 *              lock); every message still waiting for the stream is delivered here "ahead";
 *              local messages keep coming into the queue (the backlog, bounded by
 *              redis_backlog). Reconnection after an exponential backoff with jitter
 *              (100 ms doubling to redis_backoff_max, each wait uniform in [d/2, d]).
 *   HALF_OPEN  connected again: the resync (HGET of this node's marker) settles batches whose
 *              reply was lost, then the backlog goes out with d=1 ("delivered at origin": this
 *              node skips it on the way back, the others deliver it late). Producers still
 *              deliver at once. An error: back to OPEN with a longer backoff.
 *   CLOSED     once the backlog is sent: producers append OUTBOX records again.
 *
 * So an admin POST never waits on Redis in any state, and a slow Redis delays a local delivery
 * by at most about redis_timeout (a message caught in the moment the breaker trips), after which
 * the breaker is open and delivery is immediate again. Exactly once: a local message is
 * delivered here either on its echo or ahead, never both (hub_redis_local.c), and it enters the
 * stream once (the marker in the same transaction, hub_redis_out.c).
 *
 * Threading. One thread, two blocking hiredis connections with socket timeouts: the outbound
 * one runs synchronous commands, the inbound one keeps an XREAD BLOCK outstanding whose reply is
 * read only when poll() reports it (with the stop eventfd and the bridge doorbell). No locks:
 * the thread owns all of struct br; shared memory carries the state to producers and stats. The
 * hub exec's every child, so no hiredis or thread state crosses a fork into a worker.
 *
 * Binary upgrade (hub/hub_upgrade.c): one bridge per segment at any time. The old hub stops its
 * bridge at the hand-over (hub_redis_stop_at: br_finish, then the local cursor is reported) and
 * the new hub starts its own on the same segment (br_adopt): local messages from that cursor,
 * the stream from the segment's bridge.last_id, live, and this epoch's confirmed count from the
 * marker. Same node id and epoch, so the old hub's own entries are recognised as ours.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "bridge.h"
#include "doorbell.h"
#include "hub_redis.h"
#include "hub_redis_int.h"
#include "log.h"

static struct br *br_self; /* the bridge of this hub; main thread only */

uint64_t br_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void br_stat_add(_Atomic uint64_t *counter, uint64_t n)
{
    atomic_fetch_add_explicit(counter, n, memory_order_relaxed);
}

void br_stat_set(_Atomic uint64_t *gauge, uint64_t v)
{
    atomic_store_explicit(gauge, v, memory_order_relaxed);
}

/* Under the ring lock, with the state already OPEN: every local message not yet delivered here
 * is appended now, older (queued) ones first, then OUTBOX records the bridge had not read yet.
 * No producer can slip a direct message in between, so each node delivers its own messages in
 * the order they were published even across the trip. */
static void br_open_locked(struct shm *s, void *arg)
{
    struct br *b = arg;

    (void)s;
    b->locked = 1;
    br_local_deliver_all(b);
    br_local_drain(b);
    b->locked = 0;
}

void br_set_state(struct br *b, uint32_t state)
{
    ring_locked_fn fn = state == SHM_BRIDGE_OPEN ? br_open_locked : NULL;

    if (b->state == state)
        return;
    b->state = state;
    if (ring_bridge_state_set(b->shm, state, fn, b) < 0) {
        log_error(errno, "redis bridge: ring lock failed; changing the state without it");
        atomic_store(&b->shm->hdr->bridge.state, state);
        if (fn != NULL)
            fn(b->shm, b);
    }
    br_stat_set(&b->shm->hdr->bridge.state_since_ms, shm_now_ms());
    log_info("redis bridge: breaker %s", bridge_state_name(state));
}

/* xorshift64*: jitter only, no need for more. */
static uint64_t br_random(struct br *b)
{
    b->rng ^= b->rng >> 12;
    b->rng ^= b->rng << 25;
    b->rng ^= b->rng >> 27;
    return b->rng * 2685821657736338717ULL;
}

/* The next reconnection delay: uniform in [d/2, d], then d doubles up to the cap. */
static uint64_t br_backoff(struct br *b)
{
    uint64_t d = b->backoff_ms, wait = d / 2 + br_random(b) % (d / 2 + 1);

    b->backoff_ms = d * 2 < b->backoff_max_ms ? d * 2 : b->backoff_max_ms;
    return wait;
}

static void br_drop_connections(struct br *b)
{
    br_disconnect(&b->out);
    br_disconnect(&b->in);
    b->in_replies = b->in_xread = 0;
    b->cursor_dirty = b->positioned; /* a SET in flight may not have landed */
}

void br_trip(struct br *b, const char *why)
{
    uint64_t wait = br_backoff(b);
    int was = b->state;

    if (was != SHM_BRIDGE_OPEN) {
        br_stat_add(&b->shm->hdr->bridge.trips, 1);
        log_warn(0,
                 "redis bridge: %s; breaker open: local delivery goes on, retry in %" PRIu64 " ms",
                 why, wait);
    } else if (strcmp(why, b->last_logged) != 0) { /* a new reason while still failing */
        log_warn(0, "redis bridge: %s; retry in %" PRIu64 " ms", why, wait);
    } else {
        log_info("redis bridge: %s; retry in %" PRIu64 " ms", why, wait);
    }
    snprintf(b->last_logged, sizeof(b->last_logged), "%s", why);
    bridge_error_set(b->shm, why);
    br_set_state(b, SHM_BRIDGE_OPEN); /* delivers here what waited for the stream */
    br_drop_connections(b);
    b->retry_at_ms = br_now_ms() + wait;
}

/* OPEN -> HALF_OPEN, or OPEN again with a longer backoff. */
static void br_reconnect(struct br *b)
{
    char err[BR_ERR_LEN];

    if ((b->out = br_connect(b, err, sizeof(err))) == NULL ||
        br_out_resync(b, err, sizeof(err)) < 0 ||
        (b->in = br_connect(b, err, sizeof(err))) == NULL ||
        br_in_position(b, err, sizeof(err)) < 0) {
        br_trip(b, err);
        return;
    }
    br_stat_add(&b->shm->hdr->bridge.connects, 1);
    b->last_ok_ms = br_now_ms();
    b->last_logged[0] = '\0';
    log_notice("redis bridge: connected to %s%s%d as node %s; %" PRIu64 " backlog message%s to "
               "send",
               b->host, b->port ? ":" : "", b->port, b->node, b->q.unconfirmed,
               b->q.unconfirmed == 1 ? "" : "s");
    br_set_state(b, SHM_BRIDGE_HALF_OPEN);
}

/* One round of work while connected (CLOSED or HALF_OPEN). Returns 0, or -1 with the reason in
 * err: the caller opens the breaker. */
static int br_work_step(struct br *b, char *err, size_t errlen)
{
    uint64_t now, oldest;

    if (br_out_send(b, 0, err, errlen) < 0)
        return -1;
    if (b->state == SHM_BRIDGE_HALF_OPEN && b->q.unsent == NULL) {
        br_set_state(b, SHM_BRIDGE_CLOSED);
        b->backoff_ms = BR_BACKOFF_MIN_MS;
    }
    if (br_in_issue(b, err, errlen) < 0)
        return -1;
    now = br_now_ms();
    if (b->in_replies > 0 && now >= b->in_deadline_ms) {
        snprintf(err, errlen, "XREAD: no reply within %u ms", BR_BLOCK_MS + b->timeout_ms);
        return -1;
    }
    oldest = br_queue_oldest_undelivered_ms(b);
    if (oldest != 0 && now > oldest + b->timeout_ms) {
        snprintf(err, errlen, "a local message waited over %u ms for the stream", b->timeout_ms);
        return -1;
    }
    if (now >= b->last_ok_ms + BR_PING_MS)
        return br_out_ping(b, err, errlen);
    return 0;
}

static void br_work(struct br *b)
{
    char err[BR_ERR_LEN];

    if (br_work_step(b, err, sizeof(err)) < 0)
        br_trip(b, err);
}

static int br_min_wait(int wait, uint64_t now, uint64_t at)
{
    int64_t d = at > now ? (int64_t)(at - now) : 0;
    return d < wait ? (int)d : wait;
}

/* How long the thread may sleep: until the next deadline, 0 if there is work. */
static int br_wait_ms(struct br *b)
{
    uint64_t now = br_now_ms(), oldest = br_queue_oldest_undelivered_ms(b);
    int wait = BR_PING_MS;

    if (b->state == SHM_BRIDGE_OPEN)
        return br_min_wait(wait, now, b->retry_at_ms);
    if (b->q.unsent != NULL)
        return 0;
    wait = br_min_wait(wait, now, b->last_ok_ms + BR_PING_MS);
    if (b->in_replies > 0)
        wait = br_min_wait(wait, now, b->in_deadline_ms);
    if (oldest != 0)
        wait = br_min_wait(wait, now, oldest + b->timeout_ms + 1);
    return wait;
}

/* Sleeps in poll() on the stop eventfd, the doorbell and the inbound connection. */
static void br_wait(struct br *b)
{
    struct pollfd pfd[3] = {{.fd = b->stop_fd, .events = POLLIN},
                            {.fd = b->bell_fd, .events = POLLIN},
                            {.fd = -1, .events = POLLIN}};
    char err[BR_ERR_LEN];
    int wait = br_wait_ms(b);

    if (b->in != NULL && b->in_replies > 0)
        pfd[2].fd = b->in->fd;
    bridge_doorbell_arm(b->shm);
    if (atomic_load_explicit(&b->shm->hdr->ring.tail, memory_order_acquire) != b->cur.pos)
        wait = 0; /* published between the last drain and the arm */
    if (poll(pfd, 3, wait) < 0) {
        if (errno != EINTR)
            log_error(errno, "redis bridge: poll() failed");
        return;
    }
    if (pfd[1].revents & POLLIN)
        doorbell_drain(b->bell_fd);
    if (pfd[2].revents != 0 && br_in_read(b, err, sizeof(err)) < 0)
        br_trip(b, err);
}

/* On stop: no more OUTBOX, deliver everything here, send what we can in BR_STOP_FLUSH_MS. */
static void br_finish(struct br *b)
{
    char err[BR_ERR_LEN];
    uint64_t deadline = br_now_ms() + BR_STOP_FLUSH_MS;
    int connected = b->state != SHM_BRIDGE_OPEN && b->out != NULL;

    br_set_state(b, SHM_BRIDGE_OPEN); /* no more OUTBOX; everything waiting delivered here */
    br_local_drain(b);
    br_local_deliver_all(b);
    while (connected && b->q.unsent != NULL && br_now_ms() < deadline) {
        if (br_out_send(b, deadline, err, sizeof(err)) < 0) {
            log_warn(0, "redis bridge: on stop: %s", err);
            break;
        }
    }
    if (b->q.unconfirmed > 0)
        log_warn(0,
                 "redis bridge: stopping with %" PRIu64 " local message%s not sent to the "
                 "cluster (delivered here)",
                 b->q.unconfirmed, b->q.unconfirmed == 1 ? "" : "s");
    br_drop_connections(b);
}

static void *br_main(void *arg)
{
    struct br *b = arg;

    while (!atomic_load(&b->stop)) {
        br_local_drain(b);
        if (b->state == SHM_BRIDGE_OPEN && br_now_ms() >= b->retry_at_ms)
            br_reconnect(b);
        if (b->state != SHM_BRIDGE_OPEN)
            br_work(b);
        br_wait(b);
    }
    br_finish(b);
    return NULL;
}

/* Fills the configuration part of b. Returns 0 or -1 (logged). */
static int br_configure(struct br *b, const struct conf *c, struct shm *s)
{
    const char *path = strncmp(c->redis, "unix:", 5) == 0 ? c->redis + 5 : c->redis;
    char host[256] = "";

    if (path[0] == '/') {
        snprintf(b->host, sizeof(b->host), "%s", path);
    } else if (conf_split_hostport(c->redis, b->host, sizeof(b->host), &b->port) < 0) {
        log_error(0, "redis bridge: bad address '%s'", c->redis);
        return -1;
    }
    if (c->redis_node[0] != '\0') {
        snprintf(b->node, sizeof(b->node), "%s", c->redis_node);
    } else {
        if (gethostname(host, sizeof(host) - 1) < 0)
            log_warn(errno, "gethostname() failed; node id without it");
        snprintf(b->node, sizeof(b->node), "%.40s:%.22s", host, c->instance);
    }
    snprintf(b->user, sizeof(b->user), "%s", c->redis_user);
    snprintf(b->password, sizeof(b->password), "%s", c->redis_password);
    snprintf(b->key_stream, sizeof(b->key_stream), "%sstream", c->redis_prefix);
    snprintf(b->key_sent, sizeof(b->key_sent), "%ssent", c->redis_prefix);
    snprintf(b->key_cursor, sizeof(b->key_cursor), "%scursor:%s", c->redis_prefix, b->node);
    snprintf(b->epoch, sizeof(b->epoch), "%016" PRIx64, s->hdr->epoch);
    snprintf(b->maxlen, sizeof(b->maxlen), "%d", c->redis_maxlen);
    b->timeout_ms = c->redis_timeout_ms;
    b->backoff_max_ms = c->redis_backoff_max_ms;
    b->backoff_ms = BR_BACKOFF_MIN_MS;
    b->max_payload = s->hdr->ring.max_payload;
    b->q.limit = c->redis_backlog;
    b->rng = s->hdr->epoch ^ (uint64_t)getpid() ^ br_now_ms();
    if (b->rng == 0)
        b->rng = 1;
    b->shm = s;
    return 0;
}

/* Starts the thread with every signal blocked: they belong to the main thread's signalfd. */
static int br_spawn(struct br *b)
{
    sigset_t all, old;
    int rc;

    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&b->thread, NULL, br_main, b);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        log_error(rc, "pthread_create(redis bridge) failed");
        return -1;
    }
    pthread_setname_np(b->thread, "wshub-redis");
    b->thread_started = 1;
    return 0;
}

static void br_free(struct br *b)
{
    if (b->stop_fd >= 0)
        close(b->stop_fd);
    if (b->bell_fd >= 0)
        close(b->bell_fd);
    br_drop_connections(b);
    br_local_free(b);
    free(b);
}

/* An adopted segment: where the previous hub's bridge left the stream and the local side. */
static void br_adopt(struct br *b, const struct hub_redis_resume *resume)
{
    uint64_t ms = atomic_load(&b->shm->hdr->bridge.last_id_ms);
    uint64_t seq = atomic_load(&b->shm->hdr->bridge.last_id_seq);

    if (ms != 0 || seq != 0)
        snprintf(b->adopt_id, sizeof(b->adopt_id), "%" PRIu64 "-%" PRIu64, ms, seq);
    b->adopt_marker = 1;
    if (resume->have_local)
        b->cur = resume->local; /* read first what producers delivered while no bridge ran */
}

int hub_redis_start(const struct conf *c, struct shm *s, const struct hub_redis_resume *resume)
{
    struct br *b;

    if (c->redis[0] == '\0' || br_self != NULL)
        return 0;
    if ((b = calloc(1, sizeof(*b))) == NULL) {
        log_error(errno, "calloc(redis bridge) failed");
        return -1;
    }
    b->stop_fd = b->bell_fd = -1;
    if (br_configure(b, c, s) < 0 || br_local_init(b) < 0)
        goto fail;
    if (resume != NULL)
        br_adopt(b, resume);
    if ((b->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0) {
        log_error(errno, "eventfd() for the redis bridge failed");
        goto fail;
    }
    if ((b->bell_fd = bridge_doorbell_open(s)) < 0)
        goto fail;
    snprintf(s->hdr->bridge.node, sizeof(s->hdr->bridge.node), "%s", b->node);
    br_stat_set(&s->hdr->bridge.backlog_limit, b->q.limit);
    br_set_state(b, SHM_BRIDGE_OPEN); /* producers deliver locally until Redis answers */
    b->retry_at_ms = br_now_ms();
    if (br_spawn(b) < 0)
        goto fail;
    br_self = b;
    log_notice("redis bridge: node %s, stream %s at %s", b->node, b->key_stream, c->redis);
    return 0;
fail:
    if (b->state != SHM_BRIDGE_OFF)
        ring_bridge_state_set(s, SHM_BRIDGE_OFF, NULL, NULL);
    br_free(b);
    return -1;
}

void hub_redis_stop(void)
{
    hub_redis_stop_at(NULL);
}

uint64_t hub_redis_backlog(const struct shm *s)
{
    if (br_self == NULL || atomic_load(&s->hdr->bridge.state) == SHM_BRIDGE_CLOSED)
        return 0; /* connected: a stop sends what is in flight (br_finish) */
    return atomic_load(&s->hdr->bridge.backlog);
}

int hub_redis_stop_at(struct hub_redis_resume *out)
{
    struct br *b = br_self;

    if (b == NULL)
        return 0;
    br_self = NULL;
    atomic_store(&b->stop, 1);
    if (eventfd_write(b->stop_fd, 1) < 0)
        log_error(errno, "eventfd_write(redis bridge stop) failed");
    if (b->thread_started) {
        int rc = pthread_join(b->thread, NULL);
        if (rc != 0)
            log_error(rc, "pthread_join(redis bridge) failed");
    }
    if (out != NULL) { /* the thread is joined: its cursor is ours to read */
        out->have_local = 1;
        out->local = b->cur;
    }
    br_free(b);
    return 1;
}
