/* worker.h -- the WebSocket worker process: its one state struct and what its files share.
 *
 * A worker is exec'd by the hub for one slot. It attaches to the shared-memory segment, runs
 * one libwebsockets context on a libev (epoll) loop it owns, accepts clients from the listening
 * socket every worker shares, and delivers every broadcast in the ring to each of its clients.
 *
 *   worker.c            main: arguments, configuration, attach, lws context, the loop, exit
 *   worker_accept.c     accept4() from the shared listening socket, hand-off to lws, the fd cap
 *   worker_fanout.c     the local buffers of ready-made frames, the ring pump, lapped clients
 *   worker_proto.c      the one lws protocol callback: handshake checks, closes, counters
 *   worker_v1.c         the wshub.v1 subprotocol: envelopes, welcome, gaps, resume decisions
 *   worker_resume.c     the strict parser of ?since= and ?epoch= (no lws, fuzzable)
 *   worker_auth.c       admission before the upgrade (tokens, Origin, limits) and identity
 *   worker_rfc6455.c    strict RFC 6455: handshake checks, recv()/SSL_read() filter, pongs
 *   worker_rfc6455_rx.c the client frame validator behind that filter (no lws, unit-tested)
 *   worker_deliver.c    writing whole frames to connections: from the pump, or on WRITEABLE
 *   worker_deflate.c    permessage-deflate: negotiation, compressed encodings, bounded inflate
 *   worker_keepalive.c  pings for quiet clients, hang-ups for silent ones (not lws's timers)
 *   worker_signal.c     signals, the 1 s tick (hub still alive?) and the graceful stop
 *   worker_restart.c    the rolling restart's drain: 1012 closes spread over restart_spread
 *
 * All state lives in one struct worker, reached from lws callbacks through the context's user
 * pointer; there are no globals shared between these files. Everything runs on the one loop
 * thread: nothing here is locked and nothing runs in a signal handler (libev turns signals into
 * ordinary events).
 */
#ifndef WSHUB_WORKER_H
#define WSHUB_WORKER_H

#include <stdint.h>

#include <ev.h>
#include <libwebsockets.h>

#include "conf.h"
#include "ring.h"
#include "shm.h"

#define WORKER_EXIT_OK      0 /* clean stop */
#define WORKER_EXIT_RUNTIME 1 /* runtime error: the hub respawns */
#define WORKER_EXIT_FATAL   2 /* configuration or layout error: the hub does not respawn */

#define WORKER_ACCEPT_BATCH          32   /* accept4() calls per readiness event */
#define WORKER_ACCEPT_PAUSE          0.25 /* seconds the accept watcher rests after EMFILE/ENFILE */
#define WORKER_ACCEPT_YIELD          0.002 /* seconds a worker ahead of its peers lets them accept */
#define WORKER_WRITE_BUDGET          CONF_WRITE_BUDGET /* bytes gathered into one lws_write() */
#define WORKER_FRAME_HDR_MAX         10  /* largest server frame header (unmasked, 64-bit length) */
#define WORKER_RX_BUFFER             128 /* lws receive buffer per connection (memory per client) */
#define WORKER_CLOSE_GRACE_S         10 /* a closing client that does not drain is cut after this */
#define WORKER_KEEPALIVE_MIN_PERIOD  0.1 /* seconds between keepalive walks, at least */
#define WORKER_KEEPALIVE_MAX_PERIOD  1.0 /* and at most */
#define WORKER_NO_FRAME              UINT64_MAX
#define WORKER_CLOSE_TRY_AGAIN_LATER 1013 /* RFC 6455 registry; lws 4.1.6 has no name for it */
#define WORKER_CLOSE_SERVICE_RESTART 1012 /* likewise: the rolling restart's close */
#define WORKER_SUBPROTOCOL_V1        "wshub.v1"
#define WORKER_PROTO_RAW             0 /* index in protocols[]: no subprotocol, raw payloads */
#define WORKER_PROTO_V1              1 /* wshub.v1: envelopes, resume (docs/protocol.md) */
#define WORKER_PROTO_COUNT           2

/* Every broadcast is framed once per encoding a connection may need; each encoding has its own
 * byte buffer so that a connection's run of frames stays contiguous (one write for many).
 *   RAW  the payload as published (clients that asked for no subprotocol)
 *   V1   "m <seq>\n" + payload (wshub.v1, docs/protocol.md)
 *   RAW_DEFLATE, V1_DEFLATE  the same, permessage-deflate compressed when that pays (RSV1 set),
 *        else as is; read by connections that negotiated permessage-deflate (worker_deflate.c).
 *        A protocol's twin is its encoding + WORKER_VARIANT_RAW_DEFLATE. */
