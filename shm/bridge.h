/* bridge.h -- the shared-memory side of the Redis bridge: how producers publish, how the bridge
 * thread is woken, and what stats read.
 *
 * The bridge itself is a thread in the hub (hub/hub_redis.c, docs/redis-bridge.md). Producers
 * never talk to Redis: bridge_publish() appends to the ring, asking for RING_F_OUTBOX while the
 * bridge's circuit breaker is CLOSED (the cluster stream then decides the order of delivery), and
 * otherwise appends a message for immediate delivery that the bridge forwards later. Either way
 * the call costs what ring_publish() costs, so an admin POST never waits on Redis. Without a
 * bridge (state OFF) it is exactly ring_publish() + doorbell_ring_all().
 *
 * The bridge's doorbell works like a worker's (doorbell.h): an abstract datagram socket named
 * "\0wshub-<epoch>-bridge", armed in shm_bridge.doorbell_armed before the thread sleeps.
 */
#ifndef WSHUB_BRIDGE_H
#define WSHUB_BRIDGE_H

#include <stddef.h>
#include <stdint.h>

#include "shm.h"

/* Appends one broadcast as a producer (admin-cgi) and wakes whoever must act on it. Same
 * arguments, return value and errno as ring_publish(). */
int bridge_publish(struct shm *s, const void *payload, uint32_t len, const char *channel,
                   uint16_t flags, uint64_t *seq_out);

/* Hub: the bridge thread's bound, non-blocking, close-on-exec doorbell socket, or -1 (logged). */
int bridge_doorbell_open(const struct shm *s);

/* Bridge thread: arm before sleeping; the caller must re-check the ring afterwards. */
void bridge_doorbell_arm(struct shm *s);

/* Producer side: wakes the bridge thread if it armed its doorbell. */
void bridge_doorbell_ring(struct shm *s);

/* "off", "closed", "open", "half_open": stats.json and the metric label values. */
const char *bridge_state_name(uint32_t state);

/* Bridge thread: records the last error (truncated to SHM_BRIDGE_ERROR_LEN - 1) with its time. */
void bridge_error_set(struct shm *s, const char *msg);

/* Readers: copies the last error ("" if none) and its time (0 if none). Retries while the
 * bridge is writing it; after a few tries returns what it has. */
void bridge_error_get(const struct shm *s, char *out, size_t outlen, uint64_t *at_ms);

#endif /* WSHUB_BRIDGE_H */
