/* conntab_test.c -- the connection table: claims, frees, reclaim, torn-free reads, crash repair.
 *
 * Claim until full (ENOSPC) and back; identity fields and address formatting; reclaiming a dead
 * worker's rows (by generation and all of them) with the stats it must update; conntab_read
 * against a second process that claims and frees rows as fast as it can, with user and channel
 * derived from the conn_id so that any torn copy would be visible; and processes SIGKILLed while
 * holding the table lock at several points of a claim, after which no row may be lost.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdatomic.h>

#include "conntab.h"
#include "shm_testutil.h"

#define RING_SZ (64u * 1024)
#define MAXPAY  4096u

static void check_accounting(struct shm *s, const char *what)
{
    struct shm_conntab_ctl *ct = &s->hdr->conntab;
    uint32_t open_rows = 0;

    for (uint32_t i = 0; i < ct->capacity; i++)
        open_rows += shm_conn(s, i)->conn_id != 0;
    CHECK(conntab_in_use(s) + ct->free_top == ct->capacity && open_rows == conntab_in_use(s),
          "%s: in_use %u + free_top %u != capacity %u (rows with an id: %u)", what,
          conntab_in_use(s), ct->free_top, ct->capacity, open_rows);
}

static void test_claim_free(void)
{
    const char *name = test_name("claim");
    struct shm s;
    enum { CAP = 100 };
    uint32_t rows[CAP];
    uint64_t last_id = 0;
    char seen[CAP] = {0};
    struct shm_conn c;

    test_create(&s, name, CAP, RING_SZ, MAXPAY);
    for (int i = 0; i < CAP; i++) {
        rows[i] = conntab_claim(&s, 1, 7, NULL, "u");
        REQUIRE(rows[i] != CONNTAB_NONE, "claim %d: %s", i, strerror(errno));
        CHECK(rows[i] < CAP && !seen[rows[i]], "row %u handed out twice", rows[i]);
        seen[rows[i]] = 1;
        CHECK(conntab_read(&s, rows[i], &c) == 1 && c.conn_id > last_id, "ids not increasing");
        last_id = c.conn_id;
    }
    CHECK(rows[0] == 0 && rows[1] == 1, "table does not fill from the front");
    errno = 0;
    CHECK(conntab_claim(&s, 1, 7, NULL, NULL) == CONNTAB_NONE && errno == ENOSPC,
          "full table accepted a claim");
    CHECK(conntab_in_use(&s) == CAP, "in_use %u", conntab_in_use(&s));
    check_accounting(&s, "full");

    CHECK(conntab_free(&s, rows[42]) == 0, "free");
    CHECK(conntab_read(&s, rows[42], &c) == 0, "freed row still readable");
    CHECK(shm_conn(&s, rows[42])->state == SHM_CONN_FREE, "state not FREE");
    errno = 0;
    CHECK(conntab_free(&s, rows[42]) == -1 && errno == EINVAL, "double free accepted");
    errno = 0;
    CHECK(conntab_free(&s, CAP) == -1 && errno == EINVAL, "out-of-range free accepted");
    uint32_t again = conntab_claim(&s, 2, 8, NULL, NULL);
    CHECK(again == rows[42], "stack did not return the freed row (%u)", again);
    CHECK(conntab_read(&s, again, &c) == 1 && c.conn_id > last_id && c.worker == 2,
          "re-claimed row id %llu not fresh", (unsigned long long)c.conn_id);
    errno = 0;
    CHECK(conntab_claim(&s, SHM_MAX_WORKERS, 1, NULL, NULL) == CONNTAB_NONE && errno == EINVAL,
          "worker slot out of range accepted");
    for (int i = 0; i < CAP; i++)
        CHECK(conntab_free(&s, i == 42 ? again : rows[i]) == 0, "free %d", i);
    CHECK(conntab_in_use(&s) == 0, "in_use %u after freeing all", conntab_in_use(&s));
    check_accounting(&s, "empty");
    shm_destroy(&s);
}

static void test_identity(void)
{
    const char *name = test_name("ident");
    struct shm s;
    struct shm_conn c;
    struct sockaddr_in v4 = {.sin_family = AF_INET, .sin_port = htons(5678)};
    struct sockaddr_in6 v6 = {.sin6_family = AF_INET6, .sin6_port = htons(443)};
    struct sockaddr_in6 mapped = {.sin6_family = AF_INET6, .sin6_port = htons(80)};
    char buf[64], longuser[100];

    inet_pton(AF_INET, "192.0.2.17", &v4.sin_addr);
    inet_pton(AF_INET6, "2001:db8::1", &v6.sin6_addr);
    inet_pton(AF_INET6, "::ffff:198.51.100.7", &mapped.sin6_addr);
    memset(longuser, 'u', sizeof(longuser) - 1);
    longuser[sizeof(longuser) - 1] = '\0';

    test_create(&s, name, 8, RING_SZ, MAXPAY);
    uint64_t before = shm_now_ms();
    uint32_t a = conntab_claim(&s, 3, 9, (struct sockaddr *)&v4, "alice");
    uint32_t b = conntab_claim(&s, 4, 10, (struct sockaddr *)&v6, longuser);
    uint32_t m = conntab_claim(&s, 4, 10, (struct sockaddr *)&mapped, NULL);
    uint32_t n = conntab_claim(&s, 4, 10, NULL, "");
    REQUIRE(a != CONNTAB_NONE && b != CONNTAB_NONE && m != CONNTAB_NONE && n != CONNTAB_NONE,
            "claims");

    REQUIRE(conntab_read(&s, a, &c) == 1, "read a");
    CHECK(c.worker == 3 && c.worker_generation == 9 && c.state == SHM_CONN_OPEN, "a identity");
    CHECK(strcmp(c.user, "alice") == 0 && c.nchan == 0, "a strings");
    CHECK(c.connected_at_ms >= before && c.last_seen_ms == c.connected_at_ms, "a times");
    conntab_format_addr(&c, buf, sizeof(buf));
    CHECK(strcmp(buf, "192.0.2.17:5678") == 0, "a addr %s", buf);

    REQUIRE(conntab_read(&s, b, &c) == 1, "read b");
    CHECK(strlen(c.user) == sizeof(c.user) - 1, "b strings truncated");
    conntab_format_addr(&c, buf, sizeof(buf));
    CHECK(strcmp(buf, "[2001:db8::1]:443") == 0, "b addr %s", buf);

    REQUIRE(conntab_read(&s, m, &c) == 1, "read m");
    conntab_format_addr(&c, buf, sizeof(buf));
    CHECK(c.addr_family == AF_INET && strcmp(buf, "198.51.100.7:80") == 0, "mapped addr %s", buf);
    REQUIRE(conntab_read(&s, n, &c) == 1, "read n");
    conntab_format_addr(&c, buf, sizeof(buf));
    CHECK(c.addr_family == AF_UNSPEC && strcmp(buf, "-") == 0, "no addr %s", buf);

    conntab_note_out(&s, a, 3, 300);
    conntab_note_out(&s, a, 1, 50);
    conntab_note_in(&s, a, 12, before + 99999);
    REQUIRE(conntab_read(&s, a, &c) == 1, "read a");
    CHECK(c.messages_out == 4 && c.bytes_out == 350 && c.messages_in == 1 && c.bytes_in == 12 &&
              c.last_seen_ms == before + 99999,
          "row counters");
    /* a re-claimed row starts from zero */
    conntab_free(&s, a);
    uint32_t a2 = conntab_claim(&s, 3, 9, NULL, "bob");
    REQUIRE(a2 == a && conntab_read(&s, a2, &c) == 1, "reclaim a");
    CHECK(c.messages_out == 0 && c.bytes_out == 0 && strcmp(c.user, "bob") == 0 &&
              c.addr_family == AF_UNSPEC,
          "stale fields survived a re-claim");
    shm_destroy(&s);
}

