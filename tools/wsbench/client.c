/* client.c -- the loop of one client process: pace the connects, expire slow handshakes, obey
 * the parent's commands, and report (see wire.h for the exchange).
 *
 * Connections start in index order at a steady rate, so their deadlines are ordered too and
 * expiring them is a cursor walk rather than a timer per connection. The loop sleeps in
 * epoll_wait; the only timed work is pacing, expiry and the final close deadline, so an idle
 * hold costs nothing. Measured CPU for the report is this process's own (getrusage SELF)
 * between START and the moment every subscribed connection had everything (or STOP).
 */
#include "client_int.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "channels.h"
#include "log.h"

#define CLIENT_CMD_TAG       UINT32_MAX
#define CLIENT_TICK_MAX_MS   100
#define CLIENT_WINDOW_MIN_NS (5 * 1000000LL)

static int64_t client_cpu_ns(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) < 0)
        return 0;
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int64_t client_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* splitmix64: keys and masks need unpredictability between runs, not cryptographic strength. */
uint64_t client_rand(struct client *cl)
{
    uint64_t z = (cl->rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static double client_cpu_s(const struct rusage *ru)
{
    return (double)ru->ru_utime.tv_sec + ru->ru_utime.tv_usec / 1e6 + (double)ru->ru_stime.tv_sec +
           ru->ru_stime.tv_usec / 1e6;
}

int client_parse_payload(const uint8_t *p, size_t len, const char *run_id, uint64_t *seq,
                         int64_t *send_ns)
{
    static const char head[] = "{\"r\":\"";
    size_t hl = sizeof(head) - 1, i;
    uint64_t s = 0, t = 0;

    if (len < hl + CLIENT_RUN_ID_LEN + 12 || memcmp(p, head, hl) != 0 ||
        memcmp(p + hl, run_id, CLIENT_RUN_ID_LEN) != 0)
        return -1;
    i = hl + CLIENT_RUN_ID_LEN;
    if (i + 6 > len || memcmp(p + i, "\",\"s\":", 6) != 0)
        return -1;
    for (i += 6; i < len && p[i] >= '0' && p[i] <= '9'; i++)
        s = s * 10 + (uint64_t)(p[i] - '0');
    if (i + 5 > len || memcmp(p + i, ",\"t\":", 5) != 0)
        return -1;
    size_t digits = 0;
    for (i += 5; i < len && p[i] >= '0' && p[i] <= '9' && digits < 19; i++, digits++)
        t = t * 10 + (uint64_t)(p[i] - '0');
    if (digits == 0 || i >= len || (p[i] != ',' && p[i] != '}'))
        return -1;
    *seq = s;
    *send_ns = (int64_t)t;
    return 0;
}

static void client_sample_phase(struct client *cl, int64_t now)
{
    struct rusage ru;
    if (cl->phase_sampled || cl->phase_start_ns == 0)
        return;
    cl->phase_sampled = 1;
    if (getrusage(RUSAGE_SELF, &ru) < 0) {
        log_warn(errno, "getrusage() failed");
        return;
    }
    cl->res.cpu_phase_s = client_cpu_s(&ru) - client_cpu_s(&cl->ru_start);
    cl->res.phase_ns = now - cl->phase_start_ns;
}

void client_check_complete(struct client *cl, int64_t now)
{
    if (cl->complete_sent || cl->expected < 0 || cl->phase != PHASE_RUNNING ||
        cl->complete + cl->dead_incomplete < cl->res.subscribed)
        return;
    struct wire_complete wc = {.last_recv_ns = cl->res.last_recv_ns};
    cl->complete_sent = 1;
    client_sample_phase(cl, now);
    if (wire_send(cl->report_fd, WIRE_COMPLETE, cl->child, &wc, sizeof(wc)) < 0)
        log_error(errno, "write(report pipe) failed");
}

/* Starts what the rate and the in-flight cap allow, and fails handshakes past their deadline. */
static void client_pace(struct client *cl, int64_t now)
{
    uint64_t allowed = cl->count;
    if (cl->rate > 0)
        allowed = (uint64_t)((double)(now - cl->t0) * cl->rate / 1e9) + 1;
    while (cl->next_start < cl->count && cl->next_start < allowed &&
           cl->pending < cl->o->max_pending)
        conn_start(cl, cl->next_start++, now);

    while (cl->oldest_pending < cl->next_start) {
        struct conn *c = &cl->conns[cl->oldest_pending];
        if ((c->state == CONN_CONNECTING || c->state == CONN_HANDSHAKE) && !c->reconnecting) {
            if (c->deadline_ns > now)
                break;
            conn_fail(cl, c, WIRE_FAIL_TIMEOUT, 0);
        }
        cl->oldest_pending++;
    }
    if (cl->next_start == cl->count && cl->pending == 0) {
        struct wire_ready r = {.ok = cl->res.ok, .done_ns = now};
        memcpy(r.failed, cl->res.failed, sizeof(r.failed));
        cl->phase = PHASE_READY;
        if (wire_send(cl->report_fd, WIRE_READY, cl->child, &r, sizeof(r)) < 0) {
            log_error(errno, "write(report pipe) failed");
            exit(1);
        }
    }
}

/* Milliseconds epoll_wait may sleep. */
static int client_wait_ms(const struct client *cl, int64_t now)
{
    int64_t until = -1;

    if (cl->phase == PHASE_CONNECTING) {
        until = now + CLIENT_TICK_MAX_MS * 1000000LL;
        if (cl->next_start < cl->count && cl->pending < cl->o->max_pending && cl->rate > 0) {
            int64_t next = cl->t0 + (int64_t)((double)cl->next_start * 1e9 / cl->rate);
            if (next < until)
                until = next;
        }
        if (cl->oldest_pending < cl->next_start &&
            cl->conns[cl->oldest_pending].deadline_ns < until)
            until = cl->conns[cl->oldest_pending].deadline_ns;
    } else if (cl->phase == PHASE_RUNNING) {
        until = churn_next_wake(cl);
    } else if (cl->phase == PHASE_CLOSING) {
        until = cl->close_deadline;
    }
    if (cl->phase != PHASE_CLOSING) {
        int64_t r = resume_next_wake(cl);
        if (r >= 0 && (until < 0 || r < until))
            until = r;
    }
    if (until < 0)
        return -1;
    int64_t ms = (until - now + 999999) / 1000000;
    return ms < 0 ? 0 : ms > CLIENT_TICK_MAX_MS ? CLIENT_TICK_MAX_MS : (int)ms;
}

static void client_on_start(struct client *cl, int64_t now)
{
    for (uint32_t i = 0; i < cl->count; i++) {
        const struct conn *c = &cl->conns[i];
        /* A resuming client is one even while it reconnects. */
        if ((c->state == CONN_OPEN || c->resumer) && !c->churner && !c->stalled) {
            cl->conns[i].subscribed = 1;
            cl->res.subscribed++;
        }
    }
    if (getrusage(RUSAGE_SELF, &cl->ru_start) < 0)
        log_warn(errno, "getrusage() failed");
    cl->phase_start_ns = now;
    cl->phase = PHASE_RUNNING;
    churn_start(cl, now);
}

/* The server accepted `n` broadcasts: count who already has them all. */
static void client_on_expect(struct client *cl, int64_t n, int64_t now)
{
    cl->expected = n;
    cl->churn_on = 0; /* every POST is answered: the end of the run stays still */
    cl->complete = cl->dead_incomplete = 0;
    if (cl->rs != NULL) { /* completion by position against the acknowledged seqs */
        resume_on_expect(cl, now);
        return;
    }
    for (uint32_t i = 0; i < cl->count; i++) {
        struct conn *c = &cl->conns[i];
        if (!c->subscribed)
            continue;
        c->complete = c->unique >= chan_expected(cl, c);
        if (c->complete)
            cl->complete++;
        else if (c->state != CONN_OPEN)
            cl->dead_incomplete++;
    }
    client_check_complete(cl, now);
}

static void client_on_stop(struct client *cl, int64_t now)
{
    client_sample_phase(cl, now);
    cl->churn_on = 0;
    if (cl->phase == PHASE_CONNECTING) /* aborted run: give up on pending attempts */
        cl->next_start = cl->count;
    for (uint32_t i = 0; i < cl->count; i++) {
        struct conn *c = &cl->conns[i];
        if (c->resumer && !(c->state == CONN_OPEN && cl->rs[i].welcomed))
            cl->res.resume_waiting_at_stop++;
        if (c->state == CONN_OPEN && c->stalled) { /* it would never read the answer */
            cl->res.open_at_stop++;
            conn_release(cl, c);
        } else if (c->state == CONN_OPEN) {
            cl->res.open_at_stop++;
            conn_send_close(cl, c, 1000);
        } else if (c->state == CONN_CONNECTING || c->state == CONN_HANDSHAKE) {
            conn_release(cl, c);
        }
    }
    cl->close_deadline = now + cl->o->close_timeout_ns;
    cl->phase = PHASE_CLOSING;
}

static void client_on_command(struct client *cl, int64_t now)
{
    struct wire_cmd cmd;
    if (wire_read_all(cl->cmd_fd, &cmd, sizeof(cmd)) < 0) {
        /* The parent is gone: nobody will read a report. */
        log_error(errno, "read(command pipe) failed; exiting");
        exit(1);
    }
    switch (cmd.kind) {
    case WIRE_CMD_START:
        client_on_start(cl, now);
        break;
    case WIRE_CMD_EXPECT:
        /* --resume: the server's seq of every broadcast follows (wire.h). */
        if (cl->acked_seq != NULL && cl->o->mode == OPTS_MODE_FANOUT &&
            wire_read_all(cl->cmd_fd, cl->acked_seq, cl->o->messages * sizeof(uint64_t)) < 0) {
            log_error(errno, "read(command pipe) failed; exiting");
            exit(1);
        }
        if (cl->chan_expect != NULL && chan_read_expect(cl, cl->cmd_fd) < 0) {
            log_error(errno, "read(command pipe) failed; exiting");
            exit(1);
        }
        client_on_expect(cl, cmd.arg, now);
        break;
    case WIRE_CMD_STOP:
        client_on_stop(cl, now);
        break;
    default:
        log_error(0, "unknown command %u from the parent", cmd.kind);
        exit(1);
    }
}

/* Closes what is left, totals the losses and sends the result. */
static void client_finish(struct client *cl) __attribute__((noreturn));
static void client_finish(struct client *cl)
{
    struct wire_result *r = &cl->res;
    struct rusage ru;
    for (uint32_t i = 0; i < cl->count; i++) {
        struct conn *c = &cl->conns[i];
        int64_t expected = cl->expected >= 0 ? chan_expected(cl, c) : (int64_t)cl->o->messages;
        if (c->subscribed && cl->chan_expect != NULL && cl->expected >= 0)
            r->chan_expected += (uint64_t)expected;
        if (c->churner) {
            churn_session_end(cl, c);
        } else if (c->resumer) {
            r->unique += c->unique; /* loss: resume_finish, against the acknowledged seqs */
        } else {
            if (c->subscribed && c->unique < expected)
                r->lost += (uint64_t)(expected - c->unique);
            r->unique += c->unique;
        }
        if (c->fd >= 0)
            conn_release(cl, c);
    }
    resume_finish(cl);
    r->attempted = cl->next_start;
    for (uint32_t m = 0; m < cl->msg_tracked; m++) {
        const struct msg_window *w = &cl->win[m];
        if (w->last_ns - w->first_ns < CLIENT_WINDOW_MIN_NS)
            continue; /* too short to tell busy from idle at batch granularity */
        r->window_ns += w->last_ns - w->first_ns;
        r->window_cpu_ns += w->cpu_last_ns - w->cpu_first_ns;
    }
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        r->cpu_total_s = client_cpu_s(&ru);
    size_t extra = (size_t)cl->msg_tracked * sizeof(int64_t);
    if (wire_send(cl->report_fd, WIRE_RESULT, cl->child, r, sizeof(*r)) < 0 ||
        (extra > 0 && wire_write_all(cl->report_fd, cl->msg_max, extra) < 0)) {
        log_error(errno, "write(report pipe) failed");
        exit(1);
    }
    exit(0);
}

static void client_init(struct client *cl, const struct opts *o, uint32_t child, uint32_t first,
                        uint32_t count, int cmd_fd, int report_fd, const char *run_id)
{
    memset(cl, 0, sizeof(*cl));
    cl->o = o;
    cl->run_id = run_id;
    cl->child = child;
    cl->first = first;
    cl->count = count;
    cl->cmd_fd = cmd_fd;
    cl->report_fd = report_fd;
    cl->expected = -1;
    cl->rate = o->connect_rate / o->processes;
    hist_init(&cl->res.latency);
    hist_init(&cl->res.churn_rejoin);
    hist_init(&cl->res.recovery);
    for (int k = 0; k < WIRE_CAUSES; k++)
        hist_init(&cl->res.recovery_cause[k]);
    if (getrandom(&cl->rng, sizeof(cl->rng), 0) != sizeof(cl->rng))
        cl->rng = (uint64_t)client_now() ^ ((uint64_t)getpid() << 32);
    cl->conns = calloc(count ? count : 1, sizeof(*cl->conns));
    if (o->mode == OPTS_MODE_FANOUT)
        cl->msg_tracked = o->messages <= CLIENT_MAX_TRACKED ? o->messages : 0;
    cl->msg_max = cl->msg_tracked ? malloc(cl->msg_tracked * sizeof(int64_t)) : NULL;
    cl->win = cl->msg_tracked ? calloc(cl->msg_tracked, sizeof(*cl->win)) : NULL;
    if (cl->conns == NULL || (cl->msg_tracked && (cl->msg_max == NULL || cl->win == NULL))) {
        log_error(ENOMEM, "allocating %u connections failed", count);
        exit(1);
    }
    for (uint32_t i = 0; i < cl->msg_tracked; i++)
        cl->msg_max[i] = -1;
    for (uint32_t i = 0; i < count; i++)
        cl->conns[i].fd = -1;
    if (o->stalled > 0) /* before the churn pool: a stalled connection never churns */
        for (uint32_t i = 0; i < count; i++)
            cl->conns[i].stalled = (uint8_t)churn_in_pool(o->stalled, (uint64_t)first + i);
    if (churn_init(cl) < 0) {
        log_error(ENOMEM, "allocating the churn pool failed");
        exit(1);
    }
    if (resume_init(cl) < 0) {
        log_error(ENOMEM, "allocating the resume state failed");
        exit(1);
    }
    if (chan_client_init(cl) < 0) {
        log_error(ENOMEM, "allocating the channel plan failed");
        exit(1);
    }
    cl->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (cl->epfd < 0) {
        log_error(errno, "epoll_create1() failed");
        exit(1);
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = CLIENT_CMD_TAG};
    if (epoll_ctl(cl->epfd, EPOLL_CTL_ADD, cmd_fd, &ev) < 0) {
        log_error(errno, "epoll_ctl(command pipe) failed");
        exit(1);
    }
}

void client_run(const struct opts *o, uint32_t child, uint32_t first, uint32_t count, int cmd_fd,
                int report_fd, const char *run_id)
{
    static struct client cl; /* large (read buffer): keep it off the stack */
    struct epoll_event evs[512];

    /* Die with the parent rather than hold thousands of sockets for nobody. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0)
        log_warn(errno, "prctl(PR_SET_PDEATHSIG) failed");
    signal(SIGINT, SIG_IGN); /* the parent decides when a Ctrl-C run stops */
    client_init(&cl, o, child, first, count, cmd_fd, report_fd, run_id);
    cl.t0 = client_now();
    for (;;) {
        int64_t now = client_now();
        if (cl.phase == PHASE_CONNECTING)
            client_pace(&cl, now);
        if (cl.phase == PHASE_RUNNING)
            churn_tick(&cl, now);
        if (cl.phase != PHASE_CLOSING)
            resume_tick(&cl, now);
        if (cl.phase == PHASE_CLOSING && (cl.closing == 0 || now >= cl.close_deadline))
            client_finish(&cl);
        int n = epoll_wait(cl.epfd, evs, 512, client_wait_ms(&cl, now));
        if (n < 0 && errno != EINTR) {
            log_error(errno, "epoll_wait() failed");
            exit(1);
        }
        now = client_now();
        if (n > 0 && cl.phase == PHASE_RUNNING)
            cl.cpu_now = client_cpu_ns();
        for (int k = 0; k < n; k++) {
            if (evs[k].data.u32 == CLIENT_CMD_TAG)
                client_on_command(&cl, now);
            else
                conn_on_event(&cl, evs[k].data.u32, evs[k].events, now);
        }
    }
}
