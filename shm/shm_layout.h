/* shm_layout.h -- the one definition of wshub's shared-memory segment.
 *
 * The hub creates one POSIX shared-memory segment per instance ("/wshub-<instance>"); workers and
 * admin-cgi processes map it. Several separately built processes must agree on every byte here, so
 * this is the only file that defines shared structures, and any change to it bumps
 * SHM_LAYOUT_VERSION. The attach code (shm.c) refuses a segment whose magic, version or sizes
 * differ. Version 2 added the admin's requests to workers (shm_conn.kick_code,
 * shm_worker.kicks_pending), the broadcast size histogram, admin_csrf_key and SHM_CLOSE_ADMIN.
 * Version 3 added the Redis bridge (docs/redis-bridge.md): ring flags OUTBOX, HISTORY, BRIDGE and
 * STREAM_ID (a record may carry its cluster stream id) and shm_header.bridge.
 * Version 4 added admission control (docs/security.md): the limits table (shm_header.limits and
 * the region at off_limits: connections per client address and per user, counted across all
 * workers, shm/connlimit.c), finer handshake rejection reasons (AUTH_MISSING, AUTH_EXPIRED,
 * ORIGIN_MISSING, LIMIT_USER) and shm_worker.security (what a worker enforces, for the page);
 * and channel presence (ws-worker/worker_channels.c): per worker slot a table of the channels its
 * connections subscribe to (region at off_channels), shm_worker.channels_hwm, and the connection
 * row's channel list (shm_conn.chan, which replaced the single channel name).
 *
 * Rules for everything below: fixed-width types only, no pointers (each process maps the segment
 * at its own address; regions are found by offsets), no bool, every field commented with who
 * writes it. Counters are _Atomic and updated with relaxed order; they are statistics, not
 * synchronisation.
 *
 *   +--------------------+ 0
 *   | shm_header         |  magic, version, sizes, offsets, hub state, global stats, ring control
 *   +--------------------+ off_workers
 *   | shm_worker[64]     |  one per worker slot: pid, generation, doorbell, per-worker stats
 *   +--------------------+ off_conn_free
 *   | uint32_t free[cap] |  stack of free connection-slot indexes (under conntab lock)
 *   +--------------------+ off_conns
 *   | shm_conn[cap]      |  connection table, one row per connection
 *   +--------------------+ off_ring
 *   | ring bytes         |  broadcast ring data, ring_capacity bytes (a power of two)
 *   +--------------------+ off_limits
 *   | shm_limit_entry[n] |  per-address / per-user connection counts (under limits lock)
 *   +--------------------+ off_channels
 *   | shm_channel[64][m] |  per worker slot: its channels, subscribers and rates (owner writes)
 *   +--------------------+ total_size
 */
#ifndef WSHUB_SHM_LAYOUT_H
#define WSHUB_SHM_LAYOUT_H

#include <pthread.h>
#include <stdalign.h>
#include <stddef.h>
#include <stdint.h>

#define SHM_MAGIC          0x315542485357ULL /* "WSHUB1" little-endian */
#define SHM_LAYOUT_VERSION 4
#define SHM_MAX_WORKERS    64 /* slots, not processes: a rolling restart uses old + new */
#define SHM_CACHE_LINE     64
#define SHM_REGION_ALIGN   4096

/* ---- Stats vocabularies. Append only: the index is part of the layout. ---- */

/* Why a connection ended. The names in stats.c are the metric label values. */
enum shm_close_reason {
    SHM_CLOSE_NORMAL = 0,    /* client sent close 1000 or 1001 */
    SHM_CLOSE_SHUTDOWN,      /* we sent 1001 because the server is stopping */
    SHM_CLOSE_RESTART,       /* we sent 1012, rolling restart */
    SHM_CLOSE_PROTOCOL,      /* protocol error, 1002 / 1007 */
    SHM_CLOSE_TOO_BIG,       /* client message over the limit, 1009 */
    SHM_CLOSE_POLICY,        /* 1008, rate limit */
    SHM_CLOSE_SLOW_CONSUMER, /* cursor fell out of the buffer: 1013 */
    SHM_CLOSE_IDLE_TIMEOUT,  /* no pong / traffic within the timeout */
    SHM_CLOSE_PEER_GONE,     /* TCP reset or EOF without a close frame (1006) */
    SHM_CLOSE_WORKER_DIED,   /* reclaimed by the hub after its worker died */
    SHM_CLOSE_ADMIN,         /* closed on request of the admin API (shm_conn.kick_code) */
    SHM_CLOSE_REASON_COUNT
};

