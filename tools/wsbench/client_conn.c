/* client_conn.c -- one client connection: non-blocking connect from a chosen source address,
 * the upgrade handshake, frame handling (pong, close echo) and delivery accounting.
 *
 * Runs inside a client process (client.c owns the loop and the phases). Reads go into the
 * process's one large buffer and are parsed in place, so an idle connection costs its struct
 * and the kernel's socket; output is written straight to the socket and only what the socket
 * refuses is copied to a per-connection heap buffer. Failures are counted by reason and logged
 * once per reason per process, since ten thousand identical lines help nobody.
 */
#include "client_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "channels.h"
#include "deflate.h"
#include "log.h"
#include "proto.h"
#include "publisher.h"

#define CONN_STALLED_RCVBUF 4096 /* --stalled: the kernel doubles it */
#define CONN_PAYLOAD_EXACT  64   /* payloads asked this size or larger are exactly that size */

static void conn_epoll(struct client *cl, struct conn *c, uint32_t events, int op)
{
    struct epoll_event ev = {.events = events, .data.u32 = (uint32_t)(c - cl->conns)};
    if (epoll_ctl(cl->epfd, op, c->fd, &ev) < 0)
        log_error(errno, "epoll_ctl(fd %d) failed", c->fd);
    c->want_out = (events & EPOLLOUT) != 0;
}

/* Closes the socket and leaves the connection DONE, keeping every counter as it is. */
void conn_release(struct client *cl, struct conn *c)
{
    if (c->fd >= 0 && close(c->fd) < 0)
        log_warn(errno, "close(fd %d) failed", c->fd);
    c->fd = -1;
    switch (c->state) {
    case CONN_CONNECTING:
    case CONN_HANDSHAKE:
        cl->pending--;
        break;
    case CONN_OPEN:
        cl->open--;
        break;
    case CONN_CLOSING:
    case CONN_SERVER_CLOSING:
        cl->closing--;
        break;
    default:
        break;
    }
    c->state = CONN_DONE;
    free(c->hs);
    c->hs = NULL;
    free(c->wbuf);
    c->wbuf = NULL;
    c->wlen = 0;
}

static void conn_log_once(struct client *cl, unsigned slot, int err, const char *what,
                          const char *name)
{
    if (cl->logged[slot])
        return;
    cl->logged[slot] = 1;
    log_warn(err, "first connection %s (%s) in this process", what, name);
}

void conn_fail(struct client *cl, struct conn *c, enum wire_fail why, int err)
{
    int reconnect = c->reconnecting;
    if (c->rejoining) { /* a churn comeback: not one of the run's -n connections */
        cl->res.churn_failed[why]++;
        c->rejoining = 0;
    } else if (reconnect) { /* --resume: the attempt of a logical client */
        cl->res.resume_failed[why]++;
        c->reconnecting = 0;
    } else {
        cl->res.failed[why]++;
    }
    conn_log_once(cl, why, err, "failure", wire_fail_names[why]);
    conn_release(cl, c);
    if (reconnect)
        resume_attempt_failed(cl, c, why, client_now());
}

/* An established connection ended without our asking. */
static void conn_drop(struct client *cl, struct conn *c, enum wire_drop why, int err)
{
    int was_open = c->state == CONN_OPEN;
    if (was_open) {
        cl->res.dropped[why]++;
        conn_log_once(cl, WIRE_FAIL_COUNT + why, err, "dropped", wire_drop_names[why]);
    }
    int was_subscribed = c->subscribed && !c->complete && !c->resumer;
    conn_release(cl, c);
    if (c->resumer && was_open) /* it comes back (a closing one was accounted already) */
        resume_on_lost(cl, c, why == WIRE_DROP_PROTOCOL ? RESUME_CAUSE_OTHER : RESUME_CAUSE_LOST,
                       why == WIRE_DROP_PROTOCOL ? 1002 : 1006, client_now());
    if (was_subscribed) {
        cl->dead_incomplete++;
        client_check_complete(cl, client_now());
    }
}

static enum wire_fail conn_errno_reason(int err)
{
    switch (err) {
    case ECONNREFUSED:
        return WIRE_FAIL_REFUSED;
    case ETIMEDOUT:
        return WIRE_FAIL_TIMEOUT;
    case ECONNRESET:
    case EPIPE:
        return WIRE_FAIL_RESET;
    case EADDRNOTAVAIL:
    case EADDRINUSE:
        return WIRE_FAIL_NO_ADDRESS;
    default:
        return WIRE_FAIL_OTHER;
    }
}

