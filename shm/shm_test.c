/* shm_test.c -- segment lifecycle, layout checks, stale-hub handling, doorbells and stats names.
 *
 * Covers: instance-name validation; create / attach / destroy and what each process sees;
 * parameter validation; attach refusing a patched version, sizes or a truncated segment with
 * EPROTO; create replacing a segment whose hub pid is dead or whose header is garbage, and
 * refusing one whose hub (a live child process here) is alive with EEXIST; shm_hub_is_alive;
 * doorbell datagrams only to armed running workers; stats names and latency buckets.
 */
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "doorbell.h"
#include "shm_testutil.h"
#include "stats.h"

#define RING_SZ (64u * 1024)
#define MAXPAY  4096u

static void test_names_validation(void)
{
    char out[64];

    CHECK(shm_name_for_instance("prod-1.a_b", out, sizeof(out)) == 0, "valid name refused");
    CHECK(strcmp(out, "/wshub-prod-1.a_b") == 0, "got %s", out);
    errno = 0;
    CHECK(shm_name_for_instance("", out, sizeof(out)) == -1 && errno == EINVAL, "empty name");
    errno = 0;
    CHECK(shm_name_for_instance("a/b", out, sizeof(out)) == -1 && errno == EINVAL, "slash");
    errno = 0;
    CHECK(shm_name_for_instance("a b", out, sizeof(out)) == -1 && errno == EINVAL, "space");
    char longname[80];
    memset(longname, 'x', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    errno = 0;
    CHECK(shm_name_for_instance(longname, out, sizeof(out)) == -1 && errno == EINVAL, "long");
    CHECK(shm_name_for_instance("abc", out, 8) == -1, "output buffer too small accepted");
}

static void test_params_validation(void)
{
    const char *name = test_name("params");
    struct shm s;
    char err[256];
    struct shm_params bad[] = {
        {.conn_capacity = 0, .ring_capacity = RING_SZ, .max_payload = MAXPAY},
        {.conn_capacity = 4, .ring_capacity = RING_SZ + 4096, .max_payload = MAXPAY},
        {.conn_capacity = 4, .ring_capacity = 16384, .max_payload = MAXPAY},
        {.conn_capacity = 4, .ring_capacity = RING_SZ, .max_payload = 0},
    };

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        errno = 0;
        CHECK(shm_create(&s, name, &bad[i], 0600, err, sizeof(err)) == -1 && errno == EINVAL,
              "params #%zu accepted", i);
        CHECK(err[0] != '\0', "params #%zu: no reason given", i);
        CHECK(shm_attach(&s, name, err, sizeof(err)) == -1 && errno == ENOENT,
              "params #%zu left a segment behind", i);
    }
}

static void test_create_attach_destroy(void)
{
    const char *name = test_name("life");
    struct shm hub, other;
    char err[256] = "";

    test_create(&hub, name, 10, RING_SZ, MAXPAY);
    struct shm_header *h = hub.hdr;
    CHECK(hub.owner == 1, "creator is not the owner");
    CHECK(h->magic == SHM_MAGIC && h->version == SHM_LAYOUT_VERSION, "magic/version");
    CHECK(h->epoch != 0, "epoch not set");
    CHECK(h->hub_pid == getpid() && h->hub_state == SHM_HUB_STARTING, "hub pid/state");
    CHECK(h->off_workers % SHM_REGION_ALIGN == 0 && h->off_conn_free % SHM_REGION_ALIGN == 0 &&
              h->off_conns % SHM_REGION_ALIGN == 0 && h->off_ring % SHM_REGION_ALIGN == 0,
          "regions not aligned");
    CHECK(h->off_ring + RING_SZ <= h->total_size && hub.size == h->total_size, "sizes");
    CHECK(h->ring.next_seq == 1 && h->ring.head_seq == 1, "ring sequences start at 1");
    CHECK(h->conntab.free_top == 10 && h->conntab.next_conn_id == 1, "conntab init");
    CHECK(shm_conn_free_stack(&hub)[9] == 0, "row 0 is not on top of the free stack");
    CHECK(shm_worker(&hub, SHM_MAX_WORKERS) == NULL && shm_conn(&hub, 10) == NULL,
          "accessors accept out-of-range indexes");

    struct stat st;
    char path[128];
    snprintf(path, sizeof(path), "/dev/shm%s", name);
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600, "mode is %o",
          (unsigned)(st.st_mode & 0777));

    REQUIRE(shm_attach(&other, name, err, sizeof(err)) == 0, "attach: %s", err);
    CHECK(other.owner == 0 && other.size == hub.size, "attacher view");
    CHECK(other.hdr->epoch == h->epoch, "different epoch through the second mapping");
    shm_worker(&hub, 3)->generation = 77;
    CHECK(shm_worker(&other, 3)->generation == 77, "write not visible through the other mapping");
    CHECK(shm_ring_data(&other) - (uint8_t *)other.hdr == (long)h->off_ring, "ring offset");

    shm_detach(&other);
    CHECK(other.hdr == NULL, "detach left the pointer");
    shm_destroy(&hub);
    errno = 0;
    CHECK(shm_attach(&other, name, err, sizeof(err)) == -1 && errno == ENOENT,
          "segment still there after destroy (errno %d)", errno);
    CHECK(strstr(err, "shm_open(") != NULL, "reason does not name the call: %s", err);
}

