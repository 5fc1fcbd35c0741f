/* connlimit_test.c -- the shared limits table: counts across holders, dead holders, churn, crashes.
 *
 * Per-address and per-user limits with two holders (worker slots) sharing one count; all or
 * nothing when the second limit refuses; a holder whose slot no longer records its pid stops
 * counting at once and its entries are removed by the next probe; random acquire/release churn
 * over many colliding keys checked step by step against a plain model (exercises the backward
 * shift of deletions across runs and the wrap-around); a process SIGKILLed while holding the lock
 * (the next locker repairs, nothing is lost) and the repair dropping an exact duplicate entry that
 * an interrupted shift would leave.
 */
#include <stdatomic.h>

#include "connlimit.h"
#include "shm_testutil.h"

#define RING_SZ (64u * 1024)
#define MAXPAY  4096u

static struct connlimit_holder holder(struct shm *s, unsigned slot, int32_t pid)
{
    atomic_store(&shm_worker(s, slot)->pid, pid);
    struct connlimit_holder h = {slot, pid};
    return h;
}

static uint32_t live_entries(struct shm *s)
{
    const struct shm_limit_entry *t =
        (const struct shm_limit_entry *)((const char *)s->hdr + s->hdr->off_limits);
    uint32_t n = 0;
    for (uint32_t i = 0; i < s->hdr->limits.capacity; i++)
        n += t[i].key != 0;
    return n;
}

static void test_keys(void)
{
    struct shm a, b;
    uint8_t ip[4] = {10, 0, 0, 1};
    test_create(&a, test_name("keysa"), 10, RING_SZ, MAXPAY);
    test_create(&b, test_name("keysb"), 10, RING_SZ, MAXPAY);
    uint64_t k1 = connlimit_key(&a, CONNLIMIT_KIND_ADDR, ip, 4);
    CHECK(k1 != 0 && k1 == connlimit_key(&a, CONNLIMIT_KIND_ADDR, ip, 4), "key not stable");
    CHECK(k1 != connlimit_key(&a, CONNLIMIT_KIND_USER, ip, 4), "kinds share a key");
    CHECK(k1 != connlimit_key(&b, CONNLIMIT_KIND_ADDR, ip, 4), "two segments share the hash key");
    CHECK(a.hdr->limits.capacity == 1024 && connlimit_capacity_for(1000) == 4096,
          "capacity %u / %u", a.hdr->limits.capacity, connlimit_capacity_for(1000));
    shm_destroy(&a);
    shm_destroy(&b);
}

static void test_two_holders(void)
{
    struct shm s;
    test_create(&s, test_name("two"), 100, RING_SZ, MAXPAY);
    struct connlimit_holder ha = holder(&s, 0, getpid()), hb = holder(&s, 1, 999999);
    uint64_t ip = connlimit_key(&s, CONNLIMIT_KIND_ADDR, "\x0a\0\0\x01", 4);
    uint64_t user = connlimit_key(&s, CONNLIMIT_KIND_USER, "alice", 5);

    CHECK(connlimit_acquire(&s, &ha, ip, 3, user, 2) == CONNLIMIT_OK, "a1");
    CHECK(connlimit_acquire(&s, &hb, ip, 3, user, 2) == CONNLIMIT_OK, "b1");
    CHECK(connlimit_count(&s, ip) == 2 && connlimit_count(&s, user) == 2, "counts %u %u",
          connlimit_count(&s, ip), connlimit_count(&s, user));
    /* the user is full: nothing is taken, not even the address count */
    CHECK(connlimit_acquire(&s, &ha, ip, 3, user, 2) == CONNLIMIT_USER_FULL, "user limit");
    CHECK(connlimit_count(&s, ip) == 2, "address counted although refused: %u",
          connlimit_count(&s, ip));
    CHECK(connlimit_acquire(&s, &hb, ip, 3, 0, 0) == CONNLIMIT_OK, "address only");
    CHECK(connlimit_acquire(&s, &ha, ip, 3, 0, 0) == CONNLIMIT_ADDR_FULL, "address limit");
    connlimit_release(&s, &hb, ip, 0);
    CHECK(connlimit_acquire(&s, &ha, ip, 3, 0, 0) == CONNLIMIT_OK,
          "place freed by the other holder");
    connlimit_release(&s, &ha, ip, 0);
    connlimit_release(&s, &ha, ip, user);
    connlimit_release(&s, &hb, ip, user);
    CHECK(connlimit_count(&s, ip) == 0 && connlimit_count(&s, user) == 0 && live_entries(&s) == 0,
          "left: %u %u entries %u", connlimit_count(&s, ip), connlimit_count(&s, user),
          live_entries(&s));
    CHECK(s.hdr->limits.used == 0, "used %u", s.hdr->limits.used);
    connlimit_release(&s, &ha, ip, user); /* releasing what is not held changes nothing */
    CHECK(live_entries(&s) == 0, "release of nothing");
    shm_destroy(&s);
}