/* Why a handshake was refused before the upgrade. */
enum shm_reject_reason {
    SHM_REJECT_BAD_PATH = 0,   /* not the configured ws path: 404 */
    SHM_REJECT_BAD_REQUEST,    /* malformed upgrade request: 400 */
    SHM_REJECT_TABLE_FULL,     /* connection table has no free slot: 503 */
    SHM_REJECT_WORKER_FULL,    /* this worker is at its connection cap: 503 */
    SHM_REJECT_ORIGIN,         /* origin not allowed: 403 */
    SHM_REJECT_AUTH,           /* missing or invalid token: 401 */
    SHM_REJECT_LIMIT,          /* per-IP / per-user limit: 429 */
    SHM_REJECT_DRAINING,       /* worker is shutting down */
    SHM_REJECT_AUTH_MISSING,   /* no token where one is required: 401 (layout 4) */
    SHM_REJECT_AUTH_EXPIRED,   /* token past exp or before nbf: 401 (layout 4) */
    SHM_REJECT_ORIGIN_MISSING, /* no Origin header and origin_missing deny: 403 (layout 4) */
    SHM_REJECT_LIMIT_USER,     /* per-user connection limit: 429 (layout 4) */
    SHM_REJECT_REASON_COUNT
};

#define SHM_LATENCY_BUCKETS 32 /* bucket i counts latencies in [2^i, 2^(i+1)) microseconds */
#define SHM_SIZE_BUCKETS    32 /* bucket i counts payloads of (2^(i-1), 2^i] bytes; 0: 0 or 1 */

/* ---- Per worker slot ---- */

enum shm_worker_state {
    SHM_WORKER_EMPTY = 0, /* slot never used */
    SHM_WORKER_STARTING,  /* forked, not yet serving */
    SHM_WORKER_RUNNING,   /* accepting and delivering */
    SHM_WORKER_DRAINING,  /* stopped accepting, closing its clients */
    SHM_WORKER_EXITED     /* reaped by the hub */
};

/* Counters written only by the worker that owns the slot (hub resets nothing but the gauge
 * "connections" when it reclaims a dead worker's rows), so totals survive respawns and stay
 * monotonic for Prometheus. */
struct shm_worker_stats {
    _Atomic int64_t connections;     /* gauge: open connections now */
    _Atomic uint64_t accepted;       /* upgrades completed */
    _Atomic uint64_t messages_out;   /* messages delivered (one per connection per broadcast) */
    _Atomic uint64_t bytes_out;      /* payload bytes delivered */
    _Atomic uint64_t writes;         /* write calls issued (several frames may share one) */
    _Atomic uint64_t messages_in;    /* data messages received from clients */
    _Atomic uint64_t bytes_in;       /* payload bytes received from clients */
    _Atomic uint64_t ring_entries;   /* ring entries this worker consumed */
    _Atomic uint64_t ring_overruns;  /* times this worker itself was lapped by the ring */
    _Atomic uint64_t slow_consumers; /* connections that fell behind: closed, or skipped ahead */
    _Atomic uint64_t last_seq;       /* newest ring sequence this worker has framed */
    _Atomic uint64_t closed[SHM_CLOSE_REASON_COUNT];
    _Atomic uint64_t rejected[SHM_REJECT_REASON_COUNT];
    _Atomic uint64_t latency_us[SHM_LATENCY_BUCKETS]; /* ring append -> write, per delivery */
};

