/* bridge_test.c -- the ring features and shared state the Redis bridge relies on.
 *
 * Stream ids travel in a record (RING_F_STREAM_ID) next to channel and payload, intact. Readers
 * skip what is not for them: ring_read() skips OUTBOX and HISTORY records (and its cursor moves
 * past their sequences), ring_read_mask() skips exactly the flags it is given. bridge_publish()
 * is ring_publish() when the bridge is OFF, asks for OUTBOX otherwise, and the ring keeps that
 * flag only while the state is CLOSED. The state change is atomic for producers: a producer
 * process publishing flat out sees its OUTBOX records stop exactly where the bridge's own
 * appends (made inside ring_bridge_state_set's critical section) begin. The bridge doorbell is
 * rung only when armed. The last-error seqlock round-trips and truncates.
 */
#include <poll.h>
#include <stdatomic.h>

#include "bridge.h"
#include "doorbell.h"
#include "ring.h"
#include "shm_testutil.h"

static void test_stream_id(void)
{
    struct shm s;
    struct ring_cursor c;
    struct ring_msg m;
    uint8_t buf[4096];
    uint64_t seq;
    struct ring_pub p = {.payload = "payload",
                         .len = 7,
                         .channel = "room.1",
                         .flags = RING_F_STREAM_ID | RING_F_BINARY,
                         .stream_ms = 1700000000123ULL,
                         .stream_seq = 42};

    test_create(&s, test_name("sid"), 4, 64 * 1024, 4096);
    ring_cursor_at_tail(&s, &c);
    REQUIRE(ring_publish_ex(&s, &p, &seq, NULL) == 0 && seq == 1, "publish with a stream id");
    REQUIRE(ring_publish(&s, "plain", 5, NULL, 0, &seq) == 0 && seq == 2, "publish without");
    REQUIRE(ring_read(&s, &c, &m, buf, sizeof(buf)) == RING_OK, "read 1");
    CHECK(m.stream_ms == 1700000000123ULL && m.stream_seq == 42, "stream id %llu-%llu",
          (unsigned long long)m.stream_ms, (unsigned long long)m.stream_seq);
    CHECK(strcmp(m.channel, "room.1") == 0 && m.payload_len == 7 && memcmp(buf, "payload", 7) == 0,
          "channel/payload beside the stream id");
    CHECK(m.flags == (RING_F_STREAM_ID | RING_F_BINARY), "flags %#x", m.flags);
    REQUIRE(ring_read(&s, &c, &m, buf, sizeof(buf)) == RING_OK, "read 2");
    CHECK(m.stream_ms == 0 && m.stream_seq == 0 && m.payload_len == 5, "no stream id");
    shm_destroy(&s);
}

