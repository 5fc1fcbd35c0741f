/* worker_signal.c -- signals, the 1 s tick and the graceful stop.
 *
 * Signals arrive as libev ev_signal watchers, i.e. as ordinary loop events: libev's own handler
 * only records the signal and wakes the loop, and all work happens here on the loop thread.
 *   TERM, INT  graceful stop (below)
 *   HUP        rolling restart: a new generation serves, leave for it (worker_restart.c)
 *   USR1       reopen the log file (logrotate)
 * The hub's death also means stop: PR_SET_PDEATHSIG delivers SIGTERM, and the tick checks
 * getppid() against the hub pid in the segment in case the signal was missed (hub died before
 * prctl).
 *
 * Graceful stop: stop accepting (the other workers keep serving the socket), mark the slot
 * DRAINING, pump the ring one last time and remember its tail; every connection is closed with
 * 1001 once it has been sent everything up to that point. The worker exits 0 when the last
 * connection is gone, or at shutdown_timeout, cutting whoever is left (their rows are freed and
 * counted as SHUTDOWN closes, the number is logged). Handshakes still in flight get 503.
 */
#include "worker.h"

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <unistd.h>

#include "log.h"

static void worker_finish(struct worker *w)
{
    w->finished = 1;
    ev_break(w->loop, EVBREAK_ALL);
}

/* Ends the loop once no connection is left (in a restart, no accepted socket either: a handshake
 * still in flight is a client that must not see its connection drop). */
void worker_stop_check(struct worker *w)
{
    if (w->draining && w->nconns == 0 && (!w->restarting || w->sockets == 0) && !w->finished) {
        log_info("drained: every connection closed");
        worker_finish(w);
    }
}

static void worker_drain_deadline_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct worker *w = ev_userdata(loop);
    (void)t;
    (void)revents;
    w->cut = w->nconns;
    log_warn(0, "drain deadline (%s) reached: cutting %u connections",
             w->restarting ? "restart_spread + shutdown_timeout" : "shutdown_timeout", w->cut);
    worker_conns_drop_all(w, w->restarting ? SHM_CLOSE_RESTART : SHM_CLOSE_SHUTDOWN);
    worker_finish(w);
}

void worker_drain_deadline_start(struct worker *w, double seconds)
{
    ev_timer_init(&w->drain_deadline, worker_drain_deadline_cb, seconds, 0.);
    ev_timer_start(w->loop, &w->drain_deadline);
}

void worker_stop_begin(struct worker *w, const char *why)
{
    if (w->draining) {
        worker_restart_to_stop(w, why); /* nothing unless a restart drain is under way */
        return;
    }
    log_notice("%s: draining %u connections (shutdown_timeout %u ms)", why, w->nconns,
               w->conf.shutdown_timeout_ms);
    w->draining = 1;
    atomic_store(&w->self->state, SHM_WORKER_DRAINING);
    worker_accept_stop(w);
    worker_fanout_pump(w);
    uint64_t target = w->fan.tail;
    for (struct worker_conn *c = w->conns.next; c != &w->conns; c = c->next)
        worker_conn_schedule_close(c, target, LWS_CLOSE_STATUS_GOINGAWAY, SHM_CLOSE_SHUTDOWN);
    worker_drain_deadline_start(w, w->conf.shutdown_timeout_ms / 1000.0);
    worker_stop_check(w);
}

static void worker_signal_cb(struct ev_loop *loop, ev_signal *s, int revents)
{
    struct worker *w = ev_userdata(loop);
    (void)revents;
    switch (s->signum) {
    case SIGTERM:
        worker_stop_begin(w, "SIGTERM");
        break;
    case SIGINT:
        worker_stop_begin(w, "SIGINT");
        break;
    case SIGHUP:
        worker_restart_begin(w);
        break;
    case SIGUSR1:
        if (log_open_file(w->conf.log_file) < 0)
            log_error(errno, "reopening log file %s failed", w->conf.log_file);
        else
            log_info("log file reopened");
        break;
    }
}

static void worker_tick_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct worker *w = ev_userdata(loop);
    (void)t;
    (void)revents;
    if (getppid() != w->hub_pid)
        worker_stop_begin(w, "hub is gone");
    worker_channels_tick(w);
}

int worker_signal_start(struct worker *w)
{
    ev_signal_init(&w->sig_term, worker_signal_cb, SIGTERM);
    ev_signal_init(&w->sig_int, worker_signal_cb, SIGINT);
    ev_signal_init(&w->sig_usr1, worker_signal_cb, SIGUSR1);
    ev_signal_init(&w->sig_hup, worker_signal_cb, SIGHUP);
    ev_signal_start(w->loop, &w->sig_term);
    ev_signal_start(w->loop, &w->sig_int);
    ev_signal_start(w->loop, &w->sig_usr1);
    ev_signal_start(w->loop, &w->sig_hup);
    /* main() blocked these until now; libev installs its handler but leaves the mask alone. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGHUP);
    if (sigprocmask(SIG_UNBLOCK, &set, NULL) < 0) {
        log_error(errno, "sigprocmask(SIG_UNBLOCK) failed");
        return -1;
    }
    ev_timer_init(&w->tick, worker_tick_cb, 1., 1.);
    ev_timer_start(w->loop, &w->tick);
    return 0;
}
