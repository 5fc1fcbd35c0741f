/* worker_deflate.c -- permessage-deflate (RFC 7692): negotiation, one deflate per broadcast,
 * and a bounded inflate of what clients send. docs/deflate.md has the numbers.
 *
 * Sending. A broadcast is deflated once per worker, never per connection: worker_fanout.c
 * builds the compressed twins of the RAW and V1 encodings with worker_deflate_compress() (one
 * raw deflate stream per worker, reset for every message, level deflate_level) and every
 * connection that negotiated the extension writes the same bytes with LWS_WRITE_RAW. A message
 * below deflate_threshold, or one that would not shrink, goes out as is (RSV1 clear) on the
 * same connection: RFC 7692 compresses per message, so the two mix freely. No message refers to
 * an earlier one (no context takeover on our side), which is what lets one compressed frame
 * serve every client. The V1 twin is the same deflate output behind a stored block holding the
 * "m <seq>\n" envelope, so even both protocols cost one deflate (worker_fanout.c).
 *
 * Why not lws's own extension (lws_extension_callback_pm_deflate, 4.1.6). It would negotiate,
 * but: it allocates ~300 bytes of state per connection at the handshake (two z_streams), and
 * ~270 KB of zlib state at the first compressed send; it mixes up the two no_context_takeover
 * flags (it agrees to server_no_context_takeover and keeps its deflate context); on invalid
 * data it drops the TCP connection without a close frame; and with a 128-byte rx buffer it
 * inflates in 128-byte slices, keeping zlib's input pointer into lws's per-thread read buffer
 * while it waits for the event loop to drain the rest (PMDR_HAS_PENDING) -- a buffer the next
 * read of any other connection overwrites. So this file registers its own extension named
 * "permessage-deflate": lws still parses the offer, calls LWS_EXT_CB_CONSTRUCT, writes the
 * Sec-WebSocket-Extensions answer, accepts RSV1 on that connection and hands us every data
 * payload (LWS_EXT_CB_PAYLOAD_RX) before the protocol callback sees it. Our frames never pass
 * through the extension: LWS_WRITE_RAW skips lws's framing and extensions altogether.
 *
 * Negotiation. We accept the client's first permessage-deflate offer when every parameter is
 * one we can honour: server_no_context_takeover, client_no_context_takeover,
 * client_max_window_bits (with or without a value: our inflater has a 15-bit window, which
 * reads any smaller one) and server_max_window_bits=15; anything else (a smaller server window,
 * an unknown or repeated parameter) declines it and the connection runs uncompressed. lws only
 * echoes flag parameters the client offered, so LWS_CALLBACK_ADD_HEADERS completes the answer:
 * "permessage-deflate; server_no_context_takeover; client_no_context_takeover", plus
 * "server_max_window_bits=15" when it was offered. client_no_context_takeover is what lets the
 * inflate state go after each message: the client then compresses every message on its own.
 *
 * Receiving. No zlib state exists for a connection unless it is in the middle of a compressed
 * message: the inflater (~7 KB + a 32 KB window) is taken at the message's first compressed
 * payload byte and given back at its end (a few are kept for reuse), and at most
 * DFL_MAX_INFLATERS exist per worker (more: close 1013). Output goes to one buffer per worker of
 * client_max_message + 2 bytes; lws passes it straight to the protocol callback, so one buffer
 * serves everybody. Each payload slice is inflated whole, with at most (client_max_message -
 * bytes already received in this message + 1) bytes of room: a small frame that would inflate
 * past the limit stops there, and conn_receive() counts one byte too many and closes with 1009
 * -- nothing larger than the limit is ever allocated. Invalid data closes with 1007, RSV1 on a
 * continuation frame with 1002: the extension leaves the code in c->deflate_fail and hands lws
 * one dummy byte, so that the protocol callback runs and closes with a real close frame (an
 * error returned to lws from an extension drops TCP without one).
 *
 * What lws tells an extension, and what it does not (4.1.6, lib/roles/ws/server-ws.c
 * lws_ws_frame_rest_is_payload and ops-ws.c lws_ws_rx_sm; re-check on an lws upgrade):
 *  - A data frame's payload arrives in slices of what one read() returned (the bulk path),
 *    then, when the frame is complete, one call with no bytes (the "spill"), whose pointer is
 *    the connection's rx_ubuf. A control frame's payload arrives only as a spill, from the same
 *    rx_ubuf. The opcode is not public: inside a fragmented compressed message a pong is told
 *    from a continuation by that pointer, learnt from the empty spill that ended the frame
 *    before (worker_rfc6455_rx.c lets no RSV bit through on control frames).
 *  - lws_get_reserved_bits() is the current frame's RSV, lws_is_final_fragment() its FIN once
 *    its payload is complete. The callback's return value is a private enum (PMDR_*, copied
 *    below): 0 makes lws treat the bytes like an extension-less connection's (including its
 *    UTF-8 checks), PMDR_EMPTY_FINAL makes it call RECEIVE even with no bytes, so the protocol
 *    callback sees every message end.
 *  - The payload struct (eb_in, eb_out) is private too (struct lws_ext_pm_deflate_rx_ebufs); lws
 *    writes a NUL after eb_out in the spill path, hence the + 2 of the output buffer.
 *  - LWS_EXT_CB_CONSTRUCT gets a pointer to the per-connection extension pointer and to the
 *    options list pointer, which must be set. We store a pointer to a static byte: nothing is
 *    allocated per connection. The per-session data is already there (lws_ensure_user_space()
 *    runs before the extension handshake) but is zeroed again at ESTABLISHED, so the
 *    negotiation is read back there with lws_set_extension_option(), which fails when the
 *    extension is not active on the connection.
 */
