/* worker_rfc6455.c -- strict RFC 6455 in the worker: handshake checks, and a byte filter between
 * the client sockets and libwebsockets 4.1.6 (docs/rfc6455.md: each rule, what lws does alone).
 *
 * Handshake: worker_rfc6455_confirm_upgrade() runs in LWS_CALLBACK_HTTP_CONFIRM_UPGRADE, where
 * a refusal is still a real HTTP answer: GET only (405), HTTP/1.1 (400), a Host (400), a
 * Connection header naming "upgrade" (400; lws would drop the TCP connection), a
 * Sec-WebSocket-Key of 16 bytes in canonical base64 (400; lws takes any string, or drops the
 * connection when it is missing), Sec-WebSocket-Version 13 (426 naming 13; lws upgrades any),
 * and nothing sent after the request (400: a client must wait for the 101). CONNECT never
 * reaches that callback (lws makes the socket raw, with no timeout): worker_rfc6455_raw_adopt()
 * answers it with 405.
 *
 * Frames: lws reads a client with recv() (plain) or SSL_read() (TLS, after decryption). Both
 * are defined here, in the executable, so the calls in libwebsockets.so resolve to them
 * (symbol interposition: the executable comes first in the dynamic linker's search order; ld
 * exports our definitions because libwebsockets.so references them). The real calls are
 * recvfrom(..., NULL, NULL), which is what glibc's recv() is, and OpenSSL's SSL_read() found
 * with dlsym(RTLD_NEXT). Every socket the worker adopts is registered here first
 * (worker_rfc6455_adopt); anything else (the doorbell, MSG_PEEK) passes straight through.
 *   request   bytes pass unchanged; we note where the first empty line ends, so that the
 *             upgrade check can tell whether the client sent anything after its request
 *   upgraded  bytes go through the validator (worker_rfc6455_rx.c) before lws sees them; pings
 *             are answered here, each with its own pong (lws 4.1.6 answers one of several pings
 *             that arrive together), within client_ping_rate / client_ping_burst; a broken rule
 *             ends the stream with our close frame, which lws echoes before closing TCP
 *   closed    after a close was handed on, bytes are read and dropped (RFC 6455 7.1.7)
 * Alternatives weighed: lws's callbacks see no masking bit, no ping, no control frame too long
 * for them (lws drops the TCP connection without a close frame), and 1012-1014 already turned
 * into 1002; lws has no hook for raw client bytes; a relay through a socketpair would double
 * the syscalls and descriptors per client; patching lws means carrying a fork of a system
 * library. The price of interposition: it relies on libwebsockets.so calling recv() and
 * SSL_read() through the PLT (true for Debian's build; checked at the first adoption and by
 * the upgrade check, which refuses with 500 a request the filter never saw: it fails closed).
 *
 * Reads are sized so that what lws gets always fits the buffer lws passed (144 bytes:
 * rx_buffer_size + LWS_PRE): held bytes are put back in front of what is read, and 4 bytes stay
 * free for our close frame (more of its reason fits when the read was short). Under TLS,
 * SSL_pending() reports a small remainder as 4096 so that lws reads with its full buffer, never
 * with a few bytes. A read that yields nothing for lws (only pings) reads
 * again rather than inventing an EAGAIN, so OpenSSL's error state stays the real one.
 *
 * Pongs are written with lws_write(LWS_WRITE_RAW) from inside the read, gathered per read
 * (one write for a burst), like the keepalive ping of worker_deliver.c: whole control frames
 * between whole frames. While lws holds unsent data for the client (it is not reading), at most
 * RFC_PONG_BACKLOG bytes of pongs are queued behind it; a client pinging beyond that, or beyond
 * the rate, is closed with 1008.
 *
 * When lws itself has started a close (our 1001/1012/1013, 1009 for a big message, 1007 for bad
 * UTF-8 in text, found by lws) and the client's close arrives, the read ends with EOF: lws may
 * have stopped parsing in the middle of a frame and would not recognise the client's close,
 * then wait 5 s for it.
 *
 * State: one struct rfc_conn per descriptor number, in a table sized by RLIMIT_NOFILE and
 * mapped lazily. The module's state is file-static: recv() has no other way to reach it. All
 * of it runs on the worker's one thread.
 */
