/* ring.h -- the broadcast ring: many producers, every worker reads every entry.
 *
 * Producers (admin-cgi processes, later the hub's Redis bridge) append under the ring's robust
 * mutex; the critical section is a bounds check and one memcpy, and a producer killed inside it
 * is repaired by the next one (see shm_layout.h). Producers never wait for consumers: the oldest
 * records are simply overwritten. Consumers keep a private cursor, copy a record out and then
 * validate that they were not lapped while copying, so they never act on torn data.
 *
 * Why a lock and not a hand-off to a single writer in the hub: the robust mutex gives the same
 * crash safety (EOWNERDEAD + pad repair) without a second copy, a context switch and a dependency
 * on the hub's loop for every broadcast; measured numbers are in docs/design.md.
 */
#ifndef WSHUB_RING_H
#define WSHUB_RING_H

#include <stddef.h>
#include <stdint.h>

#include "shm.h"

/* A consumer's private position. Not shared: each reader owns one. */
struct ring_cursor {
    uint64_t pos; /* byte position of the next record to read */
    uint64_t seq; /* sequence expected at pos (for gap accounting) */
};

/* What ring_read() found. */
struct ring_msg {
    uint64_t seq;
    uint64_t published_ns; /* CLOCK_MONOTONIC at append */
    uint32_t payload_len;  /* bytes copied to the caller's buffer */
    uint16_t flags;        /* RING_F_* */
    uint8_t channel_len;
    char channel[RING_MAX_CHANNEL_LEN + 1]; /* NUL-terminated */
};

enum ring_status {
    RING_OK = 0, /* a message was copied out and validated */
    RING_EMPTY,  /* cursor is at the published tail */
    RING_OVERRUN /* cursor was lapped; call ring_cursor_recover() */
};

/* Appends one message. channel may be NULL or "" for all. Returns 0 with *seq_out set, or -1 with
 * errno: EMSGSIZE (payload over max_payload), EINVAL (channel too long), or an error from the
 * lock. Does not wake workers: call doorbell_ring_all() afterwards. */
int ring_publish(struct shm *s, const void *payload, uint32_t len, const char *channel,
                 uint16_t flags, uint64_t *seq_out);

/* Puts a new cursor at the current tail: it will see only messages published from now on. */
void ring_cursor_at_tail(const struct shm *s, struct ring_cursor *c);

/* Reads the next message into buf (capacity bufcap, must be >= max_payload). */
enum ring_status ring_read(const struct shm *s, struct ring_cursor *c, struct ring_msg *m,
                           void *buf, size_t bufcap);

/* After RING_OVERRUN: moves the cursor to the oldest intact record and returns how many
 * sequence numbers were skipped. */
uint64_t ring_cursor_recover(const struct shm *s, struct ring_cursor *c);

/* Published tail sequence: the sequence the next record will get. */
uint64_t ring_next_seq(const struct shm *s);

/* Oldest sequence still intact in the ring (== ring_next_seq() when empty). */
uint64_t ring_oldest_seq(const struct shm *s);

/* Bytes between head and tail, for stats. */
uint64_t ring_used_bytes(const struct shm *s);

#endif /* WSHUB_RING_H */
