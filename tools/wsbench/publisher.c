/* publisher.c -- pipelined HTTP/1.1 POSTs at a fixed rate or Poisson arrivals (see publisher.h).
 *
 * Each connection keeps a FIFO of its requests' send times: HTTP/1.1 answers come back in
 * request order, so the head of the FIFO is always the request an answer belongs to. Answers
 * are parsed incrementally (Content-Length, chunked, or body-until-close) and their bodies are
 * skipped, never stored. The payload is stamped with CLOCK_MONOTONIC immediately before the
 * write that carries it; subscribers in other processes read the same clock. Poisson gaps and
 * payload sizes come from --seed through splitmix64, so a run can be repeated exactly and a
 * subscriber can recompute the size each broadcast must have.
 *
 * With --resume the answers' bodies matter: wshub answers a broadcast with {"seq":N}, and the
 * first bytes of each body are kept to read it, so the clients can be told exactly which
 * sequence numbers the server acknowledged.
 */
#include "publisher.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "channels.h"
#include "client.h"
#include "deflate.h"
#include "log.h"

#define PUB_SLOTS     80 /* two per lane (current + retiring) plus spares */
#define PUB_IN_BYTES  16384
#define PUB_BODY_KEEP 64 /* answer body bytes kept, for {"seq":N} */

enum pub_conn_state { PC_FREE = 0, PC_CONNECTING, PC_OPEN };

enum pub_read_state { RS_HEAD = 0, RS_BODY, RS_CHUNK_SIZE, RS_CHUNK_DATA, RS_TRAILER, RS_EOF };

struct pub_conn {
    int fd;
    int state;         /* enum pub_conn_state */
    int retiring;      /* its last request is written: no more go on it */
    int want_out;      /* EPOLLOUT armed */
    int lane;          /* which lane it serves, for clearing the lane when it closes */
    uint32_t requests; /* written on it */
    char *out;         /* requests not yet taken by the socket */
    size_t out_off, out_len, out_cap;
    int64_t *sent_at; /* FIFO of send times of unanswered requests */
    uint32_t *idx_at; /* ... and their broadcast indices, in the same slots */
    uint32_t q_head, q_count;
    uint32_t body_len; /* answer body bytes kept */
    char body[PUB_BODY_KEEP + 1];
    int rstate;      /* enum pub_read_state */
    uint64_t left;   /* body or chunk bytes still to skip */
    int status;      /* of the answer being read */
    int close_after; /* the answer being read says Connection: close */
    size_t in_len;
    char in[PUB_IN_BYTES];
};

struct publisher {
    const struct opts *o;
    int epfd;
    uint64_t tag_base;
    const char *run_id;
    int active[32]; /* per lane: slot taking new requests, -1 none */
    uint32_t next_seq;
    int64_t t0;
    int64_t next_due;  /* of broadcast next_seq */
    int64_t last_due;  /* of broadcast messages - 1 */
    uint64_t gap_rng;  /* poisson gaps, from --seed */
    int64_t prev_send; /* for the gap statistics */
    struct publisher_stats st;
    char *req; /* scratch for one request */
    size_t req_cap;
    struct pub_conn conns[PUB_SLOTS];
};

static int64_t pub_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

size_t publisher_payload(char *buf, size_t size, const char *run_id, uint64_t seq, int64_t now_ns)
{
    int n = snprintf(buf, 80, "{\"r\":\"%.*s\",\"s\":%" PRIu64 ",\"t\":%" PRId64 ",\"p\":\"",
                     CLIENT_RUN_ID_LEN, run_id, seq, now_ns);
    size_t len = (size_t)n;
    if (size > len + 2) {
        memset(buf + len, 'x', size - len - 2);
        len = size - 2;
    }
    memcpy(buf + len, "\"}", 3);
    return len + 2;
}

