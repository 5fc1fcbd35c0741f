/* client_int.h -- state shared by client.c (the process loop) and client_conn.c (one
 * connection's IO). Private to the client process; nothing here crosses a pipe.
 *
 * A connection's life, with the counter each exit feeds:
 *
 *   IDLE --start--> CONNECTING --TCP up--> HANDSHAKE --101 ok--> OPEN --STOP--> CLOSING --> DONE
 *                      |                      |                   |                (closed_clean)
 *                      +---- failed[reason] --+                   +--close frame--> SERVER_CLOSING
 *                                                                 |     (dropped[close_frame])
 *                                                                 +--reset/eof/bad frame--> DONE
 *                                                                         (dropped[reason])
 */
#ifndef WSBENCH_CLIENT_INT_H
#define WSBENCH_CLIENT_INT_H

#include <stdint.h>
#include <sys/resource.h>

#include "client.h"
#include "frame.h"
#include "handshake.h"
#include "wire.h"

enum conn_state {
    CONN_IDLE = 0,
    CONN_CONNECTING,
    CONN_HANDSHAKE,
    CONN_OPEN,
    CONN_SERVER_CLOSING, /* the server sent close; we echoed it and wait for its EOF */
    CONN_CLOSING,        /* we sent close at STOP and wait for the server's */
    CONN_DONE
};

/* Only while the handshake is in flight; freed when the connection opens or fails. */
struct conn_hs {
    char accept[HANDSHAKE_ACCEPT_LEN + 1]; /* the Sec-WebSocket-Accept we expect */
    uint32_t len;                          /* response bytes in buf */
    char buf[4096];
};

struct conn {
    int fd;              /* -1 when none */
    uint8_t state;       /* enum conn_state */
    uint8_t subscribed;  /* open when START came: its deliveries are expected */
    uint8_t complete;    /* received every expected broadcast */
    uint8_t want_out;    /* EPOLLOUT armed */
    uint32_t wlen;       /* pending output bytes in wbuf */
    uint8_t *wbuf;       /* output the socket did not take at once (rare) */
    int64_t deadline_ns; /* connect + handshake deadline */
    struct conn_hs *hs;
    /* Sequence tracking: a 64-wide window behind the highest sequence seen tells a duplicate
     * from a late arrival; O(1) memory whatever the number of broadcasts. */
    uint32_t max_plus1; /* highest sequence seen + 1 */
    uint32_t unique;    /* distinct sequences received */
    uint64_t window;    /* bit d set = sequence max_plus1-1-d received */
    /* --churn (client_churn.c). A pool connection is never `subscribed`; each of its sessions
     * (one per connection it opens) is accounted on its own when it ends. */
    uint8_t churner;    /* in the churn pool */
    uint8_t leaving;    /* closing because it churned (not at STOP) */
    uint8_t rejoining;  /* its new connection is in flight: failures count under churn */
    uint32_t first_seq; /* first sequence this session received (valid when unique > 0) */
    uint32_t churn_gen; /* bumped at each leave: tells stale queue entries apart */
    /* --stalled: never reads after the handshake (a client that stopped reading) */
    uint8_t stalled;
    /* --resume (client_resume.c): a logical client that reconnects; its state is cl->rs[i] */
    uint8_t resumer;      /* reached OPEN once: from then on it always comes back */
    uint8_t reconnecting; /* the attempt in flight is a reconnect, not one of the -n */
    struct frame_parser fp;
};

/* One declared hole in a logical client's stream: [from, to] of one epoch will never come. */
struct resume_gap {
    uint64_t from, to;
};

/* Why a resuming client's connection ended; the recovery histograms follow these. */
enum resume_cause {
    RESUME_CAUSE_RESTART = 0, /* Close 1012 or 1001: the server asked it to come back */
    RESUME_CAUSE_LOST,        /* no close frame: EOF or reset (a worker killed, a network cut) */
    RESUME_CAUSE_OTHER,       /* another close code (1013, 1011, ...) or a protocol error */
    RESUME_CAUSE_N
};

