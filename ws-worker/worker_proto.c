/* worker_proto.c -- the one libwebsockets protocol callback: handshakes, writes, closes.
 *
 * Handshake: only the configured ws_path is upgraded. Refusals happen in
 * LWS_CALLBACK_HTTP_CONFIRM_UPGRADE, where a real HTTP status can still be sent (refusing later
 * only drops the TCP connection): 404 for another path, 503 while stopping or when the worker or
 * the shared connection table is full (in a rolling restart's drain a handshake already accepted
 * completes, and worker_restart.c closes it with 1012 in turn). worker_handshake_check() is the
 * seam for the origin and token checks that come later. Plain HTTP requests get 404 (400 on the ws
 * path itself). The responses are written by hand (proto_send_status) because
 * lws_return_http_status() says "HTTP/1.0" on the upgrade path in 4.1.6.
 *
 * Delivery is worker_deliver.c: the pump writes to idle connections directly, SERVER_WRITEABLE
 * serves the rest. We never write part of a frame: lws may put a pong or a close frame between
 * two writes, and only lws's own partial-send buffer (flushed before anything else is sent) keeps
 * frames whole. LWS_CALLBACK_WS_SERVER_DROP_PROTOCOL marks a connection lws has started to close,
 * after which no data frame is written.
 *
 * Closing: worker_conn_schedule_close() sets a frame number at which the connection is closed
 * with a given code (1013 slow consumer or lapped worker, 1001 shutdown, 1012 rolling restart).
 * The close happens in WRITEABLE (lws_close_reason + return -1) once everything before that frame
 * was sent, and a WORKER_CLOSE_GRACE_S timeout cuts a client that does not read even that.
 *
 * Keepalive is worker_keepalive.c (ping after ping_interval without a sign of life, hang up
 * after idle_timeout); a pong or any message from the client is a sign of life. The reason
 * recorded in stats closed[] is ours when we sent a close, else the client's close code, else
 * IDLE_TIMEOUT when the keepalive hung up, else PEER_GONE.
 */
#include "worker.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "conntab.h"
#include "http_status.h"
#include "log.h"
#include "stats.h"
#include "worker_rfc6455.h"

static struct worker *proto_worker(struct lws *wsi)
{
    return lws_context_user(lws_get_context(wsi));
}

static uint64_t mono_ms(void)
{
    return shm_mono_ns() / 1000000u;
}

/* ---- handshake ---- */

/* ws_path itself, or ws_path/<channel> (worker_channels.c checks the name). */
static int proto_path_is_ws(struct worker *w, struct lws *wsi)
{
    char uri[sizeof(w->conf.ws_path) + RING_MAX_CHANNEL_LEN + 2];
    size_t base = strlen(w->conf.ws_path);
    int n = lws_hdr_copy(wsi, uri, sizeof(uri), WSI_TOKEN_GET_URI);
    if (n <= 0 || strncmp(uri, w->conf.ws_path, base) != 0)
        return 0; /* the query string is a separate token */
    return uri[base] == '\0' || (uri[base] == '/' && uri[base + 1] != '\0');
}

/* Writes a complete "HTTP/1.1 <status>" response that closes the connection. Built by hand:
 * lws_return_http_status() answers "HTTP/1.0" on the upgrade path in 4.1.6 (request_version is
 * only parsed for plain requests), which strict clients such as python websockets reject. */
static int proto_send_status(struct lws *wsi, unsigned status, const char *text)
{
    char buf[LWS_PRE + 512];
    char *p = buf + LWS_PRE;
    int n = snprintf(p, sizeof(buf) - LWS_PRE,
                     "HTTP/1.1 %u %s\r\ncontent-type: text/plain\r\ncontent-length: %zu\r\n"
                     "connection: close\r\ncache-control: no-store\r\n%s\r\n%s\n",
                     status, http_status_phrase((int)status), strlen(text) + 1,
                     status == 401 ? "www-authenticate: Bearer realm=\"wshub\"\r\n" : "", text);
    if (n < 0 || n >= (int)(sizeof(buf) - LWS_PRE))
        return -1;
    return lws_write(wsi, (unsigned char *)p, (size_t)n, LWS_WRITE_HTTP) == n ? 0 : -1;
}

/* Sends a status response and counts the refusal. Returns what CONFIRM_UPGRADE must return:
 * 1 (we answered; lws ends the transaction and, the response saying close, the connection). */