static void test_skip_masks(void)
{
    struct shm s;
    struct ring_cursor c, all, bridge;
    struct ring_msg m;
    uint8_t buf[4096];
    static const uint16_t flags[] = {RING_F_OUTBOX, 0, RING_F_HISTORY, RING_F_BRIDGE,
                                     RING_F_BRIDGE | RING_F_HISTORY};

    test_create(&s, test_name("skip"), 4, 64 * 1024, 4096);
    REQUIRE(ring_bridge_state_set(&s, SHM_BRIDGE_CLOSED, NULL, NULL) == 0, "state closed");
    ring_cursor_at_tail(&s, &c);
    all = bridge = c;
    for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++)
        REQUIRE(ring_publish(&s, "x", 1, NULL, flags[i], NULL) == 0, "publish %zu", i);
    /* Deliverable for workers: seq 2 (plain) and 4 (BRIDGE); OUTBOX and HISTORY skipped. */
    REQUIRE(ring_read(&s, &c, &m, buf, sizeof(buf)) == RING_OK && m.seq == 2, "worker sees 2");
    REQUIRE(ring_read(&s, &c, &m, buf, sizeof(buf)) == RING_OK && m.seq == 4, "worker sees 4");
    CHECK(ring_read(&s, &c, &m, buf, sizeof(buf)) == RING_EMPTY && c.seq == 6,
          "skipped records advance the cursor's seq (%llu)", (unsigned long long)c.seq);
    for (uint64_t want = 1; want <= 5; want++)
        CHECK(ring_read_mask(&s, &all, &m, buf, sizeof(buf), 0) == RING_OK && m.seq == want,
              "mask 0 sees %llu", (unsigned long long)want);
    REQUIRE(ring_read_mask(&s, &bridge, &m, buf, sizeof(buf), RING_F_BRIDGE) == RING_OK &&
                m.seq == 1 && (m.flags & RING_F_OUTBOX),
            "bridge sees the OUTBOX record");
    REQUIRE(ring_read_mask(&s, &bridge, &m, buf, sizeof(buf), RING_F_BRIDGE) == RING_OK &&
                m.seq == 2,
            "bridge sees the plain record");
    REQUIRE(ring_read_mask(&s, &bridge, &m, buf, sizeof(buf), RING_F_BRIDGE) == RING_OK &&
                m.seq == 3,
            "bridge sees the HISTORY record");
    CHECK(ring_read_mask(&s, &bridge, &m, buf, sizeof(buf), RING_F_BRIDGE) == RING_EMPTY,
          "bridge skips its own");
    shm_destroy(&s);
}

/* bridge_publish() with the state at `state`: the flags the record got, read back raw. */
static uint16_t published_flags(struct shm *s, uint32_t state)
{
    struct ring_cursor c;
    struct ring_msg m;
    uint8_t buf[64];

    REQUIRE(ring_bridge_state_set(s, state, NULL, NULL) == 0, "set state");
    ring_cursor_at_tail(s, &c);
    REQUIRE(bridge_publish(s, "hi", 2, NULL, RING_F_BINARY, NULL) == 0, "bridge_publish");
    REQUIRE(ring_read_mask(s, &c, &m, buf, sizeof(buf), 0) == RING_OK, "read back");
    return m.flags;
}

static void test_outbox_gate(void)
{
    struct shm s;

    test_create(&s, test_name("gate"), 4, 64 * 1024, 4096);
    CHECK(published_flags(&s, SHM_BRIDGE_OFF) == RING_F_BINARY, "OFF: a plain publish");
    CHECK(published_flags(&s, SHM_BRIDGE_CLOSED) == (RING_F_BINARY | RING_F_OUTBOX),
          "CLOSED: OUTBOX");
    CHECK(published_flags(&s, SHM_BRIDGE_OPEN) == RING_F_BINARY, "OPEN: delivered at once");
    CHECK(published_flags(&s, SHM_BRIDGE_HALF_OPEN) == RING_F_BINARY, "HALF_OPEN: at once");
    shm_destroy(&s);
}

/* Inside the critical section of the state change: three records of the bridge's own. */
static void append_markers(struct shm *s, void *arg)
{
    struct ring_pub p = {.payload = "marker", .len = 6, .flags = RING_F_BRIDGE};

    (void)arg;
    for (int i = 0; i < 3; i++)
        REQUIRE(ring_publish_locked(s, &p, NULL) == 0, "ring_publish_locked");
}