static void test_dead_holder(void)
{
    struct shm s;
    test_create(&s, test_name("dead"), 100, RING_SZ, MAXPAY);
    struct connlimit_holder ha = holder(&s, 0, getpid()), hb = holder(&s, 5, 424242);
    uint64_t ip = connlimit_key(&s, CONNLIMIT_KIND_ADDR, "\x0a\0\0\x02", 4);
    for (int i = 0; i < 4; i++)
        CHECK(connlimit_acquire(&s, &hb, ip, 4, 0, 0) == CONNLIMIT_OK, "b%d", i);
    CHECK(connlimit_acquire(&s, &ha, ip, 4, 0, 0) == CONNLIMIT_ADDR_FULL, "full");
    atomic_store(&shm_worker(&s, 5)->pid, 0); /* the hub reaped it: it never released */
    CHECK(connlimit_count(&s, ip) == 0, "dead holder still counted: %u", connlimit_count(&s, ip));
    CHECK(atomic_load(&s.hdr->limits.stale_removed) >= 1 && live_entries(&s) == 0,
          "stale entry not removed (%u entries)", live_entries(&s));
    CHECK(connlimit_acquire(&s, &ha, ip, 4, 0, 0) == CONNLIMIT_OK, "place after the dead holder");
    /* a respawned process in the same slot does not inherit its predecessor's counts */
    struct connlimit_holder hc = holder(&s, 6, 515151);
    CHECK(connlimit_acquire(&s, &hc, ip, 4, 0, 0) == CONNLIMIT_OK, "c");
    holder(&s, 6, 515152);
    CHECK(connlimit_count(&s, ip) == 1, "respawned slot inherited counts: %u",
          connlimit_count(&s, ip));
    shm_destroy(&s);
}

/* Many keys in a small table (1024 entries, collisions and wrap-around), random operations
 * by three holders, compared with a model after every step. */
