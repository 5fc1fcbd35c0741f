/* bridge.c -- producers' side of the Redis bridge, its doorbell and its shared status.
 *
 * bridge_publish() is what admin-cgi calls instead of ring_publish(). With the bridge OFF it is
 * ring_publish() plus doorbell_ring_all(), byte for byte what a single node always did. With a
 * bridge it asks for RING_F_OUTBOX; ring_publish_ex() keeps the flag only if the breaker is
 * CLOSED at the moment of the append (under the ring lock), and says which it was:
 *
 *   OUTBOX kept    the workers skip the record; only the bridge is rung. It forwards the message
 *                  to the cluster stream and appends it for delivery when the stream returns it,
 *                  in the stream's order, the same on every node.
 *   OUTBOX dropped the breaker is open (or half-open): the record is delivered here at once, so
 *                  the workers are rung, and the bridge too, which keeps it in its backlog and
 *                  sends it to the stream, marked "delivered at origin", when Redis is back.
 *
 * The doorbell protocol is doorbell.c's (a Dekker-style arm / swap), with one armed word in
 * shm_bridge and one abstract socket per segment epoch. This process's sending socket is its
 * own, opened on first use, so this file needs nothing from doorbell.c's internals.
 *
 * last_error is a string the bridge thread rewrites while stats readers copy it: a seqlock
 * (error_gen odd while writing) lets readers retry instead of printing a torn message.
 */
#include "bridge.h"

#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "doorbell.h"
#include "log.h"
#include "ring.h"

#define BRIDGE_ERROR_TRIES 8 /* reader retries while the bridge rewrites last_error */

static _Atomic int bridge_send_fd = -1;

int bridge_publish(struct shm *s, const void *payload, uint32_t len, const char *channel,
                   uint16_t flags, uint64_t *seq_out)
{
    int on = atomic_load_explicit(&s->hdr->bridge.state, memory_order_relaxed) != SHM_BRIDGE_OFF;
    struct ring_pub p = {.payload = payload,
                         .len = len,
                         .channel = channel,
                         .flags = (uint16_t)(flags | (on ? RING_F_OUTBOX : 0))};
    uint16_t got = 0;

    if (ring_publish_ex(s, &p, seq_out, &got) < 0)
        return -1;
    if (!(got & RING_F_OUTBOX))
        doorbell_ring_all(s);
    if (on)
        bridge_doorbell_ring(s);
    return 0;
}

static socklen_t bridge_doorbell_addr(const struct shm *s, struct sockaddr_un *sa)
{
    char name[64];
    int n = snprintf(name, sizeof(name), "wshub-%016" PRIx64 "-bridge", s->hdr->epoch);

    memset(sa, 0, sizeof(*sa));
    sa->sun_family = AF_UNIX;
    memcpy(sa->sun_path + 1, name, (size_t)n);
    return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
}

int bridge_doorbell_open(const struct shm *s)
{
    struct sockaddr_un sa;
    socklen_t len = bridge_doorbell_addr(s, &sa);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    if (fd < 0) {
        log_error(errno, "socket(AF_UNIX, SOCK_DGRAM) for the bridge doorbell failed");
        return -1;
    }
    if (bind(fd, (struct sockaddr *)&sa, len) < 0) {
        int e = errno;
        log_error(e, "bind(@%s) for the bridge doorbell failed", sa.sun_path + 1);
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

void bridge_doorbell_arm(struct shm *s)
{
    atomic_store_explicit(&s->hdr->bridge.doorbell_armed, 1, memory_order_seq_cst);
    atomic_thread_fence(memory_order_seq_cst); /* the store before the caller's ring re-check */
}

static int bridge_sender(void)
{
    int fd = atomic_load_explicit(&bridge_send_fd, memory_order_acquire);
    int expected = -1;

    if (fd >= 0)
        return fd;
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        log_error(errno, "socket(AF_UNIX, SOCK_DGRAM) for the bridge doorbell failed");
        return -1;
    }
    if (!atomic_compare_exchange_strong(&bridge_send_fd, &expected, fd)) {
        close(fd); /* another thread won the race */
        return expected;
    }
    return fd;
}

void bridge_doorbell_ring(struct shm *s)
{
    struct shm_bridge *b = &s->hdr->bridge;
    struct sockaddr_un sa;
    socklen_t len;
    char byte = 1;
    int fd;

    atomic_thread_fence(memory_order_seq_cst); /* the caller's tail store before the swap */
    if (atomic_exchange_explicit(&b->doorbell_armed, 0, memory_order_seq_cst) != 1)
        return;
    if ((fd = bridge_sender()) < 0) {
        atomic_store_explicit(&b->doorbell_armed, 1, memory_order_relaxed);
        return;
    }
    len = bridge_doorbell_addr(s, &sa);
    if (sendto(fd, &byte, 1, MSG_DONTWAIT | MSG_NOSIGNAL, (struct sockaddr *)&sa, len) == 1)
        return;
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ECONNREFUSED)
        return; /* a wake-up is already pending, or no bridge is bound (hub gone) */
    log_warn(errno, "sendto(bridge doorbell) failed");
    atomic_store_explicit(&b->doorbell_armed, 1, memory_order_relaxed);
}

const char *bridge_state_name(uint32_t state)
{
    static const char *const names[SHM_BRIDGE_STATE_COUNT] = {"off", "closed", "open", "half_open"};
    return state < SHM_BRIDGE_STATE_COUNT ? names[state] : "unknown";
}

void bridge_error_set(struct shm *s, const char *msg)
{
    struct shm_bridge *b = &s->hdr->bridge;

    atomic_fetch_add_explicit(&b->error_gen, 1, memory_order_relaxed); /* odd: writing */
    atomic_thread_fence(memory_order_release);
    snprintf(b->last_error, sizeof(b->last_error), "%s", msg);
    atomic_fetch_add_explicit(&b->error_gen, 1, memory_order_release); /* even: done */
    atomic_store_explicit(&b->last_error_ms, shm_now_ms(), memory_order_relaxed);
}

void bridge_error_get(const struct shm *s, char *out, size_t outlen, uint64_t *at_ms)
{
    const struct shm_bridge *b = &s->hdr->bridge;
    size_t n = outlen < sizeof(b->last_error) ? outlen : sizeof(b->last_error);

    if (n == 0)
        return;
    for (int i = 0; i < BRIDGE_ERROR_TRIES; i++) {
        uint32_t g1 = atomic_load_explicit(&b->error_gen, memory_order_acquire);
        memcpy(out, b->last_error, n);
        atomic_thread_fence(memory_order_acquire);
        if (!(g1 & 1) && g1 == atomic_load_explicit(&b->error_gen, memory_order_relaxed))
            break;
    }
    out[n - 1] = '\0';
    *at_ms = atomic_load_explicit(&b->last_error_ms, memory_order_relaxed);
}