#include "worker.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "log.h"

#define DFL_NAME          "permessage-deflate"
#define DFL_WINDOW_BITS   15   /* our deflate and inflate windows (RFC 7692 maximum) */
#define DFL_MEM_LEVEL     8    /* zlib's default: 64 KB hash, the best speed on 2 KB JSON */
#define DFL_SPARE         4    /* idle inflaters kept for reuse, per worker */
#define DFL_MAX_INFLATERS 1024 /* compressed client messages in progress at once, per worker */
#define DFL_OFFER_MAX     512  /* longest Sec-WebSocket-Extensions header we parse */
#define DFL_PROBE_OPTION  "wshub-negotiated" /* our NAMED_OPTION_SET: "is it active here?" */

/* lws 4.1.6 private definitions the extension API hands us (see the top comment). */
struct dfl_ebufs {
    struct lws_tokens eb_in;  /* payload from the client */
    struct lws_tokens eb_out; /* what the protocol callback is to get */
};
enum {
    DFL_PMDR_UNKNOWN = 0,
    DFL_PMDR_DID_NOTHING,
    DFL_PMDR_HAS_PENDING,
    DFL_PMDR_EMPTY_NONFINAL,
    DFL_PMDR_EMPTY_FINAL,
    DFL_PMDR_NOTHING_WE_SHOULD_DO
};

/* One compressed client message in progress. */
struct worker_inflate {
    z_stream zs;
    const unsigned char *ctl_ptr; /* where lws hands this connection control payloads */
    struct worker_inflate *next;  /* spare list */
    uint8_t in_frame;             /* inside a frame's payload (its empty spill not seen yet) */
    uint8_t fin_done;             /* the final frame's payload and the trailer are inflated */
    uint8_t stream_end;           /* a BFINAL block ended the deflate stream */
};

struct worker_deflate {
    struct lws_extension ext[2]; /* ours + terminator, for info.extensions */
    z_stream tx;                 /* the one deflate stream, reset per message */
    int tx_ready;                /* tx initialised (at the first compressed broadcast) */
    int level;
    uint8_t *rx_out; /* inflate output, client_max_message + 2 bytes */
    size_t rx_cap;
    struct worker_inflate *spare;
    unsigned nspare;
    unsigned inflaters;  /* in use, spares not counted */
    uint32_t readers[2]; /* connections reading RAW_DEFLATE, V1_DEFLATE */
};

