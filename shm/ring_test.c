/* ring_test.c -- the broadcast ring, single-process and under real multi-process load.
 *
 * Single process: round trip with channels and flags, argument errors, wrap-around with PAD
 * records, a lagging cursor that is lapped and recovers with an exact skip count, insane headers.
 * Crash repair: a child takes the lock, advances tail_intent, scribbles fake records and is
 * SIGKILLed (also straddling the buffer end, and after bumping next_seq); the next publish must
 * repair, and no reader may see the fake records or a sequence gap. A consumer killed mid-read
 * must not disturb anyone. Stress: 3 producer and 3 consumer processes, every payload carrying
 * producer id, counter and an FNV-1a checksum; with flow control no overrun may be reported and
 * every consumer sees every sequence; with a tiny ring and a slow consumer overruns must be
 * reported and nothing torn may get through. Finally prints ring_publish latency (not asserted).
 */
#include <sched.h>
#include <stdatomic.h>

#include "ring.h"
#include "shm_testutil.h"

#define FAKE_SEQ 999999u

static uint32_t rec_size(size_t ch, uint32_t len)
{
    return (uint32_t)((32 + ch + len + 31) & ~(size_t)31);
}

static void fill_pattern(uint8_t *buf, uint32_t len, uint64_t seed)
{
    for (uint32_t i = 0; i < len; i++)
        buf[i] = (uint8_t)(seed * 31 + i * 7);
}

static int pattern_ok(const uint8_t *buf, uint32_t len, uint64_t seed)
{
    for (uint32_t i = 0; i < len; i++)
        if (buf[i] != (uint8_t)(seed * 31 + i * 7))
            return 0;
    return 1;
}

static void test_round_trip(void)
{
    const char *name = test_name("rt");
    struct shm s;
    struct ring_cursor c;
    struct ring_msg m;
    uint8_t buf[4096], bin[7] = {0, 1, 2, 0, 255, 254, 0};
    uint64_t seq = 0;
    char ch55[56], ch56[57];

    test_create(&s, name, 4, 64 * 1024, 4096);
    ring_cursor_at_tail(&s, &c);
    CHECK(c.pos == 0 && c.seq == 1, "fresh cursor at %llu/%llu", (unsigned long long)c.pos,
          (unsigned long long)c.seq);
    CHECK(ring_read(&s, &c, &m, buf, sizeof(buf)) == RING_EMPTY, "empty ring not empty");

    uint64_t before = shm_mono_ns();
    CHECK(ring_publish(&s, "hello", 5, NULL, 0, &seq) == 0 && seq == 1, "publish 1");
    CHECK(ring_publish(&s, bin, sizeof(bin), "news", RING_F_BINARY, &seq) == 0 && seq == 2, "2");
    CHECK(ring_publish(&s, NULL, 0, "", 0, &seq) == 0 && seq == 3, "empty payload");
    memset(ch55, 'c', 55);
    ch55[55] = '\0';
    CHECK(ring_publish(&s, "x", 1, ch55, 0, &seq) == 0 && seq == 4, "55-byte channel");
    fill_pattern(buf, 4096, 5);
    CHECK(ring_publish(&s, buf, 4096, NULL, 0, &seq) == 0 && seq == 5, "max payload");

    errno = 0;
    CHECK(ring_publish(&s, buf, 4097, NULL, 0, &seq) == -1 && errno == EMSGSIZE, "EMSGSIZE");
    memset(ch56, 'c', 56);
    ch56[56] = '\0';
    errno = 0;
    CHECK(ring_publish(&s, "x", 1, ch56, 0, &seq) == -1 && errno == EINVAL, "long channel");
    CHECK(ring_next_seq(&s) == 6, "failed publishes consumed sequences");

    memset(buf, 0, sizeof(buf));
    CHECK(ring_read(&s, &c, &m, buf, sizeof(buf)) == RING_OK, "read 1");
    CHECK(m.seq == 1 && m.payload_len == 5 && memcmp(buf, "hello", 5) == 0 && m.flags == 0 &&
              m.channel_len == 0 && m.channel[0] == '\0',
          "msg 1 wrong");
    CHECK(m.published_ns >= before && m.published_ns <= shm_mono_ns(), "timestamp");
    CHECK(ring_read(&s, &c, &m, buf, sizeof(buf)) == RING_OK, "read 2");
    CHECK(m.seq == 2 && m.payload_len == 7 && memcmp(buf, bin, 7) == 0 &&
              m.flags == RING_F_BINARY && m.channel_len == 4 && strcmp(m.channel, "news") == 0,
          "msg 2 wrong");
    CHECK(ring_read(&s, &c, &m, buf, sizeof(buf)) == RING_OK && m.seq == 3 && m.payload_len == 0,
          "msg 3 wrong");
    CHECK(ring_read(&s, &c, &m, buf, sizeof(buf)) == RING_OK && m.seq == 4 &&
              strcmp(m.channel, ch55) == 0 && m.channel_len == 55,
          "msg 4 wrong");
    CHECK(ring_read(&s, &c, &m, buf, sizeof(buf)) == RING_OK && m.seq == 5 &&
              m.payload_len == 4096 && pattern_ok(buf, 4096, 5),
          "msg 5 wrong");
    CHECK(ring_read(&s, &c, &m, buf, sizeof(buf)) == RING_EMPTY, "not empty after 5");
    CHECK(c.seq == 6, "cursor seq %llu", (unsigned long long)c.seq);

    CHECK(ring_oldest_seq(&s) == 1, "oldest %llu", (unsigned long long)ring_oldest_seq(&s));
    uint64_t used = (uint64_t)rec_size(0, 5) + rec_size(4, 7) + rec_size(0, 0) + rec_size(55, 1) +
                    rec_size(0, 4096);
    CHECK(ring_used_bytes(&s) == used, "used %llu want %llu",
          (unsigned long long)ring_used_bytes(&s), (unsigned long long)used);
    CHECK(s.hdr->ring.published == 5 && s.hdr->ring.published_bytes == 5 + 7 + 0 + 1 + 4096,
          "published counters");
    /* size buckets: (2^(i-1), 2^i] bytes, 0 and 1 byte in bucket 0 */
    CHECK(s.hdr->ring.size_hist[0] == 2 && s.hdr->ring.size_hist[3] == 2 &&
              s.hdr->ring.size_hist[12] == 1 && s.hdr->ring.size_hist[13] == 0,
          "size histogram");

    struct ring_cursor late;
    ring_cursor_at_tail(&s, &late);
    CHECK(late.pos == c.pos && late.seq == 6, "cursor_at_tail after publishes");
    shm_destroy(&s);
}

