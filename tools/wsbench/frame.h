/* frame.h -- WebSocket framing for the client side of wsbench (RFC 6455 section 5).
 *
 * The parser is a streaming state machine with one small struct per connection and no heap: it
 * keeps only the first FRAME_PREFIX_MAX bytes of each data message (enough for the sequence
 * number and send time a benchmark payload starts with) and counts the rest, so 100,000
 * connections receiving multi-megabyte messages still cost a few hundred bytes each. Control
 * frames (at most 125 bytes) are kept whole because a ping's payload must be echoed.
 *
 * What the parser enforces, because a server that breaks it is a bug worth reporting:
 * server frames are never masked, RSV bits are zero (RSV1 may open a data message when
 * permessage-deflate was negotiated: rsv1_ok, --deflate), control frames
 * are unfragmented and at most 125 bytes, continuation frames only follow an unfinished data
 * frame, and a new data frame never interrupts one. Control frames may arrive between fragments.
 */
#ifndef WSBENCH_FRAME_H
#define WSBENCH_FRAME_H

#include <stddef.h>
#include <stdint.h>

#define FRAME_OP_CONT   0x0
#define FRAME_OP_TEXT   0x1
#define FRAME_OP_BINARY 0x2
#define FRAME_OP_CLOSE  0x8
#define FRAME_OP_PING   0x9
#define FRAME_OP_PONG   0xA

#define FRAME_PREFIX_MAX 192 /* bytes of each data message kept: a wshub.v1 header + the stamp */
#define FRAME_CTL_MAX    125 /* largest control payload (RFC 6455 5.5) */
#define FRAME_HDR_MAX    14  /* 2 + 8 bytes of length + 4 bytes of mask */

enum frame_event_type {
    FRAME_EV_NONE = 0, /* need more bytes */
    FRAME_EV_MESSAGE,  /* a whole data message: opcode, total length, its first bytes */
    FRAME_EV_PING,     /* payload in data/data_len, to be echoed in a pong */
    FRAME_EV_PONG,
    FRAME_EV_CLOSE, /* payload (status code + reason) in data/data_len */
    FRAME_EV_ERROR  /* protocol violation; `error` says which; the stream is unusable */
};

/* Per-connection parser state; zero-initialise it (or call frame_parser_reset). */
struct frame_parser {
    uint64_t remaining;               /* payload bytes left in the current frame */
    uint64_t msg_len;                 /* payload bytes of the open data message so far */
    uint32_t msg_frames;              /* frames of the open data message so far */
    uint8_t hdr[FRAME_HDR_MAX];       /* header bytes gathered so far */
    uint8_t hdr_len;                  /* bytes in hdr */
    uint8_t hdr_need;                 /* header size once known from byte 1, else 2 */
    uint8_t in_payload;               /* 1 while reading a frame's payload */
    uint8_t opcode;                   /* opcode of the current frame */
    uint8_t fin;                      /* FIN bit of the current frame */
    uint8_t msg_opcode;               /* TEXT or BINARY while a message is open, else 0 */
    uint8_t ctl_len;                  /* control payload bytes gathered */
    uint8_t prefix_len;               /* message bytes kept in prefix */
    uint8_t rsv1_ok;                  /* permessage-deflate negotiated: RSV1 may open a message */
    uint8_t msg_compressed;           /* the open data message has RSV1 (deflate.c inflates it) */
    uint8_t prefix[FRAME_PREFIX_MAX]; /* first bytes of the open data message */
    uint8_t ctl[FRAME_CTL_MAX];       /* payload of the current control frame */
};

/* One parsed event. data points into the parser and stays valid until the next frame_parse. */
struct frame_event {
    enum frame_event_type type;
    uint8_t opcode;      /* MESSAGE: FRAME_OP_TEXT or FRAME_OP_BINARY */
    uint32_t frames;     /* MESSAGE: how many frames carried it (1 = unfragmented) */
    uint8_t compressed;  /* MESSAGE: RSV1 was set (permessage-deflate): data is compressed */
    uint64_t len;        /* MESSAGE: total payload length */
    const uint8_t *data; /* MESSAGE: first min(len, FRAME_PREFIX_MAX) bytes; control: payload */
    size_t data_len;
    const char *error; /* ERROR: what was violated */
};

void frame_parser_reset(struct frame_parser *fp);

/* Consumes bytes from buf until one event is complete or buf is exhausted. Returns the number of
 * bytes consumed; ev->type is FRAME_EV_NONE when all of them were consumed without completing an
 * event. Call again with the rest of the buffer after handling an event. After FRAME_EV_ERROR
 * the parser must not be fed again. */
size_t frame_parse(struct frame_parser *fp, const uint8_t *buf, size_t len, struct frame_event *ev);

/* Writes one masked client frame with FIN set into out (at least len + FRAME_HDR_MAX bytes).
 * Returns the frame's length. */
size_t frame_build(uint8_t *out, uint8_t opcode, const uint8_t *payload, size_t len, uint32_t mask);

#endif /* WSBENCH_FRAME_H */
