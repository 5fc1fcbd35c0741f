/* fuzz_ring.c -- the broadcast ring's entry decoder (shm/ring.c): ring_read(), ring_read_mask(),
 * ring_cursor_recover(), on rings whose bytes and positions come from the fuzzer.
 *
 * Every worker decodes records out of memory that other processes write, so the decoder must
 * survive anything: torn copies, a crashed producer's half record, a corrupted control word.
 * The segment is built on the heap (same header, ring bytes last, robust mutex initialised as
 * shm_create() does), so ASan sees a read even one byte past the ring's end; shm_attach's
 * mapping would hide it in the page's slack.
 *
 * Input: a mode byte, then
 *   mode even, "raw": capacity (64 B..32 KiB), max_payload, the five control words (tail_intent,
 *     tail, next_seq, head_pos, head_seq) and the cursor, each either a raw 64-bit value or
 *     base + small delta (so near-valid states are easy to reach), a skip mask, then the ring
 *     bytes. Up to 64 reads follow, recovering after each overrun. Oracles: no crash, no
 *     out-of-bounds access, every call returns (the harness runs under a timeout), a message
 *     handed out fits the caller's buffer and max_payload, has a NUL-terminated channel of at
 *     most RING_MAX_CHANNEL_LEN bytes and none of the skipped flags, the cursor moves forward,
 *     and recovery never puts it past the tail. (With corrupt words the decoder may hand out
 *     garbage that lies inside the buffer: that is not checked here, memory safety is.)
 *   mode odd, "round trip": a sane ring of 32 or 64 KiB (sized by shm_create's rule), the
 *     bridge state, then 4-byte operations: publish (length, channel length, flags; payload
 *     bytes derived from the sequence number), read with one of two cursors and a mask, recover,
 *     or move a cursor to the tail. Oracles: publish accepts exactly what its contract accepts
 *     and numbers messages 1, 2, 3...; a read returns exactly what was published under that
 *     sequence; between two reads with no overrun, every message it did not return carries a
 *     skipped flag; an empty read leaves the cursor at the tail and at ring_next_seq().
 * FUZZ_VERBOSE=1 prints each round-trip read. With FUZZ_RING_WRITE_SEED=<file> in the environment,
 * a round-trip input also writes the ring it produced as a raw-mode input: that is how
 * fuzz/corpus/ring's "real records" seeds were made.
 */
#include <stdatomic.h>

#include "fuzz.h"
#include "ring.h"

#define RAW_MAX_READS 64
#define RT_MAX_OPS    512
#define RT_SKIPPABLE  (RING_F_OUTBOX | RING_F_HISTORY | RING_F_BRIDGE)

static int fuzz_verbose; /* FUZZ_VERBOSE=1: print each round-trip read */

/* ---- input reader: missing bytes read as zero ---- */

struct input {
    const uint8_t *p;
    size_t n, off;
};

static uint64_t in_bytes(struct input *in, int k)
{
    uint64_t v = 0;
    for (int i = 0; i < k; i++, in->off++)
        v |= (uint64_t)(in->off < in->n ? in->p[in->off] : 0) << (8 * i);
    return v;
}

/* ---- a segment on the heap ---- */

struct heap_seg {
    struct shm shm;
    uint8_t *ring;
    uint64_t cap;
};

static void heap_seg_init(struct heap_seg *hs, uint64_t cap, uint32_t max_payload)
{
    size_t off = (sizeof(struct shm_header) + 63) & ~(size_t)63;
    void *mem = aligned_alloc(64, off + cap);
    FUZZ_CHECK(mem != NULL, "aligned_alloc(%zu)", off + (size_t)cap);
    memset(mem, 0, off + cap);
    memset(&hs->shm, 0, sizeof(hs->shm));
    hs->shm.hdr = mem;
    hs->shm.size = off + cap;
    hs->shm.hdr->off_ring = off;
    hs->shm.hdr->ring.capacity = cap;
    hs->shm.hdr->ring.max_payload = max_payload;
    atomic_store(&hs->shm.hdr->ring.next_seq, 1);
    atomic_store(&hs->shm.hdr->ring.head_seq, 1);
    FUZZ_CHECK(shm_mutex_init(&hs->shm.hdr->ring.lock) == 0, "shm_mutex_init");
    hs->ring = shm_ring_data(&hs->shm);
    hs->cap = cap;
}

static void heap_seg_free(struct heap_seg *hs)
{
    pthread_mutex_destroy(&hs->shm.hdr->ring.lock);
    free(hs->shm.hdr);
}