enum worker_variant {
    WORKER_VARIANT_RAW = 0,
    WORKER_VARIANT_V1,
    WORKER_VARIANT_RAW_DEFLATE,
    WORKER_VARIANT_V1_DEFLATE,
    WORKER_VARIANTS
};

#define WORKER_FRAME_MSG 0 /* a broadcast */
#define WORKER_FRAME_GAP 1 /* a gap notice: seq..gap_to were lost (V1: "g", RAW: empty) */

/* Where one frame of one encoding lies in that encoding's buffer. */
struct worker_frame_copy {
    uint64_t pos;     /* byte position of the frame header (monotonic, mod buf_size) */
    uint32_t len;     /* whole frame: header + envelope + payload (0 = nothing to send) */
    uint16_t hdr_len; /* bytes before the payload: WebSocket header + envelope */
    uint16_t alias;   /* DEFLATE encodings: 1 = not built, read this frame from the base
                         encoding (pos then only keeps this buffer's positions in order) */
};

/* One frame in the local buffer. Frame numbers only grow; frame f lives in
 * frames[f & (nframes - 1)] while head <= f < tail. */
struct worker_frame {
    uint64_t seq;          /* ring sequence of the broadcast (GAP: first lost) */
    uint64_t published_ns; /* CLOCK_MONOTONIC at ring append, for the latency histogram */
    uint64_t gap_to;       /* GAP: last lost sequence */
    uint64_t chan_key;     /* worker_channel_key() of its channel; WORKER_CHAN_ALL = everyone */
    uint32_t payload_len;
    uint32_t kind; /* WORKER_FRAME_* */
    struct worker_frame_copy v[WORKER_VARIANTS];
};

/* One encoding's byte buffer. */
struct worker_framebuf {
    uint8_t *buf;       /* buf_size bytes, anonymous mapping */
    uint64_t write_pos; /* byte position where the next frame starts */
    uint64_t scan_lap;  /* write_pos / buf_size at the last lapped-cursor scan */
};

/* The local frame buffers and the worker's private ring cursor (worker_fanout.c owns it).
 *
 *   buf:     ...| frame h | frame h+1 | ... | frame t-1 |  (free)  |...   positions only grow
 *                 ^ head                                  ^ write_pos
 *
 * A connection keeps only a frame number (its cursor). Frames before `head` have been
 * overwritten in some encoding or pushed out of the index: a cursor below head can never be used
 * again. */
struct worker_fanout {
    struct worker_framebuf vb[WORKER_VARIANTS];
    uint64_t buf_size;           /* of each encoding's buffer, a power of two */
    struct worker_frame *frames; /* nframes entries */
    uint64_t nframes;            /* power of two */
    uint64_t head;               /* oldest intact frame */
    uint64_t tail;               /* next frame number */
    uint64_t scan_head;          /* head at the last lapped-cursor scan */
    uint64_t base_seq;           /* every broadcast numbered >= base_seq is in [head, tail) or
                                    still to come: resume from base_seq - 1 onwards is whole */
    uint32_t max_payload;        /* the segment's largest payload */
    struct ring_cursor cursor;   /* position in the shared ring */
};

struct worker_security; /* worker_auth.h */
struct worker_inflate;  /* worker_deflate.c */
struct worker_deflate;  /* worker_deflate.c */

/* Per-connection state: lws per-session data, zeroed by lws at upgrade and set up at
 * ESTABLISHED. Every established connection is on the worker's intrusive list. */
