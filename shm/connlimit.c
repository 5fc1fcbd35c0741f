/* connlimit.c -- the shared table of connections per client address and per user.
 *
 * Workers run it in CONFIRM_UPGRADE (acquire: check every limit, then count, all under the lock,
 * so two workers racing for the last place cannot both win) and when a connection ends
 * (release). The table is open addressing with linear probing (struct shm_limit_entry,
 * shm_layout.h); a deletion shifts the rest of its run back instead of leaving tombstones, so
 * the table never needs a rebuild in normal operation.
 *
 * An entry is (key, worker pid, worker slot, count): one worker process's connections for one
 * key. A key's total is the sum of its live entries, where live means the hub still records that
 * pid in that slot. So a worker killed with SIGKILL, or one cut at a drain deadline that _exit()s
 * without releasing, stops counting the moment the hub reaps it, with nobody walking rows; its
 * entries are deleted by the next probe that passes over them (stale_removed).
 *
 * Crash safety: a process killed inside the lock leaves EOWNERDEAD. The only multi-step change is
 * the backward shift of a deletion, which can leave one entry duplicated; the repair rebuilds the
 * table from its own contents, dropping exact duplicates (a torn 16-byte entry cannot be told
 * apart and may miscount one key until its connections end: accepted, the window is a store).
 *
 * Keys: SipHash-2-4 (common/siphash.c) of a kind byte and the data, keyed with 128 random bits
 * made with the segment, so a client cannot choose addresses or user ids that collide in the
 * table.
 */
#include "connlimit.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "log.h"
#include "siphash.h"

#define CONNLIMIT_MIN_CAPACITY 1024u
#define CONNLIMIT_MAX_LOAD_NUM 3 /* refuse new entries beyond 3/4 full */
#define CONNLIMIT_MAX_LOAD_DEN 4

/* ---- sizing and set-up ---- */

uint32_t connlimit_capacity_for(uint32_t conn_capacity)
{
    uint64_t want = (uint64_t)conn_capacity * 4;
    uint64_t cap = CONNLIMIT_MIN_CAPACITY;
    while (cap < want)
        cap <<= 1;
    return cap > (1u << 31) ? (1u << 31) : (uint32_t)cap;
}

uint64_t connlimit_region_size(uint32_t capacity)
{
    return (uint64_t)capacity * sizeof(struct shm_limit_entry);
}

int connlimit_init(struct shm *s, uint32_t capacity)
{
    struct shm_limits_ctl *lc = &s->hdr->limits;
    int rc = shm_mutex_init(&lc->lock);
    if (rc != 0)
        return rc;
    if (getrandom(lc->hash_key, sizeof(lc->hash_key), 0) != (ssize_t)sizeof(lc->hash_key))
        return errno != 0 ? errno : EIO;
    lc->capacity = capacity;
    lc->used = 0;
    return 0;
}

uint64_t connlimit_key(const struct shm *s, unsigned kind, const void *data, size_t len)
{
    uint8_t buf[1 + 256];
    if (len > sizeof(buf) - 1)
        len = sizeof(buf) - 1; /* callers pass addresses and row user ids, far shorter */
    buf[0] = (uint8_t)kind;
    memcpy(buf + 1, data, len);
    uint64_t k = siphash24(s->hdr->limits.hash_key, buf, len + 1);
    return k != 0 ? k : 1;
}

/* ---- the table, under the lock ---- */

static struct shm_limit_entry *connlimit_table(const struct shm *s)
{
    return (struct shm_limit_entry *)((char *)s->hdr + s->hdr->off_limits);
}

static uint32_t connlimit_mask(const struct shm *s)
{
    return s->hdr->limits.capacity - 1;
}

static int entry_is_mine(const struct shm_limit_entry *e, const struct connlimit_holder *h)
{
    return e->pid == h->pid && e->slot == h->slot;
}

static int entry_is_live(const struct shm *s, const struct shm_limit_entry *e,
                         const struct connlimit_holder *h)
{
    if (h != NULL && entry_is_mine(e, h))
        return 1;
    const struct shm_worker *w = shm_worker(s, e->slot);
    return w != NULL && e->pid > 0 && atomic_load_explicit(&w->pid, memory_order_relaxed) == e->pid;
}

