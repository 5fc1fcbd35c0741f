/* hub_signal.c -- the hub's signals: blocked, read from a signalfd, handled in a fixed order.
 *
 * The hub installs no signal handlers at all. Every signal it acts on is blocked for the whole
 * life of the process and read as data from a signalfd in the poll loop, so no work (and no
 * logging) ever happens in a handler and no signal can slip in between a check and a sleep --
 * the problem nginx solves with sigsuspend. Children get an empty mask and default dispositions
 * back between fork and exec (hub_child.c).
 *
 * One read may return several signals; standard signals do not queue, so a burst of SIGCHLD is
 * one entry, which is why reaping always loops on waitpid(WNOHANG). The flags are then handled in
 * this order, each a short block:
 *
 *   1. reap      SIGCHLD: collect exits first, so a stop or reopen sees the current children
 *   2. stop      SIGTERM/SIGINT/SIGQUIT: begin a graceful stop; a second one forces SIGKILL
 *   3. restart   SIGHUP: rolling restart (hub_restart.c; queued behind one in progress)
 *   4. reopen    SIGUSR1: reopen the log file and forward SIGUSR1 to every child
 *   5. upgrade   SIGUSR2: binary upgrade, a new hub from the binary at our path (hub_upgrade.c)
 */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "hub.h"
#include "log.h"

static const int hub_signals[] = {SIGCHLD, SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2};

struct hub_pending {
    int reap;
    int stop; /* signal number of the (last) stop request, 0 = none */
    int restart;
    int reopen;
    int upgrade;
};

/* Blocks the hub's signals and returns a non-blocking, close-on-exec signalfd, or -1. SIGPIPE is
 * ignored: a log pipe whose reader went away must not kill the supervisor. */
int hub_signal_open(void)
{
    sigset_t set;
    sigemptyset(&set);
    for (size_t i = 0; i < sizeof(hub_signals) / sizeof(hub_signals[0]); i++)
        sigaddset(&set, hub_signals[i]);
    if (sigprocmask(SIG_BLOCK, &set, NULL) < 0) {
        log_error(errno, "sigprocmask() failed");
        return -1;
    }
    if (signal(SIGPIPE, SIG_IGN) == SIG_ERR) {
        log_error(errno, "signal(SIGPIPE) failed");
        return -1;
    }
    int fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (fd < 0)
        log_error(errno, "signalfd() failed");
    return fd;
}

/* Drains the signalfd into `p`. */
static void hub_signal_read(int fd, struct hub_pending *p)
{
    struct signalfd_siginfo si[16];
    for (;;) {
        ssize_t n = read(fd, si, sizeof(si));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN)
                log_error(errno, "read(signalfd) failed");
            return;
        }
        for (size_t i = 0; i < (size_t)n / sizeof(si[0]); i++) {
            int sig = (int)si[i].ssi_signo;
            if (sig == SIGCHLD)
                p->reap = 1;
            else if (sig == SIGTERM || sig == SIGINT || sig == SIGQUIT)
                p->stop = sig;
            else if (sig == SIGHUP)
                p->restart = 1;
            else if (sig == SIGUSR1)
                p->reopen = 1;
            else if (sig == SIGUSR2)
                p->upgrade = 1;
            if (sig != SIGCHLD)
                log_debug("received SIG%s from pid %u", sigabbrev_np(sig), si[i].ssi_pid);
        }
    }
}

static void hub_signal_stop(struct hub *h, int sig)
{
    if (h->phase == HUB_PHASE_RUNNING) {
        char why[32];
        snprintf(why, sizeof(why), "SIG%s", sigabbrev_np(sig));
        hub_stop_begin(h, why);
    } else {
        log_notice("SIG%s received again while stopping: killing every child now",
                   sigabbrev_np(sig));
        hub_stop_force(h);
    }
}

static void hub_signal_reopen(struct hub *h)
{
    if (h->conf.log_file[0] == '\0')
        log_notice("SIGUSR1: logging to stderr, nothing to reopen; forwarding to the children");
    else if (log_open_file(h->conf.log_file) < 0)
        log_error(errno, "reopening log file \"%s\" failed", h->conf.log_file);
    else
        log_notice("SIGUSR1: log file %s reopened; forwarding to the children", h->conf.log_file);
    hub_children_kill(h, SIGUSR1, 0);
}

/* Reads pending signals and acts on them in the documented order. */
void hub_signal_dispatch(struct hub *h)
{
    struct hub_pending p;
    memset(&p, 0, sizeof(p));
    hub_signal_read(h->signal_fd, &p);

    if (p.reap) {
        hub_reap(h);
        hub_restart_tick(h, hub_now_ms()); /* the last old worker gone: the restart is over */
        hub_upgrade_tick(h, hub_now_ms()); /* likewise for a binary upgrade's old workers */
    }
    if (p.stop)
        hub_signal_stop(h, p.stop);
    if (p.restart)
        hub_restart_request(h, "SIGHUP");
    if (p.reopen)
        hub_signal_reopen(h);
    if (p.upgrade)
        hub_upgrade_request(h);
}
