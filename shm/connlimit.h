/* connlimit.h -- connections per client address and per user, counted across every worker.
 *
 * Workers take one count on a client's address key and one on its user key before they upgrade
 * it (CONFIRM_UPGRADE) and give them back when the connection ends. The table lives in the
 * segment (struct shm_limits_ctl and the region at off_limits, shm_layout.h) so the limit holds
 * across workers; each entry belongs to one worker process, so a worker that dies or exits
 * without releasing simply stops counting (its entries are skipped and removed lazily): no hub
 * bookkeeping, no leak that would lock a user out. Every operation is O(1) expected under one
 * short robust lock, at connection rate.
 *
 * A key of 0 means "not counted" (that limit is off); keys come from connlimit_key().
 */
#ifndef WSHUB_CONNLIMIT_H
#define WSHUB_CONNLIMIT_H

#include <stddef.h>
#include <stdint.h>

#include "shm.h"

#define CONNLIMIT_KIND_ADDR 1 /* data: 4 (IPv4) or 16 (IPv6) address bytes */
#define CONNLIMIT_KIND_USER 2 /* data: the user id as stored in the connection row */
#define CONNLIMIT_MAX_COUNT 65535

/* The process that holds counts: a worker slot and the pid the hub recorded for it. */
struct connlimit_holder {
    unsigned slot;
    int32_t pid;
};

enum connlimit_verdict {
    CONNLIMIT_OK = 0,
    CONNLIMIT_ADDR_FULL,  /* the address is at its limit: nothing was taken */
    CONNLIMIT_USER_FULL,  /* the user is at its limit: nothing was taken */
    CONNLIMIT_TABLE_FULL, /* no free entry (cannot happen at 4 entries per connection row) */
    CONNLIMIT_ERROR       /* the lock failed (logged) */
};

/* Entries for a segment of conn_capacity rows: a power of two, at least 4 per row (each
 * connection holds at most two entries, so the load stays below one half). */
uint32_t connlimit_capacity_for(uint32_t conn_capacity);

/* Bytes of the region for `capacity` entries. */
uint64_t connlimit_region_size(uint32_t capacity);

/* Sets up the control block and the (zeroed) region of a segment being created. Returns 0 or an
 * errno value. */
int connlimit_init(struct shm *s, uint32_t capacity);

/* The table key of (kind, data): keyed SipHash-2-4, never 0. */
uint64_t connlimit_key(const struct shm *s, unsigned kind, const void *data, size_t len);

/* Takes one count on addr_key and one on user_key (a 0 key is skipped) if the address holds
 * fewer than addr_max and the user fewer than user_max connections across all workers; all or
 * nothing. */
enum connlimit_verdict connlimit_acquire(struct shm *s, const struct connlimit_holder *h,
                                         uint64_t addr_key, uint32_t addr_max, uint64_t user_key,
                                         uint32_t user_max);

/* Gives back what connlimit_acquire() took for the same keys. */
void connlimit_release(struct shm *s, const struct connlimit_holder *h, uint64_t addr_key,
                       uint64_t user_key);

/* Connections currently counted for `key` across live workers (for tests and the admin API). */
uint32_t connlimit_count(struct shm *s, uint64_t key);

#endif /* WSHUB_CONNLIMIT_H */
