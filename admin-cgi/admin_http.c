/* admin_http.c -- one FastCGI request: routing, response writing, query strings, JSON helpers.
 *
 * Routing uses REQUEST_URI (its path, query stripped, not decoded) against one table of
 * {method, path, handler, auth, csrf}: nginx and Apache disagree on SCRIPT_NAME and PATH_INFO,
 * but both pass the URI the client sent. A path ending in '/' with `prefix` set also matches
 * longer paths (/admin/connections/{id}); the rest goes to the handler as r->path_rest. A known
 * path with the wrong method gets 405 and an Allow header; HEAD is served wherever GET is, by
 * running the GET handler and dropping the body. Before the handler: the bearer token where the
 * route's auth mode asks for it, then the CSRF check on state-changing routes (admin_auth.c).
 *
 * Every response goes through admin_respond(), which writes one "Status:" line, Content-Type,
 * Content-Length and Cache-Control: no-store, and marks the request answered so a handler can
 * never send two responses. Errors are JSON, {"error": "...", "detail": ...}, built by
 * admin_respond_error(). A web server that went away shows up as a failed FCGX_PutStr(); we log
 * it at debug level and move on (SIGPIPE is ignored, see admin.c).
 *
 * Seam for a later issue: admin_auth_check() may also accept a JWT with an admin claim.
 */
#include "admin.h"
#include "http_status.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

#define ADMIN_KEEP_BUF (1u << 20) /* buffers above this are freed after the request */

/* When a route needs the bearer token (if one is configured). */
enum admin_auth_mode {
    AUTH_NONE,    /* the stats page's static shell: no data in it */
    AUTH_TOKEN,   /* always */
    AUTH_METRICS, /* unless metrics_public */
    AUTH_HEALTHZ  /* unless healthz_public */
};

struct admin_route {
    const char *method;
    const char *path;
    admin_handler_fn handler;
    enum admin_auth_mode auth;
    int csrf;   /* state-changing: admin_csrf_check() */
    int prefix; /* path ends in '/' and matches longer paths too */
};

static const struct admin_route admin_routes[] = {
    {"GET", "/admin/", admin_handle_page, AUTH_NONE, 0, 0},
    {"GET", "/admin/page.js", admin_handle_page_js, AUTH_NONE, 0, 0},
    {"GET", "/admin/page.css", admin_handle_page_css, AUTH_NONE, 0, 0},
    {"POST", "/admin/broadcast", admin_handle_broadcast, AUTH_TOKEN, 1, 0},
    {"GET", "/admin/stats.json", admin_handle_stats_json, AUTH_TOKEN, 0, 0},
    {"GET", "/admin/connections", admin_handle_connections, AUTH_TOKEN, 0, 0},
    {"DELETE", "/admin/connections/", admin_handle_kick, AUTH_TOKEN, 1, 1},
    {"POST", "/admin/workers/restart", admin_handle_restart, AUTH_TOKEN, 1, 0},
    {"GET", "/admin/channels", admin_handle_channels, AUTH_TOKEN, 0, 0},
    {"GET", "/admin/channels/", admin_handle_presence, AUTH_TOKEN, 0, 1},
    {"GET", "/metrics", admin_handle_metrics, AUTH_METRICS, 0, 0},
    {"GET", "/healthz", admin_handle_healthz, AUTH_HEALTHZ, 0, 0},
};

#define N_ROUTES (sizeof(admin_routes) / sizeof(admin_routes[0]))

/* ---- growable buffer ---- */

void admin_buf_reset(struct admin_buf *b)
{
    b->len = 0;
    b->failed = 0;
}

void admin_buf_free(struct admin_buf *b)
{
    free(b->data);
    memset(b, 0, sizeof(*b));
}

int admin_buf_reserve(struct admin_buf *b, size_t extra)
{
    if (b->failed)
        return -1;
    if (b->cap - b->len > extra)
        return 0;
    size_t cap = b->cap ? b->cap : ADMIN_OUT_INITIAL_CAP;
    while (cap - b->len <= extra)
        cap *= 2;
    char *p = realloc(b->data, cap);
    if (p == NULL) {
        log_error(errno, "realloc(%zu) failed", cap);
        b->failed = 1;
        return -1;
    }
    b->data = p;
    b->cap = cap;
    return 0;
}