#include "worker.h"
#include "worker_rfc6455.h"

#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <openssl/ssl.h>

#include "http_status.h"
#include "log.h"
#include "stats.h"

#define RFC_PONG_BUF       8192  /* pongs gathered before one write */
#define RFC_PONG_BACKLOG   65536 /* pong bytes queued behind unsent data at most */
#define RFC_PENDING_MIN    4096  /* what SSL_pending() reports for a smaller remainder */
#define RFC_DISCARD_MAX    65536 /* bytes dropped per read after a close before giving up */
#define RFC_STATUS_UPGRADE 426

enum rfc_phase {
    RFC_NONE = 0, /* not a client socket of ours (or the table could not hold it) */
    RFC_HTTP,     /* the request is being read */
    RFC_WS        /* upgraded: frames are validated */
};

/* One client socket. Zeroed at adoption. */
struct rfc_conn {
    struct lws *wsi;       /* set when the upgrade passed our checks */
    uint32_t http_seen;    /* bytes of the request read (saturating) */
    uint32_t http_end;     /* offset just past the first empty line; 0 until seen */
    uint8_t phase;         /* enum rfc_phase */
    uint8_t eol;           /* scanner: 1 after '\n', 2 after "\n\r" */
    uint16_t close_code;   /* the client's close code once its valid close was passed on */
    uint32_t pong_backlog; /* pong bytes written while lws held unsent data */
    uint64_t ping_ms;      /* monotonic ms of the last refill of the ping bucket */
    uint64_t ping_milli;   /* the bucket, in thousandths of a ping */
    struct worker_rfc6455_rx rx;
};

/* Where a read comes from. */
struct rfc_src {
    int fd;
    SSL *ssl; /* NULL: plain socket */
};

static struct {
    struct worker *w;
    struct rfc_conn *conns; /* indexed by descriptor */
    size_t nconns;
    int table_failed;
    int checked;           /* interposition verified (logged once) */
    int small_read_logged; /* see rfc_ws_read */
    int (*ssl_read)(SSL *, void *, int);
    int (*ssl_pending)(const SSL *);
    int (*ssl_get_fd)(const SSL *);
    struct rfc_conn *pong_conn; /* whose pongs are in pong[] */
    size_t pong_len;
    uint8_t pong[RFC_PONG_BUF];
} rfc;

static struct rfc_conn *rfc_lookup(int fd)
{
    if (fd < 0 || (size_t)fd >= rfc.nconns || rfc.conns[fd].phase == RFC_NONE)
        return NULL;
    return &rfc.conns[fd];
}

/* The worker's connection behind an upgraded socket, once ESTABLISHED put it on the list. */
static struct worker_conn *rfc_worker_conn(const struct rfc_conn *e)
{
    struct worker_conn *c = e->wsi ? lws_wsi_user(e->wsi) : NULL;
    return c != NULL && c->on_list ? c : NULL;
}

static uint64_t rfc_mono_ms(void)
{
    return shm_mono_ns() / 1000000u;
}

/* ---- setup ---- */

static void rfc_resolve_ssl(void)
{
    rfc.ssl_read = (int (*)(SSL *, void *, int))dlsym(RTLD_NEXT, "SSL_read");
    rfc.ssl_pending = (int (*)(const SSL *))dlsym(RTLD_NEXT, "SSL_pending");
    rfc.ssl_get_fd = (int (*)(const SSL *))dlsym(RTLD_NEXT, "SSL_get_fd");
}

/* Our recv() must be the one libwebsockets calls; logged once if it is not (every upgrade is
 * then refused with 500, see worker_rfc6455_confirm_upgrade). */
static void rfc_check_interposed(void)
{
    rfc.checked = 1;
    rfc_resolve_ssl();
    if (dlsym(RTLD_DEFAULT, "recv") != (void *)recv)
        log_error(0, "recv() is not interposed: RFC 6455 frame checks cannot run and every "
                     "upgrade will be refused (was wshub-worker linked differently?)");
}