struct worker_conn {
    struct worker_conn *prev, *next;
    struct lws *wsi;
    uint64_t cursor;          /* next frame to send */
    uint64_t close_at;        /* close once cursor reaches this frame; WORKER_NO_FRAME = never */
    uint64_t last_valid_ms;   /* monotonic ms of the upgrade, last pong or last message */
    uint64_t rx_msg_len;      /* bytes of the client message being received */
    uint32_t row;             /* connection-table row, CONNTAB_NONE if none */
    uint16_t close_code;      /* code we send when close_at is reached */
    uint16_t peer_close_code; /* code of the client's close frame, 0 if none */
    uint8_t close_reason;     /* enum shm_close_reason for close_at, valid if close_code */
    uint8_t counted;          /* counted in stats.connections (has a row) */
    uint8_t on_list;
    uint8_t lws_closing;      /* lws started closing it (or a write failed): write nothing more */
    uint8_t ping_outstanding; /* a keepalive ping went out since last_valid_ms */
    uint8_t hung_up;          /* closed by worker_keepalive.c after idle_timeout */
    uint8_t variant;          /* enum worker_variant: which encoding this client reads */
    uint8_t pending;          /* WORKER_PENDING_*: control messages to send before frames */
    uint8_t welcome_status;   /* enum worker_welcome, for the pending welcome */
    uint8_t gap_reason;       /* enum worker_gap_reason, for the pending gap notice */
    uint64_t last_seq;        /* newest sequence this client has been sent (or told of) */
    uint64_t skip_through;    /* resume: frames numbered <= this are not sent (already seen) */
    uint64_t gap_from;        /* pending gap notice: first and last lost sequence */
    uint64_t gap_to;
    struct worker_sub *subs; /* channel subscriptions (worker_channels.c), NULL = none */
    uint8_t *reply;          /* queued replies to wshub.v1 commands, whole frames (malloc'd) */
    const char *refusal;     /* static reason for a policy close (1008), NULL = the default */
    uint8_t *cmd;            /* a wshub.v1 command arriving in pieces (malloc'd), else NULL */
    uint8_t cmd_len;
    uint8_t cmd_over; /* it was longer than any command */
    uint16_t reply_len;
    uint8_t nsubs;   /* subscriptions, the user's own channel not counted */
    uint8_t skipped; /* slow_consumer skip moved it forward at least once */
    uint8_t busy;    /* frames this client wants may lie in [cursor, tail); when 0, none do and the
                        cursor may be stale: worker_deliver.c moves it forward before use */
    /* permessage-deflate (worker_deflate.c) */
    struct worker_inflate *inflate; /* a compressed client message being received, else NULL */
    uint16_t deflate_fail;          /* close code worker_deflate.c left for conn_receive, or 0 */
    uint8_t deflate;                /* permessage-deflate negotiated: reads the compressed twin */
    /* ---- security and limits (worker_auth.c): fields below this line only ---- */
    uint64_t limit_addr_key; /* connlimit key counted for the client address, 0 = none */
    uint64_t limit_user_key; /* and for the user id (shm/connlimit.c) */
    char *channels;          /* the token's channels claim, comma-separated (malloc'd), or NULL;
                                stored for the channels feature, not enforced yet */
    uint32_t rate_tokens;    /* client_message_rate bucket, thousandths of a message */
    uint32_t rate_ms;        /* low 32 bits of the monotonic ms of its last refill */
};

/* The encoding c reads: its protocol's (variant), or that one's compressed twin once it
 * negotiated permessage-deflate. */
static inline enum worker_variant worker_conn_encoding(const struct worker_conn *c)
{
    return (enum worker_variant)(c->variant + (c->deflate ? WORKER_VARIANT_RAW_DEFLATE : 0));
}

#define WORKER_CHAN_ALL 0 /* chan_key of a broadcast to everyone */

/* A channel with subscribers on this worker (worker_channels.c). */
struct worker_chan {
    struct worker_chan *hnext; /* hash chain */
    struct worker_sub *subs;   /* its subscriptions, through sub->cnext */
    uint64_t key;              /* worker_channel_key(name) */
    uint64_t messages;         /* broadcasts framed for it while it had subscribers here */
    uint64_t rate_mark;        /* messages at the last rate update */
    double rate;               /* messages per second, moving average */
    uint32_t nsubs;
    int32_t shm_index; /* its entry in the segment's channel table, -1 = none */
    char name[RING_MAX_CHANNEL_LEN + 1];
};

/* One connection's subscription to one channel. */
struct worker_sub {
    struct worker_sub *cprev, *cnext; /* in the channel's list */
    struct worker_sub *next;          /* in the connection's list */
    struct worker_chan *chan;
    struct worker_conn *conn;
    uint64_t key;  /* chan->key, kept here for the per-frame test */
    uint64_t from; /* frames numbered below this predate the subscription */
};