/* Patches one header field in a fresh segment and expects attach to refuse it with `want`. */
static void expect_attach_refused(const char *name, size_t field_off, uint32_t value,
                                  const char *want)
{
    struct shm hub, other;
    char err[256] = "";

    test_create(&hub, name, 4, RING_SZ, MAXPAY);
    memcpy((char *)hub.hdr + field_off, &value, sizeof(value));
    errno = 0;
    CHECK(shm_attach(&other, name, err, sizeof(err)) == -1 && errno == EPROTO,
          "patched header accepted (errno %d)", errno);
    CHECK(strstr(err, want) != NULL, "reason '%s' lacks '%s'", err, want);
    shm_destroy(&hub);
}

static void test_layout_mismatch(void)
{
    const char *name = test_name("layout");
    struct shm hub, other;
    char err[256] = "";

    char want[64];
    snprintf(want, sizeof(want), "layout version 99, this binary speaks %d", SHM_LAYOUT_VERSION);
    expect_attach_refused(name, offsetof(struct shm_header, version), 99, want);
    expect_attach_refused(name, offsetof(struct shm_header, conn_size), 128, "sizes differ");
    expect_attach_refused(name, offsetof(struct shm_header, magic), 0x12345678, "bad magic");
    expect_attach_refused(name, offsetof(struct shm_header, conn_capacity), 5, "");

    /* A truncated segment: the offsets no longer fit the mapping. */
    test_create(&hub, name, 4, RING_SZ, MAXPAY);
    int fd = shm_open(name, O_RDWR, 0);
    REQUIRE(fd >= 0, "shm_open: %s", strerror(errno));
    CHECK(ftruncate(fd, (off_t)hub.size - 4096) == 0, "ftruncate: %s", strerror(errno));
    close(fd);
    errno = 0;
    CHECK(shm_attach(&other, name, err, sizeof(err)) == -1 && errno == EPROTO,
          "truncated segment accepted");
    CHECK(strstr(err, "total size") != NULL, "reason: %s", err);
    shm_destroy(&hub);
}

/* A child that stays alive until its pipe closes: our stand-in for a running hub. */
static pid_t spawn_sleeper(int *wfd)
{
    int p[2];
    REQUIRE(pipe(p) == 0, "pipe: %s", strerror(errno));
    pid_t pid = test_fork();
    if (pid == 0) {
        char c;
        close(p[1]);
        while (read(p[0], &c, 1) < 0 && errno == EINTR) {
        }
        _exit(0);
    }
    close(p[0]);
    *wfd = p[1];
    return pid;
}

static pid_t dead_pid(void)
{
    pid_t pid = test_fork();
    if (pid == 0)
        _exit(0);
    test_wait(pid, 5000);
    return pid;
}

static void test_stale_and_live(void)
{
    const char *name = test_name("stale");
    struct shm a, b;
    char err[256] = "";
    struct shm_params p = {.conn_capacity = 4, .ring_capacity = RING_SZ, .max_payload = MAXPAY};

    /* A crashed hub: pid gone, segment left behind. */
    test_create(&a, name, 4, RING_SZ, MAXPAY);
    uint64_t old_epoch = a.hdr->epoch;
    a.hdr->hub_pid = dead_pid();
    shm_detach(&a);
    REQUIRE(shm_create(&b, name, &p, 0600, err, sizeof(err)) == 0, "stale not replaced: %s", err);
    CHECK(b.hdr->epoch != old_epoch, "epoch reused");
    CHECK(b.hdr->hub_pid == getpid(), "hub pid not ours");

    /* A live hub: refuse. */
    int wfd;
    pid_t hub = spawn_sleeper(&wfd);
    b.hdr->hub_pid = hub;
    errno = 0;
    err[0] = '\0';
    CHECK(shm_create(&a, name, &p, 0600, err, sizeof(err)) == -1 && errno == EEXIST,
          "second hub accepted (errno %d)", errno);
    char want[96];
    snprintf(want, sizeof(want), "is already running (hub pid %d)", (int)hub);
    CHECK(strstr(err, want) != NULL && strstr(err, "instance 'shmtest-stale-") != NULL,
          "reason: %s", err);
    CHECK(shm_attach(&a, name, err, sizeof(err)) == 0, "live segment was removed: %s", err);
    CHECK(a.hdr->epoch == b.hdr->epoch, "live segment was replaced");
    shm_detach(&a);

    /* The live hub dies: now the segment is stale. */
    close(wfd);
    test_wait(hub, 5000);
    REQUIRE(shm_create(&a, name, &p, 0600, err, sizeof(err)) == 0, "after hub death: %s", err);
    CHECK(a.hdr->epoch != b.hdr->epoch, "not recreated");
    /* b's name now belongs to a: destroying b must not unlink a's segment. */
    shm_destroy(&b);
    CHECK(shm_attach(&b, name, err, sizeof(err)) == 0, "successor's segment unlinked: %s", err);
    shm_detach(&b);
    shm_destroy(&a);
}