static int rfc_table_init(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
        log_error(errno, "getrlimit(RLIMIT_NOFILE) failed");
        return -1;
    }
    size_t n =
        rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > (1u << 24) ? (1u << 24) : (size_t)rl.rlim_cur;
    void *p = mmap(NULL, n * sizeof(struct rfc_conn), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
        log_error(errno, "mmap(%zu bytes) failed for the RFC 6455 filter table",
                  n * sizeof(struct rfc_conn));
        return -1;
    }
    rfc.conns = p;
    rfc.nconns = n;
    return 0;
}

void worker_rfc6455_adopt(struct worker *w, int fd)
{
    rfc.w = w;
    if (!rfc.checked)
        rfc_check_interposed();
    if (rfc.conns == NULL && !rfc.table_failed && rfc_table_init() < 0)
        rfc.table_failed = 1;
    if (fd < 0 || (size_t)fd >= rfc.nconns)
        return; /* unregistered: its upgrade is refused with 500 */
    struct rfc_conn *e = &rfc.conns[fd];
    if (rfc.pong_conn == e) {
        rfc.pong_conn = NULL;
        rfc.pong_len = 0;
    }
    memset(e, 0, sizeof(*e));
    e->phase = RFC_HTTP;
    e->ping_ms = rfc_mono_ms();
    e->ping_milli = (uint64_t)w->conf.client_ping_burst * 1000u;
}

/* ---- reading ---- */

static ssize_t rfc_src_read(const struct rfc_src *s, void *buf, size_t len)
{
    if (s->ssl == NULL)
        return recvfrom(s->fd, buf, len, 0, NULL, NULL);
    return rfc.ssl_read(s->ssl, buf, len > INT_MAX ? INT_MAX : (int)len);
}

/* The request: notes where the first empty line ends ("\n\n" or "\n\r\n": wherever lws 4.1.6
 * can end the headers, lws_parse() in lib/roles/http/parsers.c, is one of these). */
static void rfc_http_scan(struct rfc_conn *e, const uint8_t *p, size_t n)
{
    for (size_t k = 0; k < n && e->http_end == 0; k++) {
        if (p[k] == '\n') {
            if (e->eol != 0)
                e->http_end = e->http_seen + (uint32_t)k + 1;
            e->eol = 1;
        } else {
            e->eol = (p[k] == '\r' && e->eol == 1) ? 2 : 0;
        }
    }
    e->http_seen = n > UINT32_MAX - e->http_seen ? UINT32_MAX : e->http_seen + (uint32_t)n;
}

/* After a close was handed on, or before ESTABLISHED: read and drop. */
static ssize_t rfc_discard(const struct rfc_src *src, uint8_t *buf, size_t len)
{
    for (size_t dropped = 0; dropped < RFC_DISCARD_MAX;) {
        ssize_t n = rfc_src_read(src, buf, len);
        if (n <= 0)
            return n;
        dropped += (size_t)n;
    }
    errno = EAGAIN; /* plain: lws comes back at the next POLLIN; TLS: lws gives up on it */
    return -1;
}

/* Writes the gathered pongs, unless lws is closing (nothing may follow its close frame). */
static void rfc_pong_flush(void)
{
    struct rfc_conn *e = rfc.pong_conn;
    size_t len = rfc.pong_len;
    rfc.pong_len = 0;
    struct worker_conn *c = e != NULL ? rfc_worker_conn(e) : NULL;
    if (len == 0 || c == NULL || c->lws_closing || c->peer_close_code != 0)
        return;
    if (lws_partial_buffered(e->wsi))
        e->pong_backlog += (uint32_t)len;
    else
        e->pong_backlog = 0;
    if (lws_write(e->wsi, rfc.pong, len, LWS_WRITE_RAW) < (int)len)
        log_debug("pong write failed: lws closes the connection");
}