/* The worker's channel table: a chained hash keyed by channel key. */
struct worker_channels {
    struct worker_chan **buckets;
    uint32_t nbuckets; /* power of two */
    uint32_t count;
    uint64_t hash_key[2]; /* SipHash key, random per worker */
    uint32_t *shm_free;   /* free entries of our slot's presence table (a stack) */
    uint32_t shm_nfree;
    uint32_t shm_next; /* entries [0, shm_next) have been handed out */
    double rate_at;    /* ev_now() of the last rate update */
};

#define WORKER_PENDING_WELCOME 0x01
#define WORKER_PENDING_GAP     0x02

enum worker_welcome {
    WORKER_WELCOME_FRESH = 0,
    WORKER_WELCOME_RESUMED,
    WORKER_WELCOME_EXPIRED,
    WORKER_WELCOME_RESET
};
enum worker_gap_reason { WORKER_GAP_SKIPPED = 0, WORKER_GAP_OVERRUN };

struct worker {
    struct conf conf;
    unsigned slot;
    uint32_t generation;
    int listen_fd;
    int doorbell_fd;
    struct shm shm;
    struct shm_worker *self;        /* our slot in the segment */
    struct shm_worker_stats *stats; /* &self->stats */
    int32_t hub_pid;

    struct ev_loop *loop;
    struct lws_context *ctx;
    struct lws_vhost *vhost;
    struct lws_protocols protocols[WORKER_PROTO_COUNT + 1]; /* + terminator */
    lws_retry_bo_t keepalive;
    lws_sorted_usec_list_t lws_tick; /* keeps lws's timer armed (see worker.c) */

    /* accept (worker_accept.c) */
    ev_io accept_io;
    ev_timer accept_resume;
    int accept_paused_full;  /* at worker_connections */
    int accept_paused_error; /* resting after EMFILE/ENFILE */
    int accept_yielding;     /* ahead of a peer: resting briefly so it can catch up */
    ev_timer accept_yield;
    uint64_t accept_error_logged_ms;
    uint32_t sockets;        /* adopted sockets not yet destroyed (handshakes + clients) */
    uint32_t sockets_resume; /* resume accepting below this many */

    /* fan-out (worker_fanout.c) */
    struct worker_fanout fan;
    ev_io doorbell_io;
    ev_prepare prepare;
    uint64_t kicks_seen; /* self->kicks_pending when the rows were last scanned for kicks */

    /* channels (worker_channels.c) */
    struct worker_channels chans;

    /* keepalive (worker_keepalive.c) */
    ev_timer keepalive_timer;

    /* connections (worker_proto.c) */
    struct worker_conn conns; /* list sentinel */
    uint32_t nconns;

    /* lifecycle (worker_signal.c) */
    ev_signal sig_term, sig_int, sig_usr1, sig_hup;
    ev_timer tick;
    ev_timer drain_deadline;
    int draining;
    int restarting;         /* draining for a rolling restart (SIGHUP): 1012, spread out */
    ev_timer restart_timer; /* worker_restart.c: the close batches */
    double restart_end;     /* ev_now() by which every connection is to be closing */
    double restart_credit;  /* closes due but not yet made (fractions carry over) */
    int finished;           /* the loop should end */
    uint32_t cut;           /* connections still open at the drain deadline */

    /* permessage-deflate (worker_deflate.c), NULL when the deflate option is off */
    struct worker_deflate *dfl;

    /* ---- security and limits (worker_auth.c): fields below this line only ---- */
    struct worker_security *sec; /* worker_auth.h: keys, origins, proxies; worker_auth_init() */
};

/* worker_accept.c */
int worker_accept_start(struct worker *w);
void worker_accept_stop(struct worker *w);
void worker_accept_socket_closed(struct worker *w);

/* worker_fanout.c */
int worker_fanout_init(struct worker *w);
void worker_fanout_start(struct worker *w);
void worker_fanout_pump(struct worker *w);
/* Frames [cursor, limit) that c wants, in c's encoding, contiguous in its buffer from `cursor`
 * (which c must want), within `budget` bytes but at least one frame: returns the number of
 * frames and sets *ptr and *len. */
uint64_t worker_fanout_gather(const struct worker_fanout *f, const struct worker_conn *c,
                              uint64_t cursor, uint64_t limit, size_t budget, const uint8_t **ptr,
                              size_t *len);