/* Sends bytes in order after anything already queued. Returns 0, or -1 with errno set. */
static int conn_send(struct client *cl, struct conn *c, const uint8_t *buf, size_t len)
{
    size_t done = 0;

    if (c->wlen == 0) {
        ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL);
        if (n < 0 && errno != EAGAIN && errno != EINTR)
            return -1;
        done = n > 0 ? (size_t)n : 0;
    }
    if (done == len)
        return 0;
    uint8_t *nb = realloc(c->wbuf, c->wlen + (len - done));
    if (nb == NULL) {
        errno = ENOMEM;
        return -1;
    }
    memcpy(nb + c->wlen, buf + done, len - done);
    c->wbuf = nb;
    c->wlen += (uint32_t)(len - done);
    if (!c->want_out)
        conn_epoll(cl, c, EPOLLIN | EPOLLOUT, EPOLL_CTL_MOD);
    return 0;
}

static int conn_flush(struct client *cl, struct conn *c)
{
    while (c->wlen > 0) {
        ssize_t n = send(c->fd, c->wbuf, c->wlen, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return 0;
        if (n < 0)
            return -1;
        memmove(c->wbuf, c->wbuf + n, c->wlen - (size_t)n);
        c->wlen -= (uint32_t)n;
    }
    free(c->wbuf);
    c->wbuf = NULL;
    conn_epoll(cl, c, EPOLLIN, EPOLL_CTL_MOD);
    return 0;
}

static int conn_send_frame(struct client *cl, struct conn *c, uint8_t opcode, const uint8_t *p,
                           size_t len)
{
    uint8_t frame[FRAME_CTL_MAX + FRAME_HDR_MAX];
    size_t n = frame_build(frame, opcode, p, len, (uint32_t)client_rand(cl));
    return conn_send(cl, c, frame, n);
}

void conn_send_close(struct client *cl, struct conn *c, uint16_t code)
{
    uint8_t p[2] = {(uint8_t)(code >> 8), (uint8_t)code};
    if (conn_send_frame(cl, c, FRAME_OP_CLOSE, p, 2) < 0) {
        conn_release(cl, c);
        return;
    }
    cl->open--;
    cl->closing++;
    c->state = CONN_CLOSING;
}

void conn_start(struct client *cl, uint32_t i, int64_t now)
{
    struct conn *c = &cl->conns[i];
    const struct opts *o = cl->o;
    int one = 1;

    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        c->state = CONN_DONE;
        conn_fail(cl, c, WIRE_FAIL_OTHER, errno);
        return;
    }
    c->state = CONN_CONNECTING;
    c->deadline_ns = now + o->connect_timeout_ns;
    cl->pending++;
    if (setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
        log_warn(errno, "setsockopt(TCP_NODELAY) failed");
    if (c->stalled) { /* before connect(): the window it advertises is set from it */
        int rcv = CONN_STALLED_RCVBUF;
        if (setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof(rcv)) < 0)
            log_warn(errno, "setsockopt(SO_RCVBUF) failed");
    }
    if (o->source_base.s_addr != htonl(INADDR_ANY)) {
        struct sockaddr_in src = {.sin_family = AF_INET};
        uint32_t k = (cl->first + i) % o->source_addrs;
        src.sin_addr.s_addr = htonl(ntohl(o->source_base.s_addr) + k);
        /* Defer the port choice to connect(): the port then only has to be unique per
         * destination, not per source address. */
        if (setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one)) < 0)
            log_warn(errno, "setsockopt(IP_BIND_ADDRESS_NO_PORT) failed");
        if (bind(c->fd, (struct sockaddr *)&src, sizeof(src)) < 0) {
            conn_fail(cl, c, conn_errno_reason(errno), errno);
            return;
        }
    }
    if (connect(c->fd, (const struct sockaddr *)&o->ws.addr, sizeof(o->ws.addr)) < 0 &&
        errno != EINPROGRESS) {
        conn_fail(cl, c, conn_errno_reason(errno), errno);
        return;
    }
    conn_epoll(cl, c, EPOLLOUT, EPOLL_CTL_ADD);
}

