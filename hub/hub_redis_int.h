/* hub_redis_int.h -- the Redis bridge's state and the functions its files share.
 *
 *   hub_redis.c        start/stop, the thread's loop, the circuit breaker and reconnection
 *   hub_redis_conn.c   connecting (TCP or unix socket, AUTH), commands, errors, stream ids
 *   hub_redis_local.c  the local side: reading the ring, the backlog queue, delivering ahead
 *   hub_redis_out.c    to the stream: MULTI/XADD.../HSET/EXEC batches, resync, PING
 *   hub_redis_in.c     from the stream: positioning, XREAD BLOCK, appending entries to the ring
 *
 * Everything in struct br except `stop` is owned by the bridge thread once it runs; the hub's
 * main thread only starts it and, to stop it, sets `stop` and writes stop_fd. No locks.
 */
#ifndef WSHUB_HUB_REDIS_INT_H
#define WSHUB_HUB_REDIS_INT_H

#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "conf.h"
#include "ring.h"
#include "shm.h"

#define BR_BLOCK_MS       1000 /* XREAD BLOCK: how long an idle read waits inside Redis */
#define BR_PING_MS        100  /* probe an idle outbound connection this often while CLOSED */
#define BR_BATCH          64   /* messages per MULTI ... EXEC */
#define BR_READ_COUNT     256  /* entries per XREAD */
#define BR_BACKOFF_MIN_MS 100  /* first reconnection delay; doubles up to redis_backoff_max */
#define BR_STOP_FLUSH_MS  1000 /* on stop, how long the backlog may still be sent */
#define BR_ID_LEN         48   /* "<ms>-<seq>" with two 20-digit numbers */
#define BR_ERR_LEN        SHM_BRIDGE_ERROR_LEN

/* One local message on its way to the stream. Its origin id is (node, epoch, oseq). */
struct br_msg {
    struct br_msg *prev, *next;
    uint64_t oseq;         /* ring sequence of the local record */
    uint64_t published_ms; /* CLOCK_MONOTONIC ms of the local record: the watchdog's clock */
    uint32_t len;
    uint16_t flags;    /* RING_F_BINARY or 0 */
    uint8_t delivered; /* appended for delivery here: ahead of the stream, or on its echo */
    uint8_t confirmed; /* the stream has it (EXEC answered, or the resync said so) */
    char channel[RING_MAX_CHANNEL_LEN + 1];
    unsigned char payload[];
};

/* Local messages in oseq order. A message leaves once it is both delivered and confirmed, so
 * the queue is: confirmed ones awaiting their echo, then `unsent` onwards, never confirmed. */
struct br_queue {
    struct br_msg *head, *tail;
    struct br_msg *unsent; /* first unconfirmed message, NULL if none */
    uint64_t count;        /* messages in the queue */
    uint64_t unconfirmed;  /* of which not yet confirmed: the backlog */
    uint64_t bytes, limit; /* payload + overhead held, and redis_backlog */
    uint64_t undelivered;  /* of which not yet delivered here */
};

struct br {
    struct shm *shm;
    /* configuration, fixed at start */
    char host[CONF_PATH_MAX]; /* host name or socket path */
    int port;                 /* 0 for a unix socket */
    char user[64], password[128];
    char key_stream[128], key_cursor[256], key_sent[128];
    char node[SHM_BRIDGE_NODE_LEN];
    char epoch[20]; /* the segment's epoch in hex: origin ids of this hub's life */
    char maxlen[24];
    uint32_t timeout_ms, backoff_max_ms, max_payload;
    /* thread */
    pthread_t thread;
    int thread_started;
    int stop_fd; /* eventfd the main thread writes to stop us */
    int bell_fd; /* bridge doorbell */
    _Atomic int stop;
    uint64_t rng;
    /* breaker */
    uint32_t state;               /* enum shm_bridge_state, mirrored in the segment */
    uint64_t backoff_ms;          /* next reconnection delay before jitter */
    uint64_t retry_at_ms;         /* OPEN: when to try again (monotonic) */
    uint64_t last_ok_ms;          /* last reply on the outbound connection */
    int locked;                   /* inside br_open_locked(): append with ring_publish_locked() */
    char last_logged[BR_ERR_LEN]; /* last failure logged: repeats go to info, news to warn */
    /* outbound connection: synchronous commands, each bounded by timeout_ms */
    redisContext *out;
    uint64_t confirmed_total; /* own messages the stream confirmed in this epoch */
    /* inbound connection: SET cursor + XREAD BLOCK pipelined, replies read when poll says so */
    redisContext *in;
    int in_replies;           /* replies outstanding */
    int in_xread;             /* an XREAD is among them (always the last) */
    uint64_t in_deadline_ms;  /* no reply by then: Redis is stuck */
    int positioned;           /* last_id is known (first connection done) */
    int cursor_dirty;         /* last_id moved since it was saved */
    int in_history;           /* catching up to history_until after the hub started */
    char adopt_id[BR_ID_LEN]; /* adopted segment (binary upgrade): go on from here, live */
    int adopt_marker;         /* adopted: take this epoch's confirmed count from the marker */
    char last_id[BR_ID_LEN], history_until[BR_ID_LEN];
    /* local side */
    struct ring_cursor cur;
    unsigned char *buf; /* max_payload bytes */
    struct br_queue q;
};

/* hub_redis.c */
uint64_t br_now_ms(void); /* CLOCK_MONOTONIC */
void br_set_state(struct br *b, uint32_t state);
void br_trip(struct br *b, const char *why);
void br_stat_add(_Atomic uint64_t *counter, uint64_t n);
void br_stat_set(_Atomic uint64_t *gauge, uint64_t v);

/* hub_redis_conn.c */
redisContext *br_connect(struct br *b, char *err, size_t errlen);
void br_disconnect(redisContext **c);
redisReply *br_command(struct br *b, redisContext *c, int argc, const char **argv,
                       const size_t *lens, char *err, size_t errlen);
void br_context_error(const struct br *b, const redisContext *c, const char *what, char *err,
                      size_t errlen);
int br_id_parse(const char *s, size_t len, uint64_t *ms, uint64_t *seq);
int br_id_cmp(const char *a, const char *b); /* <0, 0, >0; unparsable ids compare as 0-0 */
int br_reply_is_id(const redisReply *r);

/* hub_redis_local.c */
int br_local_init(struct br *b);
void br_local_drain(struct br *b);
int br_local_deliver(struct br *b, struct br_msg *m, uint64_t stream_ms, uint64_t stream_seq);
void br_local_deliver_all(struct br *b);
struct br_msg *br_queue_find(struct br *b, uint64_t oseq);
void br_queue_delivered(struct br *b, struct br_msg *m);
void br_queue_confirm_first(struct br *b);
uint64_t br_queue_oldest_undelivered_ms(const struct br *b);
void br_queue_gauges(struct br *b);
void br_local_free(struct br *b);

/* hub_redis_out.c */
int br_out_send(struct br *b, uint64_t deadline_ms, char *err, size_t errlen);
int br_out_resync(struct br *b, char *err, size_t errlen);
int br_out_ping(struct br *b, char *err, size_t errlen);

/* hub_redis_in.c */
int br_in_position(struct br *b, char *err, size_t errlen);
int br_in_issue(struct br *b, char *err, size_t errlen);
int br_in_read(struct br *b, char *err, size_t errlen);

#endif /* WSHUB_HUB_REDIS_INT_H */
