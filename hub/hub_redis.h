/* hub_redis.h -- the hub's Redis bridge: what the rest of the hub calls.
 *
 * With `redis` empty in the configuration both calls do nothing and wshub is a single node.
 * Otherwise hub_redis_start() starts one thread that joins this instance to the cluster stream
 * (design in hub_redis.c and docs/redis-bridge.md), and hub_redis_stop() ends it. Both are called
 * from the hub's main thread only.
 */
#ifndef WSHUB_HUB_REDIS_H
#define WSHUB_HUB_REDIS_H

#include "conf.h"
#include "ring.h"
#include "shm.h"

/* Where the bridge of a new hub that adopted the segment (a binary upgrade, hub_upgrade.c) goes
 * on: the stream from the segment's bridge.last_id (live, not as history), and local messages
 * from where the old bridge stopped reading them, when that is known. */
struct hub_redis_resume {
    int have_local;           /* `local` is the old bridge's cursor at its stop */
    struct ring_cursor local; /* position and sequence of the next local record to read */
};

/* After the segment exists and before any child is forked: marks the breaker OPEN (producers
 * deliver locally until Redis is reached), binds the bridge's doorbell and starts the thread.
 * `resume` is NULL for a new segment, else the adopted one's positions. Returns 0 (also when no
 * redis is configured), or -1 (logged) when it could not start. */
int hub_redis_start(const struct conf *c, struct shm *s, const struct hub_redis_resume *resume);

/* On stop, after hub_state became STOPPING and before the workers are told to drain: stops
 * accepting OUTBOX records, delivers locally every message still waiting for the stream, sends
 * what it can to Redis within a short deadline and joins the thread. Idempotent. */
void hub_redis_stop(void);

/* hub_redis_stop() for a binary upgrade's hand-over: also reports where the local side stopped
 * reading, for the new hub's bridge. Returns 1 when a bridge was running, 0 when none. */
int hub_redis_stop_at(struct hub_redis_resume *out);

/* Local messages a stop now could not send to the stream: the backlog while the breaker is not
 * CLOSED (Redis down or slow); 0 without a bridge or while connected. */
uint64_t hub_redis_backlog(const struct shm *s);

#endif /* WSHUB_HUB_REDIS_H */