static inline const struct worker_frame *worker_fanout_frame(const struct worker_fanout *f,
                                                             uint64_t n)
{
    return &f->frames[n & (f->nframes - 1)];
}
/* The first frame in [head, tail) whose sequence is greater than `seq` (tail if none). */
uint64_t worker_fanout_after(const struct worker_fanout *f, uint64_t seq);
/* A connection fell below head: under `slow_consumer skip` it jumps to head with a gap notice
 * and 0 is returned; else it is scheduled to close with 1013 and -1 is returned. */
int worker_fanout_lapped(struct worker *w, struct worker_conn *c);

/* worker_channels.c: subscriptions and who wants which frame */
int worker_channels_init(struct worker *w);
/* The key of a channel name (len 0: WORKER_CHAN_ALL). */
uint64_t worker_channel_key(const struct worker *w, const char *name, size_t len);
struct worker_chan *worker_channel_find(const struct worker *w, uint64_t key);
/* Checks the channels a handshake asks for (path suffix and ?channel=): 0, or 400 with *why. */
unsigned worker_channels_check(struct worker *w, struct lws *wsi, const char **why);
/* ESTABLISHED: subscribes to the requested channels and to the user's own ("@<user>"). Returns
 * 0, or -1 with *why when the token does not allow one of them (the caller closes with 1008). */
int worker_channels_established(struct worker *w, struct worker_conn *c, struct lws *wsi,
                                const char *user, const char **why);
/* A piece of a wshub.v1 text message from the client (final: the message ends with it); a
 * whole message is a command ("s <channel>", "u <channel>"): acts and queues the reply. Returns
 * 0, or -1 when the client must be closed (1008, reason in *why). */
int worker_channels_receive(struct worker *w, struct worker_conn *c, const uint8_t *in, size_t len,
                            int final, const char **why);
void worker_channels_closed(struct worker *w, struct worker_conn *c);
/* Once a second: each channel's message rate in the presence table. */
void worker_channels_tick(struct worker *w);
/* Does c want frame number n with this key? */
static inline int worker_conn_wants(const struct worker_conn *c, uint64_t n, uint64_t key)
{
    if (key == WORKER_CHAN_ALL)
        return 1;
    for (const struct worker_sub *s = c->subs; s != NULL; s = s->next) {
        if (s->key == key)
            return n >= s->from;
    }
    return 0;
}

/* worker_v1.c: the wshub.v1 subprotocol (docs/protocol.md) */
/* CONFIRM_UPGRADE: the subprotocol offer and the resume point. 0, or 400 with *why set. */
unsigned worker_v1_check(struct worker *w, struct lws *wsi, const char **why);
/* ESTABLISHED: picks the encoding, places the cursor (resume) and queues the welcome. */
void worker_v1_established(struct worker *w, struct worker_conn *c, struct lws *wsi);
/* Builds the control frame for c's pending messages (welcome first) into buf; returns its length
 * and clears the flag it consumed, or 0 when nothing is pending. */
size_t worker_v1_control(struct worker *w, struct worker_conn *c, uint8_t *buf, size_t cap);
/* Writes the envelope "m <seq>\n", or "m <seq> <channel>\n", for a broadcast; returns its length
 * (<= WORKER_V1_PREFIX_MAX). */
uint32_t worker_v1_prefix(uint64_t seq, const char *channel, uint8_t *out);
/* Writes the body-less gap notice "g <from> <to> <reason>" (a text frame's payload). */
uint32_t worker_v1_gap_text(uint64_t from, uint64_t to, enum worker_gap_reason r, uint8_t *out);
#define WORKER_V1_PREFIX_MAX  80  /* "m " + 20 digits + " " + channel + "\n" */
#define WORKER_V1_CONTROL_MAX 128 /* any control frame, header included */

/* worker_proto.c */
int worker_proto_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                          size_t len);
/* Plans a close with `code` once the connection has been sent every frame before `at`; an
 * earlier plan wins. */
void worker_conn_schedule_close(struct worker_conn *c, uint64_t at, uint16_t code,
                                enum shm_close_reason reason);
/* Sends the planned close frame; only from a callback for c, which must then return -1. */
int worker_conn_close_now(struct worker_conn *c);
void worker_conns_drop_all(struct worker *w, enum shm_close_reason reason);

/* worker_auth.c: admission (token, Origin, limits) and per-connection identity.
 * worker_handshake_check() runs in CONFIRM_UPGRADE after the path, draining and capacity checks,
 * while the request headers are readable (lws_hdr_copy, lws_get_urlarg_by_name). Returns 0 to
 * accept, or the HTTP status to refuse with (401, 403, 429) and sets *reason and *why (a static
 * string for the response body; never the token). */
