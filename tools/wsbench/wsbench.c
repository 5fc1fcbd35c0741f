/* wsbench.c -- the parent process: fork the clients, walk the phases, publish, report.
 *
 * The parent owns the timeline. It forks --processes clients (client.c), each connecting its
 * share; when all report READY it samples the server, sends START, then either waits --hold or
 * settles and publishes (publisher.c) on its own epoll loop; it tells the clients how many
 * broadcasts the server accepted, waits until they have them all or --drain-timeout passes,
 * samples the server again, sends STOP, merges the results and prints the report (report.c).
 * Every wait has a deadline, and --timeout caps the whole run: a stuck server or client can
 * delay the report but never prevent it. SIGINT/SIGTERM only set a flag; the loop then stops
 * the run and still reports. With --end-hold the connections stay open a while after the run,
 * for a test to look at the server; SIGUSR1 (a flag too) ends that wait.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "client.h"
#include "log.h"
#include "opts.h"
#include "procstat.h"
#include "publisher.h"
#include "report.h"
#include "wire.h"

#define TAG_CHILD       (1ULL << 32)
#define TAG_PUBLISHER   (2ULL << 32)
#define RESULT_GRACE_NS (10 * 1000000000LL)

struct child {
    pid_t pid;
    int cmd_fd; /* parent writes commands */
    int rep_fd; /* parent reads reports; -1 once closed */
    int ready, complete, result;
};

struct parent {
    struct opts o;
    char run_id[CLIENT_RUN_ID_LEN + 1];
    int epfd;
    struct child *kids;
    uint32_t n_gone;
    int64_t deadline;      /* --timeout */
    struct publisher *pub; /* while publishing */
    struct run run;
};

static volatile sig_atomic_t stop_requested, hold_cut;

static void on_stop_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static void on_usr1(int sig)
{
    (void)sig;
    hold_cut = 1;
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static double self_cpu_s(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) < 0)
        return 0;
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
        log_warn(errno, "getrlimit(RLIMIT_NOFILE) failed");
        return;
    }
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
        log_warn(errno, "setrlimit(RLIMIT_NOFILE) failed");
}

/* Forks the clients. Returns 0 or -1. */
static int spawn_children(struct parent *p)
{
    const struct opts *o = &p->o;
    p->kids = calloc(o->processes, sizeof(*p->kids));
    if (p->kids == NULL)
        return -1;
    for (uint32_t i = 0; i < o->processes; i++) {
        int cmd[2], rep[2];
        if (pipe2(cmd, O_CLOEXEC) < 0 || pipe2(rep, O_CLOEXEC) < 0) {
            log_error(errno, "pipe2() failed");
            return -1;
        }
        uint32_t first = (uint32_t)((uint64_t)o->connections * i / o->processes);
        uint32_t last = (uint32_t)((uint64_t)o->connections * (i + 1) / o->processes);
        pid_t pid = fork();
        if (pid < 0) {
            log_error(errno, "fork() failed");
            return -1;
        }
        if (pid == 0) {
            for (uint32_t k = 0; k < i; k++) {
                close(p->kids[k].cmd_fd);
                close(p->kids[k].rep_fd);
            }
            close(cmd[1]);
            close(rep[0]);
            log_set_role("wsbench-client", (int)i);
            client_run(o, i, first, last - first, cmd[0], rep[1], p->run_id);
        }
        close(cmd[0]);
        close(rep[1]);
        p->kids[i] = (struct child){.pid = pid, .cmd_fd = cmd[1], .rep_fd = rep[0]};
    }
    return 0;
}

static int watch_children(struct parent *p)
{
    for (uint32_t i = 0; i < p->o.processes; i++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = TAG_CHILD | i};
        if (epoll_ctl(p->epfd, EPOLL_CTL_ADD, p->kids[i].rep_fd, &ev) < 0) {
            log_error(errno, "epoll_ctl(report pipe) failed");
            return -1;
        }
    }
    return 0;
}

/* Sends a command, followed by `extra` bytes when given (EXPECT's seqs under --resume). A
 * child reads the whole command before anything else, so a large trailer cannot deadlock. */