/* Reader keeps up while the ring wraps many times; every wrap needing a PAD is checked. */
static void test_wrap_with_pad(void)
{
    const char *name = test_name("wrap");
    struct shm s;
    struct ring_cursor c;
    struct ring_msg m;
    uint8_t pay[2048], out[2048];
    const uint64_t cap = 32 * 1024;
    int pads = 0, batch = 0;

    test_create(&s, name, 4, cap, 2048);
    ring_cursor_at_tail(&s, &c);
    for (uint32_t i = 1; i <= 3000; i++) {
        uint32_t len = (i * 37) % 2048 + 1;
        char ch[16];
        snprintf(ch, sizeof(ch), "c%u", i % 10);
        fill_pattern(pay, len, i);
        uint64_t t0 = s.hdr->ring.tail, seq;
        REQUIRE(ring_publish(&s, pay, len, i % 3 ? ch : NULL, 0, &seq) == 0, "publish %u", i);
        uint64_t delta = s.hdr->ring.tail - t0, rs = rec_size(i % 3 ? strlen(ch) : 0, len);
        if (delta != rs) {
            pads++;
            CHECK(delta == rs + (cap - t0 % cap), "pad size wrong at %u", i);
            CHECK(s.hdr->ring.tail % cap == rs, "record after pad not at buffer start");
        }
        /* read in batches of 5 so some reads cross the end of the buffer */
        if (++batch < 5)
            continue;
        batch = 0;
        for (uint32_t j = i - 4; j <= i; j++) {
            REQUIRE(ring_read(&s, &c, &m, out, sizeof(out)) == RING_OK, "read %u", j);
            uint32_t l = (j * 37) % 2048 + 1;
            CHECK(m.seq == j && m.payload_len == l && pattern_ok(out, l, j), "msg %u corrupt", j);
        }
    }
    CHECK(ring_read(&s, &c, &m, out, sizeof(out)) == RING_EMPTY, "leftovers");
    CHECK(pads > 10, "only %d pads", pads);
    CHECK(s.hdr->ring.tail / cap > 50, "only %llu laps",
          (unsigned long long)s.hdr->ring.tail / cap);
    CHECK(ring_used_bytes(&s) <= cap, "used %llu", (unsigned long long)ring_used_bytes(&s));
    shm_destroy(&s);
}

