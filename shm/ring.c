/* ring.c -- the broadcast ring: producers append under a robust mutex, readers validate copies.
 *
 * Producers (any process that attached) take ring.lock, write one record and publish it; they
 * never wait for readers and simply overwrite the oldest records, moving head_pos past every
 * record whose bytes they are about to reuse. Readers hold no shared state: a private cursor,
 * a copy, and a check afterwards that the copied bytes were not overwritten while copying.
 *
 *   producer (holds lock)                      reader at position p
 *   1 advance head_seq, head_pos               1 t = tail (acquire); p == t: empty
 *   2 tail_intent = end; release fence         2 tail_intent > p + cap: lapped
 *   3 memcpy PAD?, header, channel, payload    3 memcpy header, channel, payload
 *   4 next_seq = seq + 1 (release)             4 acquire fence
 *   5 tail = end (release)                     5 tail_intent > p + cap: lapped, drop the copy
 *
 * Memory ordering. Step 2's release fence orders the tail_intent store before the data stores of
 * step 3 (StoreStore; on x86-64 TSO stores are never reordered with each other, so the fence only
 * stops the compiler). A reader's acquire fence (step 4) orders its data loads before the
 * tail_intent load of step 5 (LoadLoad; again free on x86). So a reader that copied even one byte
 * of a newer lap sees that lap's tail_intent and discards the copy: it never acts on torn data.
 * Copies go to private memory first and are validated there, never re-read from the ring. The
 * release store of tail (5) / acquire load by readers (1) makes a whole record visible at once.
 * Formally the racing memcpy is a data race in C11 (as in every seqlock); we rely on the hardware
 * model plus the fences, which is what Linux seqlocks and Agrona's broadcast buffer do.
 *
 * next_seq is stored before tail, so while a publish is in flight tail_intent != tail; readers
 * that need (tail, next_seq) as a pair read tail_intent, tail, next_seq, tail_intent and accept
 * only tail_intent == tail on both sides (ring_tail_pair). A producer that never pauses can hide
 * that quiet moment indefinitely, so after a few tries the pair is read under the lock: the one
 * place a reader locks, and only when placing a cursor (worker start, recovery into a ring that
 * holds no message), never per message.
 *
 * Crash repair. A producer killed inside the lock leaves EOWNERDEAD. The next producer pads over
 * [tail, tail_intent) (splitting at the buffer end), recomputes head_seq and next_seq from the
 * intact records between head_pos and tail_intent (a dead producer may have stored next_seq, or
 * head_pos without head_seq), and only then publishes tail = tail_intent. O(records in the ring),
 * paid once per crash.
 *
 * Redis bridge (layout 3, docs/redis-bridge.md). A record with RING_F_STREAM_ID carries 16 bytes
 * of cluster stream id between its header and its channel. A producer asking for RING_F_OUTBOX
 * keeps it only if bridge.state is CLOSED when it holds the lock, and the bridge changes that
 * state under the same lock (ring_bridge_state_set): once the bridge has left CLOSED, no further
 * OUTBOX record can appear. In the same critical section the bridge appends (ring_publish_locked)
 * every waiting OUTBOX message, so they precede every direct publish that follows. Readers
 * pass a skip mask: ring_read() skips OUTBOX and HISTORY records (not for live delivery) without
 * copying their bytes, the bridge's own reader skips what it appended itself.
 */
#include "ring.h"

#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "log.h"

#define RING_PAIR_SPINS   64   /* lock-free attempts to see tail and next_seq outside a publish */
#define RING_PAIR_LOCK_MS 100  /* then wait this long for the lock before settling for a guess */
#define RING_SEEK_TRIES   1000 /* recovery attempts before settling for the tail */

static uint64_t ld_acq(const _Atomic uint64_t *p)
{
    return atomic_load_explicit(p, memory_order_acquire);
}

static uint64_t ld_rlx(const _Atomic uint64_t *p)
{
    return atomic_load_explicit(p, memory_order_relaxed);
}

static void st_rel(_Atomic uint64_t *p, uint64_t v)
{
    atomic_store_explicit(p, v, memory_order_release);
}

/* Size histogram bucket of a payload: 0 for 0 or 1 byte, else i with 2^(i-1) < len <= 2^i, so
 * bucket i's Prometheus upper bound is exactly 2^i bytes. */
