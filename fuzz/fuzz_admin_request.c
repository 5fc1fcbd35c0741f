/* fuzz_admin_request.c -- whole admin requests through admin_http_serve() (admin-cgi/).
 *
 * Everything wshub-admin parses from a request runs here as in production: REQUEST_URI and the
 * routing table, query parameters (channel, user, limit, offset, code), the connection id in
 * DELETE /admin/connections/{id}, CONTENT_LENGTH and CONTENT_TYPE, the bearer token, the CSRF
 * headers (Origin, Host, Sec-Fetch-*, X-CSRF-Token), the broadcast body and its UTF-8 check. No
 * part of admin-cgi is changed or stubbed: libfcgi's FCGX_Stream is a public struct whose buffer
 * refills and flushes go through two function pointers, so the request's input and output
 * streams are memory buffers here; FCGX_GetParam() reads the environment array built below.
 *
 * Set-up (first call): a real segment from shm_create() (16 rows, 256 KiB ring, 4 KiB messages),
 * unlinked at once so nothing is left in /dev/shm, marked as run by a live hub (this process),
 * with three connections in the table and a fixed CSRF key; it is installed as the admin
 * process's current mapping, exactly as admin_segment_get() leaves it. admin_token is set.
 *
 * Input, text: the method on the first line, REQUEST_URI on the second, then FastCGI params as
 * NAME=value lines up to an empty line, then the body. CONTENT_LENGTH defaults to the body's
 * length when the params do not set it and the body is not empty. Harness controls (also passed
 * on, harmlessly): FUZZ_CHUNK=n delivers the body n bytes per read, FUZZ_OUT_LIMIT=n makes the
 * web server go away after n bytes of response. FUZZ_VERBOSE=1 in the environment prints each
 * request's status, to check what a seed reaches.
 * Oracles, besides the sanitizers:
 *   - exactly one well-formed response: a Status line with a code from 200 to 599, a header
 *     block, a Content-Length equal to the body sent (0 bytes of body for HEAD);
 *   - a JSON response is valid JSON (a small validator below) and valid UTF-8;
 *   - never 500 "internal error" (a handler that answered nothing);
 *   - any 2xx outside the public routes (the page shell, /metrics, /healthz) carried the admin
 *     token; a 2xx POST or DELETE from a browser (Origin or Sec-Fetch-*) carried the CSRF token;
 *   - a broadcast answered 202 added messages to the ring (one per target), each the body's
 *     bytes, with a well-formed channel (or "@user"), valid UTF-8 unless sent as
 *     application/octet-stream; any other answer added nothing.
 */
#include <errno.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "admin.h"
#include "conntab.h"
#include "fuzz.h"
#include "log.h"
#include "ring.h"

#define FUZZ_TOKEN      "fuzz-admin-token-0123456789abcdef"
#define FUZZ_CSRF_TOKEN "0123456789abcdef0fedcba987654321"
#define FUZZ_ROWS       16
#define FUZZ_MAX_MSG    4096
#define MAX_PARAMS      64
#define OUT_BUF         512 /* small, so responses cross several flushes */
#define CHANNEL_CHARS   "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-"

static struct admin_ctx ctx;
static struct admin_thread thr;
static struct shm *seg; /* the segment's mapping, owned by ctx.segs.cur */

/* ---- set-up ---- */

static void fuzz_claim(const struct sockaddr *sa, unsigned worker, const char *user,
                       const char *channel)
{
    (void)channel; /* rows list channels by index since layout 4 (worker_channels.c) */
    FUZZ_CHECK(conntab_claim(seg, worker, 1, sa, user) != CONNTAB_NONE, "conntab_claim");
}

