/* admin_bridge.h -- the Redis bridge's status in stats.json and /metrics (admin_bridge.c). */
#ifndef WSHUB_ADMIN_BRIDGE_H
#define WSHUB_ADMIN_BRIDGE_H

#include "admin.h"

/* Appends "redis_bridge":{...}, or "redis_bridge":null, (with the trailing comma) to a
 * stats.json body. */
void admin_bridge_json(struct admin_buf *b, const struct shm *s);

/* Appends the wshub_bridge_* metric families. */
void admin_bridge_prom(struct admin_buf *b, const struct shm *s);

#endif /* WSHUB_ADMIN_BRIDGE_H */