static int proto_refuse(struct worker *w, struct lws *wsi, unsigned status,
                        enum shm_reject_reason reason, const char *why)
{
    stats_add(&w->stats->rejected[reason], 1);
    log_debug("handshake refused with %u: %s", status, why);
    if (proto_send_status(wsi, status, why) < 0)
        return -1;
    return 1;
}

static int proto_confirm_upgrade(struct worker *w, struct lws *wsi, const char *upgrade)
{
    enum shm_reject_reason reason = SHM_REJECT_BAD_REQUEST;
    if (upgrade == NULL || strcasecmp(upgrade, "websocket") != 0)
        return proto_refuse(w, wsi, HTTP_STATUS_BAD_REQUEST, SHM_REJECT_BAD_REQUEST,
                            "unsupported upgrade");
    int rfc = worker_rfc6455_confirm_upgrade(w, wsi); /* RFC 6455 4.2.1: 400, 405, 426 */
    if (rfc != 0)
        return rfc;
    if (!proto_path_is_ws(w, wsi))
        return proto_refuse(w, wsi, HTTP_STATUS_NOT_FOUND, SHM_REJECT_BAD_PATH, "not found");
    if (w->draining && !w->restarting)
        return proto_refuse(w, wsi, HTTP_STATUS_SERVICE_UNAVAILABLE, SHM_REJECT_DRAINING,
                            "server shutting down");
    if (w->nconns >= w->conf.worker_connections)
        return proto_refuse(w, wsi, HTTP_STATUS_SERVICE_UNAVAILABLE, SHM_REJECT_WORKER_FULL,
                            "worker full");
    if (conntab_in_use(&w->shm) >= w->shm.hdr->conn_capacity)
        return proto_refuse(w, wsi, HTTP_STATUS_SERVICE_UNAVAILABLE, SHM_REJECT_TABLE_FULL,
                            "server full");
    const char *why = "refused";
    unsigned status = worker_v1_check(w, wsi, &why);
    if (status == 0)
        status = worker_channels_check(w, wsi, &why);
    if (status != 0)
        return proto_refuse(w, wsi, status, SHM_REJECT_BAD_REQUEST, why);
    status = worker_handshake_check(w, wsi, &reason, &why);
    if (status != 0)
        return proto_refuse(w, wsi, status, reason, why);
    return 0;
}

/* A request that is not an upgrade: answered, then the connection is closed (lws flushes the
 * response first). */
static int proto_http(struct worker *w, struct lws *wsi)
{
    if (proto_path_is_ws(w, wsi))
        proto_refuse(w, wsi, HTTP_STATUS_BAD_REQUEST, SHM_REJECT_BAD_REQUEST,
                     "websocket upgrade required");
    else
        proto_refuse(w, wsi, HTTP_STATUS_NOT_FOUND, SHM_REJECT_BAD_PATH, "not found");
    return -1;
}

/* ---- connection list and closing ---- */

static void conn_list_add(struct worker *w, struct worker_conn *c)
{
    c->next = &w->conns;
    c->prev = w->conns.prev;
    w->conns.prev->next = c;
    w->conns.prev = c;
    c->on_list = 1;
    w->nconns++;
}

static void conn_list_remove(struct worker *w, struct worker_conn *c)
{
    c->prev->next = c->next;
    c->next->prev = c->prev;
    c->on_list = 0;
    w->nconns--;
}

void worker_conn_schedule_close(struct worker_conn *c, uint64_t at, uint16_t code,
                                enum shm_close_reason reason)
{
    if (at >= c->close_at)
        return; /* an earlier close is already planned */
    c->close_at = at;
    c->close_code = code;
    c->close_reason = (uint8_t)reason;
    if (reason != SHM_CLOSE_SHUTDOWN)
        lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, WORKER_CLOSE_GRACE_S);
    lws_callback_on_writable(c->wsi);
}

static const char *close_text(const struct worker_conn *c)
{
    if (!c->counted)
        return "server full";
    if (c->refusal != NULL)
        return c->refusal;
    switch (c->close_reason) {
    case SHM_CLOSE_SLOW_CONSUMER:
        return "slow consumer: resume";
    case SHM_CLOSE_SHUTDOWN:
        return "server shutting down";
    case SHM_CLOSE_RESTART:
        return "service restart";
    case SHM_CLOSE_TOO_BIG:
        return "message too big";
    case SHM_CLOSE_ADMIN:
        return "closed by the administrator";
    default:
        return "closing";
    }
}