/* ---- raw mode ---- */

static uint64_t raw_position(struct input *in, int raw, uint64_t base)
{
    return raw ? in_bytes(in, 8) : base + in_bytes(in, 2) * 32 + in_bytes(in, 1) % 32;
}

static void check_msg(const struct ring_msg *m, uint32_t max_payload, size_t bufcap, uint16_t skip)
{
    FUZZ_CHECK(m->payload_len <= bufcap && m->payload_len <= max_payload,
               "payload %u bytes, buffer %zu, max_payload %u", m->payload_len, bufcap, max_payload);
    FUZZ_CHECK(m->channel_len <= RING_MAX_CHANNEL_LEN && m->channel[m->channel_len] == '\0',
               "channel of %u bytes", m->channel_len);
    FUZZ_CHECK((m->flags & skip) == 0, "flags %#x delivered despite skip mask %#x", m->flags, skip);
}

static void run_raw(struct input *in)
{
    struct heap_seg hs;
    uint8_t shape = (uint8_t)in_bytes(in, 1);
    uint64_t cap = (uint64_t)64 << ((shape & 0x0F) % 10);
    uint32_t max_payload = (uint32_t)(in_bytes(in, 4) % 65537);
    int raw = (shape & 0x80) != 0;
    uint64_t base = in_bytes(in, 8);
    heap_seg_init(&hs, cap, max_payload);
    struct shm_ring_ctl *r = &hs.shm.hdr->ring;
    atomic_store(&r->tail_intent, raw_position(in, raw, base));
    atomic_store(&r->tail, raw_position(in, raw, base));
    atomic_store(&r->next_seq, in_bytes(in, 8));
    atomic_store(&r->head_pos, raw_position(in, raw, base));
    atomic_store(&r->head_seq, in_bytes(in, 8));
    struct ring_cursor c = {.pos = raw_position(in, raw, base), .seq = in_bytes(in, 8)};
    uint16_t skip = (uint16_t)in_bytes(in, 2);
    size_t nbytes = in->off < in->n ? in->n - in->off : 0;
    if (nbytes > 0)
        memcpy(hs.ring, in->p + in->off, nbytes < cap ? nbytes : cap);

    size_t bufcap = max_payload; /* the documented minimum: the caller's buffer >= max_payload */
    uint8_t *buf = malloc(bufcap ? bufcap : 1);
    FUZZ_CHECK(buf != NULL, "malloc");
    uint64_t tail = atomic_load(&r->tail);
    for (int i = 0; i < RAW_MAX_READS; i++) {
        struct ring_msg m;
        uint64_t before = c.pos;
        enum ring_status st = ring_read_mask(&hs.shm, &c, &m, buf, bufcap, skip);
        if (st == RING_EMPTY)
            break;
        if (st == RING_OK) {
            check_msg(&m, max_payload, bufcap, skip);
            FUZZ_CHECK(c.pos > before, "cursor did not move from %llu", (unsigned long long)before);
            FUZZ_CHECK(c.seq == m.seq + 1, "cursor seq %llu after message %llu",
                       (unsigned long long)c.seq, (unsigned long long)m.seq);
        } else {
            ring_cursor_recover(&hs.shm, &c);
            FUZZ_CHECK(c.pos <= tail, "recovered past the tail: %llu > %llu",
                       (unsigned long long)c.pos, (unsigned long long)tail);
        }
    }
    (void)ring_oldest_seq(&hs.shm);
    (void)ring_used_bytes(&hs.shm);
    free(buf);
    heap_seg_free(&hs);
}

/* ---- round-trip mode ---- */

struct published {
    uint32_t len;
    uint16_t flags; /* as stored (OUTBOX may have been dropped) */
    char channel[64];
};

struct rt_cursor {
    struct ring_cursor c;
    uint64_t expect; /* sequence the next delivered message may start the gap check from */
};

static uint8_t payload_byte(uint64_t seq, uint32_t i)
{
    return (uint8_t)(seq * 131 + i * 7 + (i >> 8));
}