static void test_reclaim_worker(void)
{
    const char *name = test_name("reclaim");
    struct shm s;

    test_create(&s, name, 32, RING_SZ, MAXPAY);
    struct shm_worker *w1 = shm_worker(&s, 1);
    for (int i = 0; i < 5; i++)
        conntab_claim(&s, 1, 1, NULL, NULL); /* old generation of slot 1 */
    for (int i = 0; i < 3; i++)
        conntab_claim(&s, 1, 2, NULL, NULL); /* current generation */
    for (int i = 0; i < 4; i++)
        conntab_claim(&s, 2, 1, NULL, NULL); /* another slot */
    w1->stats.connections = 8;
    CHECK(conntab_in_use(&s) == 12, "setup");

    CHECK(conntab_reclaim_worker(&s, 1, 2) == 5, "generation < 2 of slot 1");
    CHECK(conntab_in_use(&s) == 7 && s.hdr->conntab.reclaimed == 5, "after first reclaim");
    CHECK(w1->stats.closed[SHM_CLOSE_WORKER_DIED] == 5, "closed[worker_died]");
    CHECK(w1->stats.connections == 8, "gauge reset although the current worker lives");
    CHECK(conntab_reclaim_worker(&s, 1, 0) == 3, "all of slot 1");
    CHECK(w1->stats.connections == 0 && w1->stats.closed[SHM_CLOSE_WORKER_DIED] == 8, "stats");
    CHECK(conntab_reclaim_worker(&s, 1, 0) == 0, "nothing left");
    CHECK(conntab_reclaim_worker(&s, SHM_MAX_WORKERS, 0) == 0, "bad slot");
    CHECK(conntab_in_use(&s) == 4 && s.hdr->conntab.reclaimed == 8, "slot 2 untouched");
    for (uint32_t i = 0; i < 32; i++) {
        struct shm_conn c;
        if (conntab_read(&s, i, &c))
            CHECK(c.worker == 2, "row %u of worker %u survived", i, c.worker);
    }
    check_accounting(&s, "after reclaim");
    shm_destroy(&s);
}

