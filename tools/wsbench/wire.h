/* wire.h -- the fixed binary messages between the wsbench parent and its client processes.
 *
 * Each child has two pipes: commands flow parent -> child, reports child -> parent. Parent and
 * children are the same binary forked from one process, so structs go over the pipe as raw bytes.
 * Every report starts with a wire_hdr naming its kind and the byte count that follows, so the
 * parent can read one message at a time. Only the final result is larger than PIPE_BUF; it is
 * the last thing a child writes, and each child has its own pipe, so nothing interleaves.
 *
 *   child                                   parent
 *     | ---- READY (connect phase over) ----> |   all READY: sample server memory
 *     | <--- START ---------------------------|   hold, or settle + publish
 *     | <--- EXPECT n (accepted broadcasts) --|   fanout: after the POSTs are answered
 *     |      [+ --messages uint64_t seqs]     |   --resume: the server's seq of each, or ~0
 *     |      [+ --channels uint32_t counts]   |   --channels: accepted per channel
 *     | ---- COMPLETE (all n received) -----> |
 *     | <--- STOP ----------------------------|   hold over / all COMPLETE / drain timeout
 *     | ---- RESULT + per-broadcast maxima -> |   then the child closes and exits
 */
#ifndef WSBENCH_WIRE_H
#define WSBENCH_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "hist.h"
#include "proto.h"

/* Why a connection attempt failed. Names in wire.c, in this order, are the JSON keys. */
enum wire_fail {
    WIRE_FAIL_REFUSED = 0, /* ECONNREFUSED */
    WIRE_FAIL_TIMEOUT,     /* connect + handshake over --connect-timeout, or ETIMEDOUT */
    WIRE_FAIL_RESET,       /* ECONNRESET / EPIPE before the handshake finished */
    WIRE_FAIL_EOF,         /* server closed before the handshake finished */
    WIRE_FAIL_STATUS,      /* status other than 101 */
    WIRE_FAIL_BAD_ACCEPT,  /* Sec-WebSocket-Accept missing or wrong */
    WIRE_FAIL_BAD_UPGRADE, /* Upgrade / Connection headers missing or wrong */
    WIRE_FAIL_MALFORMED,   /* response not parseable or too large */
    WIRE_FAIL_SUBPROTOCOL, /* --resume: Sec-WebSocket-Protocol is not the wshub.v1 we offered */
    WIRE_FAIL_PROTOCOL,    /* bad frame right after the handshake */
    WIRE_FAIL_NO_ADDRESS,  /* EADDRNOTAVAIL / EADDRINUSE: ports exhausted */
    WIRE_FAIL_OTHER,       /* anything else (logged) */
    WIRE_FAIL_COUNT
};

/* Why an established connection ended before the client closed it. */
enum wire_drop {
    WIRE_DROP_CLOSE_FRAME = 0, /* server sent a close frame */
    WIRE_DROP_RESET,           /* ECONNRESET */
    WIRE_DROP_EOF,             /* TCP closed without a close frame */
    WIRE_DROP_PROTOCOL,        /* invalid frame from the server */
    WIRE_DROP_OTHER,
    WIRE_DROP_COUNT
};

extern const char *const wire_fail_names[WIRE_FAIL_COUNT];
extern const char *const wire_drop_names[WIRE_DROP_COUNT];

/* --resume: close codes counted one by one (wire_close_codes; the last slot is "other"), and
 * the causes of a lost connection (enum resume_cause in client_int.h, wire_cause_names). */
#define WIRE_CLOSE_CODES 8
#define WIRE_CAUSES      3

enum wire_cmd_kind { WIRE_CMD_START = 1, WIRE_CMD_EXPECT, WIRE_CMD_STOP };

struct wire_cmd {
    uint32_t kind; /* enum wire_cmd_kind */
    uint32_t pad;
    int64_t arg; /* EXPECT: broadcasts accepted by the server */
};

enum wire_kind { WIRE_READY = 1, WIRE_COMPLETE, WIRE_RESULT };

struct wire_hdr {
    uint32_t kind;  /* enum wire_kind */
    uint32_t child; /* index of the sender */
    uint64_t size;  /* bytes that follow */
};

struct wire_ready {
    uint64_t ok;
    uint64_t failed[WIRE_FAIL_COUNT];
    int64_t done_ns; /* CLOCK_MONOTONIC when the last attempt ended */
};

struct wire_complete {
    int64_t last_recv_ns;
};

/* The final report. In fanout mode it is followed by `messages` int64_t: for each broadcast the
 * largest latency (ns) any of this child's connections saw, -1 if none received it. */
