/* conntab.c -- the shared connection table: claim, free, reclaim and consistent reads of rows.
 *
 * Workers claim and free rows, the hub reclaims a dead worker's rows, admin-cgi reads them. The
 * free stack and every change of a row's conn_id happen under conntab.lock (robust, process-
 * shared): claims run at connection rate, not message rate, so one short lock is cheap, and
 * doing the whole claim or free inside it means a process killed at any point leaves a state the
 * next locker can rebuild from the rows alone (EOWNERDEAD: rows with conn_id 0 are free).
 *
 * Rows are read without the lock. conn_id is the seqlock: a claim fills the identity while
 * conn_id is 0 and publishes a never-reused id with a release store; a free stores 0 first
 * (followed by a release fence) and only then touches the row. A reader loads conn_id (acquire),
 * copies, fences (acquire) and keeps the copy if conn_id is unchanged and non-zero.
 *
 * Kicks (admin-cgi asking the owner to close a connection) set kick_code under the lock too, after
 * checking conn_id: since every change of conn_id happens under that lock, a kick can never land
 * on a row that was freed and claimed by another connection in between. The claim resets it.
 */
#include "conntab.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "log.h"

static void conntab_copy_str(char *dst, size_t cap, const char *src)
{
    size_t n = src != NULL ? strnlen(src, cap - 1) : 0;
    memcpy(dst, src != NULL ? src : "", n);
    memset(dst + n, 0, cap - n);
}

/* Rebuilds the free stack from the rows after a locker died: O(capacity), only after a crash. */
static void conntab_rebuild_locked(struct shm *s)
{
    struct shm_conntab_ctl *ct = &s->hdr->conntab;
    uint32_t *free_stack = shm_conn_free_stack(s);
    uint32_t top = 0;

    for (uint32_t i = ct->capacity; i-- > 0;) {
        struct shm_conn *c = shm_conn(s, i);
        if (atomic_load_explicit(&c->conn_id, memory_order_relaxed) != 0)
            continue;
        atomic_store_explicit(&c->state, SHM_CONN_FREE, memory_order_relaxed);
        free_stack[top++] = i;
    }
    ct->free_top = top;
    atomic_store_explicit(&ct->in_use, ct->capacity - top, memory_order_relaxed);
    atomic_fetch_add_explicit(&ct->lock_recoveries, 1, memory_order_relaxed);
    log_warn(0,
             "connection table: a process died holding the lock; free stack rebuilt (%u free, "
             "%u in use)",
             top, ct->capacity - top);
}

/* Locks the table, rebuilding the free stack if the previous owner died. 0 or -1 with errno. */
static int conntab_lock(struct shm *s)
{
    return shm_mutex_lock(s, &s->hdr->conntab.lock, NULL, conntab_rebuild_locked, "conntab");
}

static void conntab_unlock(struct shm *s)
{
    int rc = pthread_mutex_unlock(&s->hdr->conntab.lock);
    if (rc != 0)
        log_error(rc, "pthread_mutex_unlock(conntab) failed");
}

/* Fills the remote address fields; an IPv4-mapped IPv6 address is stored as IPv4. */
static void conntab_set_addr(struct shm_conn *c, const struct sockaddr *addr)
{
    memset(c->remote_addr, 0, sizeof(c->remote_addr));
    c->addr_family = AF_UNSPEC;
    c->remote_port = 0;
    if (addr == NULL)
        return;
    if (addr->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)addr;
        c->addr_family = AF_INET;
        c->remote_port = ntohs(in->sin_port);
        memcpy(c->remote_addr, &in->sin_addr, 4);
    } else if (addr->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)addr;
        c->remote_port = ntohs(in6->sin6_port);
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
            c->addr_family = AF_INET;
            memcpy(c->remote_addr, in6->sin6_addr.s6_addr + 12, 4);
        } else {
            c->addr_family = AF_INET6;
            memcpy(c->remote_addr, &in6->sin6_addr, 16);
        }
    }
}