/* A kick reaches only the connection it names: never a row reused by another connection. */
static void test_kick(void)
{
    const char *name = test_name("kick");
    struct shm s;
    struct shm_conn c;

    test_create(&s, name, 8, RING_SZ, MAXPAY);
    uint32_t row = conntab_claim(&s, 3, 1, NULL, "alice");
    REQUIRE(row != CONNTAB_NONE && conntab_read(&s, row, &c) == 1, "claim");
    uint64_t id = c.conn_id;
    CHECK(conntab_find(&s, id) == row && conntab_find(&s, id + 1) == CONNTAB_NONE &&
              conntab_find(&s, 0) == CONNTAB_NONE,
          "find");
    CHECK(conntab_kick(&s, row, id, 4001) == 3, "kick returns the owner");
    CHECK(conntab_read(&s, row, &c) == 1 && c.kick_code == 4001, "kick_code %u", c.kick_code);
    CHECK(shm_worker(&s, 3)->kicks_pending == 1, "kicks_pending");

    CHECK(conntab_free(&s, row) == 0, "free");
    errno = 0;
    CHECK(conntab_kick(&s, row, id, 1008) == -1 && errno == ESRCH, "kick of a freed row");
    uint32_t again = conntab_claim(&s, 4, 1, NULL, "bob");
    CHECK(again == row, "the row is reused (LIFO free stack)");
    CHECK(conntab_read(&s, again, &c) == 1 && c.kick_code == 0, "claim kept an old kick_code");
    errno = 0;
    CHECK(conntab_kick(&s, again, id, 1008) == -1 && errno == ESRCH, "old id kicked the new row");
    CHECK(conntab_read(&s, again, &c) == 1 && c.kick_code == 0, "new connection was kicked");
    CHECK(shm_worker(&s, 4)->kicks_pending == 0 && shm_worker(&s, 3)->kicks_pending == 1,
          "kicks_pending moved");
    CHECK(conntab_kick(&s, 99, id, 1008) == -1 && errno == EINVAL, "bad row");
    shm_destroy(&s);
}

/* ---- concurrent reads ---- */

static void pattern_for(uint64_t id, char *user, size_t ul, char *chan, size_t cl)
{
    snprintf(user, ul, "user-%llu-%llx", (unsigned long long)id, (unsigned long long)(id * 77));
    snprintf(chan, cl, "chan-%llu-%llu", (unsigned long long)(id * 3), (unsigned long long)id);
}

/* Child: claims and frees rows as fast as it can, predicting each conn_id (sole claimer). */
static void churn(const char *name, _Atomic int *stop, _Atomic uint64_t *churned)
{
    struct shm s;
    char err[256], user[48], chan[56];
    uint32_t held[4] = {CONNTAB_NONE, CONNTAB_NONE, CONNTAB_NONE, CONNTAB_NONE};
    uint64_t n = 0;

    if (shm_attach(&s, name, err, sizeof(err)) < 0)
        _exit(1);
    while (!atomic_load(stop)) {
        int k = (int)(n % 4);
        if (held[k] != CONNTAB_NONE && conntab_free(&s, held[k]) < 0)
            _exit(2);
        uint64_t id = s.hdr->conntab.next_conn_id;
        pattern_for(id, user, sizeof(user), chan, sizeof(chan));
        held[k] = conntab_claim(&s, (unsigned)(id % SHM_MAX_WORKERS), (uint32_t)id, NULL, user);
        if (held[k] == CONNTAB_NONE || shm_conn(&s, held[k])->conn_id != id)
            _exit(3);
        atomic_store(churned, ++n);
    }
    _exit(0);
}