static unsigned ring_size_bucket(uint32_t len)
{
    unsigned b = len <= 1 ? 0 : 32u - (unsigned)__builtin_clz(len - 1);

    return b < SHM_SIZE_BUCKETS ? b : SHM_SIZE_BUCKETS - 1;
}

/* Bytes between a record's header and its channel: the stream id, when it carries one. */
static uint32_t ring_rec_ext_len(uint16_t flags)
{
    return (flags & RING_F_STREAM_ID) ? RING_STREAM_ID_LEN : 0;
}

static uint32_t ring_rec_size(size_t ext_len, size_t channel_len, uint32_t payload_len)
{
    uint64_t n = sizeof(struct ring_record) + ext_len + channel_len + payload_len;
    return (uint32_t)((n + RING_ALIGN - 1) & ~(uint64_t)(RING_ALIGN - 1));
}

/* True when a copied header can describe a record with `room` bytes left before the buffer end.
 * Anything else comes from a torn copy (the reader was lapped) or from memory corruption. */
static int ring_rec_is_sane(const struct ring_record *r, uint64_t room, uint32_t max_payload,
                            size_t bufcap)
{
    if (r->size < RING_ALIGN || r->size % RING_ALIGN != 0 || r->size > room)
        return 0;
    if (r->type == RING_REC_PAD)
        return 1;
    if (r->type != RING_REC_MSG || r->channel_len > RING_MAX_CHANNEL_LEN ||
        r->payload_len > max_payload || r->payload_len > bufcap)
        return 0;
    return sizeof(*r) + ring_rec_ext_len(r->flags) + r->channel_len + (uint64_t)r->payload_len <=
           r->size;
}

/* Copies the header at position pos into *out. */
static void ring_copy_header(const struct shm *s, uint64_t pos, struct ring_record *out)
{
    uint64_t cap = s->hdr->ring.capacity;
    memcpy(out, shm_ring_data(s) + (pos & (cap - 1)), sizeof(*out));
}

/* ---- producer side, all under ring.lock ---- */

/* Writes PAD records over [from, to), one per contiguous piece of the buffer. */
static void ring_pad_locked(struct shm *s, uint64_t from, uint64_t to)
{
    uint64_t cap = s->hdr->ring.capacity;

    while (from < to) {
        uint64_t off = from & (cap - 1);
        uint64_t n = to - from < cap - off ? to - from : cap - off;
        struct ring_record pad = {.size = (uint32_t)n, .type = RING_REC_PAD};
        memcpy(shm_ring_data(s) + off, &pad, sizeof(pad));
        from += n;
    }
}

/* Last resort when the control words themselves are corrupt: empty the ring at a position past
 * everything any reader has seen, so every cursor reports an overrun and recovers to it. */