static void fuzz_admin_init(void)
{
    char err[256] = "";
    log_set_role("fuzz", -1);
    log_set_level(LOG_LEVEL_ERROR);
    conf_defaults(&ctx.conf);
    snprintf(ctx.conf.instance, sizeof(ctx.conf.instance), "fuzz-admin-%d", (int)getpid());
    snprintf(ctx.conf.admin_token, sizeof(ctx.conf.admin_token), "%s", FUZZ_TOKEN);
    ctx.conf.max_message = FUZZ_MAX_MSG;
    FUZZ_CHECK(admin_segments_init(&ctx.segs, ctx.conf.instance) == 0, "admin_segments_init");
    FUZZ_CHECK(admin_auth_init(&ctx.conf) == 0, "admin_auth_init");

    struct admin_seg *as = calloc(1, sizeof(*as));
    struct shm_params p = {
        .conn_capacity = FUZZ_ROWS, .ring_capacity = 256 * 1024, .max_payload = FUZZ_MAX_MSG};
    FUZZ_CHECK(as != NULL, "calloc");
    FUZZ_CHECK(shm_create(&as->shm, ctx.segs.name, &p, 0600, err, sizeof(err)) == 0,
               "shm_create(%s): %s", ctx.segs.name, err);
    shm_unlink(ctx.segs.name); /* the mapping stays; nothing to clean up after a crash */
    seg = &as->shm;
    struct shm_header *h = seg->hdr;
    atomic_store(&h->admin_csrf_key[0], 0x0123456789abcdefULL);
    atomic_store(&h->admin_csrf_key[1], 0x0fedcba987654321ULL);
    atomic_store(&h->hub_pid, (int32_t)getpid());
    atomic_store(&h->hub_state, SHM_HUB_RUNNING);

    struct sockaddr_in v4 = {.sin_family = AF_INET, .sin_port = htons(40000)};
    struct sockaddr_in6 v6 = {.sin6_family = AF_INET6, .sin6_port = htons(40001)};
    v4.sin_addr.s_addr = htonl(0x7f000001);
    v6.sin6_addr.s6_addr[15] = 1;
    fuzz_claim((struct sockaddr *)&v4, 0, "alice", "");
    fuzz_claim((struct sockaddr *)&v6, 1, "bob", "news");
    fuzz_claim(NULL, 0, "caf\xc3\xa9 \"q\"\\", "sport:eu");

    as->epoch = h->epoch;
    atomic_init(&as->refs, 1);
    ctx.segs.cur = as;
    thr.ctx = &ctx;
    thr.fcgi.ipcFd = -1;
}

/* Per input: a fresh heartbeat, no kick left over from the previous input. */
static void fuzz_admin_reset(void)
{
    atomic_store(&seg->hdr->hub_heartbeat_ms, shm_now_ms());
    for (uint32_t i = 0; i < FUZZ_ROWS; i++)
        atomic_store(&shm_conn(seg, i)->kick_code, 0);
}

/* ---- memory streams ---- */

struct mem_in {
    const uint8_t *p;
    size_t n, off, chunk;
};

static void mem_in_fill(FCGX_Stream *st)
{
    struct mem_in *m = st->data;
    if (m->off >= m->n) {
        st->isClosed = 1;
        return;
    }
    size_t k = m->n - m->off < m->chunk ? m->n - m->off : m->chunk;
    st->rdNext = (unsigned char *)(uintptr_t)(m->p + m->off);
    st->stop = st->rdNext + k;
    st->stopUnget = st->rdNext;
    m->off += k;
}

struct mem_out {
    unsigned char buf[OUT_BUF];
    struct admin_buf got;
    size_t limit; /* the web server hangs up after this many bytes */
};

static void mem_out_empty(FCGX_Stream *st, int do_close)
{
    struct mem_out *m = st->data;
    size_t n = (size_t)(st->wrNext - m->buf);
    (void)do_close;
    if (m->got.len + n > m->limit) {
        n = m->limit - m->got.len;
        st->isClosed = 1;
        st->FCGI_errno = EPIPE;
    }
    admin_buf_append(&m->got, m->buf, n);
    st->wrNext = m->buf;
    st->stop = st->isClosed ? m->buf : m->buf + sizeof(m->buf);
}

/* ---- a small JSON validator (RFC 8259) ---- */

struct json {
    const char *p, *end;
    int depth;
};

static void json_ws(struct json *j)
{
    while (j->p < j->end && strchr(" \t\r\n", *j->p) && *j->p)
        j->p++;
}

static int json_lit(struct json *j, const char *w)
{
    size_t n = strlen(w);
    if ((size_t)(j->end - j->p) < n || memcmp(j->p, w, n) != 0)
        return 0;
    j->p += n;
    return 1;
}