/* TCP is up: send the upgrade request. */
static void conn_connected(struct client *cl, struct conn *c)
{
    const struct opts *o = cl->o;
    int err = 0;
    socklen_t el = sizeof(err);
    uint8_t raw[16];
    char key[HANDSHAKE_KEY_LEN + 1], req[4096], path[sizeof(o->ws.path) + 64];
    const char *p = chan_ws_path(o, cl->first + (uint32_t)(c - cl->conns), path, sizeof(path));

    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0)
        err = errno;
    if (err != 0) {
        conn_fail(cl, c, conn_errno_reason(err), err);
        return;
    }
    c->hs = malloc(sizeof(*c->hs));
    if (c->hs == NULL) {
        conn_fail(cl, c, WIRE_FAIL_OTHER, ENOMEM);
        return;
    }
    c->hs->len = 0;
    uint64_t r0 = client_rand(cl), r1 = client_rand(cl);
    memcpy(raw, &r0, 8);
    memcpy(raw + 8, &r1, 8);
    handshake_make_key(raw, key);
    if (c->resumer && cl->rs[c - cl->conns].known) { /* resume where the last one ended */
        const struct resume *rs = &cl->rs[c - cl->conns];
        if (proto_resume_path(path, sizeof(path), o->ws.path, rs->pos, rs->epoch) < 0) {
            conn_fail(cl, c, WIRE_FAIL_OTHER, 0);
            return;
        }
        p = path;
    }
    int n = p == NULL ? -1 /* too long with {c} expanded: opts refuses that */
                      : handshake_request(req, sizeof(req), o->ws.host_header, p, key,
                                          o->ws_headers, o->n_ws_headers);
    if (n < 0 || handshake_accept_for(key, c->hs->accept) < 0) {
        conn_fail(cl, c, WIRE_FAIL_OTHER, 0);
        return;
    }
    c->state = CONN_HANDSHAKE;
    conn_epoll(cl, c, EPOLLIN, EPOLL_CTL_MOD);
    if (conn_send(cl, c, (const uint8_t *)req, (size_t)n) < 0)
        conn_fail(cl, c, conn_errno_reason(errno), errno);
}

/* Records one broadcast: latency, per-broadcast maximum, and the connection's sequence window
 * (or, resuming, its bitmap: client_resume.c). */
int conn_on_payload(struct client *cl, struct conn *c, const uint8_t *p, size_t len, uint64_t total,
                    uint32_t frames, uint64_t env_seq, int64_t now)
{
    struct wire_result *r = &cl->res;
    uint64_t seq, pos;
    int64_t sent;

    if (client_parse_payload(p, len, cl->run_id, &seq, &sent) < 0 || seq >= cl->o->messages) {
        r->foreign++;
        return -1;
    }
    if (chan_on_receipt(cl, c, seq, &pos) < 0) /* --channels: another channel's broadcast */
        return -1;
    if (c->churner)
        r->churn_received++;
    else
        r->received++;
    uint32_t size = publisher_size_for(cl->o, seq);
    /* else unpadded, or compressed and only partly kept (DEFLATE_LEN_UNKNOWN, - an envelope) */
    if (size >= CONN_PAYLOAD_EXACT && total < UINT64_MAX / 2 && total != size)
        r->bad_size++;
    if (frames > 1)
        r->fragmented++;
    int64_t lat = now - sent;
    hist_record(&r->latency, lat);
    if (r->first_recv_ns == 0)
        r->first_recv_ns = now;
    r->last_recv_ns = now;
    if (seq < cl->msg_tracked) {
        struct msg_window *w = &cl->win[seq];
        if (lat > cl->msg_max[seq])
            cl->msg_max[seq] = lat;
        if (w->first_ns == 0) {
            w->first_ns = now;
            w->cpu_first_ns = cl->cpu_now;
        }
        w->last_ns = now;
        w->cpu_last_ns = cl->cpu_now;
    }

    if (c->resumer)
        return resume_on_receipt(cl, c, seq, env_seq, now);
    /* From here on `pos`: the seq, or with --channels its rank in the channel. */
    if (c->unique == 0 && c->max_plus1 == 0)
        c->first_seq = (uint32_t)pos; /* a session's first receipt (churn accounting) */
    if (pos >= c->max_plus1) {
        uint64_t shift = pos + 1 - c->max_plus1;
        c->window = shift >= 64 ? 1 : (c->window << shift) | 1;
        c->max_plus1 = (uint32_t)pos + 1;
        c->unique++;
    } else {
        uint64_t d = c->max_plus1 - 1 - pos;
        if (d < 64 && (c->window >> d) & 1) {
            r->duplicated++;
            return 1;
        }
        if (d < 64)
            c->window |= 1ULL << d;
        r->out_of_order++;
        c->unique++;
    }
    if (c->subscribed && !c->complete && cl->expected >= 0 && c->unique >= chan_expected(cl, c)) {
        c->complete = 1;
        cl->complete++;
        client_check_complete(cl, now);
    }
    return 0;
}