struct shm_worker {
    alignas(SHM_CACHE_LINE) _Atomic int32_t pid; /* hub writes at fork, 0 when reaped */
    _Atomic uint32_t state;                      /* enum shm_worker_state; hub and worker write */
    _Atomic uint32_t doorbell_armed;  /* worker sets 1 before sleeping; producers swap to 0 */
    uint32_t generation;              /* hub writes at fork */
    _Atomic uint64_t started_at_ms;   /* hub writes at fork (CLOCK_REALTIME ms) */
    _Atomic uint64_t ready_at_ms;     /* worker writes when it starts serving */
    _Atomic uint32_t restarts;        /* hub: times this slot was respawned after a crash */
    _Atomic int32_t last_exit_status; /* hub: raw waitpid status of the previous process */
    _Atomic uint64_t last_exit_at_ms; /* hub */
    _Atomic uint64_t kicks_pending;   /* admin: +1 after setting a row's kick_code; the worker
                                         scans its rows when the value changes */
    _Atomic uint32_t security;        /* worker, at start: SHM_SEC_* of what it enforces (layout 4;
                                         fits the first line's padding) */
    _Atomic uint32_t channels_hwm;    /* worker: entries [0, hwm) of its channel table have been
                                         used; readers scan no further (the rest is untouched) */
    alignas(SHM_CACHE_LINE) struct shm_worker_stats stats; /* worker writes */
};

/* shm_worker.security: what the worker's configuration makes it enforce (docs/security.md). */
#define SHM_SEC_SET        0x01 /* the worker has written this word */
#define SHM_SEC_AUTH       0x02 /* tokens are required (jwt_key configured, auth not off) */
#define SHM_SEC_AUTH_OFF   0x04 /* "auth off" in the configuration, keys or not */
#define SHM_SEC_ORIGIN     0x08 /* an Origin allowlist is enforced */
#define SHM_SEC_TLS        0x10 /* the worker speaks TLS itself (wss:// direct) */
#define SHM_SEC_LIMIT_ADDR 0x20 /* max_connections_per_ip is enforced */
#define SHM_SEC_LIMIT_USER 0x40 /* max_connections_per_user is enforced */

/* ---- Connection table row ---- */

#define SHM_CONN_CHANNELS 24 /* channels a row lists (max_channels_per_connection's ceiling) */

enum shm_conn_state {
    SHM_CONN_FREE = 0, /* on the free stack */
    SHM_CONN_OPEN,     /* owned by a live connection */
    SHM_CONN_CLOSING   /* close frame sent or received, slot freed soon */
};

/* Identity fields (worker .. channel) are written by the owning worker only while conn_id is 0,
 * then conn_id is stored with release order. conn_id is never reused, so it doubles as a seqlock:
 * a reader loads conn_id (acquire), copies the row, fences, and keeps the copy only if conn_id is
 * unchanged and non-zero. */
struct shm_conn {
    alignas(SHM_CACHE_LINE) _Atomic uint64_t conn_id; /* 0 = free */
    _Atomic uint64_t last_seen_ms; /* owner: last frame received (CLOCK_REALTIME ms) */
    uint64_t connected_at_ms;      /* owner, at claim */
    _Atomic uint64_t messages_out; /* owner */
    _Atomic uint64_t bytes_out;    /* owner */
    _Atomic uint64_t messages_in;  /* owner */
    _Atomic uint64_t bytes_in;     /* owner */
    uint32_t worker_generation;    /* generation of the owning worker process */
    uint16_t worker;               /* owning worker slot index */
    _Atomic uint8_t state;         /* enum shm_conn_state */
    uint8_t addr_family;           /* AF_INET or AF_INET6 (AF_UNSPEC when unknown) */
    uint16_t remote_port;          /* host byte order */
    /* admin, under conntab.lock and only while conn_id is the one it means: the close code the
     * owner should close this connection with, 0 = none. Reset by the claim. */
    _Atomic uint16_t kick_code;
    uint8_t remote_addr[16]; /* network byte order; IPv4 in the first 4 bytes */
    uint32_t reserved1;
    char user[48]; /* authenticated user id, NUL-terminated, "" if none */
    /* owner, at any time (not under the conn_id seqlock: a reader may see a list in the middle
     * of a change, which presence counts tolerate): the channels this connection subscribes to,
     * as indexes into the owning worker slot's channel table */
    _Atomic uint8_t nchan;
    uint8_t reserved2;
    _Atomic uint16_t chan[SHM_CONN_CHANNELS];
    uint8_t reserved3[6];
};

/* ---- Broadcast ring ---- */

