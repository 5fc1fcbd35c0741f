/* doorbell.h -- wake sleeping workers when the ring has new entries.
 *
 * Each worker slot has a bound Unix datagram socket in the abstract namespace, named from the
 * segment's epoch and the slot ("\0wshub-<epoch>-<slot>"), created by the hub before the worker
 * is forked so it survives respawns. Any producer process, including one not descended from the
 * hub (mod_fcgid, spawn-fcgi), can ring it with one sendto(); no fd needs to be inherited.
 *
 * Wake-ups coalesce: a worker sets shm_worker.doorbell_armed before it sleeps and re-checks the
 * ring; a producer swaps the flag to 0 and only sends a datagram when it was 1. Under load, when
 * workers are busy, a publish costs no syscall at all.
 */
#ifndef WSHUB_DOORBELL_H
#define WSHUB_DOORBELL_H

#include "shm.h"

/* Creates the slot's bound, non-blocking, close-on-exec datagram socket. Returns the fd or -1. */
int doorbell_open(const struct shm *s, unsigned slot);

/* Worker side: drains pending datagrams from fd (non-blocking). */
void doorbell_drain(int fd);

/* Worker side: arm before sleeping. The caller must re-check the ring after arming. */
void doorbell_arm(struct shm *s, unsigned slot);

/* Producer side: wakes every armed, running worker. Best effort: a full socket buffer means a
 * wake-up is already pending. */
void doorbell_ring_all(struct shm *s);

/* Producer side: wakes one worker slot if it is armed (after a request written for it alone,
 * such as shm_worker.kicks_pending). Same protocol and best effort as doorbell_ring_all(). */
void doorbell_ring_slot(struct shm *s, unsigned slot);

#endif /* WSHUB_DOORBELL_H */