/* The server closed first: echo its status code (RFC 6455 5.5.1) and wait for it to close TCP.
 * Returns -1 when the connection is gone already. */
static int conn_on_server_close(struct client *cl, struct conn *c, const struct frame_event *ev,
                                int64_t now)
{
    int was_subscribed = c->subscribed && !c->complete && !c->resumer, rc = 0;
    uint16_t code = ev->data_len >= 2 ? (uint16_t)(ev->data[0] << 8 | ev->data[1]) : 1005;

    cl->res.dropped[WIRE_DROP_CLOSE_FRAME]++;
    conn_log_once(cl, WIRE_FAIL_COUNT + WIRE_DROP_CLOSE_FRAME, 0, "dropped",
                  "close frame from the server");
    if (conn_send_frame(cl, c, FRAME_OP_CLOSE, ev->data, ev->data_len >= 2 ? 2 : 0) == 0) {
        cl->res.closes_echoed++;
        cl->open--;
        cl->closing++;
        c->state = CONN_SERVER_CLOSING;
    } else {
        conn_release(cl, c);
        rc = -1;
    }
    if (c->resumer) /* back soon; a closing handshake still open then is cut */
        resume_on_lost(cl, c,
                       code == 1012 || code == 1001 ? RESUME_CAUSE_RESTART : RESUME_CAUSE_OTHER,
                       code, now);
    if (was_subscribed) {
        cl->dead_incomplete++;
        client_check_complete(cl, now);
    }
    return rc;
}

/* Handles one parsed event. Returns -1 when the connection is gone. */
static int conn_on_frame(struct client *cl, struct conn *c, const struct frame_event *ev,
                         int64_t now)
{
    struct frame_event inflated;
    switch (ev->type) {
    case FRAME_EV_MESSAGE:
        if (ev->compressed) /* --deflate: its first bytes, inflated */
            ev = deflate_event(ev, &inflated);
        if (c->state == CONN_SERVER_CLOSING) { /* RFC 6455 5.5.1: none may follow a close */
            cl->res.data_after_close++;
            return 0;
        }
        if (c->resumer)
            return resume_on_message(cl, c, ev, now);
        conn_on_payload(cl, c, ev->data, ev->data_len, ev->len, ev->frames, UINT64_MAX, now);
        return 0;
    case FRAME_EV_PING:
        cl->res.pings++;
        if (conn_send_frame(cl, c, FRAME_OP_PONG, ev->data, ev->data_len) < 0) {
            conn_drop(cl, c,
                      conn_errno_reason(errno) == WIRE_FAIL_RESET ? WIRE_DROP_RESET
                                                                  : WIRE_DROP_OTHER,
                      errno);
            return -1;
        }
        cl->res.pongs_sent++;
        return 0;
    case FRAME_EV_PONG:
        return 0;
    case FRAME_EV_CLOSE:
        if (c->state == CONN_CLOSING) { /* the answer to ours */
            if (c->leaving)
                cl->res.churn_closes_answered++;
            else
                cl->res.closed_clean++;
            conn_release(cl, c);
            return -1;
        }
        if (c->state == CONN_OPEN)
            return conn_on_server_close(cl, c, ev, now);
        return 0;
    case FRAME_EV_ERROR:
        log_debug("frame error on connection %u: %s", cl->first + (uint32_t)(c - cl->conns),
                  ev->error);
        conn_drop(cl, c, WIRE_DROP_PROTOCOL, 0);
        return -1;
    default:
        return 0;
    }
}

static void conn_feed(struct client *cl, struct conn *c, const uint8_t *buf, size_t len,
                      int64_t now)
{
    size_t off = 0;
    struct frame_event ev;

    while (off < len && c->state != CONN_DONE) {
        off += frame_parse(&c->fp, buf + off, len - off, &ev);
        if (ev.type != FRAME_EV_NONE && conn_on_frame(cl, c, &ev, now) < 0)
            return;
    }
}

