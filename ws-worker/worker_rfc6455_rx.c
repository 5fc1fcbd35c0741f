/* worker_rfc6455_rx.c -- validates client-to-server WebSocket frames before lws parses them.
 *
 * Runs in the worker, called by worker_rfc6455.c with the bytes just read from a client (plain,
 * or decrypted by OpenSSL), and knows nothing of lws: it only decides which bytes lws may see.
 * The rules are RFC 6455 section 5 as issue #5 lists them; lws 4.1.6 checks some of them too,
 * but not all, not always with a close frame, and it drops pings while a pong is pending
 * (docs/rfc6455.md has the table).
 *
 *   header byte 0   no RSV bit, except RSV1 on the first frame of a message when the connection
 *                   negotiated permessage-deflate (worker_deflate.c); no reserved opcode (3-7,
 *                   B-F); a control frame has FIN; a continuation only inside a fragmented
 *                   message, a new text or binary frame only outside one
 *   header byte 1   the MASK bit is set (every client frame is masked), a control frame's
 *                   length is at most 125
 *   extended length the 64-bit form has its top bit clear, and the shortest form is used
 *   close payload   not 1 byte; a code a client may send; a reason in valid UTF-8 (else 1007)
 *   ping            removed from the stream and reported, so that the caller answers each one
 *
 * Bytes are judged a frame at a time and only whole, valid headers (and whole, valid close
 * frames) are passed on, so lws always stands at a frame boundary when a broken rule ends the
 * stream: our close frame goes where the bad frame was, lws takes it for the client's close and
 * answers it with the same code and reason. Payloads of data frames
 * are passed on as they come and never copied aside; their UTF-8 (text) is lws's job
 * (LWS_SERVER_OPTION_VALIDATE_UTF8), as it sees them unmasked anyway.
 *
 * The start of a frame that is not whole enough to judge stays in rx->held (at most a control
 * frame, 131 bytes) and is put back in front of the next bytes read.
 */
#include "worker_rfc6455.h"

#include <string.h>

#define OP_CONT  0x0
#define OP_TEXT  0x1
#define OP_BIN   0x2
#define OP_CLOSE 0x8
#define OP_PING  0x9
#define OP_PONG  0xA

#define CODE_PROTOCOL_ERROR  1002
#define CODE_INVALID_PAYLOAD 1007
#define CODE_POLICY          1008

/* A frame header as far as it could be read. */
struct rx_header {
    unsigned opcode, fin;
    size_t hlen;        /* header bytes with the masking key: 6, 8 or 14 */
    uint64_t plen;      /* payload length */
    const uint8_t *key; /* masking key */
};

enum { HDR_OK, HDR_MORE, HDR_BAD };

int worker_rfc6455_close_code_ok(unsigned code)
{
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
           (code >= 3000 && code <= 4999);
}

/* For a non-ASCII lead byte: the number of continuation bytes (0: invalid lead) and the range
 * of the first one (the same table as admin-cgi/admin_utf8.c). */
static size_t utf8_lead(uint8_t c, uint8_t *lo, uint8_t *hi)
{
    *lo = 0x80;
    *hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF)
        return 1;
    if (c == 0xE0)
        *lo = 0xA0; /* overlong below */
    else if (c == 0xED)
        *hi = 0x9F; /* surrogates above */
    if (c >= 0xE0 && c <= 0xEF)
        return 2;
    if (c == 0xF0)
        *lo = 0x90; /* overlong below */
    else if (c == 0xF4)
        *hi = 0x8F; /* beyond U+10FFFF above */
    if (c >= 0xF0 && c <= 0xF4)
        return 3;
    return 0;
}

int worker_rfc6455_utf8_ok(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t lo, hi;
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        size_t need = utf8_lead(s[i], &lo, &hi);
        if (need == 0 || n - i - 1 < need || s[i + 1] < lo || s[i + 1] > hi)
            return 0;
        for (size_t k = 2; k <= need; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return 0;
        }
        i += need + 1;
    }
    return 1;
}

