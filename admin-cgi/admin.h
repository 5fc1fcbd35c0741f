/* admin.h -- wshub-admin, the FastCGI program behind the web server's /admin, /metrics, /healthz.
 *
 * One process, conf.admin_threads request threads, each with its own FCGX_Request and buffers.
 * The process owns two pieces of shared state: the configuration (read-only after start) and the
 * current mapping of the hub's segment (admin_segment.c, reference counted so a re-attach never
 * unmaps memory a request is reading). Everything else lives in one thread's struct admin_thread.
 *
 * Modules: admin.c (main, threads, signals), admin_http.c (request and response helpers, routing),
 * admin_auth.c (bearer token, CSRF checks), admin_broadcast.c (POST /admin/broadcast),
 * admin_stats.c (stats.json, metrics, healthz), admin_page.c (the stats page, its script and
 * style, embedded from admin_page.* at build time), admin_conns.c (connection list and kicks),
 * admin_workers.c (rolling restart request), admin_segment.c (attach and re-attach),
 * admin_utf8.c (strict UTF-8 check).
 */
#ifndef WSHUB_ADMIN_H
#define WSHUB_ADMIN_H

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <fcgiapp.h>

#include "conf.h"
#include "shm.h"

#define ADMIN_VERSION         "0.1.0"
#define ADMIN_HUB_MAX_AGE_MS  3000 /* a heartbeat older than this means the hub is gone */
#define ADMIN_PATH_MAX        512  /* longest REQUEST_URI path we route */
#define ADMIN_OUT_INITIAL_CAP 4096
#define ADMIN_CSRF_TOKEN_LEN  32        /* hex digits */
#define ADMIN_BODY_MAX_OTHER  4096      /* body bytes a route other than broadcast accepts */
#define ADMIN_DRAIN_MAX       (1 << 20) /* unread body bytes skipped to keep a connection */

/* ---- growable output buffer (admin_http.c) ---- */

/* A byte buffer that grows on demand. An allocation failure sets `failed` and later appends are
 * ignored, so builders check once at the end instead of after every call. */
struct admin_buf {
    char *data;
    size_t len;
    size_t cap;
    int failed;
};