/* A record in the ring. Records start on RING_ALIGN boundaries and never straddle the end of the
 * buffer: a writer that would straddle writes a PAD record to the end and starts again at 0.
 * Layout: header, channel bytes, payload bytes, padding to RING_ALIGN. */
#define RING_ALIGN           32
#define RING_REC_MSG         1      /* a broadcast */
#define RING_REC_PAD         2      /* filler: skip `size` bytes */
#define RING_F_BINARY        0x0001 /* payload is binary (else UTF-8 text) */
#define RING_MAX_CHANNEL_LEN 55     /* fits shm_channel.name with its NUL */

/* ---- Redis bridge flags (layout 3; hub/hub_redis.c, docs/redis-bridge.md) ----
 * OUTBOX: a producer's message while the cluster bridge is healthy; not for delivery, the bridge
 *   sends it to the cluster stream and appends it again (BRIDGE) when the stream returns it.
 *   ring_publish keeps the flag only while bridge.state is CLOSED, deciding under the ring lock.
 * HISTORY: appended by the bridge while catching up after a hub start; the cluster published it
 *   before this hub ran, so it is kept for resume but not delivered live.
 *   ring_read() skips OUTBOX and HISTORY records without copying them.
 * BRIDGE: appended by the bridge itself (from the stream, or delivered ahead of it while the
 *   breaker is open); the bridge's own cursor skips these.
 * STREAM_ID: RING_STREAM_ID_LEN bytes follow the header, before the channel: the record's id in
 *   the cluster stream, two uint64 (milliseconds, sequence), as Redis's "<ms>-<seq>". */
#define RING_F_OUTBOX      0x0002
#define RING_F_HISTORY     0x0004
#define RING_F_BRIDGE      0x0008
#define RING_F_STREAM_ID   0x0010
#define RING_STREAM_ID_LEN 16

struct ring_record {
    uint32_t size;         /* whole record incl. header, multiple of RING_ALIGN */
    uint16_t type;         /* RING_REC_MSG or RING_REC_PAD */
    uint16_t flags;        /* RING_F_* */
    uint64_t seq;          /* sequence number, 0 for PAD */
    uint64_t published_ns; /* CLOCK_MONOTONIC at append (system-wide clock) */
    uint32_t payload_len;  /* bytes of payload */
    uint8_t channel_len;   /* bytes of channel name before the payload, 0 = all */
    uint8_t reserved[3];
};

/* Positions are byte counts since the ring was created: they only grow and are reduced modulo
 * capacity to index the buffer. The single writer at any moment holds `lock`.
 *
 *   head_pos          tail          tail_intent
 *      |  readable ... |  (being written) |
 *
 * A writer first advances tail_intent over the bytes it is about to overwrite, then writes, then
 * publishes tail. A reader at position p copies a record and afterwards checks
 * tail_intent <= p + capacity; if not, the bytes may have been overwritten while it copied and the
 * reader has been lapped (overrun). A producer killed while holding the lock is detected through
 * EOWNERDEAD by the next producer, which pads over [tail, tail_intent) and publishes: readers
 * never see the half-written record, and positions stay monotonic. */
struct shm_ring_ctl {
    alignas(SHM_CACHE_LINE) pthread_mutex_t lock; /* robust, process-shared; producers only */
    uint64_t capacity;                            /* bytes, power of two; set at creation */
    uint32_t max_payload;                         /* largest payload accepted; set at creation */
    uint32_t reserved;
    alignas(SHM_CACHE_LINE) _Atomic uint64_t tail_intent; /* writer: end of bytes being written */
    _Atomic uint64_t tail;            /* writer: end of the last published record */
    _Atomic uint64_t next_seq;        /* writer: sequence the next record gets (first is 1) */
    _Atomic uint64_t head_pos;        /* writer: position of the oldest intact record */
    _Atomic uint64_t head_seq;        /* writer: its sequence (next_seq when the ring is empty) */
    _Atomic uint64_t lock_recoveries; /* writer: EOWNERDEAD repairs */
    _Atomic uint64_t published;       /* writer: records published */
    _Atomic uint64_t published_bytes; /* writer: payload bytes published */
    /* writer: broadcasts by payload size, log2 buckets (SHM_SIZE_BUCKETS); own lines, away
     * from the positions readers poll */
    alignas(SHM_CACHE_LINE) _Atomic uint64_t size_hist[SHM_SIZE_BUCKETS];
};

