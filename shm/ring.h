/* ring.h -- the broadcast ring: many producers, every worker reads every entry.
 *
 * Producers (admin-cgi processes, the hub's Redis bridge) append under the ring's robust
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

/* A channel name's bytes: letters, digits, '.', '_', '-' and ':' (never '@', which marks a
 * user's own channel, nor ',', which separates names in lists). */
static inline int ring_channel_char_ok(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-' || c == ':';
}

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
    uint64_t stream_ms;                     /* cluster stream id (RING_F_STREAM_ID), else 0 */
    uint64_t stream_seq;
};

/* One message to append (ring_publish_ex). */
struct ring_pub {
    const void *payload;
    uint32_t len;
    const char *channel; /* NULL or "" = all */
    uint16_t flags;      /* RING_F_* */
    uint64_t stream_ms;  /* with RING_F_STREAM_ID: the record's id in the cluster stream */
    uint64_t stream_seq;
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

/* The same with a stream id, reporting the flags the record got: RING_F_OUTBOX is dropped when
 * the bridge is not CLOSED at the moment of the append (decided under the ring lock). */
int ring_publish_ex(struct shm *s, const struct ring_pub *p, uint64_t *seq_out,
                    uint16_t *flags_out);

/* The bridge changes hdr->bridge.state under the ring lock, so that every publish falls wholly
 * before or after the change, and with the lock still held calls fn(s, arg) (if not NULL), which
 * may read the ring and append with ring_publish_locked(): what it appends comes before any
 * publish that sees the new state. Returns 0, or -1 with errno from the lock. */
typedef void (*ring_locked_fn)(struct shm *s, void *arg);
int ring_bridge_state_set(struct shm *s, uint32_t state, ring_locked_fn fn, void *arg);

/* ring_publish_ex() for a caller that holds the ring lock (inside a ring_locked_fn). */
int ring_publish_locked(struct shm *s, const struct ring_pub *p, uint64_t *seq_out);

/* Puts a new cursor at the current tail: it will see only messages published from now on. */
void ring_cursor_at_tail(const struct shm *s, struct ring_cursor *c);

/* Reads the next message for delivery into buf (capacity bufcap, must be >= max_payload).
 * OUTBOX and HISTORY records (not for live delivery, see shm_layout.h) are skipped. */
enum ring_status ring_read(const struct shm *s, struct ring_cursor *c, struct ring_msg *m,
                           void *buf, size_t bufcap);

/* The same, skipping without copying every message with any of skip_flags (0: none). */
enum ring_status ring_read_mask(const struct shm *s, struct ring_cursor *c, struct ring_msg *m,
                                void *buf, size_t bufcap, uint16_t skip_flags);

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