static void send_command_with(struct parent *p, uint32_t kind, int64_t arg, const void *extra,
                              size_t extra_len)
{
    struct wire_cmd cmd = {.kind = kind, .arg = arg};
    for (uint32_t i = 0; i < p->o.processes; i++) {
        if (p->kids[i].rep_fd < 0)
            continue;
        if (wire_write_all(p->kids[i].cmd_fd, &cmd, sizeof(cmd)) < 0 ||
            (extra_len > 0 && wire_write_all(p->kids[i].cmd_fd, extra, extra_len) < 0))
            log_warn(errno, "write(command pipe of client %u) failed", i);
    }
}

static void send_command(struct parent *p, uint32_t kind, int64_t arg)
{
    send_command_with(p, kind, arg, NULL, 0);
}

static void child_gone(struct parent *p, struct child *k)
{
    if (epoll_ctl(p->epfd, EPOLL_CTL_DEL, k->rep_fd, NULL) < 0)
        log_warn(errno, "epoll_ctl(DEL report pipe) failed");
    close(k->rep_fd);
    k->rep_fd = -1;
    p->n_gone++;
    if (!k->result) {
        p->run.children_lost++;
        log_error(0, "client process %d ended without a result", (int)k->pid);
    }
}

/* Reads one report from client i. */
static void on_report(struct parent *p, uint32_t i)
{
    struct child *k = &p->kids[i];
    struct wire_hdr h;
    union {
        struct wire_ready ready;
        struct wire_complete complete;
        struct wire_result result;
    } *body = NULL;
    static int64_t *msgs;

    if (wire_read_all(k->rep_fd, &h, sizeof(h)) < 0 || h.size > sizeof(*body) ||
        (body = malloc(sizeof(*body))) == NULL || wire_read_all(k->rep_fd, body, h.size) < 0) {
        free(body);
        child_gone(p, k);
        return;
    }
    if (h.kind == WIRE_READY && !k->ready) {
        uint64_t failed = 0;
        for (int f = 0; f < WIRE_FAIL_COUNT; f++)
            failed += body->ready.failed[f];
        k->ready = 1;
        log_info("client %u connected: %llu ok, %llu failed", i, (unsigned long long)body->ready.ok,
                 (unsigned long long)failed);
    } else if (h.kind == WIRE_COMPLETE && !k->complete) {
        k->complete = 1;
    } else if (h.kind == WIRE_RESULT && !k->result) {
        size_t extra = (size_t)p->run.msg_tracked * sizeof(int64_t);
        if (extra > 0 && msgs == NULL)
            msgs = malloc(extra);
        if (extra > 0 && (msgs == NULL || wire_read_all(k->rep_fd, msgs, extra) < 0)) {
            free(body);
            child_gone(p, k);
            return;
        }
        k->result = 1;
        report_merge(&p->run, &body->result, extra > 0 ? msgs : NULL);
    }
    free(body);
}

typedef int (*done_fn)(const struct parent *p);

/* Runs the loop until done(p), `until`, a stop signal or --timeout. Returns 0 when done, 1 at
 * `until`, -1 when the run must stop (p->run.aborted says why). */
static int wait_until(struct parent *p, int64_t until, done_fn done)
{
    struct epoll_event evs[64];

    for (;;) {
        int64_t now = now_ns();
        if (p->pub != NULL)
            publisher_tick(p->pub, now);
        if (done != NULL && done(p))
            return 0;
        if (stop_requested) {
            p->run.aborted = "interrupted";
            return -1;
        }
        if (now >= p->deadline) {
            p->run.aborted = "timeout";
            return -1;
        }
        if (now >= until)
            return 1;
        int64_t wake = until < p->deadline ? until : p->deadline;
        int64_t due = p->pub != NULL ? publisher_next_due(p->pub) : -1;
        if (due >= 0 && due < wake)
            wake = due;
        int ms = (int)((wake - now + 999999) / 1000000);
        int n = epoll_wait(p->epfd, evs, 64, ms > 1000 ? 1000 : ms);
        if (n < 0 && errno != EINTR) {
            log_error(errno, "epoll_wait() failed");
            p->run.aborted = "epoll_wait failed";
            return -1;
        }
        now = now_ns();
        for (int i = 0; i < n; i++) {
            uint64_t tag = evs[i].data.u64;
            if ((tag >> 32) == (TAG_CHILD >> 32))
                on_report(p, (uint32_t)tag);
            else if (p->pub != NULL)
                publisher_on_event(p->pub, (uint32_t)tag, evs[i].events, now);
        }
    }
}