/* The token bucket: client_ping_burst pings at once, client_ping_rate per second after. */
static int rfc_ping_allowed(struct rfc_conn *e, const struct conf *conf)
{
    if (conf->client_ping_rate == 0)
        return 1;
    uint64_t now = rfc_mono_ms(), cap = (uint64_t)conf->client_ping_burst * 1000u;
    e->ping_milli += (now - e->ping_ms) * conf->client_ping_rate;
    e->ping_ms = now;
    if (e->ping_milli > cap)
        e->ping_milli = cap;
    if (e->ping_milli < 1000)
        return 0;
    e->ping_milli -= 1000;
    return 1;
}

/* worker_rfc6455_rx_feed's ping callback: queues the pong. */
static const char *rfc_on_ping(void *arg, const uint8_t *payload, size_t len)
{
    struct rfc_conn *e = arg;
    if (!rfc_ping_allowed(e, &rfc.w->conf))
        return "ping rate exceeded";
    if (lws_partial_buffered(e->wsi) && e->pong_backlog + rfc.pong_len + 2 + len > RFC_PONG_BACKLOG)
        return "pongs not read";
    if (rfc.pong_conn != e || rfc.pong_len + 2 + len > sizeof(rfc.pong)) {
        rfc_pong_flush();
        rfc.pong_conn = e;
    }
    rfc.pong[rfc.pong_len++] = 0x8A; /* FIN + pong, unmasked */
    rfc.pong[rfc.pong_len++] = (uint8_t)len;
    memcpy(rfc.pong + rfc.pong_len, payload, len);
    rfc.pong_len += len;
    return NULL;
}

/* Upgraded: reads until there is something for lws (or the real read says there is not). */
static ssize_t rfc_ws_read(struct rfc_conn *e, const struct rfc_src *src, uint8_t *buf, size_t len)
{
    struct worker_conn *c = rfc_worker_conn(e);
    if (c == NULL || e->rx.state == WORKER_RFC6455_RX_DONE)
        return rfc_discard(src, buf, len);
    if (len <= WORKER_RFC6455_HELD_MAX + WORKER_RFC6455_SYNTH_MIN) {
        if (!rfc.small_read_logged)
            log_error(0, "lws read %zu bytes at a time: too few for the RFC 6455 filter", len);
        rfc.small_read_logged = 1;
        errno = EIO; /* lws closes the connection: nothing passes unvalidated */
        return -1;
    }
    e->rx.rsv1_ok = c->deflate; /* known since ESTABLISHED (worker_deflate.c) */
    for (;;) {
        size_t held = e->rx.held_len;
        ssize_t n = rfc_src_read(src, buf + held, len - held - WORKER_RFC6455_SYNTH_MIN);
        if (n <= 0)
            return n;
        struct worker_rfc6455_rx_result res;
        worker_rfc6455_rx_feed(&e->rx, buf, held + (size_t)n, len, rfc_on_ping, e, &res);
        rfc_pong_flush();
        if (res.event == WORKER_RFC6455_RX_FAIL) {
            log_debug("client broke RFC 6455 (%s): closing with %u", res.why, res.code);
            return (ssize_t)res.out;
        }
        if (res.event == WORKER_RFC6455_RX_CLOSE) {
            e->close_code = res.code;
            return c->lws_closing ? 0 : (ssize_t)res.out; /* see the top of this file */
        }
        if (res.out > 0)
            return (ssize_t)res.out;
    }
}

static ssize_t rfc_read(struct rfc_conn *e, const struct rfc_src *src, void *buf, size_t len)
{
    if (e->phase == RFC_WS)
        return rfc_ws_read(e, src, buf, len);
    ssize_t n = rfc_src_read(src, buf, len);
    if (n > 0)
        rfc_http_scan(e, buf, (size_t)n);
    return n;
}

/* lws's read on plain sockets (lws_ssl_capable_read_no_ssl) and every other recv() of this
 * process (the doorbell: not registered, passed through). */
ssize_t recv(int fd, void *buf, size_t len, int flags)
{
    struct rfc_conn *e = flags == 0 ? rfc_lookup(fd) : NULL;
    if (e == NULL)
        return recvfrom(fd, buf, len, flags, NULL, NULL);
    struct rfc_src src = {fd, NULL};
    return rfc_read(e, &src, buf, len);
}