/* Sends our close frame (after lws flushes anything buffered). The caller returns -1. */
int worker_conn_close_now(struct worker_conn *c)
{
    const char *text = close_text(c);
    lws_close_reason(c->wsi, (enum lws_close_status)c->close_code, (unsigned char *)text,
                     strlen(text));
    c->close_at = c->cursor; /* the close frame is sent: our reason stands */
    return -1;
}

static enum shm_close_reason peer_close_reason(uint16_t code)
{
    switch (code) {
    case LWS_CLOSE_STATUS_PROTOCOL_ERR:
    case LWS_CLOSE_STATUS_UNACCEPTABLE_OPCODE:
    case LWS_CLOSE_STATUS_INVALID_PAYLOAD:
        return SHM_CLOSE_PROTOCOL;
    case LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE:
        return SHM_CLOSE_TOO_BIG;
    case LWS_CLOSE_STATUS_POLICY_VIOLATION:
        return SHM_CLOSE_POLICY;
    default:
        return SHM_CLOSE_NORMAL; /* 1000, 1001 and application codes */
    }
}

static enum shm_close_reason conn_close_reason(const struct worker_conn *c)
{
    if (c->close_code != 0 && (c->close_at <= c->cursor || c->peer_close_code == 0))
        return (enum shm_close_reason)c->close_reason; /* sent, or cut while planned */
    if (c->peer_close_code != 0)
        return peer_close_reason(c->peer_close_code);
    if (c->hung_up)
        return SHM_CLOSE_IDLE_TIMEOUT;
    return SHM_CLOSE_PEER_GONE;
}

/* Accounting for one connection that ended; its row goes back to the table. */
static void conn_account_close(struct worker *w, struct worker_conn *c, enum shm_close_reason r)
{
    if (c->counted) {
        if (c->row != CONNTAB_NONE && conntab_free(&w->shm, c->row) < 0)
            log_error(errno, "conntab_free(%u) failed", c->row);
        atomic_fetch_sub_explicit(&w->stats->connections, 1, memory_order_relaxed);
        stats_add(&w->stats->closed[r], 1);
        if (r == SHM_CLOSE_SLOW_CONSUMER)
            stats_add(&w->stats->slow_consumers, 1);
        c->counted = 0;
    }
    conn_list_remove(w, c);
}

void worker_conns_drop_all(struct worker *w, enum shm_close_reason reason)
{
    while (w->conns.next != &w->conns)
        conn_account_close(w, w->conns.next, reason);
}

/* ---- established connections ---- */

static void conn_established(struct worker *w, struct worker_conn *c, struct lws *wsi)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    const struct sockaddr *addr = (const struct sockaddr *)&ss;

    memset(c, 0, sizeof(*c));
    c->wsi = wsi;
    c->cursor = w->fan.tail;
    c->close_at = WORKER_NO_FRAME;
    c->last_valid_ms = mono_ms();
    worker_v1_established(w, c, wsi);
    worker_deflate_established(w, c, wsi); /* permessage-deflate: the compressed encoding */
    if (getpeername(lws_get_socket_fd(wsi), (struct sockaddr *)&ss, &sl) < 0) {
        /* ENOTCONN: the client left while queued (its request was still readable) */
        log_at(errno == ENOTCONN ? LOG_LEVEL_DEBUG : LOG_LEVEL_WARN, errno, "getpeername() failed");
        addr = NULL;
    }
    char user[sizeof(((struct shm_conn *)0)->user)] = "";
    worker_auth_established(w, c, wsi, user, sizeof(user));
    c->row = conntab_claim(&w->shm, w->slot, w->generation, addr, user);
    conn_list_add(w, c);
    if (c->row == CONNTAB_NONE) {
        /* Lost a race for the last rows after CONFIRM_UPGRADE's check. */
        stats_add(&w->stats->rejected[SHM_REJECT_TABLE_FULL], 1);
        worker_conn_schedule_close(c, c->cursor, WORKER_CLOSE_TRY_AGAIN_LATER, SHM_CLOSE_POLICY);
        return;
    }
    c->counted = 1;
    atomic_fetch_add_explicit(&w->stats->connections, 1, memory_order_relaxed);
    stats_add(&w->stats->accepted, 1);
    const char *why;
    if (worker_channels_established(w, c, wsi, user, &why) < 0) {
        c->refusal = why; /* the close frame's reason */
        worker_conn_schedule_close(c, c->cursor, LWS_CLOSE_STATUS_POLICY_VIOLATION,
                                   SHM_CLOSE_POLICY);
        return;
    }
    if (w->draining && !w->restarting) /* a restart drain closes it in turn */
        worker_conn_schedule_close(c, c->cursor, LWS_CLOSE_STATUS_GOINGAWAY, SHM_CLOSE_SHUTDOWN);
}