void admin_buf_append(struct admin_buf *b, const void *p, size_t n)
{
    if (admin_buf_reserve(b, n) < 0)
        return;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void admin_buf_puts(struct admin_buf *b, const char *s)
{
    admin_buf_append(b, s, strlen(s));
}

void admin_buf_printf(struct admin_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || admin_buf_reserve(b, (size_t)n) < 0)
        return;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void admin_buf_json_str(struct admin_buf *b, const char *s)
{
    admin_buf_puts(b, "\"");
    size_t n = strlen(s);
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        size_t bad, run;
        if (c == '"' || c == '\\') {
            admin_buf_printf(b, "\\%c", c);
            run = 1;
        } else if (c < 0x20) {
            admin_buf_printf(b, "\\u%04x", c);
            run = 1;
        } else if (c < 0x80) {
            admin_buf_append(b, &s[i], 1);
            run = 1;
        } else {
            /* copy the longest valid UTF-8 run; a bad byte becomes U+FFFD */
            for (run = 1; i + run < n && (unsigned char)s[i + run] >= 0x80; run++)
                ;
            if (admin_utf8_valid((const uint8_t *)s + i, run, &bad)) {
                admin_buf_append(b, &s[i], run);
            } else {
                admin_buf_append(b, &s[i], bad);
                admin_buf_puts(b, "\\ufffd");
                run = bad + 1;
            }
        }
        i += run;
    }
    admin_buf_puts(b, "\"");
}

/* ---- responses ---- */

const char *admin_req_param(const struct admin_req *r, const char *name)
{
    return FCGX_GetParam(name, r->fcgi->envp);
}

static int put_all(FCGX_Stream *out, const char *p, size_t len)
{
    while (len > 0) {
        int chunk = len > (1u << 20) ? (1 << 20) : (int)len;
        if (FCGX_PutStr(p, chunk, out) != chunk)
            return -1;
        p += chunk;
        len -= (size_t)chunk;
    }
    return 0;
}

int admin_respond(struct admin_req *r, int status, const char *content_type,
                  const char *extra_headers, const void *body, size_t len)
{
    char head[1024];
    if (r->responded)
        return -1;
    r->responded = 1;
    int n = snprintf(head, sizeof(head),
                     "Status: %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Cache-Control: no-store\r\n%s%s\r\n",
                     status, http_status_phrase(status), content_type, len,
                     strstr(extra_headers, "X-Content-Type-Options") ? ""
                                                                     : "X-Content-Type-Options: "
                                                                       "nosniff\r\n",
                     extra_headers);
    if (n < 0 || (size_t)n >= sizeof(head)) {
        log_error(0, "response header for status %d does not fit %zu bytes", status, sizeof(head));
        return -1;
    }
    FCGX_Stream *out = r->fcgi->out;
    if (put_all(out, head, (size_t)n) < 0 || (!r->head_only && put_all(out, body, len) < 0)) {
        int e = FCGX_GetError(out);
        log_debug("web server went away while answering %s %s: error %d (%s)", r->method, r->path,
                  e, e > 0 ? strerror(e) : "libfcgi");
        return -1;
    }
    return 0;
}

static int respond_error_buf(struct admin_req *r, int status, const char *extra,
                             struct admin_buf *b)
{
    static const char oom[] = "{\"error\":\"out of memory\",\"detail\":null}\n";
    int rc;
    if (b->failed)
        rc = admin_respond(r, 500, "application/json", "", oom, sizeof(oom) - 1);
    else
        rc = admin_respond(r, status, "application/json", extra, b->data, b->len);
    admin_buf_free(b);
    return rc;
}

static void build_error(struct admin_buf *b, const char *error)
{
    admin_buf_puts(b, "{\"error\":");
    admin_buf_json_str(b, error);
    admin_buf_puts(b, ",\"detail\":");
}

/* 503s tell clients and load balancers when to come back. */
static const char *error_extra_headers(int status)
{
    return status == 503 ? "Retry-After: 1\r\n" : "";
}

int admin_respond_error(struct admin_req *r, int status, const char *error, const char *detail_json)
{
    struct admin_buf b = {0};
    build_error(&b, error);
    admin_buf_puts(&b, detail_json ? detail_json : "null");
    admin_buf_puts(&b, "}\n");
    return respond_error_buf(r, status, error_extra_headers(status), &b);
}

