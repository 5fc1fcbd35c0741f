/* worker_accept.c -- accept clients from the listening socket all workers share.
 *
 * The hub opened one non-blocking listening socket and every worker watches it with a libev
 * io watcher. On readiness we call accept4() at most WORKER_ACCEPT_BATCH times and give each
 * socket to lws with lws_adopt_socket_vhost(); the batch cap leaves the rest of a burst to the
 * other workers, which were woken too (epoll has no EPOLLEXCLUSIVE through libev, so every
 * worker wakes per burst and the losers see EAGAIN: cheap at a handful of workers).
 *
 * Adopted sockets skip lws's own socket options, so TCP_NODELAY is set here: a broadcast is
 * one write of whole frames and must not wait for Nagle.
 *
 * Balance: the first worker to wake would take most of a burst, so a worker holding more
 * sockets than its least-loaded running peer (plus a slack of 16 + 1/16) accepts one socket and
 * then rests WORKER_ACCEPT_YIELD seconds, leaving the queue to the peers that were woken with it.
 * It never stops for longer, so a peer that stopped accepting cannot strand the queue.
 *
 * Back-pressure: a worker holding worker_connections sockets stops its watcher, so queued
 * clients go to workers with room, and resumes below 90%. EMFILE/ENFILE stop the watcher for
 * WORKER_ACCEPT_PAUSE seconds (else level-triggered epoll would spin) and are logged at most
 * once a second. Sockets are counted from adoption to LWS_CALLBACK_WSI_DESTROY, recognised by
 * the opaque user pointer set at adoption.
 */
#include "worker.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "worker_rfc6455.h"

static void worker_accept_watch(struct worker *w)
{
    int want =
        !w->accept_paused_full && !w->accept_paused_error && !w->accept_yielding && !w->draining;
    if (want && !ev_is_active(&w->accept_io))
        ev_io_start(w->loop, &w->accept_io);
    else if (!want && ev_is_active(&w->accept_io))
        ev_io_stop(w->loop, &w->accept_io);
}

static void worker_accept_error(struct worker *w, int err)
{
    uint64_t now = shm_now_ms();
    if (now - w->accept_error_logged_ms >= 1000) {
        log_error(err, "accept4() failed, pausing accepts for %.0f ms", WORKER_ACCEPT_PAUSE * 1000);
        w->accept_error_logged_ms = now;
    }
    w->accept_paused_error = 1;
    worker_accept_watch(w);
    ev_timer_set(&w->accept_resume, WORKER_ACCEPT_PAUSE, 0.);
    ev_timer_start(w->loop, &w->accept_resume);
}

/* Hands one accepted socket to lws. lws closes the fd itself when adoption fails. */
static void worker_adopt(struct worker *w, int fd)
{
    int one = 1;
    int sndbuf = (int)w->conf.client_send_buffer;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
        log_warn(errno, "setsockopt(TCP_NODELAY) failed");
    /* Bounds what one client can have queued in the kernel (autotuning would grow it to MBs). */
    if (setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf)) < 0)
        log_warn(errno, "setsockopt(SO_SNDBUF, %d) failed", sndbuf);
    worker_rfc6455_adopt(w, fd); /* before lws reads a byte of it */
    struct lws *wsi = lws_adopt_socket_vhost(w->vhost, fd);
    if (wsi == NULL) {
        log_warn(0, "lws_adopt_socket_vhost() failed, connection dropped");
        return;
    }
    lws_set_opaque_user_data(wsi, w);
    w->sockets++;
    if (w->sockets >= w->conf.worker_connections && !w->accept_paused_full) {
        log_info("at worker_connections (%u): pausing accepts", w->conf.worker_connections);
        w->accept_paused_full = 1;
        worker_accept_watch(w);
    }
}

/* True when this worker holds clearly more connections than some running peer of its
 * generation. Reads the peers' gauges from the segment: 64 slots, once per wake-up. */
static int worker_accept_is_ahead(const struct worker *w)
{
    int64_t mine = (int64_t)w->sockets, least = INT64_MAX;
    for (unsigned i = 0; i < SHM_MAX_WORKERS; i++) {
        const struct shm_worker *p = shm_worker(&w->shm, i);
        if (i == w->slot || p->generation != w->generation ||
            atomic_load_explicit(&p->state, memory_order_relaxed) != SHM_WORKER_RUNNING)
            continue;
        int64_t n = atomic_load_explicit(&p->stats.connections, memory_order_relaxed);
        if (n < least)
            least = n;
    }
    return least != INT64_MAX && mine > least + 16 + least / 16;
}

static void worker_accept_yield(struct worker *w)
{
    w->accept_yielding = 1;
    worker_accept_watch(w);
    ev_timer_set(&w->accept_yield, WORKER_ACCEPT_YIELD, 0.);
    ev_timer_start(w->loop, &w->accept_yield);
}

static void worker_accept_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    struct worker *w = ev_userdata(loop);
    (void)io;
    (void)revents;
    int batch = WORKER_ACCEPT_BATCH;
    if (worker_accept_is_ahead(w)) {
        batch = 1;
        worker_accept_yield(w);
    }
    for (int i = 0; i < batch; i++) {
        if (w->accept_paused_full || w->accept_paused_error || w->draining)
            return;
        int fd = accept4(w->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            worker_adopt(w, fd);
            continue;
        }
        switch (errno) {
        case EINTR:
        case ECONNABORTED:
        case EPROTO:
            continue;
        case EAGAIN:
            return;
        case EMFILE:
        case ENFILE:
        case ENOBUFS:
        case ENOMEM:
            worker_accept_error(w, errno);
            return;
        default:
            log_error(errno, "accept4() failed on the listening socket");
            worker_accept_error(w, errno);
            return;
        }
    }
}

static void worker_accept_resume_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct worker *w = ev_userdata(loop);
    (void)t;
    (void)revents;
    w->accept_paused_error = 0;
    worker_accept_watch(w);
}

static void worker_accept_yield_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct worker *w = ev_userdata(loop);
    (void)t;
    (void)revents;
    w->accept_yielding = 0;
    worker_accept_watch(w);
}

int worker_accept_start(struct worker *w)
{
    w->sockets_resume = w->conf.worker_connections - w->conf.worker_connections / 10;
    ev_io_init(&w->accept_io, worker_accept_cb, w->listen_fd, EV_READ);
    ev_timer_init(&w->accept_resume, worker_accept_resume_cb, WORKER_ACCEPT_PAUSE, 0.);
    ev_timer_init(&w->accept_yield, worker_accept_yield_cb, WORKER_ACCEPT_YIELD, 0.);
    worker_accept_watch(w);
    return 0;
}

/* Stops accepting for good (graceful stop). The socket stays open: it is the hub's, and the
 * other workers keep serving it. */
void worker_accept_stop(struct worker *w)
{
    ev_io_stop(w->loop, &w->accept_io);
    ev_timer_stop(w->loop, &w->accept_resume);
    ev_timer_stop(w->loop, &w->accept_yield);
}

/* An adopted socket was destroyed. */
void worker_accept_socket_closed(struct worker *w)
{
    if (w->sockets > 0)
        w->sockets--;
    if (w->accept_paused_full && w->sockets < w->sockets_resume) {
        log_info("below %u sockets: accepting again", w->sockets_resume);
        w->accept_paused_full = 0;
        worker_accept_watch(w);
    }
}