static const struct lws_ext_options dfl_options[] = {
    /* flag parameters lws echoes when offered; the rest is ours (dfl_offer, add_headers) */
    {"server_no_context_takeover", EXTARG_NONE},
    {"client_no_context_takeover", EXTARG_NONE},
    {NULL, EXTARG_NONE},
};

static unsigned char dfl_ext_user; /* what every connection's extension pointer points to */
static const unsigned char dfl_trailer[4] = {0x00, 0x00, 0xff, 0xff};

/* ---- negotiation ---- */

/* One "name[=value]" parameter of an offer, trimmed; value NULL when absent. */
struct dfl_param {
    const char *name, *value;
    size_t name_len, value_len;
};

static const char *dfl_trim(const char *s, const char *e, const char **out_end)
{
    while (s < e && (*s == ' ' || *s == '\t'))
        s++;
    while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
        e--;
    *out_end = e;
    return s;
}

static int dfl_param_parse(const char *s, const char *e, struct dfl_param *p)
{
    const char *eq = memchr(s, '=', (size_t)(e - s)), *ne, *ve;
    p->name = dfl_trim(s, eq != NULL ? eq : e, &ne);
    p->name_len = (size_t)(ne - p->name);
    p->value = NULL;
    p->value_len = 0;
    if (eq != NULL) {
        p->value = dfl_trim(eq + 1, e, &ve);
        if (ve - p->value >= 2 && p->value[0] == '"' && ve[-1] == '"') { /* quoted-string */
            p->value++;
            ve--;
        }
        p->value_len = (size_t)(ve - p->value);
    }
    return p->name_len > 0 ? 0 : -1;
}

static int dfl_is(const struct dfl_param *p, const char *name)
{
    return p->name_len == strlen(name) && memcmp(p->name, name, p->name_len) == 0;
}

/* 8..15 as a window-bits value, else -1. */
static int dfl_bits(const struct dfl_param *p)
{
    if (p->value == NULL || p->value_len == 0 || p->value_len > 2)
        return -1;
    int v = 0;
    for (size_t i = 0; i < p->value_len; i++) {
        if (p->value[i] < '0' || p->value[i] > '9')
            return -1;
        v = v * 10 + (p->value[i] - '0');
    }
    return v >= 8 && v <= 15 ? v : -1;
}

/* Judges the first permessage-deflate offer in the request (lws only ever considers that one).
 * Returns 1 to accept (*want_smwb: server_max_window_bits=15 must be echoed), 0 to decline. */
static int dfl_offer(struct lws *wsi, int *want_smwb)
{
    char hdr[DFL_OFFER_MAX];
    unsigned seen = 0;
    *want_smwb = 0;
    if (lws_hdr_total_length(wsi, WSI_TOKEN_EXTENSIONS) >= (int)sizeof(hdr) ||
        lws_hdr_copy(wsi, hdr, sizeof(hdr), WSI_TOKEN_EXTENSIONS) < 0)
        return 0;
    const char *s = hdr, *end = hdr + strlen(hdr);
    while (s < end) { /* offers are comma-separated; parameters of one are ';'-separated */
        const char *oe = memchr(s, ',', (size_t)(end - s)), *e;
        oe = oe != NULL ? oe : end;
        const char *semi = memchr(s, ';', (size_t)(oe - s));
        const char *name = dfl_trim(s, semi != NULL ? semi : oe, &e);
        if ((size_t)(e - name) != strlen(DFL_NAME) || memcmp(name, DFL_NAME, (size_t)(e - name))) {
            s = oe + 1;
            continue;
        }
        for (const char *ps = semi; ps != NULL && ps < oe;) {
            const char *pe = memchr(ps + 1, ';', (size_t)(oe - ps - 1));
            struct dfl_param p;
            pe = pe != NULL ? pe : oe;
            if (dfl_param_parse(ps + 1, pe, &p) < 0)
                return 0;
            unsigned bit;
            if (dfl_is(&p, "server_no_context_takeover") && p.value == NULL)
                bit = 1;
            else if (dfl_is(&p, "client_no_context_takeover") && p.value == NULL)
                bit = 2;
            else if (dfl_is(&p, "client_max_window_bits") && (p.value == NULL || dfl_bits(&p) > 0))
                bit = 4;
            else if (dfl_is(&p, "server_max_window_bits") && dfl_bits(&p) == DFL_WINDOW_BITS)
                bit = 8, *want_smwb = 1;
            else
                return 0; /* a smaller server window, or a parameter we do not know */
            if (seen & bit)
                return 0; /* RFC 7692 7: a repeated parameter makes the offer invalid */
            seen |= bit;
            ps = pe;
        }
        return 1;
    }
    return 0;
}