int admin_respond_error_str(struct admin_req *r, int status, const char *error, const char *detail)
{
    struct admin_buf b = {0};
    build_error(&b, error);
    if (detail)
        admin_buf_json_str(&b, detail);
    else
        admin_buf_puts(&b, "null");
    admin_buf_puts(&b, "}\n");
    return respond_error_buf(r, status, error_extra_headers(status), &b);
}

/* ---- the segment, per request ---- */

const char *admin_segment_public_detail(enum admin_seg_status st, const char *why)
{
    const char *colon = strrchr(why, ':');
    if (st != ADMIN_SEG_ERROR || colon == NULL)
        return NULL;
    return colon[1] == ' ' ? colon + 2 : colon + 1; /* "shm_open(/wshub-x): Permission denied" */
}

struct admin_seg *admin_req_segment(struct admin_req *r)
{
    enum admin_seg_status st;
    char why[256] = "";
    if (r->seg != NULL)
        return r->seg;
    r->seg = admin_segment_get(&r->ctx->segs, &st, why, sizeof(why));
    if (r->seg != NULL)
        return r->seg;
    log_debug("%s %s: segment unusable: %s", r->method, r->path, why);
    const char *detail = admin_segment_public_detail(st, why);
    switch (st) {
    case ADMIN_SEG_LAYOUT:
        admin_respond_error_str(r, 503, "shared-memory layout mismatch", detail);
        break;
    case ADMIN_SEG_STOPPING:
        admin_respond_error_str(r, 503, "hub stopping", detail);
        break;
    default:
        admin_respond_error_str(r, 503, "hub not running", detail);
        break;
    }
    return NULL;
}

/* ---- query strings ---- */

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decodes application/x-www-form-urlencoded [p, end) into out. Returns 1 or -1. */
static int url_decode(const char *p, const char *end, char *out, size_t outlen)
{
    size_t o = 0;
    while (p < end) {
        int c = (unsigned char)*p++;
        if (c == '+') {
            c = ' ';
        } else if (c == '%') {
            int hi = end - p >= 2 ? hex_value(p[0]) : -1;
            int lo = end - p >= 2 ? hex_value(p[1]) : -1;
            if (hi < 0 || lo < 0)
                return -1;
            c = hi * 16 + lo;
            p += 2;
        }
        if (c == 0 || o + 1 >= outlen)
            return -1;
        out[o++] = (char)c;
    }
    out[o] = '\0';
    return 1;
}

int admin_query_get(const char *query, const char *name, char *out, size_t outlen)
{
    size_t nlen = strlen(name);
    const char *p = query;
    while (*p) {
        const char *end = strchr(p, '&');
        if (end == NULL)
            end = p + strlen(p);
        const char *eq = memchr(p, '=', (size_t)(end - p));
        const char *key_end = eq ? eq : end;
        if ((size_t)(key_end - p) == nlen && memcmp(p, name, nlen) == 0)
            return url_decode(eq ? eq + 1 : end, end, out, outlen);
        p = *end ? end + 1 : end;
    }
    return 0;
}

/* ---- routing ---- */

static int parse_request_uri(struct admin_req *r)
{
    const char *uri = admin_req_param(r, "REQUEST_URI");
    if (uri == NULL || uri[0] != '/')
        return -1;
    const char *q = strchr(uri, '?');
    size_t plen = q ? (size_t)(q - uri) : strlen(uri);
    if (plen >= sizeof(r->path))
        plen = sizeof(r->path) - 1; /* no route is that long: it will be a 404 */
    memcpy(r->path, uri, plen);
    r->path[plen] = '\0';
    r->query = q ? q + 1 : "";
    return 0;
}

/* Matches a route's path; sets r->path_rest for a prefix route. */
static int route_path_matches(const struct admin_route *rt, struct admin_req *r)
{
    if (!rt->prefix)
        return strcmp(rt->path, r->path) == 0;
    size_t n = strlen(rt->path);
    if (strncmp(rt->path, r->path, n) != 0 || r->path[n] == '\0')
        return 0;
    r->path_rest = r->path + n;
    return 1;
}

/* Finds the route for method and path. On a method mismatch returns NULL and lists the
 * methods the path does accept in allow (empty when the path is unknown). */