/* A cursor that falls a lap behind reports an overrun and recovers with an exact skip count. */
static void test_overrun(void)
{
    const char *name = test_name("overrun");
    struct shm s;
    struct ring_cursor c, mid;
    struct ring_msg m;
    uint8_t pay[1000], out[2048];

    test_create(&s, name, 4, 32 * 1024, 2048);
    ring_cursor_at_tail(&s, &c);
    fill_pattern(pay, sizeof(pay), 1);
    REQUIRE(ring_publish(&s, pay, 1000, NULL, 0, NULL) == 0, "publish");
    REQUIRE(ring_publish(&s, pay, 1000, NULL, 0, NULL) == 0, "publish");
    REQUIRE(ring_read(&s, &c, &m, out, sizeof(out)) == RING_OK && m.seq == 1, "read 1");
    mid = c;
    for (int i = 3; i <= 100; i++)
        REQUIRE(ring_publish(&s, pay, 1000, NULL, 0, NULL) == 0, "publish %d", i);

    CHECK(ring_read(&s, &c, &m, out, sizeof(out)) == RING_OVERRUN, "lapped cursor not detected");
    uint64_t oldest = ring_oldest_seq(&s);
    CHECK(oldest > 2 && oldest < 100, "oldest %llu", (unsigned long long)oldest);
    uint64_t skipped = ring_cursor_recover(&s, &c);
    CHECK(skipped == oldest - 2, "skipped %llu, oldest %llu", (unsigned long long)skipped,
          (unsigned long long)oldest);
    CHECK(c.seq == oldest && c.pos >= s.hdr->ring.head_pos && c.pos < s.hdr->ring.tail,
          "recovered cursor");
    uint64_t n = 0, expect = oldest;
    enum ring_status st;
    while ((st = ring_read(&s, &c, &m, out, sizeof(out))) == RING_OK) {
        CHECK(m.seq == expect && pattern_ok(out, 1000, 1), "seq %llu", (unsigned long long)m.seq);
        expect++;
        n++;
    }
    CHECK(st == RING_EMPTY && n + skipped + 1 == 100, "read %llu + skipped %llu",
          (unsigned long long)n, (unsigned long long)skipped);
    CHECK(ring_used_bytes(&s) <= s.hdr->ring.capacity, "used bytes exceed the ring");

    /* the same through a copy made before the lap */
    CHECK(ring_read(&s, &mid, &m, out, sizeof(out)) == RING_OVERRUN, "stale copy not detected");
    /* a cursor that cannot belong to this ring */
    struct ring_cursor bogus = {.pos = s.hdr->ring.tail + 64, .seq = 5};
    CHECK(ring_read(&s, &bogus, &m, out, sizeof(out)) == RING_OVERRUN, "cursor past tail");
    ring_cursor_recover(&s, &bogus);
    CHECK(bogus.seq == oldest && ring_read(&s, &bogus, &m, out, sizeof(out)) == RING_OK,
          "bogus cursor did not recover");

    /* an insane header (corruption, never produced by a writer) is reported, not followed */
    struct ring_cursor at = {.pos = 0, .seq = 1};
    ring_cursor_recover(&s, &at); /* on the oldest message, past any PAD */
    struct ring_record *r = (struct ring_record *)(shm_ring_data(&s) + (at.pos & (32 * 1024 - 1)));
    uint32_t saved = r->payload_len;
    r->payload_len = 0xffffffffu;
    CHECK(ring_read(&s, &at, &m, out, sizeof(out)) == RING_OVERRUN, "insane header followed");
    r->payload_len = saved;
    r->payload_len = 1500; /* sane on its own, but larger than the record */
    CHECK(ring_read(&s, &at, &m, out, sizeof(out)) == RING_OVERRUN, "oversized payload_len");
    r->payload_len = saved;
    CHECK(ring_read(&s, &at, &m, out, 512) == RING_OVERRUN, "buffer smaller than payload");
    CHECK(ring_read(&s, &at, &m, out, sizeof(out)) == RING_OK, "restored header");
    shm_destroy(&s);
}

/* ---- crash repair ---- */

/* What a real producer does before overwriting: move head past records in [.., end - cap). */
static void child_advance_head(struct shm *s, uint64_t tail, uint64_t end)
{
    struct shm_ring_ctl *r = &s->hdr->ring;
    uint64_t cap = r->capacity, hp = r->head_pos, hs = r->head_seq;

    while (hp < tail && hp + cap < end) {
        struct ring_record *rec = (struct ring_record *)(shm_ring_data(s) + (hp & (cap - 1)));
        if (rec->type == RING_REC_MSG)
            hs = rec->seq + 1;
        hp += rec->size;
    }
    r->head_seq = hs;
    r->head_pos = hp;
}

/* Fake, plausible MSG records over [from, to): what readers must never see. */
static void child_scribble(struct shm *s, uint64_t from, uint64_t to)
{
    uint64_t cap = s->hdr->ring.capacity;
    for (uint64_t p = from; p < to; p += 64) {
        uint8_t *b = shm_ring_data(s) + (p & (cap - 1));
        struct ring_record fake = {
            .size = 64, .type = RING_REC_MSG, .seq = FAKE_SEQ, .payload_len = 8};
        memcpy(b, &fake, sizeof(fake));
        memcpy(b + 32, "GARBAGE!", 8);
    }
}

enum crash_mode {
    CRASH_IDLE,       /* lock taken, nothing written */
    CRASH_MID,        /* tail_intent advanced, garbage written */
    CRASH_STRADDLE,   /* the same across the end of the buffer */
    CRASH_UNPUBLISHED /* a complete record and next_seq written, tail not */
};

/* Child: takes the ring lock like a producer and dies with SIGKILL at `mode`. */
static void child_crash(const char *name, enum crash_mode mode)
{
    struct shm s;
    char err[256];
    if (shm_attach(&s, name, err, sizeof(err)) < 0)
        _exit(1);
    struct shm_ring_ctl *r = &s.hdr->ring;
    if (pthread_mutex_lock(&r->lock) != 0)
        _exit(1);
    uint64_t cap = r->capacity, tail = r->tail, end = tail;
    if (mode == CRASH_MID) {
        end = tail + 320;
    } else if (mode == CRASH_STRADDLE) {
        end = tail + (cap - tail % cap) + 256; /* pad to the end, then a record at 0 */
    } else if (mode == CRASH_UNPUBLISHED) {
        end = tail + 64;
    }
    child_advance_head(&s, tail, end);
    atomic_store(&r->tail_intent, end);
    if (mode == CRASH_UNPUBLISHED) {
        struct ring_record rec = {
            .size = 64, .type = RING_REC_MSG, .seq = r->next_seq, .payload_len = 8};
        memcpy(shm_ring_data(&s) + (tail & (cap - 1)), &rec, sizeof(rec));
        memcpy(shm_ring_data(&s) + (tail & (cap - 1)) + 32, "UNPUBLSH", 8);
        atomic_store(&r->next_seq, r->next_seq + 1);
    } else {
        child_scribble(&s, tail, end);
    }
    raise(SIGKILL);
    _exit(1);
}