/* Finds our Sec-WebSocket-Extensions line in the response lws has written so far, ending at
 * `p`, by looking backwards no further than its status line (which lws writes first). Returns
 * the line's start and sets *eol to its CR, or NULL. */
static char *dfl_find_answer(char *p, char **eol)
{
    static const char key[] = "\r\nSec-WebSocket-Extensions: " DFL_NAME;
    for (char *q = p - 2;; q--) {
        if (memcmp(q, "HTTP/1.1 101", 12) == 0)
            return NULL;
        if (*q == '\r' && p - q >= (long)sizeof(key) - 1 && memcmp(q, key, sizeof(key) - 1) == 0) {
            *eol = memchr(q + 2, '\r', (size_t)(p - q - 2));
            return *eol != NULL ? q + 2 : NULL;
        }
    }
}

int worker_deflate_add_headers(struct worker *w, struct lws *wsi, void *in)
{
    struct lws_process_html_args *a = in;
    char add[128], *eol;
    int smwb;
    size_t n = 0;
    if (w->dfl == NULL || a == NULL || a->p == NULL ||
        lws_set_extension_option(wsi, DFL_NAME, DFL_PROBE_OPTION, NULL) != 0)
        return 0; /* not negotiated on this connection */
    char *line = dfl_find_answer(a->p, &eol);
    if (line == NULL) {
        log_error(0, "permessage-deflate: no Sec-WebSocket-Extensions line in lws's answer");
        return -1; /* without client_no_context_takeover we could not inflate: refuse */
    }
    *eol = '\0';
    if (strstr(line, "server_no_context_takeover") == NULL)
        n += (size_t)snprintf(add + n, sizeof(add) - n, "; server_no_context_takeover");
    if (strstr(line, "client_no_context_takeover") == NULL)
        n += (size_t)snprintf(add + n, sizeof(add) - n, "; client_no_context_takeover");
    *eol = '\r';
    if (dfl_offer(wsi, &smwb) && smwb)
        n += (size_t)snprintf(add + n, sizeof(add) - n, "; server_max_window_bits=%d",
                              DFL_WINDOW_BITS);
    if (n == 0)
        return 0;
    if ((int)n >= a->max_len) {
        log_error(0, "permessage-deflate: no room for the extension answer");
        return -1;
    }
    memmove(eol + n, eol, (size_t)(a->p - eol)); /* the CRLFs (and any header after us) */
    memcpy(eol, add, n);
    a->p += n;
    a->max_len -= (int)n;
    return 0;
}

/* ---- receiving ---- */

static struct worker_inflate *dfl_inflater_get(struct worker_deflate *d)
{
    struct worker_inflate *inf = d->spare;
    if (inf != NULL) {
        d->spare = inf->next;
        d->nspare--;
    } else {
        inf = calloc(1, sizeof(*inf));
        if (inf == NULL) {
            log_warn(errno, "calloc() failed for an inflater");
            return NULL;
        }
        int rc = inflateInit2(&inf->zs, -DFL_WINDOW_BITS);
        if (rc != Z_OK) {
            log_warn(0, "inflateInit2() failed: %d", rc);
            free(inf);
            return NULL;
        }
    }
    d->inflaters++;
    inf->ctl_ptr = NULL;
    inf->next = NULL;
    inf->in_frame = inf->fin_done = inf->stream_end = 0;
    return inf;
}

static void dfl_inflater_put(struct worker_deflate *d, struct worker_inflate *inf)
{
    d->inflaters--;
    if (d->nspare < DFL_SPARE && inflateReset(&inf->zs) == Z_OK) {
        inf->next = d->spare;
        d->spare = inf;
        d->nspare++;
        return;
    }
    inflateEnd(&inf->zs);
    free(inf);
}