/* Rules of the first header byte, given the connection's state. */
static const char *check_byte0(uint8_t b0, const struct worker_rfc6455_rx *rx)
{
    unsigned op = b0 & 0x0F;
    int rsv1_ok = rx->rsv1_ok && (op == OP_TEXT || op == OP_BIN);
    if ((b0 & 0x30) || ((b0 & 0x40) && !rsv1_ok))
        return "reserved bits set";
    if ((op >= 3 && op <= 7) || op >= 0xB)
        return "reserved opcode";
    if (op >= OP_CLOSE)
        return (b0 & 0x80) ? NULL : "fragmented control frame";
    if (op == OP_CONT && !rx->in_message)
        return "orphan continuation";
    if (op != OP_CONT && rx->in_message)
        return "expected continuation";
    return NULL;
}

/* Reads and checks the header at p (avail bytes). HDR_MORE: not all of it is there yet (what
 * is there is valid); HDR_BAD: *why says which rule it breaks. */
static int parse_header(const uint8_t *p, size_t avail, const struct worker_rfc6455_rx *rx,
                        struct rx_header *h, const char **why)
{
    if ((*why = check_byte0(p[0], rx)) != NULL)
        return HDR_BAD;
    h->opcode = p[0] & 0x0F;
    h->fin = p[0] >> 7;
    if (avail < 2)
        return HDR_MORE;
    unsigned len7 = p[1] & 0x7F;
    if (!(p[1] & 0x80))
        *why = "unmasked frame";
    else if (h->opcode >= OP_CLOSE && len7 > 125)
        *why = "control frame too long";
    if (*why != NULL)
        return HDR_BAD;
    size_t ext = len7 == 126 ? 2 : len7 == 127 ? 8 : 0;
    h->hlen = 2 + ext + 4;
    if (avail < 2 + ext)
        return HDR_MORE;
    h->plen = len7;
    if (ext > 0) {
        h->plen = 0;
        for (size_t k = 0; k < ext; k++)
            h->plen = h->plen << 8 | p[2 + k];
        if ((h->plen >> 63) != 0 || h->plen < (ext == 2 ? 126u : 65536u)) {
            *why = "bad payload length";
            return HDR_BAD;
        }
    }
    if (avail < h->hlen)
        return HDR_MORE;
    h->key = p + 2 + ext;
    return HDR_OK;
}

/* Our close frame for lws. Unmasked: lws does not require the mask (that is one of the rules
 * enforced here), and every byte of room counts (see worker_rfc6455.h). */
static size_t synth_close(uint8_t *p, size_t room, uint16_t code, const char *why)
{
    size_t wl = strlen(why);
    if (room < WORKER_RFC6455_SYNTH_MIN)
        return 0; /* the caller broke the contract: no close frame; lws sees the stream end */
    if (wl > WORKER_RFC6455_WHY_MAX)
        wl = WORKER_RFC6455_WHY_MAX;
    if (wl > room - WORKER_RFC6455_SYNTH_MIN)
        wl = room - WORKER_RFC6455_SYNTH_MIN; /* the reasons are ASCII: any cut is UTF-8 */
    p[0] = 0x80 | OP_CLOSE;
    p[1] = (uint8_t)(2 + wl);
    p[2] = (uint8_t)(code >> 8);
    p[3] = (uint8_t)code;
    memcpy(p + 4, why, wl);
    return 4 + wl;
}

static void rx_fail(struct worker_rfc6455_rx *rx, uint8_t *buf, size_t cap,
                    struct worker_rfc6455_rx_result *res, uint16_t code, const char *why)
{
    res->event = WORKER_RFC6455_RX_FAIL;
    res->code = code;
    res->why = why;
    res->out += synth_close(buf + res->out, cap - res->out, code, why);
    rx->state = WORKER_RFC6455_RX_DONE;
}

