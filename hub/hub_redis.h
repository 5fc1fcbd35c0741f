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
#include "shm.h"

/* After the segment exists and before any child is forked: marks the breaker OPEN (producers
 * deliver locally until Redis is reached), binds the bridge's doorbell and starts the thread.
 * Returns 0 (also when no redis is configured), or -1 (logged) when it could not start. */
int hub_redis_start(const struct conf *c, struct shm *s);

/* On stop, after hub_state became STOPPING and before the workers are told to drain: stops
 * accepting OUTBOX records, delivers locally every message still waiting for the stream, sends
 * what it can to Redis within a short deadline and joins the thread. Idempotent. */
void hub_redis_stop(void);

#endif /* WSHUB_HUB_REDIS_H */