/* The message ended or failed: its inflater goes back. */
static void dfl_rx_end(struct worker_deflate *d, struct worker_conn *c)
{
    if (c->inflate != NULL) {
        dfl_inflater_put(d, c->inflate);
        c->inflate = NULL;
    }
}

/* Leaves `code` for conn_receive and hands lws one byte so that it calls RECEIVE. */
static int dfl_rx_fail(struct worker_deflate *d, struct worker_conn *c, struct dfl_ebufs *eb,
                       uint16_t code)
{
    dfl_rx_end(d, c);
    if (c->deflate_fail == 0)
        c->deflate_fail = code;
    d->rx_out[0] = 'x';
    eb->eb_out.token = d->rx_out;
    eb->eb_out.len = 1;
    eb->eb_in.len = 0;
    return DFL_PMDR_EMPTY_FINAL;
}

/* Inflates one payload slice (and, at the end of the final frame, the trailer) into rx_out with
 * room for one byte more than the message may still grow. Returns the bytes produced, or -1 for
 * invalid data. */
static long dfl_inflate(struct worker *w, struct worker_conn *c, const uint8_t *in, size_t len,
                        int fin)
{
    struct worker_deflate *d = w->dfl;
    struct worker_inflate *inf = c->inflate;
    uint64_t limit = w->conf.client_max_message;
    size_t room = (size_t)(c->rx_msg_len < limit ? limit - c->rx_msg_len : 0) + 1;
    inf->zs.next_out = d->rx_out;
    inf->zs.avail_out = (uInt)room;
    inf->zs.next_in = (Bytef *)in;
    inf->zs.avail_in = (uInt)len;
    while (inf->zs.avail_in > 0 && inf->zs.avail_out > 0 && !inf->stream_end) {
        int rc = inflate(&inf->zs, Z_NO_FLUSH);
        if (rc == Z_STREAM_END)
            inf->stream_end = 1; /* a BFINAL block: what follows is ignored */
        else if (rc == Z_BUF_ERROR)
            break;
        else if (rc != Z_OK)
            return -1;
    }
    if (fin && !inf->stream_end && inf->zs.avail_out > 0) {
        inf->zs.next_in = (Bytef *)dfl_trailer;
        inf->zs.avail_in = sizeof(dfl_trailer);
        int rc = inflate(&inf->zs, Z_SYNC_FLUSH);
        if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR)
            return -1;
    }
    return (long)(room - inf->zs.avail_out); /* room used up: conn_receive closes with 1009 */
}

/* A compressed message starts: an inflater, and the shared output buffer on first use. */
static int dfl_rx_begin(struct worker *w, struct worker_conn *c)
{
    struct worker_deflate *d = w->dfl;
    if (d->inflaters >= DFL_MAX_INFLATERS)
        return WORKER_CLOSE_TRY_AGAIN_LATER;
    if (d->rx_out == NULL) {
        d->rx_cap = (size_t)w->conf.client_max_message + 2;
        d->rx_out = malloc(d->rx_cap);
        if (d->rx_out == NULL) {
            log_warn(errno, "malloc(%zu) failed for the inflate buffer", d->rx_cap);
            return LWS_CLOSE_STATUS_UNEXPECTED_CONDITION;
        }
    }
    c->inflate = dfl_inflater_get(d);
    return c->inflate != NULL ? 0 : LWS_CLOSE_STATUS_UNEXPECTED_CONDITION;
}