static void rt_publish(struct heap_seg *hs, struct published *tab, const uint8_t op[4],
                       uint8_t *scratch, uint32_t max_payload)
{
    uint32_t len = (uint32_t)(op[1] | op[2] << 8) % (max_payload + 1);
    if (op[3] & 0x80)
        len = max_payload + 1 + (op[1] & 7); /* over the limit: EMSGSIZE */
    size_t chlen = op[3] & 0x3F;             /* 56..63 are too long: EINVAL */
    char channel[64];
    for (size_t i = 0; i < chlen; i++)
        channel[i] = (char)('a' + (op[2] + i) % 26);
    channel[chlen] = '\0';
    uint16_t flags = (uint16_t)((op[0] >> 3) & 0x1F); /* BINARY, OUTBOX, HISTORY, BRIDGE, ID */
    uint64_t want = ring_next_seq(&hs->shm), seq = 0;
    uint16_t got = 0;
    uint32_t fill = len <= max_payload ? len : 0;
    for (uint32_t i = 0; i < fill; i++)
        scratch[i] = payload_byte(want, i);
    struct ring_pub p = {.payload = scratch,
                         .len = len,
                         .channel = channel,
                         .flags = flags,
                         .stream_ms = want * 3,
                         .stream_seq = want * 5};
    int rc = ring_publish_ex(&hs->shm, &p, &seq, &got);
    if (len > max_payload || chlen > RING_MAX_CHANNEL_LEN) {
        FUZZ_CHECK(rc < 0, "publish of %u bytes, channel %zu accepted", len, chlen);
        return;
    }
    FUZZ_CHECK(rc == 0 && seq == want, "publish failed or numbered %llu instead of %llu",
               (unsigned long long)seq, (unsigned long long)want);
    FUZZ_CHECK(seq < RT_MAX_OPS + 1, "sequence %llu", (unsigned long long)seq);
    tab[seq].len = len;
    tab[seq].flags = got;
    memcpy(tab[seq].channel, channel, chlen + 1);
}

static void rt_read(struct heap_seg *hs, struct rt_cursor *rc, const struct published *tab,
                    uint16_t mask, uint8_t *buf, uint32_t max_payload)
{
    struct ring_msg m;
    enum ring_status st = ring_read_mask(&hs->shm, &rc->c, &m, buf, max_payload, mask);
    if (fuzz_verbose)
        fprintf(stderr, "read mask %#x: %s seq %llu, %u bytes\n", mask,
                st == RING_OK      ? "ok"
                : st == RING_EMPTY ? "empty"
                                   : "overrun",
                (unsigned long long)(st == RING_OK ? m.seq : rc->c.seq),
                st == RING_OK ? m.payload_len : 0);
    if (st == RING_OVERRUN) {
        ring_cursor_recover(&hs->shm, &rc->c);
        rc->expect = rc->c.seq;
        return;
    }
    if (st == RING_EMPTY) {
        FUZZ_CHECK(rc->c.pos == atomic_load(&hs->shm.hdr->ring.tail), "empty before the tail");
        FUZZ_CHECK(rc->c.seq == ring_next_seq(&hs->shm), "empty at seq %llu, next is %llu",
                   (unsigned long long)rc->c.seq, (unsigned long long)ring_next_seq(&hs->shm));
        for (uint64_t q = rc->expect; q < rc->c.seq; q++)
            FUZZ_CHECK(tab[q].flags & mask, "message %llu never delivered", (unsigned long long)q);
        rc->expect = rc->c.seq;
        return;
    }
    FUZZ_CHECK(m.seq >= 1 && m.seq < RT_MAX_OPS + 1, "read seq %llu", (unsigned long long)m.seq);
    const struct published *p = &tab[m.seq];
    for (uint64_t q = rc->expect; q < m.seq; q++)
        FUZZ_CHECK(tab[q].flags & mask, "message %llu skipped silently before %llu",
                   (unsigned long long)q, (unsigned long long)m.seq);
    FUZZ_CHECK((p->flags & mask) == 0, "message %llu has skipped flags %#x",
               (unsigned long long)m.seq, p->flags);
    FUZZ_CHECK(m.payload_len == p->len && m.flags == p->flags && strcmp(m.channel, p->channel) == 0,
               "message %llu: %u bytes flags %#x channel '%s', published %u, %#x, '%s'",
               (unsigned long long)m.seq, m.payload_len, m.flags, m.channel, p->len, p->flags,
               p->channel);
    for (uint32_t i = 0; i < m.payload_len; i++)
        FUZZ_CHECK(buf[i] == payload_byte(m.seq, i), "message %llu byte %u differs",
                   (unsigned long long)m.seq, i);
    if (m.flags & RING_F_STREAM_ID)
        FUZZ_CHECK(m.stream_ms == m.seq * 3 && m.stream_seq == m.seq * 5, "stream id");
    else
        FUZZ_CHECK(m.stream_ms == 0 && m.stream_seq == 0, "stream id without the flag");
    rc->expect = m.seq + 1;
}