static void test_atomic_switch(void)
{
    const char *name = test_name("switch");
    struct shm s;
    struct ring_cursor c;
    struct ring_msg m;
    uint8_t buf[64];
    int phase = 0, markers = 0, outbox = 0, direct = 0;
    enum ring_status st;

    test_create(&s, name, 4, 4 * 1024 * 1024, 256);
    REQUIRE(ring_bridge_state_set(&s, SHM_BRIDGE_CLOSED, NULL, NULL) == 0, "closed");
    ring_cursor_at_tail(&s, &c);
    pid_t child = test_fork();
    if (child == 0) { /* a producer process, as wshub-admin, publishing flat out */
        struct shm cs;
        char err[256];
        REQUIRE(shm_attach(&cs, name, err, sizeof(err)) == 0, "attach: %s", err);
        for (int i = 0; i < 40000; i++)
            bridge_publish(&cs, "m", 1, NULL, 0, NULL);
        _exit(0);
    }
    while (atomic_load(&s.hdr->ring.published) < 5000)
        sched_yield();
    REQUIRE(ring_bridge_state_set(&s, SHM_BRIDGE_OPEN, append_markers, NULL) == 0, "open");
    REQUIRE(waitpid(child, NULL, 0) == child, "waitpid");
    /* Ring order must be: OUTBOX records, the 3 markers, then only direct records. */
    while ((st = ring_read_mask(&s, &c, &m, buf, sizeof(buf), 0)) == RING_OK) {
        int is_marker = (m.flags & RING_F_BRIDGE) != 0, is_outbox = (m.flags & RING_F_OUTBOX) != 0;
        if (phase == 0 && is_marker)
            phase = 1;
        if (phase == 1 && !is_marker)
            phase = 2;
        markers += is_marker;
        outbox += is_outbox;
        direct += !is_marker && !is_outbox;
        CHECK(phase != 0 || is_outbox, "a direct record before the switch (seq %llu)",
              (unsigned long long)m.seq);
        CHECK(phase != 2 || (!is_outbox && !is_marker), "OUTBOX after the switch (seq %llu)",
              (unsigned long long)m.seq);
    }
    CHECK(st == RING_EMPTY, "no overrun");
    CHECK(markers == 3 && outbox >= 5000 && outbox + direct == 40000,
          "markers %d, outbox %d, direct %d", markers, outbox, direct);
    shm_destroy(&s);
}

static int readable(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, 200) == 1;
}

static void test_doorbell_and_error(void)
{
    struct shm s;
    char err[SHM_BRIDGE_ERROR_LEN + 10], big[300];
    uint64_t at = 0;

    test_create(&s, test_name("bell"), 4, 64 * 1024, 4096);
    int fd = bridge_doorbell_open(&s);
    REQUIRE(fd >= 0, "bridge_doorbell_open");
    REQUIRE(ring_bridge_state_set(&s, SHM_BRIDGE_CLOSED, NULL, NULL) == 0, "closed");
    bridge_publish(&s, "a", 1, NULL, 0, NULL);
    CHECK(!readable(fd), "rung while not armed");
    bridge_doorbell_arm(&s);
    bridge_publish(&s, "b", 1, NULL, 0, NULL);
    CHECK(readable(fd), "not rung while armed");
    doorbell_drain(fd);
    bridge_publish(&s, "c", 1, NULL, 0, NULL);
    CHECK(!readable(fd), "rung twice for one arm");
    close(fd);

    bridge_error_get(&s, err, sizeof(err), &at);
    CHECK(err[0] == '\0' && at == 0, "no error yet");
    bridge_error_set(&s, "XADD: timed out after 250 ms");
    bridge_error_get(&s, err, sizeof(err), &at);
    CHECK(strcmp(err, "XADD: timed out after 250 ms") == 0 && at > 0, "error '%s'", err);
    memset(big, 'e', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    bridge_error_set(&s, big);
    bridge_error_get(&s, err, sizeof(err), &at);
    CHECK(strlen(err) == SHM_BRIDGE_ERROR_LEN - 1, "truncated to %zu", strlen(err));
    CHECK(strcmp(bridge_state_name(SHM_BRIDGE_HALF_OPEN), "half_open") == 0 &&
              strcmp(bridge_state_name(99), "unknown") == 0,
          "state names");
    shm_destroy(&s);
}

int main(void)
{
    test_init(60);
    test_stream_id();
    test_skip_masks();
    test_outbox_gate();
    test_atomic_switch();
    test_doorbell_and_error();
    return test_report("bridge_test");
}