static void test_churn(void)
{
    enum { KEYS = 200, HOLDERS = 3, STEPS = 40000 };
    static uint16_t model[HOLDERS][KEYS];
    struct shm s;
    test_create(&s, test_name("churn"), 100, RING_SZ, MAXPAY);
    struct connlimit_holder h[HOLDERS];
    uint64_t keys[KEYS];
    for (int i = 0; i < HOLDERS; i++)
        h[i] = holder(&s, (unsigned)i, i == 0 ? getpid() : 700000 + i);
    for (int k = 0; k < KEYS; k++)
        keys[k] = connlimit_key(&s, CONNLIMIT_KIND_USER, &k, sizeof(k));
    uint64_t rnd = 88172645463325252ULL;
    int bad = 0;
    for (int step = 0; step < STEPS && !bad; step++) {
        int k = (int)(test_xorshift(&rnd) % KEYS), who = (int)(test_xorshift(&rnd) % HOLDERS);
        unsigned total = 0;
        for (int i = 0; i < HOLDERS; i++)
            total += model[i][k];
        if (test_xorshift(&rnd) % 2 == 0) {
            enum connlimit_verdict v = connlimit_acquire(&s, &h[who], 0, 0, keys[k], 6);
            enum connlimit_verdict want = total >= 6 ? CONNLIMIT_USER_FULL : CONNLIMIT_OK;
            if (v != want) {
                CHECK(v == want, "step %d: verdict %d, want %d", step, v, want);
                bad = 1;
            }
            if (v == CONNLIMIT_OK)
                model[who][k]++;
        } else if (model[who][k] > 0) {
            connlimit_release(&s, &h[who], 0, keys[k]);
            model[who][k]--;
        }
        if (step % 97 == 0) {
            for (int j = 0; j < KEYS && !bad; j++) {
                unsigned want = 0;
                for (int i = 0; i < HOLDERS; i++)
                    want += model[i][j];
                if (connlimit_count(&s, keys[j]) != want) {
                    CHECK(0, "step %d key %d: count %u, model %u", step, j,
                          connlimit_count(&s, keys[j]), want);
                    bad = 1;
                }
            }
        }
    }
    CHECK(s.hdr->limits.used == live_entries(&s), "used %u, entries %u", s.hdr->limits.used,
          live_entries(&s));
    shm_destroy(&s);
}

/* A process dies holding the lock (after making a duplicate, as an interrupted shift would):
 * the next locker rebuilds the table and the counts are exact. */
static void test_crash_repair(void)
{
    struct shm s;
    test_create(&s, test_name("crash"), 100, RING_SZ, MAXPAY);
    struct connlimit_holder ha = holder(&s, 0, getpid());
    uint64_t keys[20];
    for (int k = 0; k < 20; k++) {
        keys[k] = connlimit_key(&s, CONNLIMIT_KIND_ADDR, &k, sizeof(k));
        for (int n = 0; n <= k % 3; n++)
            REQUIRE(connlimit_acquire(&s, &ha, keys[k], 10, 0, 0) == CONNLIMIT_OK, "setup");
    }
    uint32_t before = live_entries(&s);
    pid_t pid = test_fork();
    if (pid == 0) {
        pthread_mutex_lock(&s.hdr->limits.lock);
        struct shm_limit_entry *t = (struct shm_limit_entry *)((char *)s.hdr + s.hdr->off_limits);
        for (uint32_t i = 0; i < s.hdr->limits.capacity; i++) {
            if (t[i].key != 0) { /* copy it to the next free place: a half-done shift */
                uint32_t j = i;
                while (t[j].key != 0)
                    j = (j + 1) & (s.hdr->limits.capacity - 1);
                t[j] = t[i];
                break;
            }
        }
        raise(SIGKILL);
    }
    int status = test_wait(pid, 5000);
    CHECK(status != -1 && WIFSIGNALED(status), "child did not die as planned");
    CHECK(live_entries(&s) == before + 1, "no duplicate was planted");
    for (int k = 0; k < 20; k++)
        CHECK(connlimit_count(&s, keys[k]) == (uint32_t)(k % 3 + 1), "key %d: %u after repair", k,
              connlimit_count(&s, keys[k]));
    CHECK(atomic_load(&s.hdr->limits.lock_recoveries) == 1 && live_entries(&s) == before,
          "recoveries %llu, entries %u (want %u)",
          (unsigned long long)atomic_load(&s.hdr->limits.lock_recoveries), live_entries(&s),
          before);
    for (int k = 0; k < 20; k++)
        for (int n = 0; n <= k % 3; n++)
            connlimit_release(&s, &ha, keys[k], 0);
    CHECK(live_entries(&s) == 0 && s.hdr->limits.used == 0, "entries left after release: %u",
          live_entries(&s));
    shm_destroy(&s);
}

int main(void)
{
    test_init(60);
    test_keys();
    test_two_holders();
    test_dead_holder();
    test_churn();
    test_crash_repair();
    return test_report("connlimit_test");
}