/* LWS_EXT_CB_PAYLOAD_RX: see the top comment for the calls lws makes. */
static int dfl_payload_rx(struct worker *w, struct lws *wsi, struct dfl_ebufs *eb)
{
    struct worker_deflate *d = w->dfl;
    struct worker_conn *c = lws_wsi_user(wsi);
    int rsv1 = (lws_get_reserved_bits(wsi) & 0x40) != 0;
    size_t len = eb->eb_in.len > 0 ? (size_t)eb->eb_in.len : 0;
    if (c == NULL)
        return DFL_PMDR_UNKNOWN;
    if (c->deflate_fail != 0) /* lws still parsing what came with the bad frame */
        return dfl_rx_fail(d, c, eb, c->deflate_fail);
    struct worker_inflate *inf = c->inflate;
    if (inf == NULL) {
        if (!rsv1 || (len == 0 && lws_is_final_fragment(wsi)))
            return DFL_PMDR_UNKNOWN; /* uncompressed, a frame's end, or an empty message */
        int code = dfl_rx_begin(w, c);
        if (code != 0)
            return dfl_rx_fail(d, c, eb, (uint16_t)code);
        inf = c->inflate;
        inf->in_frame = len > 0;
        if (len == 0) { /* an empty first frame of a fragmented message: its spill */
            inf->ctl_ptr = eb->eb_in.token;
            return DFL_PMDR_UNKNOWN;
        }
    } else if (len == 0) { /* a spill: the end of a frame */
        inf->ctl_ptr = eb->eb_in.token;
        if (inf->in_frame) { /* after that frame's payload slices */
            inf->in_frame = 0;
            if (inf->fin_done)
                dfl_rx_end(d, c);
            return DFL_PMDR_UNKNOWN; /* (lws calls no callback for this one) */
        }
        if (rsv1) /* an empty continuation frame */
            return dfl_rx_fail(d, c, eb, LWS_CLOSE_STATUS_PROTOCOL_ERR);
        if (!lws_is_final_fragment(wsi))
            return DFL_PMDR_UNKNOWN;
    } else if (!inf->in_frame) { /* a new frame's first slice, or a control frame */
        if (eb->eb_in.token == inf->ctl_ptr)
            return DFL_PMDR_UNKNOWN; /* a pong between two fragments */
        if (rsv1)                    /* RFC 7692 6.1: RSV1 only on a message's first frame */
            return dfl_rx_fail(d, c, eb, LWS_CLOSE_STATUS_PROTOCOL_ERR);
        inf->in_frame = 1;
    }
    int fin = lws_is_final_fragment(wsi);
    long out = dfl_inflate(w, c, eb->eb_in.token, len, fin);
    if (out < 0)
        return dfl_rx_fail(d, c, eb, LWS_CLOSE_STATUS_INVALID_PAYLOAD);
    eb->eb_in.len = 0;
    eb->eb_out.token = d->rx_out;
    eb->eb_out.len = (int)out;
    if (fin) {
        inf->fin_done = 1;
        if (!inf->in_frame)
            dfl_rx_end(d, c); /* an empty final frame: no spill follows */
    }
    /* 0 keeps lws's UTF-8 checks as for any connection; with no bytes at a message's end only
     * EMPTY_FINAL makes lws call RECEIVE, so that conn_receive sees the end. */
    return fin && out == 0 ? DFL_PMDR_EMPTY_FINAL : DFL_PMDR_UNKNOWN;
}

int worker_deflate_fail(struct worker_conn *c)
{
    const char *text;
    switch (c->deflate_fail) {
    case LWS_CLOSE_STATUS_INVALID_PAYLOAD:
        text = "invalid compressed data";
        break;
    case LWS_CLOSE_STATUS_PROTOCOL_ERR:
        text = "RSV1 on a continuation frame";
        break;
    case WORKER_CLOSE_TRY_AGAIN_LATER:
        text = "too many compressed messages in progress";
        break;
    default:
        text = "cannot inflate";
        break;
    }
    c->close_at = c->cursor;
    c->close_code = c->deflate_fail;
    c->close_reason = SHM_CLOSE_PROTOCOL;
    lws_close_reason(c->wsi, (enum lws_close_status)c->deflate_fail, (unsigned char *)text,
                     strlen(text));
    return -1;
}

/* ---- the extension callback ---- */

