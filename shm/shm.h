/* shm.h -- create, attach to and remove the instance's shared-memory segment.
 *
 * The hub calls shm_create() once at start-up (it removes a stale segment of the same name left
 * by a crashed hub, after checking that hub is gone) and shm_destroy() at exit. Workers and
 * admin-cgi call shm_attach(), which maps the segment and refuses one whose magic, layout version
 * or sizes differ from what this binary was compiled with. Nothing here allocates per message.
 *
 * Accessors return pointers into this process's mapping; never store them in the segment.
 */
#ifndef WSHUB_SHM_H
#define WSHUB_SHM_H

#include <stddef.h>
#include <stdint.h>

#include "shm_layout.h"

/* Sizes the hub chooses from the config; shm_create() validates them. */
struct shm_params {
    uint32_t conn_capacity;       /* rows in the connection table, >= 1 */
    uint64_t ring_capacity;       /* bytes, power of two, >= 4 * (max_payload + 4 KiB) */
    uint32_t max_payload;         /* bytes, >= 1 */
    uint32_t channels_per_worker; /* presence entries per worker slot, 0..SHM_MAX_CHANNELS */
};

#define SHM_MAX_CHANNELS 1000000

/* One process's view of the segment. */
struct shm {
    struct shm_header *hdr; /* start of the mapping */
    size_t size;            /* bytes mapped */
    char name[64];          /* POSIX name, "/wshub-<instance>" */
    int owner;              /* 1 in the hub that created it */
};

/* Builds the POSIX name for an instance into out ("/wshub-<instance>"). Returns 0, or -1 with
 * errno EINVAL if the instance name is empty, too long or has characters other than
 * [A-Za-z0-9._-]. */
int shm_name_for_instance(const char *instance, char *out, size_t outlen);

/* Creates and initialises the segment (mode 0600 unless `mode` says otherwise), replacing a stale
 * one whose hub pid is dead. Returns 0, or -1 with errno set and a reason in err. */
int shm_create(struct shm *s, const char *name, const struct shm_params *p, unsigned mode,
               char *err, size_t errlen);

/* Maps an existing segment read-write and checks magic, version and sizes. Returns 0, or -1 with
 * errno set (ENOENT: no such segment; EPROTO: layout mismatch) and a reason in err. */
int shm_attach(struct shm *s, const char *name, char *err, size_t errlen);

/* Unmaps; the segment stays. */
void shm_detach(struct shm *s);

/* Unmaps and, in the creator, unlinks the name. */
void shm_destroy(struct shm *s);

/* True when the hub that owns the segment is alive and running (pid exists, state RUNNING,
 * heartbeat younger than `max_age_ms`). */
int shm_hub_is_alive(const struct shm *s, uint64_t max_age_ms);

/* Region accessors. */
struct shm_worker *shm_worker(const struct shm *s, unsigned slot);
struct shm_conn *shm_conn(const struct shm *s, uint32_t index);
uint32_t *shm_conn_free_stack(const struct shm *s);
uint8_t *shm_ring_data(const struct shm *s);
/* Entry i (< hdr->channels_per_worker) of worker slot `slot`'s channel table. */
struct shm_channel *shm_channel(const struct shm *s, unsigned slot, uint32_t i);

/* Clocks used throughout the layout. */
uint64_t shm_now_ms(void);  /* CLOCK_REALTIME, milliseconds */
uint64_t shm_mono_ns(void); /* CLOCK_MONOTONIC, nanoseconds */

/* Initialises a process-shared robust mutex in place. Returns 0 or an errno value. */
int shm_mutex_init(pthread_mutex_t *m);

/* Locks a robust mutex of the segment. When the previous owner died holding it (EOWNERDEAD),
 * calls repair(s) with the lock held to put the guarded data right, then marks the mutex
 * consistent. With a deadline (CLOCK_MONOTONIC) gives up with ETIMEDOUT. `what` names the lock
 * in log lines. Returns 0, or -1 with errno set. */
int shm_mutex_lock(struct shm *s, pthread_mutex_t *m, const struct timespec *deadline,
                   void (*repair)(struct shm *s), const char *what);

#endif /* WSHUB_SHM_H */