static void test_concurrent_read(void)
{
    const char *name = test_name("seqlock");
    struct shm s;
    _Atomic int *shared = test_shared_alloc(4096);
    _Atomic uint64_t *churned = (_Atomic uint64_t *)(shared + 16);
    uint64_t good = 0, torn = 0, misses = 0;
    char user[48], chan[56];

    test_create(&s, name, 4, RING_SZ, MAXPAY);
    pid_t pid = test_fork();
    if (pid == 0)
        churn(name, &shared[0], churned);
    uint64_t deadline = test_now_ms() + 1500;
    while (test_now_ms() < deadline && atomic_load(churned) < 2000000) {
        for (uint32_t i = 0; i < 4; i++) {
            struct shm_conn c;
            if (!conntab_read(&s, i, &c)) {
                misses++;
                continue;
            }
            pattern_for(c.conn_id, user, sizeof(user), chan, sizeof(chan));
            if (strcmp(c.user, user) || c.worker_generation != (uint32_t)c.conn_id ||
                c.worker != c.conn_id % SHM_MAX_WORKERS || c.state != SHM_CONN_OPEN)
                torn++;
            else
                good++;
        }
    }
    atomic_store(&shared[0], 1);
    int st = test_wait(pid, 5000);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "churner failed (status %d)", st);
    printf("  conntab_read under churn: %llu consistent copies, %llu rejected, %llu torn; %llu "
           "claims by the churner\n",
           (unsigned long long)good, (unsigned long long)misses, (unsigned long long)torn,
           (unsigned long long)atomic_load(churned));
    CHECK(torn == 0, "%llu torn copies accepted", (unsigned long long)torn);
    CHECK(good > 1000 && atomic_load(churned) > 1000, "too little concurrency to mean anything");
    check_accounting(&s, "after churn");
    munmap((void *)shared, 4096);
    shm_destroy(&s);
}

/* ---- crash while holding the lock ---- */

enum crash_point {
    DIE_LOCKED,    /* lock taken, nothing changed */
    DIE_POPPED,    /* row popped off the stack, conn_id still 0 */
    DIE_PUBLISHED, /* conn_id published, in_use not yet incremented */
    DIE_FREEING    /* conn_id cleared, row not yet pushed back */
};

static void child_die_in_lock(const char *name, enum crash_point where, uint32_t victim)
{
    struct shm s;
    char err[256];
    if (shm_attach(&s, name, err, sizeof(err)) < 0)
        _exit(1);
    struct shm_conntab_ctl *ct = &s.hdr->conntab;
    if (pthread_mutex_lock(&ct->lock) != 0)
        _exit(1);
    if (where == DIE_POPPED || where == DIE_PUBLISHED) {
        uint32_t idx = shm_conn_free_stack(&s)[--ct->free_top];
        struct shm_conn *c = shm_conn(&s, idx);
        c->worker = 5;
        atomic_store(&c->state, SHM_CONN_OPEN);
        if (where == DIE_PUBLISHED)
            atomic_store(&c->conn_id, atomic_fetch_add(&ct->next_conn_id, 1));
    } else if (where == DIE_FREEING) {
        atomic_store(&shm_conn(&s, victim)->conn_id, 0);
    }
    raise(SIGKILL);
    _exit(1);
}

static void test_crash_in_lock(enum crash_point where, const char *tag)
{
    const char *name = test_name(tag);
    struct shm s;
    enum { CAP = 16 };

    test_create(&s, name, CAP, RING_SZ, MAXPAY);
    uint32_t victim = CONNTAB_NONE;
    for (int i = 0; i < 5; i++)
        victim = conntab_claim(&s, 1, 1, NULL, NULL);
    pid_t pid = test_fork();
    if (pid == 0)
        child_die_in_lock(name, where, victim);
    int st = test_wait(pid, 5000);
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "%s: child did not die by SIGKILL", tag);

    uint32_t r = conntab_claim(&s, 2, 1, NULL, NULL);
    CHECK(r != CONNTAB_NONE, "%s: claim after crash failed: %s", tag, strerror(errno));
    CHECK(s.hdr->conntab.lock_recoveries == 1, "%s: lock_recoveries %llu", tag,
          (unsigned long long)s.hdr->conntab.lock_recoveries);
    check_accounting(&s, tag);

    /* Exactly the rows that have an id are in use; everything else can be claimed. */
    uint32_t want_in_use = 6 + (where == DIE_PUBLISHED) - (where == DIE_FREEING);
    CHECK(conntab_in_use(&s) == want_in_use, "%s: in_use %u, want %u", tag, conntab_in_use(&s),
          want_in_use);
    uint32_t more = 0;
    while (conntab_claim(&s, 3, 1, NULL, NULL) != CONNTAB_NONE)
        more++;
    CHECK(more == CAP - want_in_use, "%s: only %u more rows claimable, want %u", tag, more,
          CAP - want_in_use);
    if (where == DIE_PUBLISHED)
        CHECK(conntab_reclaim_worker(&s, 5, 0) == 1, "%s: dead claimer's row not reclaimable", tag);
    check_accounting(&s, tag);
    shm_destroy(&s);
}

int main(void)
{
    test_init(60);
    test_claim_free();
    test_identity();
    test_reclaim_worker();
    test_kick();
    test_concurrent_read();
    test_crash_in_lock(DIE_LOCKED, "die-locked");
    test_crash_in_lock(DIE_POPPED, "die-popped");
    test_crash_in_lock(DIE_PUBLISHED, "die-published");
    test_crash_in_lock(DIE_FREEING, "die-freeing");
    return test_report("conntab_test");
}
