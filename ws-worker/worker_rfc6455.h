/* worker_rfc6455.h -- strict RFC 6455 where libwebsockets 4.1.6 is lax (docs/rfc6455.md).
 *
 *   worker_rfc6455_rx.c  the client-to-server frame validator: pure, no lws, fed with raw bytes
 *   worker_rfc6455.c     the handshake checks, and the byte filter between the socket and lws:
 *                        recv() and SSL_read() are defined in the wshub-worker executable, so
 *                        libwebsockets' calls resolve to them (symbol interposition), and every
 *                        byte lws parses after the upgrade has passed the validator first.
 *   worker_rfc6455_test.c unit test of the validator (make test-unit)
 *
 * What lws then sees is a stream of well-formed client frames without pings (we answer them,
 * every one, with the rate cap client_ping_rate / client_ping_burst), ending, when the client
 * broke a rule, with a close frame we wrote for it (1002, 1007 or 1008): lws takes that for the
 * client's close, echoes it (our close frame) and closes the TCP connection.
 */
#ifndef WSHUB_WORKER_RFC6455_H
#define WSHUB_WORKER_RFC6455_H

#include <stddef.h>
#include <stdint.h>

struct lws;
struct worker;

/* ---- the frame validator (worker_rfc6455_rx.c) ---- */

#define WORKER_RFC6455_HELD_MAX  131 /* a whole control frame: 2 + 4 (mask) + 125 */
#define WORKER_RFC6455_WHY_MAX   24  /* longest reason we put in a close frame */
#define WORKER_RFC6455_SYNTH_MIN 4   /* our close frame for lws without a reason: 2 + code */

enum worker_rfc6455_rx_state {
    WORKER_RFC6455_RX_HEADER = 0, /* at a frame boundary, or inside a header */
    WORKER_RFC6455_RX_PAYLOAD,    /* passing the payload of a data frame or pong */
    WORKER_RFC6455_RX_DONE        /* a close was handed on (the client's or ours): discard */
};

/* Per-connection state; all zero is "before the first frame". */
struct worker_rfc6455_rx {
    uint64_t remaining; /* RX_PAYLOAD: payload bytes of the current frame not yet passed */
    uint8_t state;      /* enum worker_rfc6455_rx_state */
    uint8_t in_message; /* a fragmented data message is open: only continuations may follow */
    uint8_t rsv1_ok;    /* set by the caller: permessage-deflate was negotiated, so RSV1 may
                           mark a message's first frame (RFC 7692 6.1; never a continuation or
                           a control frame, and RSV2/RSV3 never) */
    uint8_t held_len;   /* bytes in held[] */
    uint8_t held[WORKER_RFC6455_HELD_MAX]; /* the start of a frame not yet complete enough to
                                              judge: a header, or a whole control frame */
};

enum worker_rfc6455_rx_event {
    WORKER_RFC6455_RX_MORE = 0, /* nothing final: out bytes of frames to pass on */
    WORKER_RFC6455_RX_CLOSE,    /* a valid client close ends the out bytes; the rest discarded */
    WORKER_RFC6455_RX_FAIL      /* a rule was broken: out ends with our close frame (code, why) */
};

struct worker_rfc6455_rx_result {
    size_t out;      /* bytes at the start of buf to hand to lws */
    int event;       /* enum worker_rfc6455_rx_event */
    uint16_t code;   /* FAIL: the code we close with; CLOSE: the client's code, 0 if none */
    const char *why; /* FAIL: what the client did (also the close frame's reason) */
};

/* Called for each complete ping with its unmasked payload (at most 125 bytes). Returns NULL, or
 * a reason (at most WORKER_RFC6455_WHY_MAX characters) to fail the connection with 1008. */
typedef const char *(*worker_rfc6455_ping_fn)(void *arg, const uint8_t *payload, size_t len);

/* Validates client bytes in place. The caller reads new bytes to buf + rx->held_len; this
 * copies the held bytes in front of them, so buf[0..n) is the stream from the last unjudged
 * frame start, and cap is the room in buf. Bytes of valid data frames and pongs are compacted
 * to the front; pings are removed and reported to on_ping; an incomplete frame start is kept in
 * rx->held; a close frame is passed on only once it is whole and valid. On a broken rule, what
 * came before it is kept and a close frame (res->code, res->why) is appended, for lws to take as
 * the client's: unmasked (lws 4.1.6 accepts that, and it saves 4 bytes), with as much of the
 * reason as cap leaves room for. After CLOSE or FAIL every later byte is discarded. Only that
 * close frame can make the output longer than the input: with cap >= n +
 * WORKER_RFC6455_SYNTH_MIN, res->out never exceeds cap. */
void worker_rfc6455_rx_feed(struct worker_rfc6455_rx *rx, uint8_t *buf, size_t n, size_t cap,
                            worker_rfc6455_ping_fn on_ping, void *arg,
                            struct worker_rfc6455_rx_result *res);

/* Close codes a client may send (RFC 6455 7.4, IANA registry): 1000-1003, 1007-1014,
 * 3000-4999. */
int worker_rfc6455_close_code_ok(unsigned code);

/* Whether a comma-separated header value (Connection, Sec-WebSocket-Protocol) lists `token`,
 * ignoring spaces and tabs around the items; nocase for tokens HTTP compares without case. */
int worker_rfc6455_token_listed(const char *list, const char *token, int nocase);

/* Strict UTF-8 (RFC 3629: no overlong forms, surrogates or code points above U+10FFFF, no
 * truncated sequence at the end), for close reasons: whole in one frame. */
int worker_rfc6455_utf8_ok(const uint8_t *s, size_t n);

/* ---- hooks into the worker (worker_rfc6455.c) ---- */

/* worker_accept.c, before lws_adopt_socket_vhost(): a new client socket; resets its filter
 * state (descriptor numbers are reused). A socket the filter could not take (no memory for its
 * table) is refused with 500 at the upgrade: nothing passes unvalidated. */
void worker_rfc6455_adopt(struct worker *w, int fd);

/* LWS_CALLBACK_HTTP_CONFIRM_UPGRADE, first check after the Upgrade value: refuses a handshake
 * RFC 6455 section 4.2.1 does not allow (400; 405 for a method other than GET; 426 with
 * Sec-WebSocket-Version: 13 for another version). Returns 0 to go on with the other checks, or
 * what the callback must return (1: answered). On 0 the connection's bytes are validated as
 * frames from now on. */
int worker_rfc6455_confirm_upgrade(struct worker *w, struct lws *wsi);

/* LWS_CALLBACK_RAW_ADOPT: lws 4.1.6 turns a CONNECT request into a raw socket before any
 * callback can refuse it, and without a timeout. Answers 405 and returns -1 (close). */
int worker_rfc6455_raw_adopt(struct worker *w, struct lws *wsi);

/* LWS_CALLBACK_WS_PEER_INITIATED_CLOSE, before `in` is read: lws 4.1.6 rewrote the valid codes
 * 1012-1014 to 1002 in the buffer it echoes; this puts the client's code back. */
void worker_rfc6455_peer_close(struct lws *wsi, void *in, size_t len);

#endif /* WSHUB_WORKER_RFC6455_H */