static int json_string(struct json *j)
{
    if (!json_lit(j, "\""))
        return 0;
    while (j->p < j->end) {
        unsigned char c = (unsigned char)*j->p++;
        if (c == '"')
            return 1;
        if (c < 0x20)
            return 0;
        if (c != '\\')
            continue;
        if (j->p >= j->end)
            return 0;
        c = (unsigned char)*j->p++;
        if (c == 'u') {
            for (int i = 0; i < 4; i++, j->p++)
                if (j->p >= j->end || !strchr("0123456789abcdefABCDEF", *j->p) || !*j->p)
                    return 0;
        } else if (!strchr("\"\\/bfnrt", c) || c == 0) {
            return 0;
        }
    }
    return 0;
}

static int json_digits(struct json *j)
{
    const char *s = j->p;
    while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
        j->p++;
    return j->p > s;
}

static int json_number(struct json *j)
{
    json_lit(j, "-");
    if (json_lit(j, "0")) {
        /* no leading zeros */
    } else if (!json_digits(j)) {
        return 0;
    }
    if (json_lit(j, ".") && !json_digits(j))
        return 0;
    if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
        j->p++;
        if (!json_lit(j, "+"))
            json_lit(j, "-");
        return json_digits(j);
    }
    return 1;
}

static int json_value(struct json *j);

static int json_members(struct json *j, char close, int keyed)
{
    json_ws(j);
    if (j->p < j->end && *j->p == close) {
        j->p++;
        return 1;
    }
    for (;;) {
        json_ws(j);
        if (keyed) {
            if (!json_string(j))
                return 0;
            json_ws(j);
            if (!json_lit(j, ":"))
                return 0;
        }
        if (!json_value(j))
            return 0;
        json_ws(j);
        if (j->p < j->end && *j->p == close) {
            j->p++;
            return 1;
        }
        if (!json_lit(j, ","))
            return 0;
    }
}

static int json_value(struct json *j)
{
    int ok;
    json_ws(j);
    if (j->p >= j->end || ++j->depth > 64)
        return 0;
    switch (*j->p) {
    case '{':
        j->p++;
        ok = json_members(j, '}', 1);
        break;
    case '[':
        j->p++;
        ok = json_members(j, ']', 0);
        break;
    case '"':
        ok = json_string(j);
        break;
    case 't':
        ok = json_lit(j, "true");
        break;
    case 'f':
        ok = json_lit(j, "false");
        break;
    case 'n':
        ok = json_lit(j, "null");
        break;
    default:
        ok = json_number(j);
        break;
    }
    j->depth--;
    return ok;
}

static int json_valid(const char *p, size_t n)
{
    struct json j = {p, p + n, 0};
    if (!json_value(&j))
        return 0;
    json_ws(&j);
    return j.p == j.end;
}

/* ---- the request ---- */

struct request {
    char *text;                 /* the input with its lines cut in place */
    char *envp[MAX_PARAMS + 2]; /* method, URI and params as NAME=value, NULL-terminated */
    char method_env[80], uri_env[4200], cl_env[40];
    const char *method, *uri;
    const uint8_t *body;
    size_t body_len, chunk, out_limit;
};

/* Cuts the input into the request. */
static void request_parse(struct request *rq, const uint8_t *data, size_t size)
{
    int n = 0, has_cl = 0;
    char *p = rq->text = malloc(size + 1);
    FUZZ_CHECK(p != NULL, "malloc");
    memcpy(p, data, size);
    p[size] = '\0';
    char *end = p + size;
    char *lines[2] = {"", ""};
    for (int k = 0; k < 2 && p < end; k++) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        lines[k] = p;
        p = nl ? nl + 1 : end;
        if (nl)
            *nl = '\0';
    }
    rq->method = lines[0];
    rq->uri = lines[1];
    snprintf(rq->method_env, sizeof(rq->method_env), "REQUEST_METHOD=%s", rq->method);
    snprintf(rq->uri_env, sizeof(rq->uri_env), "REQUEST_URI=%s", rq->uri);
    rq->envp[n++] = rq->method_env;
    rq->envp[n++] = rq->uri_env;
    rq->chunk = 1 << 20;
    rq->out_limit = SIZE_MAX;
    while (p < end) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *line = p;
        p = nl ? nl + 1 : end;
        if (nl)
            *nl = '\0';
        if (line[0] == '\0')
            break;
        if (strncmp(line, "CONTENT_LENGTH=", 15) == 0)
            has_cl = 1;
        if (strncmp(line, "FUZZ_CHUNK=", 11) == 0)
            rq->chunk = (size_t)strtoul(line + 11, NULL, 10) % 65536 + 1;
        if (strncmp(line, "FUZZ_OUT_LIMIT=", 15) == 0)
            rq->out_limit = (size_t)strtoul(line + 15, NULL, 10);
        if (n < MAX_PARAMS)
            rq->envp[n++] = line;
    }
    rq->body = (const uint8_t *)data + (p - rq->text);
    rq->body_len = (size_t)(end - p);
    if (!has_cl && rq->body_len > 0) {
        snprintf(rq->cl_env, sizeof(rq->cl_env), "CONTENT_LENGTH=%zu", rq->body_len);
        rq->envp[n++] = rq->cl_env;
    }
    rq->envp[n] = NULL;
}

