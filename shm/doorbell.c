/* doorbell.c -- wake sleeping workers with one datagram to an abstract Unix socket per slot.
 *
 * The hub binds "\0wshub-<epoch hex>-<slot>" for every slot before forking workers (the epoch
 * keeps two instances, or a crashed hub's leftovers, apart). Producers need no inherited fd: each
 * process lazily opens one unbound datagram socket and sendto()s the name.
 *
 * Lost wake-up argument (Dekker style). The worker stores doorbell_armed = 1 and then re-reads
 * the ring tail before sleeping; the producer stores the tail (inside ring_publish) and then
 * exchanges doorbell_armed with 0. Both sides put a seq_cst fence between their store and their
 * load, and seq_cst fences are totally ordered: if the worker's fence comes first, the
 * producer's exchange reads the 1 (or a later producer already swapped it and sent a datagram);
 * if the producer's fence comes first, the worker's re-check sees the new tail and does not
 * sleep. Either way no message waits for a wake-up that never comes. On x86-64 both fences are
 * one locked instruction; the exchange also keeps concurrent producers from sending twice.
 *
 * A full socket buffer (EAGAIN) means wake-ups are already pending; ECONNREFUSED means nobody is
 * bound (the slot's hub is gone). Both are ignored.
 */
#include "doorbell.h"

#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"

/* This process's sending socket, opened on first use; shared by all threads. */
static _Atomic int doorbell_send_fd = -1;

/* Builds the abstract address of a slot's doorbell. Returns the address length. */
static socklen_t doorbell_addr(const struct shm *s, unsigned slot, struct sockaddr_un *sa)
{
    char name[64];
    int n = snprintf(name, sizeof(name), "wshub-%016" PRIx64 "-%u", s->hdr->epoch, slot);

    memset(sa, 0, sizeof(*sa));
    sa->sun_family = AF_UNIX;
    sa->sun_path[0] = '\0';
    memcpy(sa->sun_path + 1, name, (size_t)n);
    return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
}

int doorbell_open(const struct shm *s, unsigned slot)
{
    struct sockaddr_un sa;
    socklen_t len;
    int fd;

    if (slot >= SHM_MAX_WORKERS) {
        errno = EINVAL;
        return -1;
    }
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        log_error(errno, "socket(AF_UNIX, SOCK_DGRAM) for doorbell %u failed", slot);
        return -1;
    }
    len = doorbell_addr(s, slot, &sa);
    if (bind(fd, (struct sockaddr *)&sa, len) < 0) {
        int e = errno;
        log_error(e, "bind(@%s) for doorbell %u failed", sa.sun_path + 1, slot);
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

void doorbell_drain(int fd)
{
    char buf[64];

    for (;;) {
        ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n >= 0)
            continue;
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            log_warn(errno, "recv(doorbell fd %d) failed", fd);
        return;
    }
}

void doorbell_arm(struct shm *s, unsigned slot)
{
    struct shm_worker *w = shm_worker(s, slot);

    if (w == NULL)
        return;
    atomic_store_explicit(&w->doorbell_armed, 1, memory_order_seq_cst);
    atomic_thread_fence(memory_order_seq_cst); /* the store before the caller's ring re-check */
}

/* Returns this process's sending socket, creating it on first use, or -1. */
static int doorbell_sender(void)
{
    int fd = atomic_load_explicit(&doorbell_send_fd, memory_order_acquire);
    int expected = -1;

    if (fd >= 0)
        return fd;
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        log_error(errno, "socket(AF_UNIX, SOCK_DGRAM) for doorbells failed");
        return -1;
    }
    if (!atomic_compare_exchange_strong(&doorbell_send_fd, &expected, fd)) {
        close(fd); /* another thread won the race */
        return expected;
    }
    return fd;
}

static void doorbell_ring_one(const struct shm *s, struct shm_worker *w, unsigned slot, int fd)
{
    struct sockaddr_un sa;
    socklen_t len = doorbell_addr(s, slot, &sa);
    char byte = 1;

    if (sendto(fd, &byte, 1, MSG_DONTWAIT | MSG_NOSIGNAL, (struct sockaddr *)&sa, len) == 1)
        return;
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ECONNREFUSED)
        return;
    /* Unexpected: re-arm so the next publish tries again rather than leave the worker asleep. */
    log_warn(errno, "sendto(doorbell %u) failed", slot);
    atomic_store_explicit(&w->doorbell_armed, 1, memory_order_relaxed);
}

void doorbell_ring_all(struct shm *s)
{
    int fd = -1;

    atomic_thread_fence(memory_order_seq_cst); /* the caller's tail store before the swaps */
    for (unsigned slot = 0; slot < SHM_MAX_WORKERS; slot++) {
        struct shm_worker *w = shm_worker(s, slot);
        uint32_t st = atomic_load_explicit(&w->state, memory_order_relaxed);

        if ((st != SHM_WORKER_RUNNING && st != SHM_WORKER_DRAINING) ||
            atomic_load_explicit(&w->pid, memory_order_relaxed) == 0)
            continue;
        if (atomic_exchange_explicit(&w->doorbell_armed, 0, memory_order_seq_cst) != 1)
            continue;
        if (fd < 0 && (fd = doorbell_sender()) < 0) {
            atomic_store_explicit(&w->doorbell_armed, 1, memory_order_relaxed);
            return;
        }
        doorbell_ring_one(s, w, slot, fd);
    }
}

void doorbell_ring_slot(struct shm *s, unsigned slot)
{
    struct shm_worker *w = slot < SHM_MAX_WORKERS ? shm_worker(s, slot) : NULL;
    int fd;

    if (w == NULL)
        return;
    atomic_thread_fence(memory_order_seq_cst); /* the caller's request before the swap */
    if (atomic_exchange_explicit(&w->doorbell_armed, 0, memory_order_seq_cst) != 1)
        return;
    if ((fd = doorbell_sender()) < 0) {
        atomic_store_explicit(&w->doorbell_armed, 1, memory_order_relaxed);
        return;
    }
    doorbell_ring_one(s, w, slot, fd);
}