uint32_t conntab_claim(struct shm *s, unsigned worker, uint32_t gen, const struct sockaddr *addr,
                       const char *user)
{
    struct shm_conntab_ctl *ct = &s->hdr->conntab;
    struct shm_conn *c;
    uint32_t idx;

    if (worker >= SHM_MAX_WORKERS) {
        errno = EINVAL;
        return CONNTAB_NONE;
    }
    if (conntab_lock(s) < 0)
        return CONNTAB_NONE;
    if (ct->free_top == 0) {
        conntab_unlock(s);
        errno = ENOSPC;
        return CONNTAB_NONE;
    }
    idx = shm_conn_free_stack(s)[ct->free_top - 1];
    c = shm_conn(s, idx);
    ct->free_top--;

    c->worker = (uint16_t)worker;
    c->worker_generation = gen;
    conntab_set_addr(c, addr);
    conntab_copy_str(c->user, sizeof(c->user), user);
    atomic_store_explicit(&c->nchan, 0, memory_order_relaxed); /* channels: worker_channels.c */
    c->connected_at_ms = shm_now_ms();
    atomic_store_explicit(&c->last_seen_ms, c->connected_at_ms, memory_order_relaxed);
    atomic_store_explicit(&c->messages_out, 0, memory_order_relaxed);
    atomic_store_explicit(&c->bytes_out, 0, memory_order_relaxed);
    atomic_store_explicit(&c->messages_in, 0, memory_order_relaxed);
    atomic_store_explicit(&c->bytes_in, 0, memory_order_relaxed);
    atomic_store_explicit(&c->kick_code, 0, memory_order_relaxed);
    atomic_store_explicit(&c->state, SHM_CONN_OPEN, memory_order_relaxed);
    uint64_t id = atomic_fetch_add_explicit(&ct->next_conn_id, 1, memory_order_relaxed);
    atomic_store_explicit(&c->conn_id, id, memory_order_release); /* identity before the id */
    atomic_fetch_add_explicit(&ct->in_use, 1, memory_order_relaxed);
    conntab_unlock(s);
    return idx;
}

/* Frees row idx; the caller holds the lock and has checked the row is claimed. */
static void conntab_free_locked(struct shm *s, uint32_t idx)
{
    struct shm_conntab_ctl *ct = &s->hdr->conntab;
    struct shm_conn *c = shm_conn(s, idx);

    atomic_store_explicit(&c->conn_id, 0, memory_order_release);
    atomic_thread_fence(memory_order_release); /* readers see id 0 before any later row write */
    atomic_store_explicit(&c->state, SHM_CONN_FREE, memory_order_relaxed);
    shm_conn_free_stack(s)[ct->free_top++] = idx;
    atomic_fetch_sub_explicit(&ct->in_use, 1, memory_order_relaxed);
}

int conntab_free(struct shm *s, uint32_t idx)
{
    struct shm_conn *c = idx < s->hdr->conntab.capacity ? shm_conn(s, idx) : NULL;

    if (c == NULL) {
        errno = EINVAL;
        return -1;
    }
    if (conntab_lock(s) < 0)
        return -1;
    if (atomic_load_explicit(&c->conn_id, memory_order_relaxed) == 0) {
        conntab_unlock(s);
        errno = EINVAL;
        return -1;
    }
    conntab_free_locked(s, idx);
    conntab_unlock(s);
    return 0;
}

uint32_t conntab_reclaim_worker(struct shm *s, unsigned worker, uint32_t below_gen)
{
    struct shm_conntab_ctl *ct = &s->hdr->conntab;
    struct shm_worker *w = shm_worker(s, worker);
    uint32_t n = 0;

    if (w == NULL || conntab_lock(s) < 0)
        return 0;
    for (uint32_t i = 0; i < ct->capacity; i++) {
        struct shm_conn *c = shm_conn(s, i);
        if (atomic_load_explicit(&c->conn_id, memory_order_relaxed) == 0 || c->worker != worker)
            continue;
        if (below_gen != 0 && c->worker_generation >= below_gen)
            continue;
        conntab_free_locked(s, i);
        n++;
    }
    conntab_unlock(s);

    atomic_fetch_add_explicit(&ct->reclaimed, n, memory_order_relaxed);
    atomic_fetch_add_explicit(&w->stats.closed[SHM_CLOSE_WORKER_DIED], n, memory_order_relaxed);
    if (below_gen == 0)
        atomic_store_explicit(&w->stats.connections, 0, memory_order_relaxed);
    return n;
}

/* Copies a row field by field: atomics with single loads (no torn counters), the rest plain. */
static void conntab_copy_row(const struct shm_conn *c, struct shm_conn *out)
{
    memset(out, 0, sizeof(*out));
    out->last_seen_ms = atomic_load_explicit(&c->last_seen_ms, memory_order_relaxed);
    out->connected_at_ms = c->connected_at_ms;
    out->messages_out = atomic_load_explicit(&c->messages_out, memory_order_relaxed);
    out->bytes_out = atomic_load_explicit(&c->bytes_out, memory_order_relaxed);
    out->messages_in = atomic_load_explicit(&c->messages_in, memory_order_relaxed);
    out->bytes_in = atomic_load_explicit(&c->bytes_in, memory_order_relaxed);
    out->worker_generation = c->worker_generation;
    out->worker = c->worker;
    out->state = atomic_load_explicit(&c->state, memory_order_relaxed);
    out->kick_code = atomic_load_explicit(&c->kick_code, memory_order_relaxed);
    out->addr_family = c->addr_family;
    out->remote_port = c->remote_port;
    memcpy(out->remote_addr, c->remote_addr, sizeof(out->remote_addr));
    memcpy(out->user, c->user, sizeof(out->user));
    out->nchan = atomic_load_explicit(&c->nchan, memory_order_relaxed);
    for (unsigned i = 0; i < SHM_CONN_CHANNELS; i++)
        out->chan[i] = atomic_load_explicit(&c->chan[i], memory_order_relaxed);
    if (out->nchan > SHM_CONN_CHANNELS)
        out->nchan = SHM_CONN_CHANNELS;
}