static const char *param(const struct request *rq, const char *name)
{
    return FCGX_GetParam(name, (char **)rq->envp);
}

/* Length of the path part of the URI (up to '?'). */
static size_t uri_path_len(const char *uri)
{
    return strcspn(uri, "?");
}

static int path_is(const char *uri, const char *path)
{
    return uri_path_len(uri) == strlen(path) && strncmp(uri, path, strlen(path)) == 0;
}

static int is_public_route(const char *uri)
{
    return path_is(uri, "/admin/") || path_is(uri, "/admin/page.js") ||
           path_is(uri, "/admin/page.css") || path_is(uri, "/metrics") || path_is(uri, "/healthz");
}

/* The header value of `name` in the response head[0..n), or NULL. */
static const char *resp_header(const char *head, const char *name, char *out, size_t outlen)
{
    size_t nl = strlen(name);
    for (const char *p = head; p && *p; p = strstr(p, "\r\n") ? strstr(p, "\r\n") + 2 : NULL) {
        if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1 + (p[nl + 1] == ' ');
            size_t vl = strcspn(v, "\r");
            snprintf(out, outlen, "%.*s", (int)vl, v);
            return out;
        }
        if (strncmp(p, "\r\n", 2) == 0)
            break;
    }
    return NULL;
}

static int bearer_ok(const char *h)
{
    if (h == NULL || strncasecmp(h, "Bearer ", 7) != 0)
        return 0;
    h += 7;
    while (*h == ' ')
        h++;
    size_t n = strlen(FUZZ_TOKEN);
    return strncmp(h, FUZZ_TOKEN, n) == 0 && h[n + strspn(h + n, " \t")] == '\0';
}

/* Checks the response in out[0..len); returns the status. */
static int check_response(const struct request *rq, const char *out, size_t len)
{
    char v[256];
    int status = 0;
    FUZZ_CHECK(len > 12 && sscanf(out, "Status: %3d ", &status) == 1 && status >= 200 &&
                   status <= 599,
               "no status line: '%.*s'", (int)(len < 80 ? len : 80), out);
    const char *sep = memmem(out, len, "\r\n\r\n", 4);
    FUZZ_CHECK(sep != NULL, "no end of headers");
    size_t head_len = (size_t)(sep - out) + 4, body_len = len - head_len;
    char *head = fuzz_strndup((const uint8_t *)out, head_len);
    FUZZ_CHECK(resp_header(head, "Content-Length", v, sizeof(v)) != NULL, "no Content-Length");
    size_t cl = (size_t)strtoull(v, NULL, 10);
    int head_only = strcmp(rq->method, "HEAD") == 0;
    FUZZ_CHECK(body_len == (head_only ? 0 : cl), "Content-Length %zu, body %zu bytes (%s)", cl,
               body_len, rq->method);
    FUZZ_CHECK(resp_header(head, "Content-Type", v, sizeof(v)) != NULL, "no Content-Type");
    if (!head_only && strncmp(v, "application/json", 16) == 0) {
        size_t bad;
        FUZZ_CHECK(fuzz_utf8_valid((const uint8_t *)sep + 4, body_len, &bad),
                   "JSON answer not UTF-8 at %zu", bad);
        FUZZ_CHECK(json_valid(sep + 4, body_len), "invalid JSON (status %d): %.*s", status,
                   (int)body_len, sep + 4);
        FUZZ_CHECK(!(status == 500 && memmem(sep + 4, body_len, "internal error", 14)),
                   "a handler sent no response: %s %s", rq->method, rq->uri);
    }
    free(head);
    return status;
}