/* A pong or any message: the client is alive (worker_keepalive.c). */
static void conn_note_alive(struct worker_conn *c)
{
    c->last_valid_ms = mono_ms();
    c->ping_outstanding = 0;
}

static int conn_receive(struct worker *w, struct worker_conn *c, const void *in, size_t len)
{
    if (c->deflate_fail != 0) /* worker_deflate.c could not inflate it: 1007, 1002, 1013 */
        return worker_deflate_fail(c);
    conn_note_alive(c);
    c->rx_msg_len += len;
    if (c->rx_msg_len > w->conf.client_max_message) {
        c->close_at = c->cursor;
        c->close_code = LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE;
        c->close_reason = SHM_CLOSE_TOO_BIG;
        return worker_conn_close_now(c);
    }
    if (c->variant == WORKER_VARIANT_V1 && !lws_frame_is_binary(c->wsi)) {
        const char *why;
        if (worker_channels_receive(w, c, in, len, lws_is_final_fragment(c->wsi), &why) < 0) {
            c->refusal = why;
            c->close_at = c->cursor;
            c->close_code = LWS_CLOSE_STATUS_POLICY_VIOLATION;
            c->close_reason = SHM_CLOSE_POLICY;
            return worker_conn_close_now(c);
        }
        lws_callback_on_writable(c->wsi); /* the reply */
    }
    if (lws_is_final_fragment(c->wsi)) {
        stats_add(&w->stats->messages_in, 1);
        stats_add(&w->stats->bytes_in, c->rx_msg_len);
        if (c->row != CONNTAB_NONE)
            conntab_note_in(&w->shm, c->row, c->rx_msg_len, shm_now_ms());
        c->rx_msg_len = 0;
        if (worker_limits_message(w, c) < 0) /* client_message_rate: close 1008 */
            return -1;
    }
    return 0;
}

static void conn_closed(struct worker *w, struct worker_conn *c)
{
    if (!c->on_list)
        return;
    worker_auth_closed(w, c);
    worker_channels_closed(w, c);
    conn_account_close(w, c, conn_close_reason(c));
    if (w->draining)
        worker_stop_check(w);
}

int worker_proto_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                          size_t len)
{
    struct worker *w = proto_worker(wsi);
    struct worker_conn *c = user;

    switch (reason) {
    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
        return proto_confirm_upgrade(w, wsi, in);
    case LWS_CALLBACK_HTTP:
        return proto_http(w, wsi);
    case LWS_CALLBACK_ESTABLISHED:
        conn_established(w, c, wsi);
        return 0;
    case LWS_CALLBACK_SERVER_WRITEABLE:
        return worker_deliver_writeable(w, c);
    case LWS_CALLBACK_RECEIVE:
        return conn_receive(w, c, in, len);
    case LWS_CALLBACK_RECEIVE_PONG:
        conn_note_alive(c);
        return 0;
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        worker_rfc6455_peer_close(wsi, in, len); /* undoes lws's 1012-1014 -> 1002 */
        if (len >= 2)
            c->peer_close_code =
                (uint16_t)(((const uint8_t *)in)[0] << 8 | ((const uint8_t *)in)[1]);
        else
            c->peer_close_code = LWS_CLOSE_STATUS_NORMAL;
        return 0;
    case LWS_CALLBACK_WS_SERVER_DROP_PROTOCOL:
        if (c != NULL)
            c->lws_closing = 1; /* lws is closing: no data frame may follow (worker_deliver.c) */
        return 0;
    case LWS_CALLBACK_ADD_HEADERS: /* the 101's Sec-WebSocket-Extensions (worker_deflate.c) */
        return worker_deflate_add_headers(w, wsi, in);
    case LWS_CALLBACK_CLOSED:
        worker_deflate_closed(w, c);
        conn_closed(w, c);
        return 0;
    case LWS_CALLBACK_RAW_ADOPT: /* CONNECT: lws made the socket raw (worker_rfc6455.c) */
        return worker_rfc6455_raw_adopt(w, wsi);
    case LWS_CALLBACK_WSI_DESTROY:
        if (lws_get_opaque_user_data(wsi) == w)
            worker_accept_socket_closed(w);
        return 0;
    default:
        return lws_callback_http_dummy(wsi, reason, user, in, len);
    }
}