static enum wire_fail conn_hs_reason(enum handshake_result r)
{
    switch (r) {
    case HANDSHAKE_BAD_STATUS:
        return WIRE_FAIL_STATUS;
    case HANDSHAKE_BAD_ACCEPT:
        return WIRE_FAIL_BAD_ACCEPT;
    case HANDSHAKE_BAD_UPGRADE:
        return WIRE_FAIL_BAD_UPGRADE;
    case HANDSHAKE_BAD_PROTOCOL:
        return WIRE_FAIL_SUBPROTOCOL;
    default:
        return WIRE_FAIL_MALFORMED;
    }
}

static void conn_read_handshake(struct client *cl, struct conn *c, int64_t now)
{
    struct conn_hs *hs = c->hs;
    size_t room = sizeof(hs->buf) - hs->len;
    ssize_t n = read(c->fd, hs->buf + hs->len, room);
    size_t head = 0;
    int status = 0;

    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        conn_fail(cl, c, n == 0 ? WIRE_FAIL_EOF : conn_errno_reason(errno), n == 0 ? 0 : errno);
        return;
    }
    hs->len += (uint32_t)n;
    enum handshake_result r = handshake_check(hs->buf, hs->len, hs->accept,
                                              cl->o->resume ? PROTO_NAME : NULL, &head, &status);
    if (r == HANDSHAKE_INCOMPLETE) {
        if (hs->len == sizeof(hs->buf))
            conn_fail(cl, c, WIRE_FAIL_MALFORMED, 0);
        return;
    }
    if (r != HANDSHAKE_OK) {
        if (r == HANDSHAKE_BAD_STATUS)
            log_debug("handshake answered with status %d", status);
        conn_fail(cl, c, conn_hs_reason(r), 0);
        return;
    }
    int dfl = cl->o->deflate ? deflate_accepted(hs->buf, head) : 0; /* --deflate */
    if (dfl < 0) {
        log_debug("permessage-deflate answered without server_no_context_takeover");
        conn_fail(cl, c, WIRE_FAIL_MALFORMED, 0);
        return;
    }
    /* Frames that came with the head are parsed from the process buffer after hs is freed. */
    size_t extra = hs->len - head;
    memcpy(cl->rbuf, hs->buf + head, extra);
    free(hs);
    c->hs = NULL;
    c->state = CONN_OPEN;
    cl->pending--;
    cl->open++;
    if (c->rejoining)
        churn_on_open(cl, c, now);
    else if (!c->reconnecting)
        cl->res.ok++;
    frame_parser_reset(&c->fp);
    c->fp.rsv1_ok = dfl > 0;
    if (c->stalled) { /* reads nothing from now on; EPOLLERR/EPOLLHUP still come */
        cl->res.stalled++;
        conn_epoll(cl, c, 0, EPOLL_CTL_MOD);
        return;
    }
    if (cl->o->resume)
        resume_on_open(cl, c, now);
    if (extra > 0)
        conn_feed(cl, c, cl->rbuf, extra, now);
}

static void conn_read(struct client *cl, struct conn *c)
{
    ssize_t n = read(c->fd, cl->rbuf, sizeof(cl->rbuf));

    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n > 0) {
        conn_feed(cl, c, cl->rbuf, (size_t)n, client_now());
        return;
    }
    if (c->state == CONN_OPEN)
        conn_drop(cl, c,
                  n == 0                ? WIRE_DROP_EOF
                  : errno == ECONNRESET ? WIRE_DROP_RESET
                                        : WIRE_DROP_OTHER,
                  n == 0 ? 0 : errno);
    else
        conn_release(cl, c); /* EOF or error after a close exchange: the expected end */
}

void conn_on_event(struct client *cl, uint32_t i, uint32_t events, int64_t now)
{
    struct conn *c = &cl->conns[i];

    if (c->stalled && c->state == CONN_OPEN) { /* the server ended a client that never read */
        cl->res.stalled_ended++;
        conn_release(cl, c);
        return;
    }
    if (c->state == CONN_CONNECTING) {
        if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
            conn_connected(cl, c);
        return;
    }
    if ((events & EPOLLOUT) && c->wlen > 0 && conn_flush(cl, c) < 0) {
        if (c->state == CONN_HANDSHAKE)
            conn_fail(cl, c, conn_errno_reason(errno), errno);
        else
            conn_drop(cl, c, WIRE_DROP_RESET, errno);
        return;
    }
    if (!(events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
        return;
    if (c->state == CONN_HANDSHAKE)
        conn_read_handshake(cl, c, now);
    else if (c->state != CONN_DONE)
        conn_read(cl, c);
}