/* Security and broadcast oracles (see the top of the file). */
static void check_effects(const struct request *rq, int status, struct ring_cursor *before)
{
    int ok = status >= 200 && status < 300;
    int state_changing = strcmp(rq->method, "POST") == 0 || strcmp(rq->method, "DELETE") == 0;
    int browser = param(rq, "HTTP_ORIGIN") || param(rq, "HTTP_SEC_FETCH_SITE") ||
                  param(rq, "HTTP_SEC_FETCH_MODE");
    if (ok && !is_public_route(rq->uri))
        FUZZ_CHECK(bearer_ok(param(rq, "HTTP_AUTHORIZATION")), "%d for %s %s without the token",
                   status, rq->method, rq->uri);
    if (ok && state_changing && browser) {
        const char *t = param(rq, "HTTP_X_CSRF_TOKEN");
        FUZZ_CHECK(t && strcmp(t, FUZZ_CSRF_TOKEN) == 0, "%d for a browser's %s %s without CSRF",
                   status, rq->method, rq->uri);
    }
    uint64_t added = ring_next_seq(seg) - before->seq;
    int is_broadcast = status == 202 && path_is(rq->uri, "/admin/broadcast");
    FUZZ_CHECK(is_broadcast ? added >= 1 : added == 0, "%llu messages added by a %d to %s %s",
               (unsigned long long)added, status, rq->method, rq->uri);
    size_t cl = is_broadcast ? (size_t)strtoull(param(rq, "CONTENT_LENGTH"), NULL, 10) : 0;
    for (uint64_t k = 0; k < added; k++) {
        struct ring_msg m;
        static uint8_t buf[FUZZ_MAX_MSG];
        size_t bad;
        FUZZ_CHECK(ring_read(seg, before, &m, buf, sizeof(buf)) == RING_OK,
                   "accepted broadcast %llu of %llu is not in the ring", (unsigned long long)k,
                   (unsigned long long)added);
        FUZZ_CHECK(m.payload_len == cl && cl <= rq->body_len && memcmp(buf, rq->body, cl) == 0,
                   "ring holds %u bytes, the request's body %zu", m.payload_len, cl);
        FUZZ_CHECK(m.channel_len > 0 || added == 1, "a broadcast to all among several targets");
        /* a channel name, or "@user" for a user's connections (admin_broadcast.c) */
        int chan_ok = m.channel[0] == '@' || strspn(m.channel, CHANNEL_CHARS) == m.channel_len;
        for (size_t i = 0; i < m.channel_len; i++)
            chan_ok &= (unsigned char)m.channel[i] > 0x20 && m.channel[i] != ',';
        FUZZ_CHECK(chan_ok, "channel '%s' accepted", m.channel);
        if (!(m.flags & RING_F_BINARY))
            FUZZ_CHECK(fuzz_utf8_valid(buf, m.payload_len, &bad), "text broadcast, bad UTF-8");
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct mem_out out;
    struct request rq;
    if (seg == NULL)
        fuzz_admin_init();
    fuzz_admin_reset();
    memset(&rq, 0, sizeof(rq));
    request_parse(&rq, data, size);

    struct mem_in in = {.p = rq.body, .n = rq.body_len, .chunk = rq.chunk};
    FCGX_Stream in_st = {.isReader = 1, .fillBuffProc = mem_in_fill, .data = &in};
    admin_buf_reset(&out.got);
    out.limit = rq.out_limit;
    FCGX_Stream out_st = {.wrNext = out.buf,
                          .stop = out.buf + sizeof(out.buf),
                          .emptyBuffProc = mem_out_empty,
                          .data = &out};
    in_st.rdNext = in_st.stop = in_st.stopUnget = NULL;
    thr.fcgi.envp = rq.envp;
    thr.fcgi.in = &in_st;
    thr.fcgi.out = &out_st;

    struct ring_cursor before;
    ring_cursor_at_tail(seg, &before);
    admin_http_serve(&thr);
    if (!out_st.isClosed)
        mem_out_empty(&out_st, 1);
    if (out.limit == SIZE_MAX) {
        int status = check_response(&rq, out.got.data ? out.got.data : "", out.got.len);
        if (getenv("FUZZ_VERBOSE"))
            fprintf(stderr, "%d %s %s\n", status, rq.method, rq.uri);
        check_effects(&rq, status, &before);
    }
    free(rq.text);
    return 0;
}