/* A logical client's place in the stream across its connections (--resume). */
struct resume {
    uint64_t epoch;          /* of the last welcome */
    uint64_t pos;            /* last sequence processed: the next `since` */
    uint64_t *seen;          /* bit per broadcast index received (--messages bits) */
    struct resume_gap *gaps; /* declared holes: g messages, expired welcomes */
    uint32_t n_gaps, cap_gaps;
    int64_t lost_ns;     /* when the connection ended; 0 while connected and welcomed */
    int64_t attempt_ns;  /* when the current attempt started */
    uint32_t attempts;   /* failed attempts since the loss: the backoff exponent */
    uint32_t gen;        /* bumped per scheduled attempt: tells stale timer entries apart */
    uint16_t close_code; /* of the lost connection; 1006 when no close frame came */
    uint8_t cause;       /* enum resume_cause of the loss */
    uint8_t welcomed;    /* the current connection has had its welcome */
    uint8_t known;       /* ever welcomed: epoch and pos are valid */
    uint8_t reset;       /* a reset welcome: what came before is in another epoch */
    uint8_t waiting;     /* a reconnect is scheduled in cl->timers */
};

/* A min-heap entry: connection idx is due at `at` (valid while its resume gen matches). */
struct resume_timer {
    int64_t at;
    uint32_t idx, gen;
};

/* What --events records; written as text lines when the process ends. */
enum resume_event_kind { EV_WELCOME = 0, EV_FAIL, EV_GAP, EV_DUP, EV_REGRESS, EV_MISSING };

struct resume_event {
    uint8_t kind, a, b; /* welcome: status, cause; fail: reason; gap: reason */
    uint16_t code;      /* welcome: close code of the loss */
    uint32_t conn;      /* global connection index */
    uint32_t n;         /* welcome: attempts; dup/missing: broadcast index */
    int64_t t0, t1, t2; /* welcome: lost, attempt, welcome; fail/dup/regress: when */
    uint64_t x, y;      /* gap: from, to; regress: position, seq; dup/missing: seq */
};

/* A FIFO of connections waiting for a time. Every entry of one queue waits the same duration,
 * so entries are pushed in the order they come due and only the head needs looking at. */
struct churn_ent {
    uint32_t idx, gen;
    int64_t at;
};

struct churn_queue {
    struct churn_ent *e;
    uint32_t head, count, cap;
};

/* The span over which one broadcast reached this process's connections, and the process's CPU
 * time at both ends (sampled once per epoll batch): CPU used / span near 1 means the client, not
 * the server, set the pace of that delivery burst. */
struct msg_window {
    int64_t first_ns, last_ns;
    int64_t cpu_first_ns, cpu_last_ns;
};

enum client_phase { PHASE_CONNECTING = 0, PHASE_READY, PHASE_RUNNING, PHASE_CLOSING };

struct client {
    const struct opts *o;
    const char *run_id;
    uint32_t child, first, count;
    int epfd, cmd_fd, report_fd;
    enum client_phase phase;
    struct conn *conns;
    uint32_t next_start;     /* next connection to start */
    uint32_t oldest_pending; /* timeout scan cursor: no pending connection before it */
    uint32_t pending;        /* CONNECTING or HANDSHAKE */
    uint32_t open;           /* OPEN */
    uint32_t closing;        /* CLOSING or SERVER_CLOSING with an fd */
    int64_t t0;              /* when connecting began */
    double rate;             /* connects per second for this process; 0 = unlimited */
    int64_t close_deadline;
    int64_t expected;                   /* broadcasts accepted by the server, -1 until EXPECT */
    uint64_t complete, dead_incomplete; /* subscribed connections in each state */
    int complete_sent;
    int64_t *msg_max;       /* per broadcast, largest latency seen here; NULL if too many */
    struct msg_window *win; /* per broadcast, when this process received it */
    uint32_t msg_tracked;   /* entries in msg_max and win */
    int64_t cpu_now;        /* this process's CPU time (ns) when the current batch began */
    struct rusage ru_start;
    int64_t phase_start_ns;
    int phase_sampled;
    uint64_t rng;
    /* --churn (client_churn.c) */
    uint32_t *pool; /* indices of this process's pool connections */
    uint32_t pool_n;
    int churn_on;               /* leaves happen: from START until EXPECT (fanout) or STOP */
    int64_t churn_t0;           /* START */
    uint64_t churn_done;        /* leave slots used since START */
    double churn_rate;          /* leaves per second for this process */
    struct churn_queue away;    /* left, waiting --churn-away to come back */
    struct churn_queue joining; /* new connection in flight, waiting for its deadline */
    /* --resume (client_resume.c) */
    struct resume *rs;           /* per connection */
    struct resume_timer *timers; /* min-heap of scheduled reconnects */
    uint32_t n_timers, cap_timers;
    struct churn_queue attempts; /* reconnects in flight, waiting for their deadline */
    uint64_t *acked_seq;         /* per broadcast index, the server's seq, or RESUME_NOT_ACKED */
    uint64_t *seq_seen;          /* per broadcast index, the seq it first arrived under */
    uint64_t max_acked;          /* highest acknowledged seq; valid once expected >= 0 */
    uint32_t seen_words;         /* uint64_t per bitmap */
    struct resume_event *events; /* --events */
    uint32_t n_events, cap_events;
    /* --channels (channels.c) */
    uint32_t *chan_rank;   /* per broadcast, its rank in its channel; NULL when off */
    uint32_t *chan_expect; /* per channel, broadcasts the server accepted (EXPECT) */
    uint8_t logged[WIRE_FAIL_COUNT + WIRE_DROP_COUNT]; /* first occurrence logged */
    struct wire_result res;
    uint8_t rbuf[256 * 1024];
};

