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
 *   worker_deliver.c    writing whole frames to connections: from the pump, or on WRITEABLE
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
#define WORKER_WRITE_BUDGET          65536 /* bytes of whole frames gathered into one lws_write() */
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
 *   V1   "m <seq>\n" + payload (wshub.v1, docs/protocol.md) */
enum worker_variant { WORKER_VARIANT_RAW = 0, WORKER_VARIANT_V1, WORKER_VARIANTS };

#define WORKER_FRAME_MSG 0 /* a broadcast */
#define WORKER_FRAME_GAP 1 /* a gap notice: seq..gap_to were lost (V1: "g", RAW: empty) */

/* Where one frame of one encoding lies in that encoding's buffer. */
struct worker_frame_copy {
    uint64_t pos;     /* byte position of the frame header (monotonic, mod buf_size) */
    uint32_t len;     /* whole frame: header + envelope + payload (0 = nothing to send) */
    uint32_t hdr_len; /* bytes before the payload: WebSocket header + envelope */
};

/* One frame in the local buffer. Frame numbers only grow; frame f lives in
 * frames[f & (nframes - 1)] while head <= f < tail. */
struct worker_frame {
    uint64_t seq;          /* ring sequence of the broadcast (GAP: first lost) */
    uint64_t published_ns; /* CLOCK_MONOTONIC at ring append, for the latency histogram */
    uint64_t gap_to;       /* GAP: last lost sequence */
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
    /* ---- security and limits (worker_auth.c): fields below this line only ---- */
};

#define WORKER_PENDING_WELCOME 0x01
#define WORKER_PENDING_GAP     0x02

enum worker_welcome { WORKER_WELCOME_FRESH = 0, WORKER_WELCOME_RESUMED, WORKER_WELCOME_EXPIRED,
                      WORKER_WELCOME_RESET };
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

    /* ---- security and limits (worker_auth.c): fields below this line only ---- */
};

/* worker_accept.c */
int worker_accept_start(struct worker *w);
void worker_accept_stop(struct worker *w);
void worker_accept_socket_closed(struct worker *w);

/* worker_fanout.c */
int worker_fanout_init(struct worker *w);
void worker_fanout_start(struct worker *w);
void worker_fanout_pump(struct worker *w);
/* Frames [cursor, limit) of encoding `v` contiguous in its buffer from `cursor`, within `budget`
 * bytes but at least one frame: returns the number of frames and sets *ptr and *len. */
uint64_t worker_fanout_gather(const struct worker_fanout *f, enum worker_variant v,
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

/* worker_v1.c: the wshub.v1 subprotocol (docs/protocol.md) */
/* CONFIRM_UPGRADE: the subprotocol offer and the resume point. 0, or 400 with *why set. */
unsigned worker_v1_check(struct worker *w, struct lws *wsi, const char **why);
/* ESTABLISHED: picks the encoding, places the cursor (resume) and queues the welcome. */
void worker_v1_established(struct worker *w, struct worker_conn *c, struct lws *wsi);
/* Builds the control frame for c's pending messages (welcome first) into buf; returns its length
 * and clears the flag it consumed, or 0 when nothing is pending. */
size_t worker_v1_control(struct worker *w, struct worker_conn *c, uint8_t *buf, size_t cap);
/* Writes the envelope "m <seq>\n" for a broadcast; returns its length (<= WORKER_V1_PREFIX_MAX). */
uint32_t worker_v1_prefix(uint64_t seq, uint8_t *out);
/* Writes the body-less gap notice "g <from> <to> <reason>" (a text frame's payload). */
uint32_t worker_v1_gap_text(uint64_t from, uint64_t to, enum worker_gap_reason r, uint8_t *out);
#define WORKER_V1_PREFIX_MAX  24  /* "m " + 20 digits + "\n" */
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
/* Writes the new frames to every connection that may be written to now; asks lws for WRITEABLE
 * for the others that need it. Never call it from inside an lws callback. */
void worker_deliver_all(struct worker *w);
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

#endif /* WSHUB_WORKER_H */