/* ---- Connection table control ---- */

struct shm_conntab_ctl {
    alignas(SHM_CACHE_LINE) pthread_mutex_t lock; /* robust, process-shared; guards free stack */
    uint32_t capacity;                            /* rows; set at creation */
    uint32_t free_top;                            /* entries on the free stack (under lock) */
    alignas(SHM_CACHE_LINE) _Atomic uint64_t next_conn_id; /* next id to hand out */
    _Atomic uint32_t in_use;                               /* rows currently claimed */
    _Atomic uint32_t reserved;
    _Atomic uint64_t lock_recoveries; /* EOWNERDEAD repairs (free stack rebuilt) */
    _Atomic uint64_t reclaimed;       /* rows freed by the hub after their worker died */
};

/* ---- Redis bridge (hub/hub_redis.c) ---- */

/* The circuit breaker in front of Redis. Producers load it on every publish (shm/bridge.c). */
enum shm_bridge_state {
    SHM_BRIDGE_OFF = 0, /* no redis configured: a single node, nothing changes */
    SHM_BRIDGE_CLOSED,  /* healthy: producers append OUTBOX records, the stream orders delivery */
    SHM_BRIDGE_OPEN,    /* Redis down or slow: producers deliver at once, the hub keeps a backlog */
    SHM_BRIDGE_HALF_OPEN, /* reconnected, sending the backlog: producers still deliver at once */
    SHM_BRIDGE_STATE_COUNT
};

#define SHM_BRIDGE_ERROR_LEN 120
#define SHM_BRIDGE_NODE_LEN  64

/* Written by the hub's bridge thread only; read by anyone (stats). `state` changes under the
 * ring lock (ring_bridge_state_set) so a publish sees it before or after, never during. */
struct shm_bridge {
    alignas(SHM_CACHE_LINE) _Atomic uint32_t state; /* enum shm_bridge_state */
    _Atomic uint32_t doorbell_armed;   /* bridge sets 1 before sleeping; producers swap to 0 */
    _Atomic uint64_t state_since_ms;   /* CLOCK_REALTIME ms of the last state change */
    _Atomic uint64_t trips;            /* transitions to OPEN (failures, timeouts, slowness) */
    _Atomic uint64_t connects;         /* successful (re)connections to Redis */
    _Atomic uint64_t backlog;          /* gauge: local messages not yet confirmed by the stream */
    _Atomic uint64_t backlog_bytes;    /* gauge: their payload bytes */
    _Atomic uint64_t backlog_limit;    /* bytes the backlog may hold (redis_backlog) */
    _Atomic uint64_t backlog_overflow; /* local messages dropped from a full backlog: delivered
                                          here, never sent to the other nodes */
    alignas(SHM_CACHE_LINE) _Atomic uint64_t sent; /* local messages confirmed in the stream */
    _Atomic uint64_t received;                     /* stream entries read */
    _Atomic uint64_t delivered;       /* stream entries appended to the ring for delivery */
    _Atomic uint64_t history;         /* stream entries appended as HISTORY (start-up catch-up) */
    _Atomic uint64_t skipped_own;     /* own entries not appended: already delivered here */
    _Atomic uint64_t delivered_ahead; /* local messages delivered before the stream had them */
    _Atomic uint64_t dropped;         /* stream entries unusable here (malformed, too large) */
    _Atomic uint64_t stream_gaps;     /* times entries were trimmed before this node read them */
    _Atomic uint64_t lost_acked;      /* own confirmed messages missing after a Redis restart */
    _Atomic uint64_t ring_overruns;   /* local messages lapped before the bridge read them */
    _Atomic uint64_t last_id_ms;      /* newest stream id appended to the ring */
    _Atomic uint64_t last_id_seq;
    _Atomic uint64_t last_error_ms; /* CLOCK_REALTIME ms of the last error, 0 = none */
    _Atomic uint32_t error_gen;     /* seqlock over last_error: odd while it is written */
    uint32_t reserved;
    char last_error[SHM_BRIDGE_ERROR_LEN]; /* NUL-terminated; read under error_gen */
    char node[SHM_BRIDGE_NODE_LEN];        /* this node's id; written before state leaves OFF */
};