static const struct admin_route *route_find(struct admin_req *r, char *allow, size_t allowlen)
{
    allow[0] = '\0';
    for (size_t i = 0; i < N_ROUTES; i++) {
        const struct admin_route *rt = &admin_routes[i];
        if (!route_path_matches(rt, r))
            continue;
        if (strcmp(rt->method, r->method) == 0)
            return rt;
        if (r->head_only && strcmp(rt->method, "GET") == 0)
            return rt;
        size_t used = strlen(allow);
        snprintf(allow + used, allowlen - used, "%s%s%s", used ? ", " : "", rt->method,
                 strcmp(rt->method, "GET") == 0 ? ", HEAD" : "");
    }
    return NULL;
}

static void respond_no_route(struct admin_req *r, const char *allow)
{
    if (allow[0] == '\0') {
        struct admin_buf d = {0};
        admin_buf_json_str(&d, r->path);
        admin_respond_error(r, 404, "not found", d.failed ? NULL : d.data);
        admin_buf_free(&d);
        return;
    }
    char headers[160], detail[160];
    snprintf(headers, sizeof(headers), "Allow: %s\r\n", allow);
    snprintf(detail, sizeof(detail), "{\"allow\":\"%s\"}", allow);
    struct admin_buf b = {0};
    build_error(&b, "method not allowed");
    admin_buf_puts(&b, detail);
    admin_buf_puts(&b, "}\n");
    respond_error_buf(r, 405, headers, &b);
}

static int route_needs_auth(const struct admin_route *rt, const struct conf *c)
{
    switch (rt->auth) {
    case AUTH_TOKEN:
        return 1;
    case AUTH_METRICS:
        return !c->metrics_public;
    case AUTH_HEALTHZ:
        return !c->healthz_public;
    default:
        return 0;
    }
}

/* Routes other than broadcast take no body: one over ADMIN_BODY_MAX_OTHER is refused (413) before
 * anything else is done, and the connection is not kept (admin.c skips at most
 * ADMIN_DRAIN_MAX unread bytes). A Content-Length that is not a number is a 400. */
static int body_too_large(struct admin_req *r)
{
    const char *cl = admin_req_param(r, "CONTENT_LENGTH");
    uint64_t v = 0;
    if (cl == NULL || cl[0] == '\0')
        return 0;
    for (const char *p = cl; *p; p++) {
        if (*p < '0' || *p > '9') {
            admin_respond_error(r, 400, "invalid Content-Length", NULL);
            return 1;
        }
        if (v <= ADMIN_BODY_MAX_OTHER)
            v = v * 10 + (uint64_t)(*p - '0');
    }
    if (v <= ADMIN_BODY_MAX_OTHER)
        return 0;
    admin_respond_error(r, 413, "request body too large", NULL);
    return 1;
}

static void release_buffers(struct admin_thread *thr)
{
    if (thr->out.cap > ADMIN_KEEP_BUF)
        admin_buf_free(&thr->out);
    if (thr->body.cap > ADMIN_KEEP_BUF + 64 * 1024)
        admin_buf_free(&thr->body);
    admin_buf_reset(&thr->out);
    admin_buf_reset(&thr->body);
}

void admin_http_serve(struct admin_thread *thr)
{
    struct admin_req r = {
        .thr = thr, .ctx = thr->ctx, .fcgi = &thr->fcgi, .query = "", .path_rest = ""};
    char allow[64];
    const char *method = admin_req_param(&r, "REQUEST_METHOD");
    r.method = method ? method : "";
    r.head_only = strcmp(r.method, "HEAD") == 0; /* no body on any answer to HEAD */
    if (parse_request_uri(&r) < 0) {
        admin_respond_error(&r, 400, "missing or malformed REQUEST_URI", NULL);
        goto out;
    }
    const struct admin_route *rt = route_find(&r, allow, sizeof(allow));
    if (rt == NULL) {
        respond_no_route(&r, allow);
        goto out;
    }
    if (route_needs_auth(rt, &r.ctx->conf) && !admin_auth_check(&r))
        goto out;
    if (rt->handler != admin_handle_broadcast && body_too_large(&r))
        goto out;
    if (rt->csrf && !admin_csrf_check(&r))
        goto out;
    rt->handler(&r);
    if (!r.responded) {
        log_error(0, "handler for %s %s sent no response", r.method, r.path);
        admin_respond_error(&r, 500, "internal error", NULL);
    }
out:
    admin_segment_put(r.seg);
    release_buffers(thr);
}