/* lws's read on TLS connections (lws_ssl_capable_read): the plaintext is filtered the same. */
int SSL_read(SSL *ssl, void *buf, int num)
{
    if (rfc.ssl_read == NULL)
        rfc_resolve_ssl();
    if (rfc.ssl_read == NULL) {
        log_error(0, "dlsym(SSL_read) found no OpenSSL");
        return -1;
    }
    int fd = rfc.ssl_get_fd != NULL ? rfc.ssl_get_fd(ssl) : -1;
    struct rfc_conn *e = num > 0 ? rfc_lookup(fd) : NULL;
    if (e == NULL)
        return rfc.ssl_read(ssl, buf, num);
    struct rfc_src src = {fd, ssl};
    return (int)rfc_read(e, &src, buf, (size_t)num);
}

/* lws reads min(SSL_pending(), 144) bytes when OpenSSL holds decrypted data: a remainder of a
 * few bytes is reported as RFC_PENDING_MIN so that the filter always has lws's full buffer. */
int SSL_pending(const SSL *ssl)
{
    if (rfc.ssl_pending == NULL)
        rfc_resolve_ssl();
    if (rfc.ssl_pending == NULL)
        return 0;
    int n = rfc.ssl_pending(ssl);
    if (n > 0 && n < RFC_PENDING_MIN && rfc.ssl_get_fd != NULL) {
        struct rfc_conn *e = rfc_lookup(rfc.ssl_get_fd(ssl));
        if (e != NULL && e->phase == RFC_WS)
            return RFC_PENDING_MIN;
    }
    return n;
}

/* ---- handshake ---- */

/* A refusal: a complete HTTP/1.1 answer that closes the connection (as proto_send_status in
 * worker_proto.c, plus header lines of our own). Returns 1 for CONFIRM_UPGRADE, -1 if unsent. */
static int rfc_refuse(struct worker *w, struct lws *wsi, unsigned status, const char *headers,
                      const char *why, enum lws_write_protocol how)
{
    char buf[LWS_PRE + 512];
    char *p = buf + LWS_PRE;
    int n = snprintf(p, sizeof(buf) - LWS_PRE,
                     "HTTP/1.1 %u %s\r\n%scontent-type: text/plain\r\ncontent-length: %zu\r\n"
                     "connection: %s\r\ncache-control: no-store\r\n\r\n%s\n",
                     status, http_status_phrase((int)status), headers, strlen(why) + 1,
                     status == RFC_STATUS_UPGRADE ? "upgrade, close" : "close", why);
    stats_add(&w->stats->rejected[SHM_REJECT_BAD_REQUEST], 1);
    log_debug("handshake refused with %u: %s", status, why);
    if (n < 0 || n >= (int)(sizeof(buf) - LWS_PRE))
        return -1;
    return lws_write(wsi, (unsigned char *)p, (size_t)n, how) == n ? 1 : -1;
}

/* Copies header `tok` (without lws's length limit surprises): -1 absent or too long. */
static int rfc_hdr(struct lws *wsi, enum lws_token_indexes tok, char *out, int size)
{
    if (lws_hdr_total_length(wsi, tok) <= 0 || lws_hdr_total_length(wsi, tok) >= size)
        return -1;
    return lws_hdr_copy(wsi, out, size, tok);
}

static int rfc_b64_value(char ch)
{
    const char *digits = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const char *at = ch != '\0' ? strchr(digits, ch) : NULL;
    return at != NULL ? (int)(at - digits) : -1;
}

/* Sec-WebSocket-Key: 16 bytes in canonical base64 (22 digits, the last with 4 zero bits, and
 * "=="), RFC 6455 4.1 and 4.2.1. */
static int rfc_key_ok(const char *key)
{
    if (strlen(key) != 24 || strcmp(key + 22, "==") != 0)
        return 0;
    for (int i = 0; i < 22; i++) {
        int v = rfc_b64_value(key[i]);
        if (v < 0 || (i == 21 && (v & 0x0F) != 0))
            return 0;
    }
    return 1;
}