static void ring_reset_locked(struct shm *s, const char *why)
{
    struct shm_ring_ctl *r = &s->hdr->ring;
    uint64_t t = ld_rlx(&r->tail), ti = ld_rlx(&r->tail_intent);
    uint64_t seq = ld_rlx(&r->next_seq), hseq = ld_rlx(&r->head_seq);
    uint64_t p = ((t > ti ? t : ti) + RING_ALIGN - 1) / RING_ALIGN * RING_ALIGN;

    p += r->capacity + RING_ALIGN;
    if (hseq > seq)
        seq = hseq;
    log_error(0, "broadcast ring corrupt (%s): emptying it at position %" PRIu64 ", seq %" PRIu64,
              why, p, seq);
    atomic_store_explicit(&r->tail_intent, p, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    st_rel(&r->head_seq, seq);
    st_rel(&r->head_pos, p);
    st_rel(&r->next_seq, seq);
    st_rel(&r->tail, p);
}

/* Recomputes head_seq and next_seq from the records in [head_pos, end). Returns 0, or -1 if a
 * record is insane. */
static int ring_rescan_locked(struct shm *s, uint64_t end)
{
    struct shm_ring_ctl *r = &s->hdr->ring;
    uint64_t cap = r->capacity, hp = ld_rlx(&r->head_pos), first = 0, last = 0;
    struct ring_record rec;

    if (hp > end || end - hp > cap || hp % RING_ALIGN != 0)
        return -1;
    for (uint64_t p = hp; p < end; p += rec.size) {
        ring_copy_header(s, p, &rec);
        if (!ring_rec_is_sane(&rec, cap - (p & (cap - 1)), r->max_payload, SIZE_MAX) ||
            rec.size > end - p)
            return -1;
        if (rec.type == RING_REC_MSG) {
            if (first == 0)
                first = rec.seq;
            last = rec.seq;
        }
    }
    /* With no message in the ring, head_seq already names the next sequence: it is only moved
     * past a message that is being overwritten, and set before head_pos. */
    if (first != 0) {
        st_rel(&r->head_seq, first);
        st_rel(&r->next_seq, last + 1);
    } else {
        st_rel(&r->next_seq, ld_rlx(&r->head_seq));
    }
    return 0;
}

/* Repairs what a producer killed inside the lock left behind (see the top of this file). */
static void ring_repair_locked(struct shm *s)
{
    struct shm_ring_ctl *r = &s->hdr->ring;
    uint64_t t = ld_rlx(&r->tail), ti = ld_rlx(&r->tail_intent);

    if (t % RING_ALIGN != 0 || ti % RING_ALIGN != 0 || ti < t || ti - t > r->capacity) {
        ring_reset_locked(s, "tail and tail_intent inconsistent");
    } else {
        ring_pad_locked(s, t, ti);
        if (ring_rescan_locked(s, ti) < 0)
            ring_reset_locked(s, "insane record between head and tail");
        else
            st_rel(&r->tail, ti);
    }
    atomic_fetch_add_explicit(&r->lock_recoveries, 1, memory_order_relaxed);
    log_warn(0,
             "broadcast ring: a producer died holding the lock; padded %" PRIu64
             " bytes and recovered",
             ti >= t ? ti - t : 0);
}

/* Locks the ring, repairing it if the previous owner died; with a deadline (CLOCK_MONOTONIC)
 * gives up with ETIMEDOUT. Returns 0 or -1 with errno. */
static int ring_lock(struct shm *s, const struct timespec *deadline)
{
    return shm_mutex_lock(s, &s->hdr->ring.lock, deadline, ring_repair_locked, "ring");
}

/* Moves head past every record that starts before end - capacity: those are the records whose
 * bytes the append of [tail, end) reuses. Only the lock holder walks or moves head. */
static void ring_advance_head_locked(struct shm *s, uint64_t tail, uint64_t end)
{
    struct shm_ring_ctl *r = &s->hdr->ring;
    uint64_t cap = r->capacity, hp = ld_rlx(&r->head_pos), hseq = ld_rlx(&r->head_seq);
    uint64_t start = hp;
    struct ring_record rec;

    while (hp < tail && hp + cap < end) {
        ring_copy_header(s, hp, &rec);
        if (!ring_rec_is_sane(&rec, cap - (hp & (cap - 1)), r->max_payload, SIZE_MAX) ||
            rec.size > tail - hp) {
            log_error(0, "broadcast ring: insane record at %" PRIu64 "; dropping the backlog", hp);
            hp = tail;
            hseq = ld_rlx(&r->next_seq);
            break;
        }
        if (rec.type == RING_REC_MSG)
            hseq = rec.seq + 1;
        hp += rec.size;
    }
    if (hp != start) {
        st_rel(&r->head_seq, hseq); /* seq first: see ring_rescan_locked() */
        st_rel(&r->head_pos, hp);
    }
}

/* Appends one record (header already filled but for seq) and returns its sequence. `ext` is
 * ring_rec_ext_len(rec->flags) bytes written before the channel. */
static uint64_t ring_append_locked(struct shm *s, struct ring_record *rec, const void *ext,
                                   const char *channel, const void *payload)
{
    struct shm_ring_ctl *r = &s->hdr->ring;
    uint8_t *data = shm_ring_data(s);
    uint64_t cap = r->capacity, tail = ld_rlx(&r->tail), seq = ld_rlx(&r->next_seq);
    uint64_t off = tail & (cap - 1);
    uint64_t pad = rec->size > cap - off ? cap - off : 0;
    uint64_t end = tail + pad + rec->size;

    ring_advance_head_locked(s, tail, end);
    atomic_store_explicit(&r->tail_intent, end, memory_order_relaxed);
    atomic_thread_fence(memory_order_release); /* tail_intent before the bytes it announces */
    if (pad != 0) {
        ring_pad_locked(s, tail, tail + pad);
        off = 0;
    }
    rec->seq = seq;
    memcpy(data + off, rec, sizeof(*rec));
    off += sizeof(*rec);
    if (ring_rec_ext_len(rec->flags) > 0)
        memcpy(data + off, ext, ring_rec_ext_len(rec->flags));
    off += ring_rec_ext_len(rec->flags);
    if (rec->channel_len > 0)
        memcpy(data + off, channel, rec->channel_len);
    if (rec->payload_len > 0)
        memcpy(data + off + rec->channel_len, payload, rec->payload_len);
    st_rel(&r->next_seq, seq + 1);
    st_rel(&r->tail, end);
    return seq;
}

/* RING_F_OUTBOX stands only while the bridge is CLOSED (see the top of this file). The size
 * does not depend on it, so it can be decided after the record was measured. */
static void ring_gate_outbox_locked(const struct shm *s, struct ring_record *rec)
{
    if ((rec->flags & RING_F_OUTBOX) &&
        atomic_load_explicit(&s->hdr->bridge.state, memory_order_relaxed) != SHM_BRIDGE_CLOSED)
        rec->flags &= (uint16_t)~RING_F_OUTBOX;
}

/* Checks a publish request and fills the record header (all but seq). Returns 0 or -1. */
static int ring_pub_prepare(const struct shm *s, const struct ring_pub *p, struct ring_record *rec)
{
    size_t chlen = p->channel != NULL ? strlen(p->channel) : 0;

    if (p->len > s->hdr->ring.max_payload) {
        errno = EMSGSIZE;
        return -1;
    }
    if (chlen > RING_MAX_CHANNEL_LEN || (p->payload == NULL && p->len > 0)) {
        errno = EINVAL;
        return -1;
    }
    memset(rec, 0, sizeof(*rec));
    rec->size = ring_rec_size(ring_rec_ext_len(p->flags), chlen, p->len);
    rec->type = RING_REC_MSG;
    rec->flags = p->flags;
    rec->published_ns = shm_mono_ns();
    rec->payload_len = p->len;
    rec->channel_len = (uint8_t)chlen;
    return 0;
}

static void ring_pub_count(struct shm *s, uint32_t len)
{
    struct shm_ring_ctl *r = &s->hdr->ring;

    atomic_fetch_add_explicit(&r->published, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&r->published_bytes, len, memory_order_relaxed);
    atomic_fetch_add_explicit(&r->size_hist[ring_size_bucket(len)], 1, memory_order_relaxed);
}

int ring_publish_ex(struct shm *s, const struct ring_pub *p, uint64_t *seq_out, uint16_t *flags_out)
{
    uint64_t ext[2] = {p->stream_ms, p->stream_seq};
    struct ring_record rec;
    int rc;

    if (ring_pub_prepare(s, p, &rec) < 0 || ring_lock(s, NULL) < 0)
        return -1;
    ring_gate_outbox_locked(s, &rec);
    uint64_t seq = ring_append_locked(s, &rec, ext, p->channel, p->payload);
    if ((rc = pthread_mutex_unlock(&s->hdr->ring.lock)) != 0)
        log_error(rc, "pthread_mutex_unlock(ring) failed");
    ring_pub_count(s, p->len);
    if (seq_out != NULL)
        *seq_out = seq;
    if (flags_out != NULL)
        *flags_out = rec.flags;
    return 0;
}

int ring_publish(struct shm *s, const void *payload, uint32_t len, const char *channel,
                 uint16_t flags, uint64_t *seq_out)
{
    struct ring_pub p = {.payload = payload, .len = len, .channel = channel, .flags = flags};

    return ring_publish_ex(s, &p, seq_out, NULL);
}

int ring_publish_locked(struct shm *s, const struct ring_pub *p, uint64_t *seq_out)
{
    uint64_t ext[2] = {p->stream_ms, p->stream_seq};
    struct ring_record rec;

    if (ring_pub_prepare(s, p, &rec) < 0)
        return -1;
    ring_gate_outbox_locked(s, &rec);
    uint64_t seq = ring_append_locked(s, &rec, ext, p->channel, p->payload);
    ring_pub_count(s, p->len);
    if (seq_out != NULL)
        *seq_out = seq;
    return 0;
}

int ring_bridge_state_set(struct shm *s, uint32_t state, ring_locked_fn fn, void *arg)
{
    int rc;

    if (ring_lock(s, NULL) < 0)
        return -1;
    atomic_store_explicit(&s->hdr->bridge.state, state, memory_order_relaxed);
    if (fn != NULL)
        fn(s, arg);
    if ((rc = pthread_mutex_unlock(&s->hdr->ring.lock)) != 0)
        log_error(rc, "pthread_mutex_unlock(ring) failed");
    return 0;
}

/* ---- reader side: no shared writes; the lock only to place a cursor (see the top) ---- */

/* Reads (tail, next_seq) under the lock. Returns 0, or -1 when the lock was busy for
 * RING_PAIR_LOCK_MS (a stopped producer) or failed. The segment is mapped writable; the cast is
 * for the repair a dead producer may have left to whoever locks next. */
static int ring_tail_pair_locked(const struct shm *s, uint64_t *tail, uint64_t *seq)
{
    struct shm *ws = (struct shm *)s;
    struct timespec dl;
    int rc;

    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_nsec += RING_PAIR_LOCK_MS * 1000000L;
    dl.tv_sec += dl.tv_nsec / 1000000000L;
    dl.tv_nsec %= 1000000000L;
    if (ring_lock(ws, &dl) < 0)
        return -1;
    *tail = ld_rlx(&s->hdr->ring.tail);
    *seq = ld_rlx(&s->hdr->ring.next_seq);
    if ((rc = pthread_mutex_unlock(&ws->hdr->ring.lock)) != 0)
        log_error(rc, "pthread_mutex_unlock(ring) failed");
    return 0;
}

/* Reads (tail, next_seq) as a pair that belong together: lock-free when no publish is in flight
 * (tail_intent == tail before and after), else under the lock. If even the lock cannot be had,
 * keeps the latest values, whose sequence may be one ahead; ring_read() resynchronises c->seq
 * from the record it reads, so only gap accounting can be off, by one. */
static void ring_tail_pair(const struct shm *s, uint64_t *tail, uint64_t *seq)
{
    const struct shm_ring_ctl *r = &s->hdr->ring;

    for (int i = 0; i < RING_PAIR_SPINS; i++) {
        uint64_t a = ld_acq(&r->tail_intent);
        uint64_t t = ld_acq(&r->tail);
        uint64_t n = ld_acq(&r->next_seq);
        uint64_t b = ld_acq(&r->tail_intent);

        *tail = t;
        *seq = n;
        if (a == t && b == t)
            return;
    }
    if (ring_tail_pair_locked(s, tail, seq) < 0)
        log_warn(errno,
                 "broadcast ring: no consistent tail within %d ms; cursor sequence may be "
                 "off by one",
                 RING_PAIR_LOCK_MS);
}

void ring_cursor_at_tail(const struct shm *s, struct ring_cursor *c)
{
    ring_tail_pair(s, &c->pos, &c->seq);
}

/* One attempt to put c on the oldest intact message (or on the tail when the ring holds only
 * padding). Returns 1 on success, 0 when the ring moved under us; on the last try it settles
 * for the latest tail pair. */
static int ring_seek_head(const struct shm *s, struct ring_cursor *c, int last_try)
{
    const struct shm_ring_ctl *r = &s->hdr->ring;
    uint64_t cap = r->capacity, p = ld_acq(&r->head_pos);
    struct ring_record rec;

    for (;;) {
        uint64_t t = ld_acq(&r->tail);
        if (p >= t) {
            uint64_t t2, n;
            ring_tail_pair(s, &t2, &n);
            if (t2 != t && !last_try)
                return 0;
            c->pos = t2;
            c->seq = n;
            return 1;
        }
        /* A head off the record grid is corrupt (its header could straddle the buffer end); one
         * more than a lap behind the tail was lapped, or the walk to the tail would never end. */
        int off_grid = p % RING_ALIGN != 0;
        if (!off_grid)
            ring_copy_header(s, p, &rec);
        atomic_thread_fence(memory_order_acquire);
        if (off_grid || t - p > cap || ld_rlx(&r->tail_intent) > p + cap ||
            !ring_rec_is_sane(&rec, cap - (p & (cap - 1)), r->max_payload, SIZE_MAX)) {
            if (!last_try)
                return 0;
            p = t; /* lapped on every try: settle for the tail */
            continue;
        }
        if (rec.type == RING_REC_MSG) {
            c->pos = p;
            c->seq = rec.seq;
            return 1;
        }
        p += rec.size;
    }
}

uint64_t ring_cursor_recover(const struct shm *s, struct ring_cursor *c)
{
    uint64_t old = c->seq;

    for (int i = 0; i < RING_SEEK_TRIES; i++) {
        if (ring_seek_head(s, c, i == RING_SEEK_TRIES - 1))
            break;
    }
    return c->seq > old ? c->seq - old : 0;
}

enum ring_status ring_read(const struct shm *s, struct ring_cursor *c, struct ring_msg *m,
                           void *buf, size_t bufcap)
{
    return ring_read_mask(s, c, m, buf, bufcap, RING_F_OUTBOX | RING_F_HISTORY);
}

enum ring_status ring_read_mask(const struct shm *s, struct ring_cursor *c, struct ring_msg *m,
                                void *buf, size_t bufcap, uint16_t skip_flags)
{
    const struct shm_ring_ctl *r = &s->hdr->ring;
    const uint8_t *data = shm_ring_data(s);
    uint64_t cap = r->capacity;
    uint64_t ext[2];
    struct ring_record rec;

    for (;;) {
        uint64_t pos = c->pos, off = pos & (cap - 1);
        uint64_t t = ld_acq(&r->tail);

        if (pos == t)
            return RING_EMPTY;
        /* A cursor past the tail or off the grid cannot come from this ring's history; one more
         * than a lap behind the tail was lapped (tail_intent >= tail says so too, unless the
         * words are corrupt, and then this bound is what keeps the loop from running forever). */
        if (pos > t || t - pos > cap || pos % RING_ALIGN != 0 ||
            ld_acq(&r->tail_intent) > pos + cap)
            return RING_OVERRUN;
        memcpy(&rec, data + off, sizeof(rec));
        if (!ring_rec_is_sane(&rec, cap - off, r->max_payload, bufcap))
            return RING_OVERRUN; /* only a lap can tear a published header */
        int skip = rec.type == RING_REC_PAD || (rec.flags & skip_flags) != 0;
        if (!skip) {
            uint64_t at = off + sizeof(rec), elen = ring_rec_ext_len(rec.flags);
            memcpy(ext, data + at, elen);
            memcpy(m->channel, data + at + elen, rec.channel_len);
            if (rec.payload_len > 0)
                memcpy(buf, data + at + elen + rec.channel_len, rec.payload_len);
        }
        atomic_thread_fence(memory_order_acquire); /* the copies above before the check */
        if (ld_rlx(&r->tail_intent) > pos + cap)
            return RING_OVERRUN;
        c->pos = pos + rec.size;
        if (rec.type == RING_REC_MSG && skip)
            c->seq = rec.seq + 1; /* a message, just not for this reader */
        if (skip)
            continue;
        m->stream_ms = (rec.flags & RING_F_STREAM_ID) ? ext[0] : 0;
        m->stream_seq = (rec.flags & RING_F_STREAM_ID) ? ext[1] : 0;
        m->channel[rec.channel_len] = '\0';
        m->seq = rec.seq;
        m->published_ns = rec.published_ns;
        m->payload_len = rec.payload_len;
        m->flags = rec.flags;
        m->channel_len = rec.channel_len;
        c->seq = rec.seq + 1;
        return RING_OK;
    }
}

uint64_t ring_next_seq(const struct shm *s)
{
    return ld_acq(&s->hdr->ring.next_seq);
}

uint64_t ring_oldest_seq(const struct shm *s)
{
    return ld_acq(&s->hdr->ring.head_seq);
}

uint64_t ring_used_bytes(const struct shm *s)
{
    uint64_t h = ld_acq(&s->hdr->ring.head_pos), t = ld_acq(&s->hdr->ring.tail);
    return t > h ? t - h : 0;
}