static void test_garbage_replaced(void)
{
    const char *name = test_name("garbage");
    struct shm s;
    char err[256] = "", junk[8192];
    struct shm_params p = {.conn_capacity = 4, .ring_capacity = RING_SZ, .max_payload = MAXPAY};

    const size_t sizes[] = {0, 100, sizeof(junk)};

    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        int fd = shm_open(name, O_RDWR | O_CREAT | O_TRUNC, 0600);
        REQUIRE(fd >= 0, "shm_open: %s", strerror(errno));
        memset(junk, 0x5a, sizeof(junk));
        CHECK(write(fd, junk, sizes[i]) == (ssize_t)sizes[i], "write");
        close(fd);
        errno = 0;
        CHECK(shm_attach(&s, name, err, sizeof(err)) == -1 && errno == EPROTO,
              "garbage (%zu bytes) attached", sizes[i]);
        CHECK(shm_create(&s, name, &p, 0600, err, sizeof(err)) == 0,
              "garbage (%zu bytes) not replaced: %s", sizes[i], err);
        shm_destroy(&s);
    }
}

static void test_hub_alive(void)
{
    const char *name = test_name("alive");
    struct shm s;

    test_create(&s, name, 4, RING_SZ, MAXPAY);
    CHECK(!shm_hub_is_alive(&s, 5000), "STARTING counted as alive");
    s.hdr->hub_state = SHM_HUB_RUNNING;
    s.hdr->hub_heartbeat_ms = shm_now_ms();
    CHECK(shm_hub_is_alive(&s, 5000), "running hub not alive");
    s.hdr->hub_heartbeat_ms = shm_now_ms() - 10000;
    CHECK(!shm_hub_is_alive(&s, 5000), "stale heartbeat counted as alive");
    s.hdr->hub_heartbeat_ms = shm_now_ms();
    s.hdr->hub_pid = dead_pid();
    CHECK(!shm_hub_is_alive(&s, 5000), "dead pid counted as alive");
    s.hdr->hub_pid = 1; /* exists, kill() gives EPERM or 0 */
    CHECK(shm_hub_is_alive(&s, 5000), "pid 1 (EPERM) counted as dead");
    s.hdr->hub_pid = getpid();
    s.hdr->hub_state = SHM_HUB_STOPPING;
    CHECK(!shm_hub_is_alive(&s, 5000), "stopping hub counted as alive");
    shm_destroy(&s);
}

/* Counts datagrams readable on fd within timeout_ms (drains them). */
static int doorbell_count(int fd, int timeout_ms)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    char buf[8];
    int n = 0;

    if (poll(&pfd, 1, timeout_ms) <= 0)
        return 0;
    while (recv(fd, buf, sizeof(buf), MSG_DONTWAIT) > 0)
        n++;
    return n;
}