/* A whole close frame (payload unmasked in pl): passes it on, or fails the connection. */
static void rx_close(struct worker_rfc6455_rx *rx, uint8_t *buf, size_t at, size_t size, size_t cap,
                     const uint8_t *pl, size_t plen, struct worker_rfc6455_rx_result *res)
{
    unsigned code = plen >= 2 ? (unsigned)(pl[0] << 8 | pl[1]) : 0;
    const char *why = NULL;
    uint16_t fail = CODE_PROTOCOL_ERROR;
    if (plen == 1)
        why = "close payload of 1 byte";
    else if (plen >= 2 && !worker_rfc6455_close_code_ok(code))
        why = "invalid close code";
    else if (plen > 2 && !worker_rfc6455_utf8_ok(pl + 2, plen - 2))
        why = "invalid UTF-8 in close", fail = CODE_INVALID_PAYLOAD;
    if (why != NULL) {
        rx_fail(rx, buf, cap, res, fail, why);
        return;
    }
    memmove(buf + res->out, buf + at, size);
    res->out += size;
    res->event = WORKER_RFC6455_RX_CLOSE;
    res->code = (uint16_t)code;
    rx->state = WORKER_RFC6455_RX_DONE;
}

/* Bytes of the current data frame's (or pong's) payload: passed on as they are. */
static size_t rx_payload(struct worker_rfc6455_rx *rx, uint8_t *buf, size_t i, size_t n,
                         struct worker_rfc6455_rx_result *res)
{
    size_t m = n - i;
    if (m > rx->remaining)
        m = (size_t)rx->remaining;
    if (res->out != i)
        memmove(buf + res->out, buf + i, m);
    res->out += m;
    rx->remaining -= m;
    if (rx->remaining == 0)
        rx->state = WORKER_RFC6455_RX_HEADER;
    return i + m;
}

/* A data frame's or pong's valid header at buf + i: passed on; the payload follows. */
static size_t rx_pass_header(struct worker_rfc6455_rx *rx, uint8_t *buf, size_t i,
                             const struct rx_header *h, struct worker_rfc6455_rx_result *res)
{
    if (h->opcode == OP_TEXT || h->opcode == OP_BIN)
        rx->in_message = !h->fin;
    else if (h->opcode == OP_CONT && h->fin)
        rx->in_message = 0;
    if (res->out != i)
        memmove(buf + res->out, buf + i, h->hlen);
    res->out += h->hlen;
    rx->remaining = h->plen;
    rx->state = h->plen > 0 ? WORKER_RFC6455_RX_PAYLOAD : WORKER_RFC6455_RX_HEADER;
    return i + h->hlen;
}

void worker_rfc6455_rx_feed(struct worker_rfc6455_rx *rx, uint8_t *buf, size_t n, size_t cap,
                            worker_rfc6455_ping_fn on_ping, void *arg,
                            struct worker_rfc6455_rx_result *res)
{
    size_t i = 0;
    memset(res, 0, sizeof(*res));
    memcpy(buf, rx->held, rx->held_len);
    rx->held_len = 0;
    while (i < n && rx->state != WORKER_RFC6455_RX_DONE) {
        if (rx->state == WORKER_RFC6455_RX_PAYLOAD) {
            i = rx_payload(rx, buf, i, n, res);
            continue;
        }
        struct rx_header h;
        const char *why = NULL;
        int r = parse_header(buf + i, n - i, rx, &h, &why);
        if (r == HDR_BAD) {
            rx_fail(rx, buf, cap, res, CODE_PROTOCOL_ERROR, why);
            return;
        }
        int judged_whole = h.opcode == OP_PING || h.opcode == OP_CLOSE; /* not passed in bits */
        if (r == HDR_MORE || (judged_whole && n - i < h.hlen + h.plen)) {
            rx->held_len = (uint8_t)(n - i); /* < 131: part of a header or of a control frame */
            memcpy(rx->held, buf + i, n - i);
            break;
        }
        if (!judged_whole) {
            i = rx_pass_header(rx, buf, i, &h, res);
            continue;
        }
        uint8_t pl[125];
        for (size_t k = 0; k < h.plen; k++)
            pl[k] = buf[i + h.hlen + k] ^ h.key[k & 3];
        if (h.opcode == OP_CLOSE) {
            rx_close(rx, buf, i, h.hlen + (size_t)h.plen, cap, pl, (size_t)h.plen, res);
            return;
        }
        if ((why = on_ping(arg, pl, (size_t)h.plen)) != NULL) {
            rx_fail(rx, buf, cap, res, CODE_POLICY, why);
            return;
        }
        i += h.hlen + (size_t)h.plen;
    }
}