/* Reads everything from c; checks sequences continue from c->seq and no fake record shows. */
static uint64_t drain_checked(struct shm *s, struct ring_cursor *c, const char *what)
{
    struct ring_msg m;
    uint8_t out[2048];
    uint64_t n = 0;
    enum ring_status st;

    for (;;) {
        uint64_t want = c->seq;
        if ((st = ring_read(s, c, &m, out, sizeof(out))) == RING_EMPTY)
            break;
        if (st == RING_OVERRUN) {
            ring_cursor_recover(s, c);
            continue;
        }
        CHECK(m.seq == want && m.seq != FAKE_SEQ, "%s: seq %llu", what, (unsigned long long)m.seq);
        CHECK(m.payload_len != 8 || (memcmp(out, "GARBAGE!", 8) && memcmp(out, "UNPUBLSH", 8)),
              "%s: fake record delivered", what);
        n++;
    }
    return n;
}

static void test_producer_killed(enum crash_mode mode, const char *tag)
{
    const char *name = test_name(tag);
    struct shm s;
    struct ring_cursor at_tail, from_start;
    struct ring_msg m;
    uint8_t pay[600], out[2048];
    uint64_t cap = 32 * 1024, seq_before, seq;

    test_create(&s, name, 4, cap, 2048);
    ring_cursor_at_tail(&s, &from_start);
    fill_pattern(pay, sizeof(pay), 3);
    /* put the tail a little before the end of the buffer for the straddle case */
    int n = mode == CRASH_STRADDLE ? 51 : 5; /* 51 x 640 bytes: 128 bytes before the end */
    for (int i = 0; i < n; i++)
        REQUIRE(ring_publish(&s, pay, 600, "x", 0, NULL) == 0, "publish");
    if (mode == CRASH_STRADDLE)
        CHECK(s.hdr->ring.tail % cap > cap - 600 && s.hdr->ring.tail < cap, "setup: tail at %llu",
              (unsigned long long)s.hdr->ring.tail);
    ring_cursor_at_tail(&s, &at_tail);
    seq_before = ring_next_seq(&s);

    pid_t pid = test_fork();
    if (pid == 0)
        child_crash(name, mode);
    int st = test_wait(pid, 5000);
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "%s: child did not die by SIGKILL", tag);

    /* before any repair: readers see nothing new and nothing fake */
    CHECK(ring_read(&s, &at_tail, &m, out, sizeof(out)) == RING_EMPTY, "%s: tail moved", tag);
    REQUIRE(ring_publish(&s, "after", 5, NULL, 0, &seq) == 0, "%s: publish after crash: %s", tag,
            strerror(errno));
    CHECK(s.hdr->ring.lock_recoveries == 1, "%s: lock_recoveries %llu", tag,
          (unsigned long long)s.hdr->ring.lock_recoveries);
    CHECK(seq == seq_before, "%s: sequence gap: got %llu, expected %llu", tag,
          (unsigned long long)seq, (unsigned long long)seq_before);
    CHECK(s.hdr->ring.tail_intent == s.hdr->ring.tail, "%s: tail_intent not published", tag);

    CHECK(ring_read(&s, &at_tail, &m, out, sizeof(out)) == RING_OK && m.seq == seq &&
              m.payload_len == 5 && memcmp(out, "after", 5) == 0,
          "%s: message after repair wrong (seq %llu)", tag, (unsigned long long)m.seq);
    CHECK(ring_read(&s, &at_tail, &m, out, sizeof(out)) == RING_EMPTY, "%s: extra records", tag);
    uint64_t got = drain_checked(&s, &from_start, tag);
    CHECK(got >= 1, "%s: lagging reader read nothing", tag);
    CHECK(from_start.seq == seq + 1, "%s: lagging reader ended at %llu", tag,
          (unsigned long long)from_start.seq);

    /* the ring keeps working: many more laps, all intact */
    ring_cursor_at_tail(&s, &at_tail);
    for (int i = 0; i < 200; i++) {
        REQUIRE(ring_publish(&s, pay, 600, NULL, 0, NULL) == 0, "publish");
        CHECK(ring_read(&s, &at_tail, &m, out, sizeof(out)) == RING_OK && pattern_ok(out, 600, 3),
              "%s: after repair, message %d corrupt", tag, i);
    }
    CHECK(s.hdr->ring.lock_recoveries == 1, "%s: more recoveries", tag);
    shm_destroy(&s);
}