/* Has every client reached `flag` (an offset into struct child) or gone? */
static int every_child(const struct parent *p, size_t flag)
{
    for (uint32_t i = 0; i < p->o.processes; i++) {
        const struct child *k = &p->kids[i];
        if (k->rep_fd >= 0 && !*(const int *)((const char *)k + flag))
            return 0;
    }
    return 1;
}

static int all_ready(const struct parent *p)
{
    return every_child(p, offsetof(struct child, ready));
}

static int all_complete(const struct parent *p)
{
    return every_child(p, offsetof(struct child, complete));
}

static int all_results(const struct parent *p)
{
    return every_child(p, offsetof(struct child, result));
}

static int publisher_finished(const struct parent *p)
{
    return publisher_is_done(p->pub);
}

static int no_clients(const struct parent *p)
{
    return p->n_gone >= p->o.processes;
}

static int hold_over(const struct parent *p)
{
    return hold_cut || no_clients(p);
}

static void sample_server(struct parent *p, struct procstat_sample *s)
{
    if (procstat_sample(&p->o, s) < 0)
        log_warn(0, "server sample failed");
}

/* fanout: settle, publish, then wait for the deliveries. Returns -1 if the run must stop. */
static int run_fanout(struct parent *p)
{
    const struct opts *o = &p->o;

    if (wait_until(p, now_ns() + o->settle_ns, no_clients) != 1)
        return -1;
    p->pub = publisher_create(o, p->epfd, TAG_PUBLISHER, p->run_id);
    if (p->pub == NULL) {
        p->run.aborted = "out of memory";
        return -1;
    }
    p->run.pub = publisher_stats(p->pub);
    log_info("publishing %u broadcasts at %g/s", o->messages, o->rate);
    publisher_start(p->pub, now_ns());
    /* Answers get until the last broadcast is due plus the drain timeout. */
    int64_t last_due = publisher_last_due(p->pub);
    int rc = wait_until(p, last_due + o->drain_timeout_ns, publisher_finished);
    if (rc < 0)
        return -1;
    if (rc == 1)
        log_warn(0, "publisher answers still missing after the drain timeout");
    /* Every broadcast is sent; what is still unanswered is given up (and counted). */
    publisher_abandon(p->pub);
    log_info("published %llu, accepted %llu", (unsigned long long)p->run.pub->sent,
             (unsigned long long)p->run.pub->ok);
    const struct publisher_stats *ps = p->run.pub;
    if (o->resume && ps->seq_missing > 0)
        log_warn(0, "%llu accepted broadcasts had no seq in their answer: not expected",
                 (unsigned long long)ps->seq_missing);
    if (o->channels > 0) /* --channels: what each channel's subscribers must have */
        send_command_with(p, WIRE_CMD_EXPECT, (int64_t)ps->ok, ps->chan_ok,
                          (size_t)o->channels * sizeof(uint32_t));
    else
        send_command_with(p, WIRE_CMD_EXPECT, (int64_t)ps->ok, ps->acked_seq,
                          o->resume ? (size_t)o->messages * sizeof(uint64_t) : 0);
    rc = wait_until(p, now_ns() + o->drain_timeout_ns, all_complete);
    if (rc == 1)
        log_warn(0, "not every subscriber had every broadcast after the drain timeout");
    return rc < 0 ? -1 : 0;
}

/* STOP, then collect the results and reap the clients. */
static void finish_children(struct parent *p)
{
    send_command(p, WIRE_CMD_STOP, 0);
    p->deadline = now_ns() + p->o.close_timeout_ns + RESULT_GRACE_NS;
    const char *aborted = p->run.aborted;
    wait_until(p, p->deadline, all_results);
    p->run.aborted = aborted;
    for (uint32_t i = 0; i < p->o.processes; i++) {
        struct child *k = &p->kids[i];
        if (k->rep_fd >= 0) {
            if (!k->result && kill(k->pid, SIGKILL) < 0)
                log_warn(errno, "kill(%d) failed", (int)k->pid);
            child_gone(p, k);
        }
        close(k->cmd_fd);
        int status;
        while (waitpid(k->pid, &status, 0) < 0 && errno == EINTR)
            ;
    }
}