int worker_rfc6455_token_listed(const char *list, const char *token, int nocase)
{
    size_t len = strlen(token);
    while (*list != '\0') {
        list += strspn(list, " \t,");
        size_t n = strcspn(list, " \t,");
        if (n == len && (nocase ? strncasecmp(list, token, n) : strncmp(list, token, n)) == 0)
            return 1;
        list += n;
    }
    return 0;
}

/* The RFC 6455 4.2.1 checks lws 4.1.6 leaves out. Returns 0, or the status with *why and the
 * extra header lines in *headers. */
static unsigned rfc_handshake_check(struct lws *wsi, const char **why, const char **headers)
{
    char v[256];
    *headers = "";
    if (lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI) <= 0) {
        *headers = "allow: GET\r\n";
        *why = "a WebSocket handshake is a GET";
        return HTTP_STATUS_METHOD_NOT_ALLOWED;
    }
    if (rfc_hdr(wsi, WSI_TOKEN_HTTP, v, sizeof(v)) != 8 || strncmp(v, "HTTP/1.", 7) != 0 ||
        v[7] < '1' || v[7] > '9') {
        *why = "HTTP/1.1 required";
        return HTTP_STATUS_BAD_REQUEST;
    }
    if (rfc_hdr(wsi, WSI_TOKEN_HOST, v, sizeof(v)) <= 0) {
        *why = "Host header required";
        return HTTP_STATUS_BAD_REQUEST;
    }
    if (rfc_hdr(wsi, WSI_TOKEN_CONNECTION, v, sizeof(v)) <= 0 ||
        !worker_rfc6455_token_listed(v, "upgrade", 1)) {
        *why = "Connection: Upgrade required";
        return HTTP_STATUS_BAD_REQUEST;
    }
    if (rfc_hdr(wsi, WSI_TOKEN_KEY, v, sizeof(v)) <= 0 || !rfc_key_ok(v)) {
        *why = "invalid Sec-WebSocket-Key";
        return HTTP_STATUS_BAD_REQUEST;
    }
    if (rfc_hdr(wsi, WSI_TOKEN_VERSION, v, sizeof(v)) <= 0 || strcmp(v, "13") != 0) {
        *headers = "upgrade: websocket\r\nsec-websocket-version: 13\r\n";
        *why = "unsupported Sec-WebSocket-Version";
        return RFC_STATUS_UPGRADE;
    }
    return 0;
}

int worker_rfc6455_confirm_upgrade(struct worker *w, struct lws *wsi)
{
    struct rfc_conn *e = rfc_lookup(lws_get_socket_fd(wsi));
    const char *why, *headers;
    unsigned status = rfc_handshake_check(wsi, &why, &headers);
    if (status != 0)
        return rfc_refuse(w, wsi, status, headers, why, LWS_WRITE_HTTP);
    if (e == NULL || e->http_seen == 0) {
        log_error(0, "upgrade of a connection the RFC 6455 filter did not see: refused");
        return rfc_refuse(w, wsi, HTTP_STATUS_INTERNAL_SERVER_ERROR, "", "internal error",
                          LWS_WRITE_HTTP);
    }
    if (e->http_end != e->http_seen)
        return rfc_refuse(w, wsi, HTTP_STATUS_BAD_REQUEST, "", "data sent before the 101",
                          LWS_WRITE_HTTP);
    e->wsi = wsi;
    e->phase = RFC_WS;
    return 0;
}

int worker_rfc6455_raw_adopt(struct worker *w, struct lws *wsi)
{
    rfc_refuse(w, wsi, HTTP_STATUS_METHOD_NOT_ALLOWED, "allow: GET\r\n", "method not allowed",
               LWS_WRITE_RAW);
    return -1;
}

void worker_rfc6455_peer_close(struct lws *wsi, void *in, size_t len)
{
    struct rfc_conn *e = rfc_lookup(lws_get_socket_fd(wsi));
    uint8_t *p = in;
    if (e != NULL && e->close_code != 0 && len >= 2) {
        p[0] = (uint8_t)(e->close_code >> 8);
        p[1] = (uint8_t)e->close_code;
    }
}