/* A consumer SIGKILLed while reading: producers and other readers go on. */
static void test_consumer_killed(void)
{
    const char *name = test_name("ckill");
    struct shm s;
    struct ring_cursor c;
    struct ring_msg m;
    uint8_t pay[256], out[2048];
    _Atomic uint64_t *progress = test_shared_alloc(4096);

    test_create(&s, name, 4, 32 * 1024, 2048);
    ring_cursor_at_tail(&s, &c);
    pid_t pid = test_fork();
    if (pid == 0) {
        struct shm cs;
        struct ring_cursor cc;
        char err[256];
        if (shm_attach(&cs, name, err, sizeof(err)) < 0)
            _exit(1);
        ring_cursor_at_tail(&cs, &cc);
        for (;;) {
            if (ring_read(&cs, &cc, &m, out, sizeof(out)) == RING_OVERRUN)
                ring_cursor_recover(&cs, &cc);
            atomic_fetch_add(progress, 1);
        }
    }
    fill_pattern(pay, sizeof(pay), 9);
    uint64_t deadline = test_now_ms() + 5000;
    for (int i = 0; i < 20000; i++) {
        REQUIRE(ring_publish(&s, pay, 256, NULL, 0, NULL) == 0, "publish %d", i);
        if (i == 10000) {
            while (atomic_load(progress) < 1000 && test_now_ms() < deadline)
                sched_yield();
            kill(pid, SIGKILL);
        }
        CHECK(ring_read(&s, &c, &m, out, sizeof(out)) == RING_OK && pattern_ok(out, 256, 9),
              "message %d corrupt", i);
    }
    int st = test_wait(pid, 5000);
    CHECK(WIFSIGNALED(st), "consumer not killed");
    CHECK(atomic_load(progress) >= 1000, "consumer never ran");
    CHECK(s.hdr->ring.lock_recoveries == 0, "a reader touched the lock");
    munmap((void *)progress, 4096);
    shm_destroy(&s);
}

/* A cursor placed at the tail (or recovered) while another process publishes must expect
 * exactly the sequence of the next record it reads: (tail, next_seq) are read as a pair. */
static void test_cursor_placement_race(void)
{
    const char *name = test_name("place");
    struct shm s;
    struct ring_msg m;
    uint8_t out[2048];
    _Atomic int *stop = test_shared_alloc(4096);
    uint64_t placed = 0, wrong = 0, recovered = 0, wrong_recover = 0, tail_ns = 0, rec_ns = 0;

    /* 1 MiB: a reader descheduled for a few ms on a busy machine is not lapped at once */
    test_create(&s, name, 4, 1024 * 1024, 2048);
    pid_t pid = test_fork();
    if (pid == 0) {
        uint8_t pay[40] = {0};
        for (uint64_t i = 0; !atomic_load_explicit(stop, memory_order_relaxed); i++) {
            if (ring_publish(&s, pay, (uint32_t)(i % 40), NULL, 0, NULL) < 0)
                _exit(1);
            if (i % 4096 == 0)
                sched_yield(); /* let the reader run when we share a core */
        }
        _exit(0);
    }
    uint64_t deadline = test_now_ms() + 3000;
    while (test_now_ms() < deadline && placed < 20000) {
        struct ring_cursor c;
        enum ring_status st;
        uint64_t t0 = shm_mono_ns();
        ring_cursor_at_tail(&s, &c);
        tail_ns += shm_mono_ns() - t0;
        uint64_t expect = c.seq;
        while ((st = ring_read(&s, &c, &m, out, sizeof(out))) == RING_EMPTY)
            sched_yield(); /* the publisher may share our core */
        if (st == RING_OK) {
            placed++;
            wrong += m.seq != expect;
        }
        /* recover from far behind: lands on the oldest record, whatever is in flight */
        struct ring_cursor r = {.pos = 0, .seq = 1};
        t0 = shm_mono_ns();
        ring_cursor_recover(&s, &r);
        rec_ns += shm_mono_ns() - t0;
        expect = r.seq;
        if (ring_read(&s, &r, &m, out, sizeof(out)) == RING_OK) {
            recovered++;
            wrong_recover += m.seq != expect;
        }
    }
    atomic_store(stop, 1);
    int st = test_wait(pid, 5000);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "publisher failed");
    printf("  cursor placement under load: %llu at tail (%llu wrong, mean %llu ns), %llu "
           "recovered (%llu wrong, mean %llu ns)\n",
           (unsigned long long)placed, (unsigned long long)wrong,
           (unsigned long long)(tail_ns / (placed ? placed : 1)), (unsigned long long)recovered,
           (unsigned long long)wrong_recover,
           (unsigned long long)(rec_ns / (recovered ? recovered : 1)));
    CHECK(wrong == 0 && wrong_recover == 0, "cursor expected the wrong sequence");
    CHECK(placed > 100, "too few placements to mean anything");
    munmap((void *)stop, 4096);
    shm_destroy(&s);
}

/* ---- multi-process stress ---- */

#define NPROD         3
#define NCONS         3
#define PAY_MIN       20
#define STRESS_MAXPAY 2048u

struct stress_result {
    uint64_t read, overruns, skipped, bad_sum, bad_seq, bad_order, bad_meta;
};

struct stress_shared {
    _Atomic uint64_t cons_pos[NCONS];
    _Atomic int ready;
    _Atomic int go;
    _Atomic int producers_done;
    struct stress_result res[NCONS];
};

struct stress_cfg {
    const char *name;
    uint64_t ring;
    uint32_t per_producer;
    int flow_control;  /* producers keep within half a ring of the slowest consumer */
    int slow_consumer; /* consumer 0 sleeps now and then */
    int large;         /* payloads of 1-2 KiB: long copies, more of them torn by a lap */
};

struct payload_head {
    uint32_t producer, counter, len, pad;
};

static void stress_channel(uint32_t p, uint32_t k, char *ch, size_t n)
{
    if (k % 3 == 0)
        ch[0] = '\0';
    else
        snprintf(ch, n, "ch-%u-%u", p, k % 7);
}