int conntab_read(const struct shm *s, uint32_t idx, struct shm_conn *out)
{
    const struct shm_conn *c = idx < s->hdr->conntab.capacity ? shm_conn(s, idx) : NULL;
    uint64_t id;

    if (c == NULL)
        return 0;
    id = atomic_load_explicit(&c->conn_id, memory_order_acquire);
    if (id == 0)
        return 0;
    conntab_copy_row(c, out);
    atomic_thread_fence(memory_order_acquire); /* the copy before the re-check */
    if (atomic_load_explicit(&c->conn_id, memory_order_relaxed) != id)
        return 0;
    /* A row copied mid-update could lack its NULs; the owner always writes them. */
    out->user[sizeof(out->user) - 1] = '\0';
    out->conn_id = id;
    return 1;
}

uint32_t conntab_find(const struct shm *s, uint64_t conn_id)
{
    uint32_t cap = s->hdr->conntab.capacity;

    if (conn_id == 0)
        return CONNTAB_NONE;
    for (uint32_t i = 0; i < cap; i++) {
        if (atomic_load_explicit(&shm_conn(s, i)->conn_id, memory_order_relaxed) == conn_id)
            return i;
    }
    return CONNTAB_NONE;
}

int conntab_kick(struct shm *s, uint32_t idx, uint64_t conn_id, uint16_t code)
{
    struct shm_conn *c = idx < s->hdr->conntab.capacity ? shm_conn(s, idx) : NULL;
    unsigned worker;

    if (c == NULL || conn_id == 0 || code == 0) {
        errno = EINVAL;
        return -1;
    }
    if (conntab_lock(s) < 0)
        return -1;
    if (atomic_load_explicit(&c->conn_id, memory_order_relaxed) != conn_id) {
        conntab_unlock(s);
        errno = ESRCH;
        return -1;
    }
    worker = c->worker;
    atomic_store_explicit(&c->kick_code, code, memory_order_relaxed);
    conntab_unlock(s);
    /* release: a worker that sees the new count (acquire) also sees kick_code */
    atomic_fetch_add_explicit(&shm_worker(s, worker)->kicks_pending, 1, memory_order_release);
    return (int)worker;
}

uint32_t conntab_in_use(const struct shm *s)
{
    return atomic_load_explicit(&s->hdr->conntab.in_use, memory_order_relaxed);
}

void conntab_note_out(struct shm *s, uint32_t idx, uint64_t messages, uint64_t bytes)
{
    struct shm_conn *c = shm_conn(s, idx);

    if (c == NULL)
        return;
    atomic_fetch_add_explicit(&c->messages_out, messages, memory_order_relaxed);
    atomic_fetch_add_explicit(&c->bytes_out, bytes, memory_order_relaxed);
}

void conntab_note_in(struct shm *s, uint32_t idx, uint64_t bytes, uint64_t now_ms)
{
    struct shm_conn *c = shm_conn(s, idx);

    if (c == NULL)
        return;
    atomic_fetch_add_explicit(&c->messages_in, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&c->bytes_in, bytes, memory_order_relaxed);
    atomic_store_explicit(&c->last_seen_ms, now_ms, memory_order_relaxed);
}

void conntab_format_addr(const struct shm_conn *c, char *out, size_t outlen)
{
    char ip[INET6_ADDRSTRLEN];

    if (outlen == 0)
        return;
    if (c->addr_family == AF_INET && inet_ntop(AF_INET, c->remote_addr, ip, sizeof(ip)))
        snprintf(out, outlen, "%s:%u", ip, (unsigned)c->remote_port);
    else if (c->addr_family == AF_INET6 && inet_ntop(AF_INET6, c->remote_addr, ip, sizeof(ip)))
        snprintf(out, outlen, "[%s]:%u", ip, (unsigned)c->remote_port);
    else
        snprintf(out, outlen, "-");
}