struct wire_result {
    uint64_t attempted, ok;
    uint64_t failed[WIRE_FAIL_COUNT];
    uint64_t open_at_stop;             /* connections still open when STOP came */
    uint64_t dropped[WIRE_DROP_COUNT]; /* established connections lost before STOP */
    uint64_t subscribed;               /* connections open at START */
    uint64_t received;                 /* messages that carried our run id */
    uint64_t unique;                   /* distinct (connection, sequence) receipts */
    uint64_t lost;                     /* sum over subscribed connections of expected-unique */
    uint64_t duplicated, out_of_order, foreign, bad_size;
    uint64_t fragmented; /* our messages that came in more than one frame */
    uint64_t pings, pongs_sent, closes_echoed;
    uint64_t data_after_close; /* data messages after the server's close frame (ignored) */
    uint64_t closed_clean;     /* at the end: server answered our close */
    int64_t first_recv_ns, last_recv_ns; /* CLOCK_MONOTONIC, 0 if nothing received */
    double cpu_total_s;                  /* getrusage(SELF) at exit */
    double cpu_phase_s;                  /* from START to COMPLETE (or STOP) */
    int64_t window_ns;                   /* summed spans over which broadcasts arrived here */
    int64_t window_cpu_ns;               /* CPU this process used within those spans */
    int64_t phase_ns;                    /* wall time of that span */
    /* --churn: the pool's connections, accounted per session (client_churn.c) */
    uint64_t churn_pool;                    /* connections in the pool */
    uint64_t churn_left, churn_rejoined;    /* leaves, and new connections that opened */
    uint64_t churn_failed[WIRE_FAIL_COUNT]; /* new connections that failed, by reason */
    uint64_t churn_closes_answered;         /* leaves whose close the server answered */
    uint64_t churn_closes_cut;              /* ... or not before --churn-away */
    uint64_t churn_received, churn_unique;  /* fanout deliveries to pool connections */
    uint64_t churn_gaps;                    /* missing inside a session's received range */
    struct hist churn_rejoin;               /* connect + handshake of new connections */
    /* --resume (client_resume.c): logical clients that reconnect and resume */
    uint64_t resume_clients;                  /* connections that became logical clients */
    uint64_t resume_lost[WIRE_CAUSES];        /* connections ended, by enum resume_cause */
    uint64_t resume_closes[WIRE_CLOSE_CODES]; /* by close code: see wire_close_names */
    uint64_t resume_attempts;                 /* reconnect attempts started */
    uint64_t resume_failed[WIRE_FAIL_COUNT];  /* reconnect attempts that failed, by reason */
    uint64_t resume_welcome[PROTO_STATUS_N];  /* reconnect welcomes by status (fresh = wrong) */
    uint64_t resume_waiting_at_stop;          /* logical clients not connected at STOP */
    uint64_t welcomes;                        /* every welcome, first connections included */
    uint64_t bad_welcome;  /* welcome missing, repeated, or not matching what was asked */
    uint64_t bad_envelope; /* message header not parseable (proto.c) */
    uint64_t unknown_type; /* message types this client does not know (ignored) */
    uint64_t gap_messages; /* g messages */
    uint64_t gap_reasons[PROTO_GAP_N];
    uint64_t gap_seqs;      /* sequence numbers covered by g messages and expired welcomes */
    uint64_t gapped;        /* acknowledged broadcasts missing but announced by a gap or reset */
    uint64_t unacked;       /* deliveries of broadcasts the server did not acknowledge */
    uint64_t mislabeled;    /* one broadcast delivered under two seqs, or not its acked seq */
    uint64_t regressed;     /* m seq not above the client's position (duplicate or reordering) */
    uint64_t stalled;       /* --stalled connections (never read) */
    uint64_t stalled_ended; /* ... of which the server ended before STOP */
    /* --channels (channels.c) */
    uint64_t chan_expected; /* sum over subscribed connections of their channel's accepted */
    uint64_t chan_wrong;    /* broadcasts of another channel than the connection's */
    struct hist recovery;   /* connection lost -> welcome of the resumed one, every cause */
    struct hist recovery_cause[WIRE_CAUSES];
    struct hist latency;
};

extern const uint16_t wire_close_codes[WIRE_CLOSE_CODES - 1];
extern const char *const wire_close_names[WIRE_CLOSE_CODES];
extern const char *const wire_cause_names[WIRE_CAUSES];
unsigned wire_close_slot(uint16_t code);

/* Writes or reads exactly len bytes, retrying on EINTR. Return 0, or -1 (errno set; EPIPE or
 * 0-byte EOF reported as -1 with errno = EPIPE). */
int wire_write_all(int fd, const void *buf, size_t len);
int wire_read_all(int fd, void *buf, size_t len);

/* Sends one report: header then body. */
int wire_send(int fd, uint32_t kind, uint32_t child, const void *body, size_t size);

#endif /* WSBENCH_WIRE_H */