unsigned worker_handshake_check(struct worker *w, struct lws *wsi, enum shm_reject_reason *reason,
                                const char **why);
/* ESTABLISHED, before the connection-table row is claimed: fills the user id ("" if none). */
void worker_auth_established(struct worker *w, struct worker_conn *c, struct lws *wsi, char *user,
                             size_t userlen);
/* CLOSED: releases what the connection held (per-IP and per-user counts). */
void worker_auth_closed(struct worker *w, struct worker_conn *c);
/* Start-up, before the lws context: keys, origins, trusted proxies, TLS files; logs loudly when
 * authentication is off. Returns 0, or -1 for a configuration error (exit 2). */
int worker_auth_init(struct worker *w);
/* worker_limits.c: a whole client message arrived. Returns 0, or -1 after sending close 1008
 * (client_message_rate exceeded); the callback then returns -1. */
int worker_limits_message(struct worker *w, struct worker_conn *c);
/* worker_tls.c: TLS (tls_cert) and the handshake limits on the context being created. */
void worker_tls_context_info(struct worker *w, struct lws_context_creation_info *info);

/* worker_deliver.c */
/* Writes the frames from `from` to the tail to every connection that wants one of them and may
 * be written to now (everyone for a broadcast to all, else only the channels' subscribers); asks
 * lws for WRITEABLE for the others. Never call it from inside an lws callback. */
void worker_deliver_all(struct worker *w, uint64_t from);
/* LWS_CALLBACK_SERVER_WRITEABLE: returns what the callback returns (-1 closes). */
int worker_deliver_writeable(struct worker *w, struct worker_conn *c);
/* Writes a keepalive ping if c may be written to now; sets ping_outstanding when it did. */
void worker_deliver_ping(struct worker_conn *c);

/* worker_keepalive.c */
/* Starts the timer that pings quiet connections and hangs up on silent ones. */
void worker_keepalive_start(struct worker *w);

/* worker_signal.c */
int worker_signal_start(struct worker *w);
void worker_stop_begin(struct worker *w, const char *why);
void worker_stop_check(struct worker *w);
/* Cuts whoever is left `seconds` from now and ends the loop. */
void worker_drain_deadline_start(struct worker *w, double seconds);

/* worker_restart.c */
/* SIGHUP: stop accepting, close every client with 1012, spread over restart_spread. */
void worker_restart_begin(struct worker *w);
/* A stop during that drain: the clients not yet closing get 1001 at once. */
void worker_restart_to_stop(struct worker *w, const char *why);

/* worker_deflate.c: permessage-deflate (RFC 7692), docs/deflate.md */
/* Start-up, before the context: the extension lws negotiates with, or nothing when the deflate
 * option is off. Returns 0, or -1 (out of memory). */
int worker_deflate_init(struct worker *w);
/* For info.extensions: NULL when off. */
const struct lws_extension *worker_deflate_extensions(const struct worker *w);
/* LWS_CALLBACK_ADD_HEADERS of the upgrade: completes our Sec-WebSocket-Extensions answer. */
int worker_deflate_add_headers(struct worker *w, struct lws *wsi, void *in);
/* ESTABLISHED, after the protocol chose c->variant: notes whether it negotiated deflate. */
void worker_deflate_established(struct worker *w, struct worker_conn *c, struct lws *wsi);
/* CLOSED: releases any inflate state and the reader count. */
void worker_deflate_closed(struct worker *w, struct worker_conn *c);
/* RECEIVE with c->deflate_fail set: sends that close (1002, 1007, 1011 or 1013); the callback
 * returns what this returns (-1). */
int worker_deflate_fail(struct worker_conn *c);
/* Connections reading encoding v (a DEFLATE one); 0 when none or deflate is off. */
uint32_t worker_deflate_readers(const struct worker *w, enum worker_variant v);
/* Deflates one message body, no context kept: raw deflate, sync flush, the trailing
 * 00 00 ff ff removed (RFC 7692 7.2.1). `out` has room for limit + 4 bytes. Returns the
 * compressed length, or 0 when it would not be shorter than `limit` (send it uncompressed). */
size_t worker_deflate_compress(struct worker *w, const uint8_t *in, size_t len, uint8_t *out,
                               size_t limit);

#endif /* WSHUB_WORKER_H */