static void test_doorbell(void)
{
    const char *name = test_name("door");
    struct shm s;

    test_create(&s, name, 4, RING_SZ, MAXPAY);
    int fd0 = doorbell_open(&s, 0), fd1 = doorbell_open(&s, 1);
    REQUIRE(fd0 >= 0 && fd1 >= 0, "doorbell_open: %s", strerror(errno));
    CHECK(doorbell_open(&s, 0) == -1 && errno == EADDRINUSE, "same doorbell bound twice");
    CHECK((fcntl(fd0, F_GETFD) & FD_CLOEXEC) && (fcntl(fd0, F_GETFL) & O_NONBLOCK),
          "doorbell not CLOEXEC|NONBLOCK");

    struct shm_worker *w0 = shm_worker(&s, 0), *w1 = shm_worker(&s, 1);
    w0->pid = w1->pid = getpid();
    w0->state = SHM_WORKER_RUNNING;
    w1->state = SHM_WORKER_STARTING;

    doorbell_ring_all(&s);
    CHECK(doorbell_count(fd0, 50) == 0, "unarmed worker woken");
    doorbell_arm(&s, 0);
    doorbell_arm(&s, 1);
    CHECK(w0->doorbell_armed == 1, "arm did not set the flag");
    doorbell_ring_all(&s);
    doorbell_ring_all(&s); /* coalesced: the first swap disarmed it */
    CHECK(doorbell_count(fd0, 2000) == 1, "armed running worker not woken exactly once");
    CHECK(w0->doorbell_armed == 0, "flag not consumed");
    CHECK(doorbell_count(fd1, 50) == 0, "starting worker woken");
    CHECK(w1->doorbell_armed == 1, "starting worker's flag consumed");

    w0->state = SHM_WORKER_DRAINING;
    doorbell_arm(&s, 0);
    doorbell_ring_all(&s);
    CHECK(doorbell_count(fd0, 2000) == 1, "draining worker not woken");

    /* A producer in another process, with no inherited fd. */
    doorbell_arm(&s, 0);
    pid_t pid = test_fork();
    if (pid == 0) {
        struct shm c;
        char err[256];
        if (shm_attach(&c, name, err, sizeof(err)) < 0)
            _exit(1);
        doorbell_ring_all(&c);
        _exit(0);
    }
    int st = test_wait(pid, 5000);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child producer failed");
    CHECK(doorbell_count(fd0, 2000) == 1, "cross-process ring not received");

    /* drain empties the socket without blocking */
    for (int i = 0; i < 5; i++) {
        doorbell_arm(&s, 0);
        doorbell_ring_all(&s);
    }
    doorbell_drain(fd0);
    CHECK(doorbell_count(fd0, 0) == 0, "drain left datagrams");

    /* a slot whose socket is gone: ECONNREFUSED ignored, no crash */
    close(fd1);
    w1->state = SHM_WORKER_RUNNING;
    doorbell_arm(&s, 1);
    doorbell_ring_all(&s);
    close(fd0);
    shm_destroy(&s);
}

static void test_stats(void)
{
    const char *name = test_name("stats");
    struct shm s;
    struct stats_snapshot snap;

    CHECK(strcmp(stats_close_reason_name(SHM_CLOSE_SLOW_CONSUMER), "slow_consumer") == 0, "x");
    CHECK(strcmp(stats_close_reason_name(SHM_CLOSE_WORKER_DIED), "worker_died") == 0, "x");
    CHECK(strcmp(stats_close_reason_name(SHM_CLOSE_PROTOCOL), "protocol_error") == 0, "x");
    CHECK(strcmp(stats_reject_reason_name(SHM_REJECT_TABLE_FULL), "table_full") == 0, "x");
    CHECK(strcmp(stats_reject_reason_name(SHM_REJECT_DRAINING), "draining") == 0, "x");
    CHECK(strcmp(stats_worker_state_name(SHM_WORKER_DRAINING), "draining") == 0, "x");
    CHECK(strcmp(stats_close_reason_name(SHM_CLOSE_REASON_COUNT), "unknown") == 0, "x");
    for (int i = 0; i < SHM_CLOSE_REASON_COUNT; i++)
        CHECK(stats_close_reason_name(i) != NULL, "close reason %d has no name", i);
    for (int i = 0; i < SHM_REJECT_REASON_COUNT; i++)
        CHECK(stats_reject_reason_name(i) != NULL, "reject reason %d has no name", i);

    test_create(&s, name, 4, RING_SZ, MAXPAY);
    struct shm_worker_stats *st = &shm_worker(&s, 2)->stats;
    stats_latency_add(st, 0, 1);
    stats_latency_add(st, 1, 1);
    stats_latency_add(st, 3, 2);
    stats_latency_add(st, 1024, 1);
    stats_latency_add(st, UINT64_MAX, 5);
    CHECK(st->latency_us[0] == 2 && st->latency_us[1] == 2 && st->latency_us[10] == 1 &&
              st->latency_us[31] == 5,
          "buckets %llu %llu %llu %llu", (unsigned long long)st->latency_us[0],
          (unsigned long long)st->latency_us[1], (unsigned long long)st->latency_us[10],
          (unsigned long long)st->latency_us[31]);
    stats_add(&st->messages_out, 10);
    stats_add(&shm_worker(&s, 5)->stats.messages_out, 5);
    shm_worker(&s, 2)->stats.last_seq = 40;
    shm_worker(&s, 5)->stats.last_seq = 42;
    shm_worker(&s, 5)->stats.connections = 3;
    stats_sum(&s, &snap);
    CHECK(snap.messages_out == 15 && snap.last_seq == 42 && snap.connections == 3 &&
              snap.latency_us[31] == 5,
          "sum");
    shm_destroy(&s);
}

int main(void)
{
    test_init(60);
    test_names_validation();
    test_params_validation();
    test_create_attach_destroy();
    test_layout_mismatch();
    test_stale_and_live();
    test_garbage_replaced();
    test_hub_alive();
    test_doorbell();
    test_stats();
    return test_report("shm_test");
}