static void make_run_id(char *id)
{
    uint32_t r;
    if (getrandom(&r, sizeof(r), 0) != sizeof(r))
        r = (uint32_t)now_ns() ^ (uint32_t)getpid();
    snprintf(id, CLIENT_RUN_ID_LEN + 1, "%08x", r);
}

static void setup_signals(void)
{
    struct sigaction sa = {.sa_handler = on_stop_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    struct sigaction su = {.sa_handler = on_usr1};
    sigemptyset(&su.sa_mask);
    sigaction(SIGUSR1, &su, NULL);
    signal(SIGPIPE, SIG_IGN);
}

static int run_phases(struct parent *p)
{
    struct run *r = &p->run;

    if (wait_until(p, p->deadline, all_ready) < 0)
        return -1;
    r->t_connected = now_ns();
    log_info("connect phase over after %.1f s", (double)(r->t_connected - r->t_start) / 1e9);
    sample_server(p, &r->after);
    send_command(p, WIRE_CMD_START, 0);
    r->t_phase_start = now_ns();
    procstat_host(&r->host_busy[0], &r->host_total[0]);
    double cpu0 = self_cpu_s();
    int rc = 0;
    if (p->o.mode == OPTS_MODE_HOLD)
        rc = wait_until(p, r->t_phase_start + p->o.hold_ns, no_clients) < 0 ? -1 : 0;
    else
        rc = run_fanout(p);
    r->t_phase_end = now_ns();
    r->parent_phase_cpu_s = self_cpu_s() - cpu0;
    procstat_host(&r->host_busy[1], &r->host_total[1]);
    sample_server(p, &r->end);
    if (rc == 0 && p->o.end_hold_ns > 0) {
        log_info("end hold: connections stay open up to %.1f s (SIGUSR1 ends it)",
                 (double)p->o.end_hold_ns / 1e9);
        if (wait_until(p, now_ns() + p->o.end_hold_ns, hold_over) < 0)
            rc = -1;
        log_info("end hold over");
    }
    return rc;
}

int main(int argc, char **argv)
{
    static struct parent p;
    struct run *r = &p.run;

    log_set_role("wsbench", -1);
    if (opts_parse(&p.o, argc, argv) < 0)
        return 2;
    log_set_level(p.o.verbose ? LOG_LEVEL_INFO : LOG_LEVEL_WARN);
    raise_fd_limit();
    setup_signals();
    make_run_id(p.run_id);
    r->o = &p.o;
    r->run_id = p.run_id;
    if (p.o.mode == OPTS_MODE_FANOUT && p.o.messages <= CLIENT_MAX_TRACKED) {
        r->msg_tracked = p.o.messages;
        r->msg_max = malloc(r->msg_tracked * sizeof(int64_t));
        if (r->msg_max == NULL)
            return 1;
        for (uint32_t i = 0; i < r->msg_tracked; i++)
            r->msg_max[i] = -1;
    }
    hist_init(&r->total.latency);
    hist_init(&r->total.churn_rejoin);
    hist_init(&r->total.recovery);
    for (int k = 0; k < WIRE_CAUSES; k++)
        hist_init(&r->total.recovery_cause[k]);
    if (procstat_sample(&p.o, &r->before) < 0)
        return 2;
    r->after = r->end = r->before;
    r->t_start = r->t_connected = r->t_phase_start = r->t_phase_end = now_ns();
    p.deadline = r->t_start + p.o.timeout_ns;
    if (spawn_children(&p) < 0)
        return 1;
    p.epfd = epoll_create1(EPOLL_CLOEXEC);
    if (p.epfd < 0 || watch_children(&p) < 0) {
        log_error(errno, "epoll setup failed");
        return 1;
    }
    run_phases(&p);
    finish_children(&p);
    r->t_end = now_ns();
    struct rusage ch;
    r->client_cpu_s = self_cpu_s();
    if (getrusage(RUSAGE_CHILDREN, &ch) == 0)
        r->client_cpu_s += (double)ch.ru_utime.tv_sec + ch.ru_utime.tv_usec / 1e6 +
                           (double)ch.ru_stime.tv_sec + ch.ru_stime.tv_usec / 1e6;
    report_print(r, stdout);
    publisher_destroy(p.pub);
    return r->aborted != NULL || r->children_lost > 0 ? 1 : 0;
}