static int dfl_callback(struct lws_context *context, const struct lws_extension *ext,
                        struct lws *wsi, enum lws_extension_callback_reasons reason, void *user,
                        void *in, size_t len)
{
    struct worker *w = lws_context_user(context);
    int smwb;
    (void)ext;
    (void)user;
    (void)len;
    switch (reason) {
    case LWS_EXT_CB_CONSTRUCT:
        if (!dfl_offer(wsi, &smwb))
            return -1; /* declined: the connection runs without compression */
        *(void **)user = &dfl_ext_user;
        *(const struct lws_ext_options **)in = dfl_options;
        return 0;
    case LWS_EXT_CB_OPTION_SET:       /* a flag parameter lws is about to echo */
    case LWS_EXT_CB_NAMED_OPTION_SET: /* our probe (worker_deflate_established) */
        return 0;
    case LWS_EXT_CB_PAYLOAD_RX:
        return w->dfl != NULL ? dfl_payload_rx(w, wsi, in) : DFL_PMDR_UNKNOWN;
    default:
        return 0; /* PAYLOAD_TX, PACKET_TX_PRESEND: our frames never come here; DESTROY: nothing
                     was allocated per connection (an inflater goes at CLOSED) */
    }
}

/* ---- connections ---- */

static int dfl_reader_index(enum worker_variant v)
{
    return v == WORKER_VARIANT_V1_DEFLATE ? 1 : 0;
}

void worker_deflate_established(struct worker *w, struct worker_conn *c, struct lws *wsi)
{
    if (w->dfl == NULL || lws_set_extension_option(wsi, DFL_NAME, DFL_PROBE_OPTION, NULL) != 0)
        return;
    c->deflate = 1;
    w->dfl->readers[dfl_reader_index(worker_conn_encoding(c))]++;
}

void worker_deflate_closed(struct worker *w, struct worker_conn *c)
{
    if (c == NULL || w->dfl == NULL || !c->deflate)
        return;
    dfl_rx_end(w->dfl, c);
    w->dfl->readers[dfl_reader_index(worker_conn_encoding(c))]--;
    c->deflate = 0;
}

uint32_t worker_deflate_readers(const struct worker *w, enum worker_variant v)
{
    if (w->dfl == NULL || v < WORKER_VARIANT_RAW_DEFLATE)
        return 0;
    return w->dfl->readers[dfl_reader_index(v)];
}

/* ---- sending ---- */

size_t worker_deflate_compress(struct worker *w, const uint8_t *in, size_t len, uint8_t *out,
                               size_t limit)
{
    struct worker_deflate *d = w->dfl;
    int rc;
    if (d == NULL || limit > UINT32_MAX - 4 || len > UINT32_MAX)
        return 0;
    if (!d->tx_ready) {
        rc = deflateInit2(&d->tx, d->level, Z_DEFLATED, -DFL_WINDOW_BITS, DFL_MEM_LEVEL,
                          Z_DEFAULT_STRATEGY);
        if (rc != Z_OK) {
            log_error(0, "deflateInit2() failed: %d; broadcasts go out uncompressed", rc);
            return 0;
        }
        d->tx_ready = 1;
    } else if (deflateReset(&d->tx) != Z_OK) {
        return 0;
    }
    d->tx.next_in = (Bytef *)in;
    d->tx.avail_in = (uInt)len;
    d->tx.next_out = out;
    d->tx.avail_out = (uInt)(limit + 4);
    rc = deflate(&d->tx, Z_SYNC_FLUSH);
    /* Output that filled the room may not be complete: then it is not shorter either. */
    if (rc != Z_OK || d->tx.avail_in != 0 || d->tx.avail_out == 0)
        return 0;
    size_t total = limit + 4 - d->tx.avail_out;
    if (total < 4 || memcmp(out + total - 4, dfl_trailer, 4) != 0 || total - 4 >= limit)
        return 0;
    return total - 4;
}

/* ---- start-up ---- */

int worker_deflate_init(struct worker *w)
{
    if (!w->conf.deflate)
        return 0;
    struct worker_deflate *d = calloc(1, sizeof(*d));
    if (d == NULL) {
        log_error(errno, "calloc() failed for the deflate state");
        return -1;
    }
    d->ext[0].name = DFL_NAME;
    d->ext[0].callback = dfl_callback;
    d->ext[0].client_offer = NULL;
    d->level = w->conf.deflate_level;
    w->dfl = d;
    return 0;
}

const struct lws_extension *worker_deflate_extensions(const struct worker *w)
{
    return w->dfl != NULL ? w->dfl->ext : NULL;
}