void admin_buf_reset(struct admin_buf *b);
void admin_buf_free(struct admin_buf *b);
int admin_buf_reserve(struct admin_buf *b, size_t extra);
void admin_buf_append(struct admin_buf *b, const void *p, size_t n);
void admin_buf_puts(struct admin_buf *b, const char *s);
void admin_buf_printf(struct admin_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Appends s as a JSON string literal, quotes included; invalid UTF-8 becomes U+FFFD. */
void admin_buf_json_str(struct admin_buf *b, const char *s);

/* ---- the segment (admin_segment.c) ---- */

/* One mapping of the segment. Requests hold a reference while they read it. */
struct admin_seg {
    struct shm shm;
    uint64_t epoch;
    atomic_int refs;
};

enum admin_seg_status {
    ADMIN_SEG_OK = 0,   /* attached and the hub is alive */
    ADMIN_SEG_NO_HUB,   /* no segment, or its hub is dead */
    ADMIN_SEG_STOPPING, /* the hub is alive but stopping */
    ADMIN_SEG_LAYOUT,   /* the segment was built by an incompatible binary */
    ADMIN_SEG_ERROR     /* shm_attach failed otherwise (permissions, ...) */
};

/* Process-wide attach state: the current mapping, guarded by `lock` when it changes. */
struct admin_segments {
    pthread_mutex_t lock;
    struct admin_seg *cur; /* holds one reference of its own; NULL before the first attach */
    char name[64];         /* "/wshub-<instance>" */
    int logged_errno;      /* last attach errno logged, to log each failure once */
};

int admin_segments_init(struct admin_segments *ss, const char *instance);
void admin_segments_destroy(struct admin_segments *ss);
/* Returns a referenced mapping whose hub is alive, or NULL with *status and a reason in why. */
struct admin_seg *admin_segment_get(struct admin_segments *ss, enum admin_seg_status *status,
                                    char *why, size_t whylen);
void admin_segment_put(struct admin_seg *seg);

/* ---- process and threads (admin.c) ---- */

struct admin_ctx {
    struct conf conf;
    struct admin_segments segs;
    int listen_fd; /* FastCGI listening socket: fd 0 or one we opened */
    int stop_fd;   /* eventfd, readable once SIGTERM arrived */
    atomic_int stopping;
};

/* A request thread's own state; nothing here is shared. */
struct admin_thread {
    struct admin_ctx *ctx;
    int index;
    pthread_t tid;
    FCGX_Request fcgi;
    struct admin_buf out;  /* response body under construction */
    struct admin_buf body; /* request body (broadcast payloads) */
};

/* ---- one request (admin_http.c) ---- */

struct admin_req {
    struct admin_thread *thr;
    struct admin_ctx *ctx;
    FCGX_Request *fcgi;
    const char *method;
    char path[ADMIN_PATH_MAX]; /* REQUEST_URI up to '?', not decoded */
    const char *query;         /* after '?', or "" */
    const char *path_rest;     /* for a prefix route: the path after the prefix, else "" */
    int head_only;             /* HEAD on a GET route: headers only */
    int responded;             /* a response was (or failed to be) written */
    struct admin_seg *seg;     /* set by admin_req_segment(), released after the handler */
};

typedef void (*admin_handler_fn)(struct admin_req *r);

/* Serves one accepted FastCGI request: route, run the handler, release what it took. */
void admin_http_serve(struct admin_thread *thr);

/* Fetches a FastCGI parameter, or NULL. */
const char *admin_req_param(const struct admin_req *r, const char *name);

/* Sends a complete response. body may be NULL when len is 0; extra_headers is "" or lines each
 * ending in "\r\n". Returns 0, or -1 when the web server went away. */
int admin_respond(struct admin_req *r, int status, const char *content_type,
                  const char *extra_headers, const void *body, size_t len);

/* Sends {"error":error,"detail":<detail_json>}; detail_json is raw JSON text or NULL for null. */
int admin_respond_error(struct admin_req *r, int status, const char *error,
                        const char *detail_json);
/* Same with a detail string that gets JSON-escaped. */
int admin_respond_error_str(struct admin_req *r, int status, const char *error, const char *detail);

/* What a 503 may tell a client about an unusable segment: the system error's text for a failed
 * attach (no names, paths or pids), nothing otherwise; the full reason goes to the log. */
const char *admin_segment_public_detail(enum admin_seg_status st, const char *why);

/* Attaches the request to a live hub's segment, or answers 503 and returns NULL. */
struct admin_seg *admin_req_segment(struct admin_req *r);

/* Finds `name` in the query string and URL-decodes its value into out. Returns 1 when found, 0
 * when absent, -1 when the value is malformed (bad %-escape, NUL) or does not fit out. */
int admin_query_get(const char *query, const char *name, char *out, size_t outlen);

/* ---- authentication and CSRF (admin_auth.c) ---- */

/* Checks conf.admin_token at start and warns when there is none. Returns 0, or -1 when the
 * token cannot be used (characters a bearer token cannot carry). */
int admin_auth_init(const struct conf *c);
/* Bearer token: returns 1 when the request may proceed, else answers 401 and returns 0. */
int admin_auth_check(struct admin_req *r);
/* For state-changing routes: returns 1 when the request is not a browser's or proves it comes
 * from our page, else answers (403, or 503 without a hub) and returns 0. */
int admin_csrf_check(struct admin_req *r);
/* Writes the segment's CSRF token (ADMIN_CSRF_TOKEN_LEN hex digits) to out. Returns 0 or -1. */
int admin_csrf_token(struct shm *s, char *out, size_t outlen);

/* ---- handlers ---- */

void admin_handle_broadcast(struct admin_req *r);   /* admin_broadcast.c */
void admin_handle_stats_json(struct admin_req *r);  /* admin_stats.c */
void admin_handle_metrics(struct admin_req *r);     /* admin_stats.c */
void admin_handle_healthz(struct admin_req *r);     /* admin_stats.c */
void admin_handle_page(struct admin_req *r);        /* admin_page.c */
void admin_handle_page_js(struct admin_req *r);     /* admin_page.c */
void admin_handle_page_css(struct admin_req *r);    /* admin_page.c */
void admin_handle_connections(struct admin_req *r); /* admin_conns.c */
void admin_handle_kick(struct admin_req *r);        /* admin_conns.c */
void admin_handle_restart(struct admin_req *r);     /* admin_workers.c */
void admin_handle_channels(struct admin_req *r);    /* admin_channels.c */
void admin_handle_presence(struct admin_req *r);    /* admin_channels.c */

/* admin_channels.c: the channels of every running worker, merged by name, most subscribed
 * first. Returns how many (and a malloc'd array in *out), or -1 out of memory. */
struct admin_chan {
    char name[SHM_CHANNEL_NAME_LEN];
    uint64_t subscribers, messages, rate_milli;
};
long admin_channels_collect(const struct shm *s, struct admin_chan **out);
/* Channel gauges for /metrics, the ADMIN_METRICS_CHANNELS most subscribed channels only. */
#define ADMIN_METRICS_CHANNELS 20
void admin_channels_prom(struct admin_buf *b, const struct shm *s);
/* Appends the JSON array of a connection row's channel names. */
void admin_channels_of_row(struct admin_buf *b, const struct shm *s, const struct shm_conn *row);

/* ---- what the workers enforce (admin_security.c) ---- */

void admin_security_json(struct admin_buf *b, const struct shm *s); /* "security":{...}, */
void admin_security_prom(struct admin_buf *b, const struct shm *s);

/* ---- UTF-8 (admin_utf8.c) ---- */

/* Returns 1 when s[0..n) is well-formed UTF-8 per RFC 3629 (no overlong forms, no surrogates,
 * nothing above U+10FFFF); else 0 with the offset of the first bad sequence in *bad_at. */
int admin_utf8_valid(const uint8_t *s, size_t n, size_t *bad_at);

#endif /* WSHUB_ADMIN_H */