/* ---- Limits table (layout 4; shm/connlimit.c) ----
 *
 * Connections per client address and per user, across every worker. Open addressing with
 * linear probing over a power-of-two array, all under `lock` (taken at connection rate, like the
 * connection table's). An entry counts the connections one worker process holds for one key, so
 * the count of a key is the sum over its entries whose process is still the one in that worker
 * slot: a worker that dies, or is cut at a drain deadline and exits without releasing, stops
 * counting at once without anybody cleaning up after it, and its entries are removed by the next
 * probe that meets them. Keys are SipHash-2-4 of (kind, address or user id) under a random key
 * made with the segment, so clients cannot aim collisions; 0 marks an empty entry. */
struct shm_limit_entry {
    uint64_t key;   /* 0 = empty */
    int32_t pid;    /* the worker process holding these connections */
    uint16_t slot;  /* its worker slot: the entry counts while shm_worker(slot)->pid == pid */
    uint16_t count; /* connections (limits are at most 65535) */
};

struct shm_limits_ctl {
    alignas(SHM_CACHE_LINE) pthread_mutex_t lock; /* robust, process-shared; workers only */
    uint32_t capacity;                            /* entries, a power of two; set at creation */
    uint32_t used;                                /* non-empty entries (under lock) */
    uint64_t hash_key[2];                         /* SipHash key, random; set at creation */
    _Atomic uint64_t lock_recoveries;             /* EOWNERDEAD repairs (table rebuilt) */
    _Atomic uint64_t full;                        /* acquisitions refused: no free entry */
    _Atomic uint64_t stale_removed;               /* entries of dead processes removed */
};

/* ---- Channel presence (ws-worker/worker_channels.c, admin-cgi/admin_channels.c) ----
 *
 * Each worker slot owns channels_per_worker entries, written only by the worker in that slot:
 * one per channel at least one of its connections subscribes to (a user's own "@<id>" channel
 * excluded). A new worker process clears its slot's entries before it serves; entries of a slot
 * whose worker is not running are ignored by readers. The name is written under a seqlock
 * (gen odd while it changes); subscribers == 0 marks a free entry. */
#define SHM_CHANNEL_NAME_LEN 56 /* RING_MAX_CHANNEL_LEN + NUL */

struct shm_channel {
    _Atomic uint32_t gen;         /* owner: odd while name changes */
    _Atomic uint32_t subscribers; /* owner: its connections subscribed now; 0 = entry free */
    _Atomic uint64_t messages;    /* owner: broadcasts framed for the channel since the entry */
    _Atomic uint32_t rate_milli;  /* owner: broadcasts per second x 1000, a 10 s moving average */
    uint32_t reserved;
    char name[SHM_CHANNEL_NAME_LEN]; /* owner, NUL-terminated */
};

/* ---- Header ---- */

enum shm_hub_state {
    SHM_HUB_STARTING = 0, /* segment being initialised */
    SHM_HUB_RUNNING,      /* accepting broadcasts */
    SHM_HUB_STOPPING      /* shutting down: producers must refuse (503) */
};