uint64_t publisher_mix(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

uint32_t publisher_size_for(const struct opts *o, uint64_t seq)
{
    if (o->size_max <= o->size)
        return o->size;
    uint64_t st = o->seed ^ (seq * 0xd1b54a32d192ed03ULL) ^ 0x5153u;
    return o->size + (uint32_t)(publisher_mix(&st) % (o->size_max - o->size + 1u));
}

/* One exponential gap of mean 1/rate, in ns (inverse transform of a uniform in (0, 1]). */
static int64_t pub_exp_gap(uint64_t *rng, double rate)
{
    double u = ((double)(publisher_mix(rng) >> 11) + 1.0) / 9007199254740992.0;
    return (int64_t)(-log(u) * 1e9 / rate);
}

struct publisher *publisher_create(const struct opts *o, int epfd, uint64_t tag_base,
                                   const char *run_id)
{
    struct publisher *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    p->o = o;
    p->epfd = epfd;
    p->tag_base = tag_base;
    p->run_id = run_id;
    p->req_cap = (size_t)(o->size_max > o->size ? o->size_max : o->size) + 2048 +
                 sizeof(o->pub.path) + sizeof(o->pub.host_header) + sizeof(o->pub_content_type);
    for (int i = 0; i < o->n_pub_headers; i++)
        p->req_cap += strlen(o->pub_headers[i]) + 2;
    p->req = malloc(p->req_cap);
    for (int i = 0; i < PUB_SLOTS; i++) {
        p->conns[i].fd = -1;
        p->conns[i].sent_at = NULL;
    }
    for (int i = 0; i < 32; i++)
        p->active[i] = -1;
    hist_init(&p->st.answer);
    if (o->resume) {
        p->st.acked_seq = malloc((o->messages ? o->messages : 1) * sizeof(uint64_t));
        for (uint32_t i = 0; p->st.acked_seq != NULL && i < o->messages; i++)
            p->st.acked_seq[i] = UINT64_MAX;
    }
    if (o->channels > 0)
        p->st.chan_ok = calloc(o->channels, sizeof(uint32_t));
    if (p->req == NULL || (o->resume && p->st.acked_seq == NULL) ||
        (o->channels > 0 && p->st.chan_ok == NULL)) {
        free(p->req);
        free(p->st.acked_seq);
        free(p->st.chan_ok);
        free(p);
        return NULL;
    }
    return p;
}

static void pub_close(struct publisher *p, struct pub_conn *pc)
{
    p->st.unanswered += pc->q_count;
    if (pc->fd >= 0 && close(pc->fd) < 0)
        log_warn(errno, "close(publisher fd %d) failed", pc->fd);
    if (p->active[pc->lane] == (int)(pc - p->conns))
        p->active[pc->lane] = -1;
    free(pc->out);
    free(pc->sent_at);
    free(pc->idx_at);
    memset(pc, 0, sizeof(*pc));
    pc->fd = -1;
}

void publisher_destroy(struct publisher *p)
{
    if (p == NULL)
        return;
    publisher_abandon(p);
    free(p->req);
    free(p->st.acked_seq);
    free(p->st.chan_ok);
    free(p);
}

void publisher_abandon(struct publisher *p)
{
    for (int i = 0; i < PUB_SLOTS; i++)
        if (p->conns[i].state != PC_FREE)
            pub_close(p, &p->conns[i]);
}

static void pub_epoll(struct publisher *p, struct pub_conn *pc, uint32_t events, int op)
{
    struct epoll_event ev = {.events = events, .data.u64 = p->tag_base + (uint64_t)(pc - p->conns)};
    if (epoll_ctl(p->epfd, op, pc->fd, &ev) < 0)
        log_error(errno, "epoll_ctl(publisher fd %d) failed", pc->fd);
    pc->want_out = (events & EPOLLOUT) != 0;
}

/* Opens a connection for `lane`. Returns its slot, or -1 (the caller counts the request). */
static int pub_open(struct publisher *p, int lane)
{
    int slot, one = 1;
    for (slot = 0; slot < PUB_SLOTS && p->conns[slot].state != PC_FREE; slot++)
        ;
    if (slot == PUB_SLOTS) {
        log_error(0, "all %d publisher connection slots busy", PUB_SLOTS);
        return -1;
    }
    struct pub_conn *pc = &p->conns[slot];
    pc->sent_at = calloc(p->o->pub_max_requests, sizeof(int64_t));
    pc->idx_at = calloc(p->o->pub_max_requests, sizeof(uint32_t));
    pc->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (pc->sent_at == NULL || pc->idx_at == NULL || pc->fd < 0) {
        log_error(errno, "socket() for the publisher failed");
        pub_close(p, pc);
        return -1;
    }
    p->st.connections++;
    pc->lane = lane;
    pc->state = PC_CONNECTING;
    if (setsockopt(pc->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
        log_warn(errno, "setsockopt(TCP_NODELAY) failed");
    if (connect(pc->fd, (const struct sockaddr *)&p->o->pub.addr, sizeof(p->o->pub.addr)) < 0 &&
        errno != EINPROGRESS) {
        log_error(errno, "connect(%s) failed", p->o->pub.url);
        p->st.connect_failed++;
        pub_close(p, pc);
        return -1;
    }
    pub_epoll(p, pc, EPOLLOUT, EPOLL_CTL_ADD);
    p->active[lane] = slot;
    return slot;
}

static int pub_flush(struct publisher *p, struct pub_conn *pc)
{
    while (pc->out_off < pc->out_len) {
        ssize_t n = send(pc->fd, pc->out + pc->out_off, pc->out_len - pc->out_off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            if (!pc->want_out)
                pub_epoll(p, pc, EPOLLIN | EPOLLOUT, EPOLL_CTL_MOD);
            return 0;
        }
        if (n < 0) {
            log_error(errno, "send(%s) failed", p->o->pub.url);
            pub_close(p, pc);
            return -1;
        }
        pc->out_off += (size_t)n;
    }
    pc->out_off = pc->out_len = 0;
    if (pc->want_out)
        pub_epoll(p, pc, EPOLLIN, EPOLL_CTL_MOD);
    return 0;
}

static int pub_append(struct pub_conn *pc, const char *buf, size_t len)
{
    if (pc->out_len + len > pc->out_cap) {
        size_t cap = (pc->out_len + len) * 2;
        char *nb = realloc(pc->out, cap);
        if (nb == NULL)
            return -1;
        pc->out = nb;
        pc->out_cap = cap;
    }
    memcpy(pc->out + pc->out_len, buf, len);
    pc->out_len += len;
    return 0;
}

/* Builds request `seq` into p->req. Returns its length. */
static size_t pub_request(struct publisher *p, uint64_t seq, int last, int64_t now)
{
    const struct opts *o = p->o;
    uint32_t size = publisher_size_for(o, seq);
    size_t body_cap = size > 80 ? size : 80;
    char cpath[sizeof(o->pub.path)];
    const char *path = chan_pub_path(o, seq, cpath, sizeof(cpath)); /* {c}: checked to fit */
    size_t head = (size_t)snprintf(p->req, p->req_cap,
                                   "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: %s\r\n%s",
                                   path != NULL ? path : o->pub.path, o->pub.host_header,
                                   o->pub_content_type, last ? "Connection: close\r\n" : "");
    for (int i = 0; i < o->n_pub_headers; i++)
        head += (size_t)snprintf(p->req + head, p->req_cap - head, "%s\r\n", o->pub_headers[i]);
    /* The body goes after a Content-Length line whose width we do not know yet: build it at
     * the end of the buffer and move it. */
    char *body = p->req + p->req_cap - body_cap - 1;
    size_t blen = o->pad_json ? deflate_json_payload(body, size, p->run_id, seq, now)
                              : publisher_payload(body, size, p->run_id, seq, now);
    head += (size_t)snprintf(p->req + head, p->req_cap - head, "Content-Length: %zu\r\n\r\n", blen);
    memmove(p->req + head, body, blen);
    return head + blen;
}

static void pub_send(struct publisher *p, uint64_t seq)
{
    int lane = (int)(seq % p->o->pub_connections);
    int slot = p->active[lane];
    int64_t now = pub_now();

    if (slot < 0 || p->conns[slot].retiring)
        slot = pub_open(p, lane);
    p->st.sent++;
    if (p->st.first_send_ns == 0)
        p->st.first_send_ns = now;
    p->st.last_send_ns = now;
    if (p->prev_send != 0) {
        double gap = (double)(now - p->prev_send) / 1e6;
        p->st.gap_sum_ms += gap;
        p->st.gap_sq_ms += gap * gap;
    }
    p->prev_send = now;
    if (slot < 0) {
        p->st.unanswered++;
        return;
    }
    struct pub_conn *pc = &p->conns[slot];
    int last = pc->requests + 1 >= p->o->pub_max_requests;
    size_t len = pub_request(p, seq, last, now);
    if (pub_append(pc, p->req, len) < 0) {
        log_error(ENOMEM, "queueing a POST failed");
        p->st.unanswered++;
        return;
    }
    pc->sent_at[(pc->q_head + pc->q_count) % p->o->pub_max_requests] = now;
    pc->idx_at[(pc->q_head + pc->q_count) % p->o->pub_max_requests] = (uint32_t)seq;
    pc->q_count++;
    pc->requests++;
    pc->retiring = last;
    if (pc->state == PC_OPEN)
        pub_flush(p, pc);
}

/* Due time of broadcast `seq` once broadcast seq - 1 was due at `prev` (fixed times are computed
 * from t0, so rounding never accumulates). */
static int64_t pub_due_after(struct publisher *p, uint64_t *rng, uint32_t seq, int64_t prev)
{
    if (seq == 0)
        return p->t0;
    if (p->o->arrivals == OPTS_ARRIVALS_POISSON)
        return prev + pub_exp_gap(rng, p->o->rate);
    return p->t0 + (int64_t)((double)seq * 1e9 / p->o->rate);
}

void publisher_start(struct publisher *p, int64_t now)
{
    uint64_t rng = p->o->seed ^ 0xa076c0ffeeULL, probe;
    p->t0 = now;
    p->gap_rng = rng;
    /* Walk the schedule once with a copy of the generator to know when it ends: the parent
     * waits for answers until then plus the drain timeout. */
    probe = rng;
    p->last_due = now;
    if (p->o->arrivals == OPTS_ARRIVALS_POISSON)
        for (uint32_t i = 1; i < p->o->messages; i++)
            p->last_due = pub_due_after(p, &probe, i, p->last_due);
    else if (p->o->messages > 0)
        p->last_due = pub_due_after(p, &probe, p->o->messages - 1, now);
    p->st.schedule_span_ns = p->last_due - now;
    p->next_due = now;
}

int64_t publisher_last_due(const struct publisher *p)
{
    return p->last_due;
}

int64_t publisher_next_due(const struct publisher *p)
{
    if (p->next_seq >= p->o->messages)
        return -1;
    return p->next_due;
}

void publisher_tick(struct publisher *p, int64_t now)
{
    int64_t due;
    while ((due = publisher_next_due(p)) >= 0 && due <= now) {
        pub_send(p, p->next_seq++);
        p->next_due = pub_due_after(p, &p->gap_rng, p->next_seq, due);
    }
}

/* One whole answer has been read: match it to the oldest request. Returns -1 if the connection
 * was closed because of it. */
/* The seq in an answer body such as {"seq":42}, or -1. */
static int pub_body_seq(const char *body, uint64_t *seq)
{
    const char *k = strstr(body, "\"seq\":");
    char *end;
    if (k == NULL)
        return -1;
    k += 6;
    while (*k == ' ')
        k++;
    if (*k < '0' || *k > '9')
        return -1;
    errno = 0;
    unsigned long long v = strtoull(k, &end, 10);
    if (errno != 0 || end == k)
        return -1;
    *seq = v;
    return 0;
}

static int pub_answered(struct publisher *p, struct pub_conn *pc, int64_t now)
{
    int cls = pc->status / 100;
    pc->body[pc->body_len] = '\0';
    if (pc->q_count > 0) {
        uint64_t seq;
        uint32_t idx = pc->idx_at[pc->q_head];
        if (cls == 2 && p->st.acked_seq != NULL && idx < p->o->messages) {
            if (pub_body_seq(pc->body, &seq) == 0 && seq != UINT64_MAX)
                p->st.acked_seq[idx] = seq;
            else
                p->st.seq_missing++;
        }
        if (cls == 2 && p->st.chan_ok != NULL && idx < p->o->messages)
            p->st.chan_ok[chan_of(p->o, idx)]++;
        hist_record(&p->st.answer, now - pc->sent_at[pc->q_head]);
        pc->q_head = (pc->q_head + 1) % p->o->pub_max_requests;
        pc->q_count--;
    }
    p->st.status_class[cls >= 1 && cls <= 5 ? cls : 0]++;
    if (cls == 2) {
        p->st.ok++;
    } else {
        p->st.failed++;
        if (p->st.first_bad_status == 0)
            p->st.first_bad_status = pc->status;
    }
    pc->rstate = RS_HEAD;
    if (pc->close_after || (pc->retiring && pc->q_count == 0)) {
        pub_close(p, pc);
        return -1;
    }
    return 0;
}

/* Value of header `name` within the head [h, end), or NULL. */
static const char *pub_header(const char *h, const char *end, const char *name)
{
    size_t nl = strlen(name);
    for (const char *line = h; line < end;) {
        const char *eol = memchr(line, '\n', (size_t)(end - line));
        if (eol == NULL)
            break;
        line = eol + 1;
        if ((size_t)(end - line) > nl && line[nl] == ':' && strncasecmp(line, name, nl) == 0) {
            const char *v = line + nl + 1;
            while (*v == ' ' || *v == '\t')
                v++;
            return v;
        }
    }
    return NULL;
}

/* Parses a response head at in[*pos]. Returns 1 when parsed, 0 for more bytes, -1 if bad. */
static int pub_read_head(struct pub_conn *pc, size_t *pos)
{
    const char *h = pc->in + *pos;
    const char *blank = memmem(h, pc->in_len - *pos, "\r\n\r\n", 4);
    const char *v;

    if (blank == NULL)
        return 0;
    if (sscanf(h, "HTTP/1.%*d %3d", &pc->status) != 1)
        return -1;
    pc->body_len = 0;
    *pos = (size_t)(blank + 4 - pc->in);
    v = pub_header(h, blank + 2, "Connection");
    pc->close_after = v != NULL && strncasecmp(v, "close", 5) == 0;
    v = pub_header(h, blank + 2, "Transfer-Encoding");
    if (pc->status / 100 == 1) {
        pc->rstate = RS_HEAD; /* interim answer: the real one follows */
    } else if (v != NULL && strncasecmp(v, "chunked", 7) == 0) {
        pc->rstate = RS_CHUNK_SIZE;
    } else if ((v = pub_header(h, blank + 2, "Content-Length")) != NULL) {
        pc->left = strtoull(v, NULL, 10);
        pc->rstate = RS_BODY;
    } else if (pc->status == 204 || pc->status == 304) {
        pc->left = 0;
        pc->rstate = RS_BODY;
    } else {
        pc->rstate = RS_EOF;
        pc->close_after = 1;
    }
    return 1;
}

/* Skips body bytes. Returns 1 when the counted part is done. */
static int pub_skip(struct pub_conn *pc, size_t *pos)
{
    size_t avail = pc->in_len - *pos;
    size_t take = pc->left < avail ? (size_t)pc->left : avail;
    size_t keep = PUB_BODY_KEEP - pc->body_len < take ? PUB_BODY_KEEP - pc->body_len : take;
    memcpy(pc->body + pc->body_len, pc->in + *pos, keep); /* chunk CRLFs too: harmless */
    pc->body_len += (uint32_t)keep;
    *pos += take;
    pc->left -= take;
    return pc->left == 0;
}

/* Reads one CRLF-terminated line at in[*pos] into [*line, *line_end). Returns 1 or 0. */
static int pub_line(struct pub_conn *pc, size_t *pos, const char **line)
{
    const char *s = pc->in + *pos;
    const char *e = memmem(s, pc->in_len - *pos, "\r\n", 2);
    if (e == NULL)
        return 0;
    *line = s;
    *pos = (size_t)(e + 2 - pc->in);
    return 1;
}

/* Consumes whatever answers are complete in pc->in. Returns -1 if the connection closed. */
static int pub_parse(struct publisher *p, struct pub_conn *pc, int64_t now)
{
    size_t pos = 0;
    const char *line;

    for (;;) {
        int done = 0, r;
        switch (pc->rstate) {
        case RS_HEAD:
            r = pub_read_head(pc, &pos);
            if (r < 0) {
                log_error(0, "unparseable answer from %s", p->o->pub.url);
                pub_close(p, pc);
                return -1;
            }
            if (r == 0)
                goto more;
            done = pc->rstate == RS_BODY && pc->left == 0;
            break;
        case RS_BODY:
            if (!pub_skip(pc, &pos))
                goto more;
            done = 1;
            break;
        case RS_CHUNK_SIZE:
            if (!pub_line(pc, &pos, &line))
                goto more;
            pc->left = strtoull(line, NULL, 16);
            pc->rstate = pc->left == 0 ? RS_TRAILER : RS_CHUNK_DATA;
            pc->left += 2; /* the CRLF after the data */
            break;
        case RS_CHUNK_DATA:
            if (!pub_skip(pc, &pos))
                goto more;
            pc->rstate = RS_CHUNK_SIZE;
            break;
        case RS_TRAILER:
            if (!pub_line(pc, &pos, &line))
                goto more;
            done = line[0] == '\r';
            break;
        case RS_EOF:
            pos = pc->in_len;
            goto more;
        }
        if (done && pub_answered(p, pc, now) < 0)
            return -1;
    }
more:
    memmove(pc->in, pc->in + pos, pc->in_len - pos);
    pc->in_len -= pos;
    if (pc->in_len == sizeof(pc->in)) {
        log_error(0, "answer head from %s larger than %d bytes", p->o->pub.url, PUB_IN_BYTES);
        pub_close(p, pc);
        return -1;
    }
    return 0;
}

static void pub_read(struct publisher *p, struct pub_conn *pc, int64_t now)
{
    for (;;) {
        ssize_t n = read(pc->fd, pc->in + pc->in_len, sizeof(pc->in) - pc->in_len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        if (n <= 0) {
            if (n < 0)
                log_warn(errno, "read(%s) failed", p->o->pub.url);
            if (pc->rstate == RS_EOF)
                pub_answered(p, pc, now); /* body-until-close answer is complete */
            if (pc->state != PC_FREE)
                pub_close(p, pc);
            return;
        }
        pc->in_len += (size_t)n;
        if (pub_parse(p, pc, now) < 0)
            return;
    }
}

void publisher_on_event(struct publisher *p, uint32_t slot, uint32_t events, int64_t now)
{
    if (slot >= PUB_SLOTS || p->conns[slot].state == PC_FREE)
        return;
    struct pub_conn *pc = &p->conns[slot];

    if (pc->state == PC_CONNECTING) {
        int err = 0;
        socklen_t el = sizeof(err);
        if (getsockopt(pc->fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0)
            err = errno;
        if (err != 0) {
            log_error(err, "connect(%s) failed", p->o->pub.url);
            p->st.connect_failed++;
            pub_close(p, pc);
            return;
        }
        pc->state = PC_OPEN;
        pub_epoll(p, pc, EPOLLIN, EPOLL_CTL_MOD);
        if (pub_flush(p, pc) < 0)
            return;
    }
    if ((events & EPOLLOUT) && pc->out_len > 0 && pub_flush(p, pc) < 0)
        return;
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP))
        pub_read(p, pc, now);
}

int publisher_is_done(const struct publisher *p)
{
    if (p->next_seq < p->o->messages)
        return 0;
    for (int i = 0; i < PUB_SLOTS; i++)
        if (p->conns[i].state != PC_FREE && p->conns[i].q_count > 0)
            return 0;
    return 1;
}

const struct publisher_stats *publisher_stats(const struct publisher *p)
{
    return &p->st;
}
