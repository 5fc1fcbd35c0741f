/* conntab.h -- the shared connection table: one row per open WebSocket connection.
 *
 * Workers claim a row when a connection is upgraded and free it when the connection ends; the
 * hub frees every row of a worker that died; admin-cgi reads rows for listings and asks owners to
 * close connections (conntab_kick). Claim and free are O(1): a stack of free row indexes guarded
 * by a robust process-shared mutex. A process killed while holding it leaves EOWNERDEAD for the
 * next locker, which rebuilds the stack from the rows' states (O(capacity), only after a crash).
 * Row contents follow the protocol described at struct shm_conn: only the owner writes (but for
 * kick_code, which the admin sets under the lock), readers validate with conn_id.
 */
#ifndef WSHUB_CONNTAB_H
#define WSHUB_CONNTAB_H

#include <stdint.h>
#include <sys/socket.h>

#include "shm.h"

#define CONNTAB_NONE UINT32_MAX /* "no row" */

/* Claims a free row for worker `worker` (generation `gen`), fills the identity fields and
 * publishes a fresh conn_id. `addr` may be NULL. Returns the row index, or CONNTAB_NONE with
 * errno ENOSPC when the table is full. */
uint32_t conntab_claim(struct shm *s, unsigned worker, uint32_t gen, const struct sockaddr *addr,
                       const char *user);

/* Frees a row the caller owns. Returns 0, or -1 with errno EINVAL if idx is out of range or
 * already free. */
int conntab_free(struct shm *s, uint32_t idx);

/* Frees every row owned by worker slot `worker` (any generation < `below_gen`, or all if
 * below_gen is 0). Used by the hub after reaping. Returns how many rows were freed. */
uint32_t conntab_reclaim_worker(struct shm *s, unsigned worker, uint32_t below_gen);

/* Copies row idx into *out if it holds a live connection. Returns 1 when *out is a consistent
 * copy, 0 when the row is free or changed while being read. */
int conntab_read(const struct shm *s, uint32_t idx, struct shm_conn *out);

/* Row index holding connection conn_id, or CONNTAB_NONE. O(capacity): for admin requests. */
uint32_t conntab_find(const struct shm *s, uint64_t conn_id);

/* Asks the owner of row idx to close it with `code` if the row still holds connection conn_id:
 * sets kick_code under the table lock (so the row cannot change hands meanwhile), then bumps the
 * owning worker's kicks_pending, which the worker watches. Returns the owner's worker slot (the
 * caller rings its doorbell), or -1 with errno ESRCH when the row no longer holds conn_id, EINVAL
 * for a bad argument, or a lock error. */
int conntab_kick(struct shm *s, uint32_t idx, uint64_t conn_id, uint16_t code);

/* Rows currently claimed. */
uint32_t conntab_in_use(const struct shm *s);

/* Row accounting for the owner: cheap relaxed updates. */
void conntab_note_out(struct shm *s, uint32_t idx, uint64_t messages, uint64_t bytes);
void conntab_note_in(struct shm *s, uint32_t idx, uint64_t bytes, uint64_t now_ms);

/* Formats a row's remote address as "ip:port" (IPv6 as "[ip]:port"). */
void conntab_format_addr(const struct shm_conn *c, char *out, size_t outlen);

#endif /* WSHUB_CONNTAB_H */