static uint32_t stress_len(uint64_t *rng, int large)
{
    uint64_t x = test_xorshift(rng);
    if (large)
        return STRESS_MAXPAY / 2 + (uint32_t)(x >> 8) % (STRESS_MAXPAY / 2 + 1);
    if (x % 4 != 0)
        return PAY_MIN + (uint32_t)(x >> 8) % 236;
    return PAY_MIN + (uint32_t)(x >> 8) % (STRESS_MAXPAY - PAY_MIN + 1);
}

static void stress_wait_go(struct stress_shared *sh)
{
    atomic_fetch_add(&sh->ready, 1);
    while (!atomic_load(&sh->go))
        sched_yield();
}

static uint64_t stress_min_pos(struct stress_shared *sh)
{
    uint64_t min = UINT64_MAX;
    for (int j = 0; j < NCONS; j++) {
        uint64_t p = atomic_load_explicit(&sh->cons_pos[j], memory_order_relaxed);
        if (p < min)
            min = p;
    }
    return min;
}

static void stress_producer(const struct stress_cfg *cfg, struct stress_shared *sh,
                            uint64_t *seq_of, uint32_t id)
{
    struct shm s;
    char err[256], ch[32];
    uint8_t buf[STRESS_MAXPAY];
    uint64_t rng = 0x9e3779b97f4a7c15ull * (id + 1);

    if (shm_attach(&s, cfg->name, err, sizeof(err)) < 0)
        _exit(10);
    stress_wait_go(sh);
    for (uint32_t k = 0; k < cfg->per_producer; k++) {
        uint32_t len = stress_len(&rng, cfg->large);
        struct payload_head h = {.producer = id, .counter = k, .len = len};
        memcpy(buf, &h, sizeof(h));
        for (uint32_t i = sizeof(h); i < len - 4; i++)
            buf[i] = (uint8_t)test_xorshift(&rng);
        uint32_t sum = test_fnv1a(buf, len - 4);
        memcpy(buf + len - 4, &sum, 4);
        stress_channel(id, k, ch, sizeof(ch));
        while (cfg->flow_control &&
               atomic_load(&s.hdr->ring.tail) - stress_min_pos(sh) > cfg->ring / 2)
            sched_yield();
        if (ring_publish(&s, buf, len, ch, k % 2 ? RING_F_BINARY : 0,
                         &seq_of[(uint64_t)id * cfg->per_producer + k]) < 0)
            _exit(11);
    }
    _exit(0);
}

/* Checks one message; returns the producer and counter through *p, *k. */
static void stress_check_msg(const struct ring_msg *m, const uint8_t *buf, struct stress_result *r,
                             uint32_t *p, uint32_t *k)
{
    struct payload_head h;
    uint32_t sum;
    char ch[32];

    *p = UINT32_MAX;
    if (m->payload_len < PAY_MIN) {
        r->bad_sum++;
        return;
    }
    memcpy(&h, buf, sizeof(h));
    memcpy(&sum, buf + m->payload_len - 4, 4);
    if (sum != test_fnv1a(buf, m->payload_len - 4) || h.len != m->payload_len ||
        h.producer >= NPROD) {
        r->bad_sum++;
        return;
    }
    stress_channel(h.producer, h.counter, ch, sizeof(ch));
    if (strcmp(ch, m->channel) != 0 || m->channel_len != strlen(ch) ||
        m->flags != (h.counter % 2 ? RING_F_BINARY : 0))
        r->bad_meta++;
    *p = h.producer;
    *k = h.counter;
}

static void stress_consumer(const struct stress_cfg *cfg, struct stress_shared *sh, uint64_t *seen,
                            int id)
{
    struct shm s;
    struct ring_cursor c;
    struct ring_msg m;
    struct stress_result r = {0};
    char err[256];
    static uint8_t buf[STRESS_MAXPAY];
    int64_t last_counter[NPROD];

    for (int i = 0; i < NPROD; i++)
        last_counter[i] = -1;
    if (shm_attach(&s, cfg->name, err, sizeof(err)) < 0)
        _exit(10);
    ring_cursor_at_tail(&s, &c);
    atomic_store(&sh->cons_pos[id], c.pos);
    stress_wait_go(sh);
    for (;;) {
        int done = atomic_load(&sh->producers_done);
        uint64_t expect = c.seq;
        enum ring_status st = ring_read(&s, &c, &m, buf, sizeof(buf));
        atomic_store_explicit(&sh->cons_pos[id], c.pos, memory_order_relaxed);
        if (st == RING_EMPTY) {
            if (done)
                break;
            sched_yield();
            continue;
        }
        if (st == RING_OVERRUN) {
            r.overruns++;
            r.skipped += ring_cursor_recover(&s, &c);
            continue;
        }
        uint32_t p, k;
        r.read++;
        if (m.seq != expect)
            r.bad_seq++;
        stress_check_msg(&m, buf, &r, &p, &k);
        if (p != UINT32_MAX) {
            if ((int64_t)k <= last_counter[p] ||
                (cfg->flow_control && (int64_t)k != last_counter[p] + 1))
                r.bad_order++;
            last_counter[p] = k;
            if (m.seq < (uint64_t)NPROD * cfg->per_producer + 1)
                seen[m.seq] = ((uint64_t)p << 32 | k) + 1;
        }
        if (cfg->slow_consumer && id == 0 && r.read % 8 == 0)
            usleep(100);
    }
    sh->res[id] = r;
    _exit(0);
}