struct shm_header {
    alignas(SHM_CACHE_LINE) uint64_t magic; /* SHM_MAGIC */
    uint32_t version;                       /* SHM_LAYOUT_VERSION */
    uint32_t header_size;                   /* sizeof(struct shm_header) */
    uint64_t total_size;                    /* bytes mapped */
    uint64_t epoch;                         /* random, new each time the segment is created */
    uint64_t created_at_ms;                 /* CLOCK_REALTIME ms */
    uint32_t max_workers;                   /* SHM_MAX_WORKERS */
    uint32_t conn_capacity;                 /* rows in the connection table */
    uint32_t worker_size;                   /* sizeof(struct shm_worker) */
    uint32_t conn_size;                     /* sizeof(struct shm_conn) */
    uint64_t off_workers;                   /* region offsets from the segment start */
    uint64_t off_conn_free;
    uint64_t off_conns;
    uint64_t off_ring;
    uint64_t off_limits;                             /* layout 4 */
    uint64_t off_channels;                           /* layout 4: shm_channel[64][per worker] */
    uint32_t channels_per_worker;                    /* hub, at creation */
    uint32_t channel_size;                           /* sizeof(struct shm_channel) */
    alignas(SHM_CACHE_LINE) _Atomic int32_t hub_pid; /* hub */
    _Atomic uint32_t hub_state;                      /* enum shm_hub_state; hub */
    _Atomic uint64_t hub_heartbeat_ms;               /* hub, every second (CLOCK_REALTIME ms) */
    _Atomic uint32_t workers_configured; /* hub: worker count of the current generation */
    _Atomic uint32_t generation;         /* hub: current worker generation */
    _Atomic uint64_t restart_requested;  /* admin increments it to ask for a rolling restart;
                                            the hub acts each time the value changes */
    _Atomic uint64_t admin_csrf_key[2];  /* admin: random, set once (CAS from 0) by the first
                                            admin process; the stats page's CSRF token */
    alignas(SHM_CACHE_LINE) _Atomic uint64_t broadcasts_rejected; /* producers: refused appends */
    alignas(SHM_CACHE_LINE) struct shm_ring_ctl ring;
    alignas(SHM_CACHE_LINE) struct shm_conntab_ctl conntab;
    alignas(SHM_CACHE_LINE) struct shm_bridge bridge;     /* all zero (OFF) without redis */
    alignas(SHM_CACHE_LINE) struct shm_limits_ctl limits; /* layout 4 */
};

/* The layout is ABI: these sizes are what every process compiled against this version assumes. */
_Static_assert(sizeof(pthread_mutex_t) == 40, "glibc x86-64 mutex size");
_Static_assert(sizeof(_Atomic uint64_t) == 8, "lock-free 64-bit atomics");
_Static_assert(sizeof(_Atomic uint16_t) == 2, "kick_code takes the old reserved0's place");
_Static_assert(sizeof(struct ring_record) == 32, "ring record header is 32 bytes");
_Static_assert(sizeof(struct ring_record) == RING_ALIGN, "a PAD header fits any gap");
_Static_assert(sizeof(struct shm_conn) == 192, "connection row is 3 cache lines");
_Static_assert(sizeof(struct shm_conn) % SHM_CACHE_LINE == 0, "rows never share a line");
_Static_assert(sizeof(struct shm_worker) % SHM_CACHE_LINE == 0, "workers never share a line");
_Static_assert(offsetof(struct shm_worker, stats) % SHM_CACHE_LINE == 0, "stats on own line");
_Static_assert(offsetof(struct shm_header, ring) % SHM_CACHE_LINE == 0, "ring ctl alignment");
_Static_assert(offsetof(struct shm_ring_ctl, tail_intent) % SHM_CACHE_LINE == 0,
               "ring positions on their own line, away from the lock");
_Static_assert(sizeof(struct shm_header) <= SHM_REGION_ALIGN, "header fits its page");
_Static_assert(RING_MAX_CHANNEL_LEN < SHM_CHANNEL_NAME_LEN, "a channel name fits its entry");
_Static_assert(sizeof(struct shm_channel) == 80, "channel entry is 80 bytes");
_Static_assert(SHM_CONN_CHANNELS <= 255, "nchan is a byte");
_Static_assert(RING_STREAM_ID_LEN == 2 * sizeof(uint64_t), "stream id is (ms, seq)");
_Static_assert(offsetof(struct shm_header, bridge) % SHM_CACHE_LINE == 0, "bridge alignment");
_Static_assert(offsetof(struct shm_bridge, sent) % SHM_CACHE_LINE == 0,
               "bridge counters away from the state word producers poll");
_Static_assert(sizeof(_Atomic uint32_t) == 4, "bridge state word");
_Static_assert(sizeof(struct shm_limit_entry) == 16, "limits entry is 16 bytes");
_Static_assert(offsetof(struct shm_worker, stats) == SHM_CACHE_LINE,
               "security word fits the first line of shm_worker");
_Static_assert(offsetof(struct shm_header, limits) % SHM_CACHE_LINE == 0, "limits alignment");

#endif /* WSHUB_SHM_LAYOUT_H */