/* Writes the ring as a raw-mode input (see the top of the file). */
static void rt_write_seed(const struct heap_seg *hs, const char *path)
{
    const struct shm_ring_ctl *r = &hs->shm.hdr->ring;
    FILE *f = fopen(path, "wb");
    FUZZ_CHECK(f != NULL, "fopen(%s)", path);
    uint8_t mode = 0, shape = (uint8_t)(0x80 | (__builtin_ctzll(hs->cap) - 6));
    uint64_t words[] = {0,
                        atomic_load(&r->tail_intent),
                        atomic_load(&r->tail),
                        atomic_load(&r->next_seq),
                        atomic_load(&r->head_pos),
                        atomic_load(&r->head_seq),
                        atomic_load(&r->head_pos),
                        atomic_load(&r->head_seq)};
    uint32_t max_payload = r->max_payload;
    uint16_t skip = RING_F_OUTBOX | RING_F_HISTORY;
    fwrite(&mode, 1, 1, f);
    fwrite(&shape, 1, 1, f);
    fwrite(&max_payload, 4, 1, f);
    fwrite(words, 8, 1, f);     /* base (unused when raw) */
    fwrite(words + 1, 8, 2, f); /* tail_intent, tail */
    fwrite(words + 3, 8, 1, f); /* next_seq */
    fwrite(words + 4, 8, 2, f); /* head_pos, head_seq */
    fwrite(words + 6, 8, 2, f); /* cursor at the head */
    fwrite(&skip, 2, 1, f);
    size_t used = (size_t)hs->cap; /* trailing zeros are implied: the harness zero-fills */
    while (used > 0 && hs->ring[used - 1] == 0)
        used--;
    fwrite(hs->ring, 1, used, f);
    FUZZ_CHECK(fclose(f) == 0, "writing %s", path);
}

static void run_round_trip(struct input *in)
{
    static struct published tab[RT_MAX_OPS + 2];
    struct heap_seg hs;
    uint8_t shape = (uint8_t)in_bytes(in, 1);
    uint64_t cap = (uint64_t)32768 << (shape & 1);
    uint32_t max_payload = (uint32_t)(cap / 4 - 4096); /* shm_create's rule, at its limit */
    heap_seg_init(&hs, cap, max_payload);
    atomic_store(&hs.shm.hdr->bridge.state, (uint32_t)((shape >> 1) % 3)); /* OFF/CLOSED/OPEN */
    memset(tab, 0, sizeof(tab));
    uint8_t *scratch = malloc(max_payload), *buf = malloc(max_payload);
    FUZZ_CHECK(scratch != NULL && buf != NULL, "malloc");
    struct rt_cursor cur[2];
    for (int k = 0; k < 2; k++) {
        ring_cursor_at_tail(&hs.shm, &cur[k].c);
        cur[k].expect = cur[k].c.seq;
    }
    for (int i = 0; i < RT_MAX_OPS && in->off < in->n; i++) {
        uint8_t op[4];
        for (int k = 0; k < 4; k++)
            op[k] = (uint8_t)in_bytes(in, 1);
        struct rt_cursor *rc = &cur[op[1] & 1];
        switch (op[0] & 7) {
        case 0:
        case 1:
        case 2:
            rt_publish(&hs, tab, op, scratch, max_payload);
            break;
        case 3:
        case 4:
            rt_read(&hs, rc, tab, RING_F_OUTBOX | RING_F_HISTORY, buf, max_payload);
            break;
        case 5:
            rt_read(&hs, rc, tab, (uint16_t)(op[2] & RT_SKIPPABLE), buf, max_payload);
            break;
        case 6:
            ring_cursor_recover(&hs.shm, &rc->c);
            rc->expect = rc->c.seq;
            break;
        default:
            ring_cursor_at_tail(&hs.shm, &rc->c);
            rc->expect = rc->c.seq;
            break;
        }
    }
    const char *seed = getenv("FUZZ_RING_WRITE_SEED");
    if (seed != NULL && seed[0] != '\0')
        rt_write_seed(&hs, seed);
    free(scratch);
    free(buf);
    heap_seg_free(&hs);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct input in = {data, size, 0};
    static int once;
    if (!once++)
        fuzz_verbose = getenv("FUZZ_VERBOSE") != NULL;
    if (size < 1)
        return 0;
    if (in_bytes(&in, 1) & 1)
        run_round_trip(&in);
    else
        run_raw(&in);
    return 0;
}