static void stress_run(const struct stress_cfg *cfg, const char *variant)
{
    struct shm s;
    uint64_t total = (uint64_t)NPROD * cfg->per_producer;
    struct stress_shared *sh = test_shared_alloc(sizeof(*sh));
    uint64_t *seq_of = test_shared_alloc(total * sizeof(uint64_t));
    uint64_t *seen = test_shared_alloc(NCONS * (total + 1) * sizeof(uint64_t));
    pid_t prod[NPROD], cons[NCONS];
    uint64_t t0 = test_now_ms();

    test_create(&s, cfg->name, 4, cfg->ring, STRESS_MAXPAY);
    for (int j = 0; j < NCONS; j++)
        if ((cons[j] = test_fork()) == 0)
            stress_consumer(cfg, sh, seen + j * (total + 1), j);
    for (int i = 0; i < NPROD; i++)
        if ((prod[i] = test_fork()) == 0)
            stress_producer(cfg, sh, seq_of, (uint32_t)i);
    while (atomic_load(&sh->ready) < NPROD + NCONS && test_now_ms() - t0 < 10000)
        sched_yield();
    atomic_store(&sh->go, 1);
    for (int i = 0; i < NPROD; i++) {
        int st = test_wait(prod[i], 20000);
        CHECK(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s: producer %d status %d",
              variant, i, st);
    }
    atomic_store(&sh->producers_done, 1);
    for (int j = 0; j < NCONS; j++) {
        int st = test_wait(cons[j], 20000);
        CHECK(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s: consumer %d status %d",
              variant, j, st);
    }
    uint64_t elapsed = test_now_ms() - t0;

    /* Every sequence was handed out once; every consumer saw what its producer published. */
    uint64_t *who = calloc(total + 1, sizeof(uint64_t));
    REQUIRE(who != NULL, "calloc");
    for (uint32_t p = 0; p < NPROD; p++)
        for (uint32_t k = 0; k < cfg->per_producer; k++) {
            uint64_t q = seq_of[(uint64_t)p * cfg->per_producer + k];
            CHECK(q >= 1 && q <= total && who[q] == 0, "%s: sequence %llu handed out twice",
                  variant, (unsigned long long)q);
            if (q >= 1 && q <= total)
                who[q] = ((uint64_t)p << 32 | k) + 1;
        }
    CHECK(ring_next_seq(&s) == total + 1, "%s: next_seq %llu", variant,
          (unsigned long long)ring_next_seq(&s));
    for (int j = 0; j < NCONS; j++) {
        const struct stress_result *r = &sh->res[j];
        uint64_t mismatched = 0, unseen = 0;
        for (uint64_t q = 1; q <= total; q++) {
            uint64_t v = seen[j * (total + 1) + q];
            if (v == 0)
                unseen++;
            else if (v != who[q])
                mismatched++;
        }
        printf("  %s consumer %d: read %llu, overruns %llu, skipped %llu\n", variant, j,
               (unsigned long long)r->read, (unsigned long long)r->overruns,
               (unsigned long long)r->skipped);
        CHECK(r->bad_sum == 0 && r->bad_meta == 0,
              "%s: consumer %d: %llu bad checksums, %llu "
              "bad channel/flags",
              variant, j, (unsigned long long)r->bad_sum, (unsigned long long)r->bad_meta);
        CHECK(r->bad_seq == 0 && r->bad_order == 0,
              "%s: consumer %d: %llu sequence and %llu "
              "counter order errors",
              variant, j, (unsigned long long)r->bad_seq, (unsigned long long)r->bad_order);
        CHECK(mismatched == 0, "%s: consumer %d: %llu sequences carried another message", variant,
              j, (unsigned long long)mismatched);
        CHECK(r->read + r->skipped == total && unseen == r->skipped,
              "%s: consumer %d: read %llu + skipped %llu != %llu (unseen %llu)", variant, j,
              (unsigned long long)r->read, (unsigned long long)r->skipped,
              (unsigned long long)total, (unsigned long long)unseen);
        if (cfg->flow_control)
            CHECK(r->overruns == 0 && r->read == total, "%s: consumer %d overran", variant, j);
    }
    if (cfg->slow_consumer)
        CHECK(sh->res[0].overruns > 0, "%s: slow consumer never overran", variant);
    printf("  %s: %llu messages, %llu ms\n", variant, (unsigned long long)total,
           (unsigned long long)elapsed);
    free(who);
    munmap(seen, NCONS * (total + 1) * sizeof(uint64_t));
    munmap(seq_of, total * sizeof(uint64_t));
    munmap(sh, sizeof(*sh));
    shm_destroy(&s);
}

/* ---- latency (printed for the design doc, not asserted) ---- */

#define LAT_N 100000

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Times LAT_N publishes of 64 bytes, each with its own clock reads, into samples (ns each,
 * sorted), then LAT_N more without per-call clocks; span[0..1] gets that second loop's start and
 * end, for throughput without timer overhead. */
static void time_publishes(struct shm *s, uint64_t *samples, uint64_t *span, _Atomic int *barrier,
                           int parties)
{
    uint8_t pay[64] = {0};
    for (int i = 0; i < LAT_N; i++) {
        uint64_t t0 = shm_mono_ns();
        if (ring_publish(s, pay, sizeof(pay), NULL, 0, NULL) < 0)
            _exit(12);
        samples[i] = shm_mono_ns() - t0;
    }
    if (barrier != NULL) { /* start the untimed loops together too */
        atomic_fetch_add(barrier, 1);
        while (atomic_load(barrier) < parties)
            sched_yield();
    }
    span[0] = shm_mono_ns();
    for (int i = 0; i < LAT_N; i++)
        if (ring_publish(s, pay, sizeof(pay), NULL, 0, NULL) < 0)
            _exit(12);
    span[1] = shm_mono_ns();
    qsort(samples, LAT_N, sizeof(uint64_t), cmp_u64);
}