/* Empties entry i and shifts the rest of its probe run back over the hole. */
static void connlimit_delete_locked(struct shm *s, uint32_t i)
{
    struct shm_limit_entry *t = connlimit_table(s);
    uint32_t mask = connlimit_mask(s), j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (t[j].key == 0)
            break;
        uint32_t home = (uint32_t)t[j].key & mask;
        /* t[j] may fill the hole at i unless its home lies cyclically in (i, j] */
        int stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (!stays) {
            t[i] = t[j];
            i = j;
        }
    }
    memset(&t[i], 0, sizeof(t[i]));
    s->hdr->limits.used--;
}

struct connlimit_probe {
    uint32_t total; /* live connections counted for the key */
    uint32_t mine;  /* index of the holder's entry, or UINT32_MAX */
    uint32_t empty; /* first empty index after the run, or UINT32_MAX when none */
};

/* Walks the key's run: sums live entries, finds the holder's, removes dead ones. */
static void connlimit_probe_locked(struct shm *s, uint64_t key, const struct connlimit_holder *h,
                                   struct connlimit_probe *p)
{
    struct shm_limit_entry *t = connlimit_table(s);
    uint32_t mask = connlimit_mask(s), i = (uint32_t)key & mask;
    p->total = 0;
    p->mine = p->empty = UINT32_MAX;
    for (uint32_t steps = 0; steps <= mask; steps++) {
        struct shm_limit_entry *e = &t[i];
        if (e->key == 0) {
            p->empty = i;
            return;
        }
        if (!entry_is_live(s, e, h)) {
            connlimit_delete_locked(s, i); /* i now holds the next entry of the run, or nothing */
            atomic_fetch_add_explicit(&s->hdr->limits.stale_removed, 1, memory_order_relaxed);
            continue;
        }
        if (e->key == key) {
            p->total += e->count;
            if (h != NULL && entry_is_mine(e, h))
                p->mine = i;
        }
        i = (i + 1) & mask;
    }
}

/* Adds one to the holder's entry for key (creating it). Returns 0, or -1 when the table is
 * full. */
static int connlimit_add_locked(struct shm *s, uint64_t key, const struct connlimit_holder *h)
{
    struct shm_limits_ctl *lc = &s->hdr->limits;
    struct connlimit_probe p;
    connlimit_probe_locked(s, key, h, &p);
    if (p.mine != UINT32_MAX) {
        connlimit_table(s)[p.mine].count++;
        return 0;
    }
    if (p.empty == UINT32_MAX || (uint64_t)(lc->used + 1) * CONNLIMIT_MAX_LOAD_DEN >
                                     (uint64_t)lc->capacity * CONNLIMIT_MAX_LOAD_NUM)
        return -1;
    struct shm_limit_entry *e = &connlimit_table(s)[p.empty];
    e->pid = h->pid;
    e->slot = (uint16_t)h->slot;
    e->count = 1;
    e->key = key;
    lc->used++;
    return 0;
}

static void connlimit_sub_locked(struct shm *s, uint64_t key, const struct connlimit_holder *h)
{
    struct connlimit_probe p;
    connlimit_probe_locked(s, key, h, &p);
    if (p.mine == UINT32_MAX)
        return; /* not counted (the table was rebuilt after a crash, or the limit came later) */
    struct shm_limit_entry *e = &connlimit_table(s)[p.mine];
    if (--e->count == 0)
        connlimit_delete_locked(s, p.mine);
}

