/* frame.c -- streaming WebSocket frame parser and client frame builder (see frame.h).
 *
 * frame_parse returns after each event rather than calling back, so the caller keeps control of
 * what an event does to the connection (a close may end it in the middle of a buffer) and the
 * parser stays a pure function of its bytes, testable without sockets. Bytes are copied only
 * into the small prefix and control buffers; the rest of a payload is counted and skipped.
 */
#include "frame.h"

#include <string.h>

void frame_parser_reset(struct frame_parser *fp)
{
    memset(fp, 0, sizeof(*fp));
    fp->hdr_need = 2;
}

static size_t frame_fail(struct frame_event *ev, const char *why, size_t consumed)
{
    ev->type = FRAME_EV_ERROR;
    ev->error = why;
    return consumed;
}

static int frame_is_control(uint8_t opcode)
{
    return (opcode & 0x8) != 0;
}

/* Checks the first two header bytes and works out the header's full size. Returns NULL when
 * they are acceptable, else the violation. */
static const char *frame_check_start(struct frame_parser *fp)
{
    uint8_t b0 = fp->hdr[0], b1 = fp->hdr[1];
    uint8_t op = b0 & 0x0f, len7 = b1 & 0x7f;

    if ((b0 & 0x30) ||
        ((b0 & 0x40) && !(fp->rsv1_ok && (op == FRAME_OP_TEXT || op == FRAME_OP_BINARY))))
        return "RSV bits set without a negotiated extension";
    if (b1 & 0x80)
        return "server frame is masked";
    if (op != FRAME_OP_CONT && op != FRAME_OP_TEXT && op != FRAME_OP_BINARY &&
        op != FRAME_OP_CLOSE && op != FRAME_OP_PING && op != FRAME_OP_PONG)
        return "reserved opcode";
    if (frame_is_control(op)) {
        if (!(b0 & 0x80))
            return "fragmented control frame";
        if (len7 > FRAME_CTL_MAX)
            return "control frame longer than 125 bytes";
    } else if (op == FRAME_OP_CONT && fp->msg_opcode == 0) {
        return "continuation frame without a message in progress";
    } else if (op != FRAME_OP_CONT && fp->msg_opcode != 0) {
        return "new data frame inside a fragmented message";
    }
    fp->hdr_need = 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0);
    return NULL;
}

/* The header is complete: decode the length and open the frame. */
static const char *frame_open(struct frame_parser *fp)
{
    uint8_t len7 = fp->hdr[1] & 0x7f;
    uint64_t n = len7;

    if (len7 == 126) {
        n = ((uint64_t)fp->hdr[2] << 8) | fp->hdr[3];
    } else if (len7 == 127) {
        n = 0;
        for (int i = 2; i < 10; i++)
            n = (n << 8) | fp->hdr[i];
        if (n >> 63)
            return "64-bit payload length with the top bit set";
    }
    fp->opcode = fp->hdr[0] & 0x0f;
    fp->fin = (fp->hdr[0] & 0x80) != 0;
    fp->remaining = n;
    fp->in_payload = 1;
    if (frame_is_control(fp->opcode)) {
        fp->ctl_len = 0;
    } else if (fp->opcode != FRAME_OP_CONT) {
        fp->msg_opcode = fp->opcode;
        fp->msg_compressed = (fp->hdr[0] & 0x40) != 0;
        fp->msg_len = 0;
        fp->msg_frames = 1;
        fp->prefix_len = 0;
    } else {
        fp->msg_frames++;
    }
    return NULL;
}

/* The payload is complete: reset for the next header and report what the frame finished. */
static void frame_close(struct frame_parser *fp, struct frame_event *ev)
{
    fp->in_payload = 0;
    fp->hdr_len = 0;
    fp->hdr_need = 2;
    switch (fp->opcode) {
    case FRAME_OP_PING:
    case FRAME_OP_PONG:
    case FRAME_OP_CLOSE:
        ev->type = fp->opcode == FRAME_OP_PING   ? FRAME_EV_PING
                   : fp->opcode == FRAME_OP_PONG ? FRAME_EV_PONG
                                                 : FRAME_EV_CLOSE;
        ev->data = fp->ctl;
        ev->data_len = fp->ctl_len;
        return;
    default:
        if (!fp->fin)
            return;
        ev->type = FRAME_EV_MESSAGE;
        ev->opcode = fp->msg_opcode;
        ev->frames = fp->msg_frames;
        ev->compressed = fp->msg_compressed;
        ev->len = fp->msg_len;
        ev->data = fp->prefix;
        ev->data_len = fp->prefix_len;
        fp->msg_opcode = 0;
        return;
    }
}

/* Copies or skips up to `len` payload bytes. Returns how many were taken. */
static size_t frame_take_payload(struct frame_parser *fp, const uint8_t *buf, size_t len)
{
    size_t n = fp->remaining < len ? (size_t)fp->remaining : len;

    if (frame_is_control(fp->opcode)) {
        memcpy(fp->ctl + fp->ctl_len, buf, n); /* n <= 125 - ctl_len by frame_check_start */
        fp->ctl_len += (uint8_t)n;
    } else {
        size_t room = FRAME_PREFIX_MAX - fp->prefix_len;
        size_t keep = n < room ? n : room;
        memcpy(fp->prefix + fp->prefix_len, buf, keep);
        fp->prefix_len += (uint8_t)keep;
        fp->msg_len += n;
    }
    fp->remaining -= n;
    return n;
}

size_t frame_parse(struct frame_parser *fp, const uint8_t *buf, size_t len, struct frame_event *ev)
{
    size_t off = 0;

    ev->type = FRAME_EV_NONE;
    while (off < len) {
        if (!fp->in_payload) {
            while (fp->hdr_len < fp->hdr_need && off < len)
                fp->hdr[fp->hdr_len++] = buf[off++];
            if (fp->hdr_len < fp->hdr_need)
                return off;
            const char *why = NULL;
            if (fp->hdr_len == 2 && (why = frame_check_start(fp)) != NULL)
                return frame_fail(ev, why, off);
            if (fp->hdr_len < fp->hdr_need)
                continue;
            if ((why = frame_open(fp)) != NULL)
                return frame_fail(ev, why, off);
        }
        off += frame_take_payload(fp, buf + off, len - off);
        if (fp->remaining == 0) {
            frame_close(fp, ev);
            if (ev->type != FRAME_EV_NONE)
                return off;
        }
    }
    return off;
}

size_t frame_build(uint8_t *out, uint8_t opcode, const uint8_t *payload, size_t len, uint32_t mask)
{
    size_t n = 0;
    uint8_t key[4] = {(uint8_t)(mask >> 24), (uint8_t)(mask >> 16), (uint8_t)(mask >> 8),
                      (uint8_t)mask};

    out[n++] = (uint8_t)(0x80 | opcode);
    if (len < 126) {
        out[n++] = (uint8_t)(0x80 | len);
    } else if (len <= 0xffff) {
        out[n++] = 0x80 | 126;
        out[n++] = (uint8_t)(len >> 8);
        out[n++] = (uint8_t)len;
    } else {
        out[n++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            out[n++] = (uint8_t)((uint64_t)len >> (8 * i));
    }
    memcpy(out + n, key, 4);
    n += 4;
    for (size_t i = 0; i < len; i++)
        out[n + i] = payload[i] ^ key[i & 3];
    return n + len;
}