static void print_latency(const char *what, const uint64_t *sorted, uint64_t n, double per_s,
                          const char *build)
{
    uint64_t sum = 0;
    for (uint64_t i = 0; i < n; i++)
        sum += sorted[i];
    printf("  ring_publish 64 B, %s: median %llu ns, mean %llu ns, p99 %llu ns, p99.9 %llu ns, "
           "max %llu ns; %.2f M publishes/s without per-call clocks%s\n",
           what, (unsigned long long)sorted[n / 2], (unsigned long long)(sum / n),
           (unsigned long long)sorted[n * 99 / 100], (unsigned long long)sorted[n * 999 / 1000],
           (unsigned long long)sorted[n - 1], per_s / 1e6, build);
}

static void test_latency(void)
{
    const char *name = test_name("lat");
    struct shm s;
    uint64_t *samples = test_shared_alloc(3 * LAT_N * sizeof(uint64_t));
    uint64_t *span = test_shared_alloc(4096);
    _Atomic int *gate = test_shared_alloc(4096);
    const char *build = "";
#if defined(__SANITIZE_ADDRESS__)
    build = " [sanitizer build: not representative]";
#endif

    test_create(&s, name, 4, 1024 * 1024, 4096);
    uint64_t t0 = shm_mono_ns();
    for (int i = 0; i < LAT_N; i++)
        samples[i] = shm_mono_ns();
    printf("  clock_gettime(CLOCK_MONOTONIC): ~%llu ns per call (included once in each sample)\n",
           (unsigned long long)((shm_mono_ns() - t0) / LAT_N));
    time_publishes(&s, samples, span, NULL, 0);
    print_latency("uncontended", samples, LAT_N, LAT_N / ((double)(span[1] - span[0]) / 1e9),
                  build);

    pid_t pid[2];
    for (int i = 0; i < 2; i++) {
        if ((pid[i] = test_fork()) == 0) {
            atomic_fetch_add(&gate[0], 1);
            while (atomic_load(&gate[1]) == 0)
                sched_yield();
            time_publishes(&s, samples + (uint64_t)(i + 1) * LAT_N, span + 2 * (i + 1), &gate[2],
                           2);
            _exit(0);
        }
    }
    while (atomic_load(&gate[0]) < 2)
        sched_yield();
    uint64_t recov = s.hdr->ring.lock_recoveries;
    atomic_store(&gate[1], 1);
    for (int i = 0; i < 2; i++) {
        int st = test_wait(pid[i], 20000);
        CHECK(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "latency producer %d", i);
    }
    /* throughput over the window where both untimed loops ran */
    uint64_t from = span[2] > span[4] ? span[2] : span[4],
             to = span[3] < span[5] ? span[3] : span[5];
    uint64_t *both = samples + LAT_N; /* both children's samples, merged */
    qsort(both, 2 * LAT_N, sizeof(uint64_t), cmp_u64);
    double per_s = 2.0 * LAT_N / ((double)(span[3] - span[2] + span[5] - span[4]) / 2 / 1e9);
    print_latency("2 contending producer processes", both, 2 * LAT_N, per_s, build);
    printf("  (untimed loops overlapped for %llu of ~%llu us)\n",
           (unsigned long long)(to > from ? (to - from) / 1000 : 0),
           (unsigned long long)((span[3] - span[2]) / 1000));
    CHECK(s.hdr->ring.lock_recoveries == recov, "recoveries during latency run");
    CHECK(ring_next_seq(&s) == 6 * LAT_N + 1, "lost publishes");
    munmap(samples, 3 * LAT_N * sizeof(uint64_t));
    munmap(span, 4096);
    munmap((void *)gate, 4096);
    shm_destroy(&s);
}

int main(void)
{
    test_init(120);
    test_round_trip();
    test_wrap_with_pad();
    test_overrun();
    test_producer_killed(CRASH_IDLE, "kill-idle");
    test_producer_killed(CRASH_MID, "kill-mid");
    test_producer_killed(CRASH_STRADDLE, "kill-straddle");
    test_producer_killed(CRASH_UNPUBLISHED, "kill-unpub");
    test_consumer_killed();
    test_cursor_placement_race();

    struct stress_cfg flow = {.name = test_name("stress-a"),
                              .ring = 256 * 1024,
                              .per_producer = 67000,
                              .flow_control = 1};
    stress_run(&flow, "flow-controlled, 256 KiB ring");
    struct stress_cfg lossy = {.name = test_name("stress-b"),
                               .ring = 32 * 1024,
                               .per_producer = 67000,
                               .slow_consumer = 1};
    stress_run(&lossy, "tiny ring, slow consumer");
    struct stress_cfg torn = {
        .name = test_name("stress-c"), .ring = 32 * 1024, .per_producer = 34000, .large = 1};
    stress_run(&torn, "tiny ring, 1-2 KiB messages");
    test_latency();
    return test_report("ring_test");
}