/* EOWNERDEAD: reinserts every entry, dropping exact duplicates an interrupted shift left. */
static void connlimit_rebuild_locked(struct shm *s)
{
    struct shm_limits_ctl *lc = &s->hdr->limits;
    struct shm_limit_entry *t = connlimit_table(s);
    uint32_t n = 0, cap = lc->capacity, mask = cap - 1;
    struct shm_limit_entry *copy = malloc((size_t)cap * sizeof(*copy));
    atomic_fetch_add_explicit(&lc->lock_recoveries, 1, memory_order_relaxed);
    if (copy == NULL) {
        log_error(errno, "limits table: malloc() failed during repair; counts reset");
        memset(t, 0, (size_t)cap * sizeof(*t));
        lc->used = 0;
        return;
    }
    for (uint32_t i = 0; i < cap; i++)
        if (t[i].key != 0)
            copy[n++] = t[i];
    memset(t, 0, (size_t)cap * sizeof(*t));
    lc->used = 0;
    for (uint32_t k = 0; k < n; k++) {
        uint32_t i = (uint32_t)copy[k].key & mask;
        while (t[i].key != 0 && memcmp(&t[i], &copy[k], sizeof(t[i])) != 0)
            i = (i + 1) & mask;
        if (t[i].key == 0) {
            t[i] = copy[k];
            lc->used++;
        }
    }
    free(copy);
    log_warn(0, "limits table: a process died holding the lock; table rebuilt (%u entries)",
             lc->used);
}

static int connlimit_lock(struct shm *s)
{
    return shm_mutex_lock(s, &s->hdr->limits.lock, NULL, connlimit_rebuild_locked, "limits");
}

static void connlimit_unlock(struct shm *s)
{
    int rc = pthread_mutex_unlock(&s->hdr->limits.lock);
    if (rc != 0)
        log_error(rc, "pthread_mutex_unlock(limits) failed");
}

/* ---- API ---- */

static enum connlimit_verdict connlimit_check_locked(struct shm *s,
                                                     const struct connlimit_holder *h, uint64_t key,
                                                     uint32_t max, enum connlimit_verdict no)
{
    struct connlimit_probe p;
    if (key == 0)
        return CONNLIMIT_OK;
    connlimit_probe_locked(s, key, h, &p);
    if (p.total >= max || p.total >= CONNLIMIT_MAX_COUNT)
        return no;
    return CONNLIMIT_OK;
}

enum connlimit_verdict connlimit_acquire(struct shm *s, const struct connlimit_holder *h,
                                         uint64_t addr_key, uint32_t addr_max, uint64_t user_key,
                                         uint32_t user_max)
{
    enum connlimit_verdict v;
    if (addr_key == 0 && user_key == 0)
        return CONNLIMIT_OK;
    if (connlimit_lock(s) < 0) {
        log_error(errno, "limits table: lock failed");
        return CONNLIMIT_ERROR;
    }
    v = connlimit_check_locked(s, h, addr_key, addr_max, CONNLIMIT_ADDR_FULL);
    if (v == CONNLIMIT_OK)
        v = connlimit_check_locked(s, h, user_key, user_max, CONNLIMIT_USER_FULL);
    if (v == CONNLIMIT_OK && addr_key != 0 && connlimit_add_locked(s, addr_key, h) < 0)
        v = CONNLIMIT_TABLE_FULL;
    if (v == CONNLIMIT_OK && user_key != 0 && connlimit_add_locked(s, user_key, h) < 0) {
        if (addr_key != 0)
            connlimit_sub_locked(s, addr_key, h);
        v = CONNLIMIT_TABLE_FULL;
    }
    if (v == CONNLIMIT_TABLE_FULL)
        atomic_fetch_add_explicit(&s->hdr->limits.full, 1, memory_order_relaxed);
    connlimit_unlock(s);
    return v;
}

void connlimit_release(struct shm *s, const struct connlimit_holder *h, uint64_t addr_key,
                       uint64_t user_key)
{
    if (addr_key == 0 && user_key == 0)
        return;
    if (connlimit_lock(s) < 0) {
        log_error(errno, "limits table: lock failed; counts kept until this worker exits");
        return;
    }
    if (addr_key != 0)
        connlimit_sub_locked(s, addr_key, h);
    if (user_key != 0)
        connlimit_sub_locked(s, user_key, h);
    connlimit_unlock(s);
}

uint32_t connlimit_count(struct shm *s, uint64_t key)
{
    struct connlimit_probe p = {0};
    if (key == 0 || connlimit_lock(s) < 0)
        return 0;
    connlimit_probe_locked(s, key, NULL, &p);
    connlimit_unlock(s);
    return p.total;
}