int64_t client_now(void);
uint64_t client_rand(struct client *cl);

/* client_conn.c */
void conn_start(struct client *cl, uint32_t i, int64_t now);
void conn_on_event(struct client *cl, uint32_t i, uint32_t events, int64_t now);
void conn_fail(struct client *cl, struct conn *c, enum wire_fail why, int err);
void conn_send_close(struct client *cl, struct conn *c, uint16_t code);
void conn_release(struct client *cl, struct conn *c);

/* client.c, called by client_conn.c when a subscribed connection finishes or dies */
void client_check_complete(struct client *cl, int64_t now);

/* client_churn.c */
int churn_init(struct client *cl);
void churn_start(struct client *cl, int64_t now);
void churn_tick(struct client *cl, int64_t now);
int64_t churn_next_wake(const struct client *cl);
void churn_on_open(struct client *cl, struct conn *c, int64_t now);
void churn_session_end(struct client *cl, struct conn *c);
int churn_push(struct churn_queue *q, uint32_t idx, uint32_t gen, int64_t at);
const struct churn_ent *churn_head(const struct churn_queue *q);
void churn_pop(struct churn_queue *q);
int churn_in_pool(double pool, uint64_t g);

/* client_conn.c, shared with client_resume.c */
/* Accounts one data message whose payload (without any wshub.v1 header) starts at p (len bytes
 * kept of `total`). env_seq is the header's seq on a resuming connection. Returns -1 when it is
 * not a payload of this run, 1 for a duplicate, 0 otherwise. */
int conn_on_payload(struct client *cl, struct conn *c, const uint8_t *p, size_t len, uint64_t total,
                    uint32_t frames, uint64_t env_seq, int64_t now);

/* client_resume.c */
#define RESUME_NOT_ACKED UINT64_MAX
int resume_init(struct client *cl);
void resume_on_open(struct client *cl, struct conn *c, int64_t now);
/* A data message on a resuming connection. Returns -1 when the connection is gone. */
int resume_on_message(struct client *cl, struct conn *c, const struct frame_event *ev, int64_t now);
/* The connection of a logical client ended (drop, close frame: code 0 for none) or a reconnect
 * attempt failed: count it and schedule the next attempt. */
void resume_on_lost(struct client *cl, struct conn *c, enum resume_cause cause, uint16_t code,
                    int64_t now);
void resume_attempt_failed(struct client *cl, struct conn *c, enum wire_fail why, int64_t now);
void resume_tick(struct client *cl, int64_t now);
int64_t resume_next_wake(const struct client *cl);
int resume_is_complete(const struct client *cl, const struct conn *c);
void resume_on_expect(struct client *cl, int64_t now);
int resume_on_receipt(struct client *cl, struct conn *c, uint64_t idx, uint64_t env_seq,
                      int64_t now);
void resume_finish(struct client *cl);

#endif /* WSBENCH_CLIENT_INT_H */
