/* publisher.h -- the fanout publisher: broadcasts by HTTP POST at a fixed rate or as a Poisson
 * process, pipelined.
 *
 * Runs in the parent process on the parent's epoll set. Requests are written as soon as they
 * are due, without waiting for earlier answers (HTTP/1.1 pipelining on keep-alive connections),
 * so a slow answer never slows the rate; answers are read as they come and matched to requests
 * in order. A connection is retired after --pub-max-requests and replaced by a fresh one, so no
 * server's keep-alive request limit closes it with requests in flight. Requests on a connection
 * that dies before answering are counted as unanswered, never resent (a resend could duplicate).
 */
#ifndef WSBENCH_PUBLISHER_H
#define WSBENCH_PUBLISHER_H

#include <stdint.h>

#include "hist.h"
#include "opts.h"

struct publisher;

struct publisher_stats {
    uint64_t sent;                       /* requests written */
    uint64_t ok;                         /* 2xx answers */
    uint64_t failed;                     /* other answers */
    uint64_t unanswered;                 /* lost with their connection */
    uint64_t connections;                /* connections opened */
    uint64_t connect_failed;             /* of which failed to connect */
    uint64_t status_class[6];            /* answers by first digit, [1]..[5]; [0] = unparseable */
    int first_bad_status;                /* first non-2xx status seen, 0 if none */
    int64_t first_send_ns, last_send_ns; /* CLOCK_MONOTONIC */
    double gap_sum_ms, gap_sq_ms;        /* gaps between consecutive POSTs, for mean and cv */
    int64_t schedule_span_ns;            /* last broadcast's due time minus the first's */
    struct hist answer;                  /* time from write to answer */
    uint64_t *acked_seq;  /* --resume: per broadcast, the seq of its 2xx answer, or UINT64_MAX */
    uint64_t seq_missing; /* --resume: 2xx answers without a {"seq":N} */
    uint32_t *chan_ok;    /* --channels: per channel, 2xx answers (channels.c); else NULL */
};

/* Creates the publisher; connections are opened lazily. epoll data for its sockets is
 * `tag_base + slot`. Returns NULL on allocation failure. */
struct publisher *publisher_create(const struct opts *o, int epfd, uint64_t tag_base,
                                   const char *run_id);
void publisher_destroy(struct publisher *p);

/* Starts the clock: broadcast i is due at start + i / rate (fixed), or after i exponential gaps
 * of mean 1 / rate drawn from --seed (poisson). */
void publisher_start(struct publisher *p, int64_t now);

/* When the last broadcast is due (valid after publisher_start). */
int64_t publisher_last_due(const struct publisher *p);

/* Sends everything due by `now`. */
void publisher_tick(struct publisher *p, int64_t now);

/* When the next broadcast is due, or -1 when all are sent. */
int64_t publisher_next_due(const struct publisher *p);

/* Handles readiness on the socket of slot `slot`. */
void publisher_on_event(struct publisher *p, uint32_t slot, uint32_t events, int64_t now);

/* All sent and every request answered or given up. */
int publisher_is_done(const struct publisher *p);

/* Gives up on requests still unanswered (counted as such) and closes every connection. */
void publisher_abandon(struct publisher *p);

const struct publisher_stats *publisher_stats(const struct publisher *p);

/* Writes the payload for broadcast `seq` sent at `now_ns` into buf (cap >= size + 1 and >= 80).
 * Returns its length: `size`, or the unpadded minimum when that is larger. */
size_t publisher_payload(char *buf, size_t size, const char *run_id, uint64_t seq, int64_t now_ns);

/* The size broadcast `seq` is padded to: --size, or with --size-max a value in size..size_max
 * that depends only on --seed and seq, so subscribers can compute it too. */
uint32_t publisher_size_for(const struct opts *o, uint64_t seq);

/* splitmix64 step: the one generator behind every seeded choice (gaps, sizes, churn). */
uint64_t publisher_mix(uint64_t *state);

#endif /* WSBENCH_PUBLISHER_H */
