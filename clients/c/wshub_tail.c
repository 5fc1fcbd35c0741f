/* wshub_tail.c -- wshub-tail: a minimal C client of the wshub.v1 subprotocol (docs/protocol.md).
 *
 * It prints every broadcast with its sequence number and keeps the stream going across drops,
 * resuming from the last sequence it printed. It is an example to copy from, built on the
 * libwebsockets 4.1.6 client API in the shape of lws's minimal-ws-client: one context, one
 * protocol callback, a sorted-usec timer for reconnecting, main() only sets up and services.
 *
 * Output (stdout, one line each, flushed per line so it can be piped):
 *   <seq> text <payload, bytes below 0x20, 0x7f and '\' escaped as \xNN>
 *   <seq> binary <payload in hex>
 *   # welcome <epoch> <last> <status>
 *   # gap <from|-> <to> <reason>     (also for a welcome saying expired or reset)
 *   # closed <code> <reason>; reconnecting in <ms> ms   (or "; not retrying (policy)" for 1008)
 *   # refused: HTTP <status> (<lws error>); not retrying
 * Exit status: 0 after -n messages or SIGINT/SIGTERM, 1 on a usage or setup error, 2 when the
 * server closed with 1008 (policy: retrying blindly would not help), refused the upgrade with
 * 400, 401, 403 or 404 (no retry changes those), or broke the protocol.
 *
 * Reconnecting: exponential backoff with full jitter, random(0, min(30 s, 500 ms * 2^attempt)).
 * The attempt count resets once a connection has stayed open for 5 s. A 1012 (rolling restart)
 * would call for a short fixed delay, but lws 4.1.6's client parser rewrites the close codes
 * 1012, 1013 and 1014 to 1002 before the callback sees them (lib/roles/ws/client-parser-ws.c).
 * So here 1002 from the server means "one of those", and takes the backoff path like 1013. The
 * first retry after a long stable connection is below 500 ms anyway.
 *
 * Position: the epoch and last sequence from the welcome, then each message. Duplicates (a
 * sequence not above the last one) would be a server bug; they are counted and not printed.
 */
#define _POSIX_C_SOURCE 200809L /* getopt, sigaction, clock_gettime under -std=c11 */

#include <libwebsockets.h>

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define TAIL_SUBPROTOCOL      "wshub.v1"
#define TAIL_BACKOFF_BASE_MS  500u
#define TAIL_BACKOFF_CAP_MS   30000u
#define TAIL_RESTART_DELAY_MS 1000u
#define TAIL_STABLE_MS        5000u
#define TAIL_MAX_MESSAGE      ((size_t)256 << 20) /* wshub's largest max_message */
#define TAIL_HEADER_MAX       512                 /* a header line longer than this is broken */
#define TAIL_EXIT_STOPPED     2
#define TAIL_CLOSE_RESTART    1012 /* not in lws 4.1.6's enum; its parser hides it (see above) */

static volatile sig_atomic_t tail_interrupted;

struct tail {
    struct lws_context *ctx;
    lws_sorted_usec_list_t sul; /* the (re)connect timer */
    struct lws *wsi;            /* the connection, NULL between connections */

    /* The server, from the URL (pieces point into url). */
    char url[1024];
    const char *address, *path;
    int port, tls_flags;
    char host_header[300];
    char request_path[1200]; /* path + since/epoch, kept while lws connects */

    /* Position. */
    int has_position;
    uint64_t last;
    char epoch[17];

    /* The current connection. */
    int attempting; /* a connection (attempt) is under way: tail_closed() ends it once */
    int welcomed;
    int peer_code; /* close code the server sent, 0 until one arrives */
    char peer_reason[124];
    uint64_t opened_ms;
    unsigned attempt;

    /* The message being received (a message may come in several fragments). */
    unsigned char *buf;
    size_t len, cap;
    int binary;

    long long want, received, duplicates; /* want: exit after this many messages, 0 = never */
    int closing, done, exit_code;
};

static uint64_t tail_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint32_t tail_random(struct tail *t)
{
    uint32_t r = 0;
    if (lws_get_random(t->ctx, &r, sizeof(r)) != sizeof(r))
        r = (uint32_t)rand();
    return r;
}

/* ---- parsing ---- */

/* A decimal of at most 20 digits that fits in 64 bits. Returns 0 or -1. */
static int tail_parse_seq(const char *s, uint64_t *out)
{
    size_t n = strlen(s);
    if (n == 0 || n > 20 || strspn(s, "0123456789") != n)
        return -1;
    errno = 0;
    unsigned long long v = strtoull(s, NULL, 10);
    if (errno != 0)
        return -1;
    *out = v;
    return 0;
}

static int tail_is_epoch(const char *s)
{
    return strlen(s) == 16 && strspn(s, "0123456789abcdef") == 16;
}

/* Splits a header line on spaces into at most max fields. Returns the count. */
static int tail_split(char *line, char **field, int max)
{
    int n = 0;
    for (char *p = strtok(line, " "); p != NULL && n < max; p = strtok(NULL, " "))
        field[n++] = p;
    return n;
}

/* ---- output ---- */

static void tail_print_payload(uint64_t seq, const unsigned char *p, size_t n, int binary)
{
    printf("%" PRIu64 " %s ", seq, binary ? "binary" : "text");
    for (size_t i = 0; i < n; i++) {
        if (binary)
            printf("%02x", p[i]);
        else if (p[i] < 0x20 || p[i] == 0x7f || p[i] == '\\')
            printf("\\x%02x", p[i]);
        else
            putchar(p[i]);
    }
    putchar('\n');
}

/* ---- the protocol ---- */

static int tail_on_welcome(struct tail *t, char **f, int n)
{
    uint64_t last;
    if (n < 4 || !tail_is_epoch(f[1]) || tail_parse_seq(f[2], &last) < 0)
        return -1;
    printf("# welcome %s %s %s\n", f[1], f[2], f[3]);
    if (strcmp(f[3], "expired") == 0 && t->has_position)
        printf("# gap %" PRIu64 " %" PRIu64 " expired\n", t->last + 1, last);
    else if (strcmp(f[3], "fresh") != 0 && strcmp(f[3], "resumed") != 0)
        printf("# gap - %" PRIu64 " %s\n", last, f[3]); /* reset: from another epoch */
    memcpy(t->epoch, f[1], sizeof(t->epoch));
    t->last = last;
    t->has_position = 1;
    t->welcomed = 1;
    t->opened_ms = tail_mono_ms();
    return 0;
}

static int tail_on_data(struct tail *t, const char *seq_text, const unsigned char *body, size_t n)
{
    uint64_t seq;
    if (tail_parse_seq(seq_text, &seq) < 0)
        return -1;
    if (t->closing)
        return 0; /* -n reached: the rest of this read is not ours to print */
    if (seq <= t->last) {
        t->duplicates++;
        fprintf(stderr, "wshub-tail: duplicate sequence %" PRIu64 " (last %" PRIu64 ")\n", seq,
                t->last);
        return 0;
    }
    t->last = seq;
    tail_print_payload(seq, body, n, t->binary);
    if (t->want > 0 && ++t->received >= t->want && !t->closing) {
        t->closing = 1;
        lws_callback_on_writable(t->wsi);
    }
    return 0;
}

static int tail_on_gap(struct tail *t, char **f, int n)
{
    uint64_t from, to;
    if (n < 3 || tail_parse_seq(f[1], &from) < 0 || tail_parse_seq(f[2], &to) < 0)
        return -1;
    printf("# gap %s %s %s\n", f[1], f[2], n > 3 ? f[3] : "unknown");
    if (to > t->last)
        t->last = to;
    return 0;
}

/* One whole message in t->buf: "<header>\n<body>". Returns 0, or -1 on a protocol error. */
static int tail_on_message(struct tail *t)
{
    char line[TAIL_HEADER_MAX + 1], *f[8];
    const unsigned char *nl = memchr(t->buf, '\n', t->len);
    size_t hlen = nl != NULL ? (size_t)(nl - t->buf) : t->len;
    if (hlen > TAIL_HEADER_MAX)
        return -1;
    memcpy(line, t->buf, hlen);
    line[hlen] = '\0';
    const unsigned char *body = nl != NULL ? nl + 1 : t->buf + t->len;
    size_t blen = (size_t)(t->buf + t->len - body);
    int n = tail_split(line, f, 8);
    if (n == 0)
        return -1;
    if (!t->welcomed)
        return strcmp(f[0], "w") == 0 ? tail_on_welcome(t, f, n) : -1;
    if (strcmp(f[0], "m") == 0)
        return n >= 2 ? tail_on_data(t, f[1], body, blen) : -1;
    if (strcmp(f[0], "g") == 0)
        return tail_on_gap(t, f, n);
    return 0; /* a message type from a later version */
}

/* Appends one fragment. Returns 0, or -1 when the message would be too large. */
static int tail_append(struct tail *t, const void *in, size_t len)
{
    if (t->len + len > TAIL_MAX_MESSAGE)
        return -1;
    if (t->len + len > t->cap) {
        size_t cap = t->cap ? t->cap : 4096;
        while (cap < t->len + len)
            cap *= 2;
        unsigned char *p = realloc(t->buf, cap);
        if (p == NULL) {
            fprintf(stderr, "wshub-tail: realloc(%zu) failed: %s\n", cap, strerror(errno));
            return -1;
        }
        t->buf = p;
        t->cap = cap;
    }
    memcpy(t->buf + t->len, in, len);
    t->len += len;
    return 0;
}

/* ---- connecting ---- */

static void tail_connect(lws_sorted_usec_list_t *sul);

/* The connection is over: stop (1008, or finished) or schedule the next attempt. */
static void tail_closed(struct tail *t, int code, const char *reason)
{
    if (!t->attempting)
        return;
    t->attempting = 0;
    t->wsi = NULL;
    if (t->welcomed && tail_mono_ms() - t->opened_ms >= TAIL_STABLE_MS)
        t->attempt = 0;
    t->welcomed = 0;
    if (t->done)
        return;
    if (t->closing || tail_interrupted) {
        t->done = 1;
        return;
    }
    if (code == LWS_CLOSE_STATUS_POLICY_VIOLATION) {
        printf("# closed %d %s; not retrying (policy)\n", code, reason);
        t->exit_code = TAIL_EXIT_STOPPED;
        t->done = 1;
        return;
    }
    uint32_t ceiling = TAIL_BACKOFF_CAP_MS;
    if (t->attempt < 16 && (TAIL_BACKOFF_BASE_MS << t->attempt) < ceiling)
        ceiling = TAIL_BACKOFF_BASE_MS << t->attempt;
    uint32_t delay = code == TAIL_CLOSE_RESTART ? tail_random(t) % TAIL_RESTART_DELAY_MS
                                                : tail_random(t) % (ceiling + 1);
    if (code != TAIL_CLOSE_RESTART)
        t->attempt++;
    printf("# closed %d %s; reconnecting in %u ms\n", code, reason, (unsigned)delay);
    lws_sul_schedule(t->ctx, 0, &t->sul, tail_connect, (lws_usec_t)delay * LWS_US_PER_MS);
}

/* The request path with the resume point: path[?|&]since=<last>&epoch=<epoch>. */
static void tail_build_path(struct tail *t)
{
    const char *sep = strchr(t->path, '?') != NULL ? "&" : "?";
    const char *slash = t->path[0] == '/' ? "" : "/";
    if (t->has_position)
        snprintf(t->request_path, sizeof(t->request_path), "%s%s%ssince=%" PRIu64 "%s%s", slash,
                 t->path, sep, t->last, t->epoch[0] ? "&epoch=" : "", t->epoch);
    else
        snprintf(t->request_path, sizeof(t->request_path), "%s%s", slash, t->path);
}

static const lws_retry_bo_t tail_keepalive = {
    .secs_since_valid_ping = 30,   /* ping a silent server after 30 s ... */
    .secs_since_valid_hangup = 70, /* ... and give up on it after 70 s */
};

static void tail_connect(lws_sorted_usec_list_t *sul)
{
    struct tail *t = lws_container_of(sul, struct tail, sul);
    struct lws_client_connect_info i;

    tail_build_path(t);
    memset(&i, 0, sizeof(i));
    i.context = t->ctx;
    i.address = t->address;
    i.port = t->port;
    i.path = t->request_path;
    i.host = t->host_header;
    i.ssl_connection = t->tls_flags;
    i.protocol = TAIL_SUBPROTOCOL;            /* Sec-WebSocket-Protocol: wshub.v1 */
    i.local_protocol_name = TAIL_SUBPROTOCOL; /* our callback below */
    i.pwsi = &t->wsi;
    i.retry_and_idle_policy = &tail_keepalive;
    i.opaque_user_data = t;
    t->peer_code = 0;
    t->len = 0;
    t->attempting = 1;
    if (lws_client_connect_via_info(&i) == NULL)
        tail_closed(t, LWS_CLOSE_STATUS_ABNORMAL_CLOSE, "connect failed");
}

/* ---- the lws callback ---- */

/* The attempt failed before the upgrade. An HTTP status that no retry can change (400: a bad
 * request, 401/403: refused credentials or origin, 404: wrong path) stops the client, as 1008
 * does; anything else (refused connection, 503 while the server is full or stopping) backs off. */
static void tail_connect_failed(struct tail *t, struct lws *wsi, const char *err)
{
    char why[200];
    unsigned status = lws_http_client_http_response(wsi);
    if (status == 400 || status == 401 || status == 403 || status == 404) {
        printf("# refused: HTTP %u (%s); not retrying\n", status, err);
        t->attempting = 0;
        t->wsi = NULL;
        t->exit_code = TAIL_EXIT_STOPPED;
        t->done = 1;
        return;
    }
    if (status != 0)
        snprintf(why, sizeof(why), "HTTP %u (%s)", status, err);
    else
        snprintf(why, sizeof(why), "%s", err);
    tail_closed(t, LWS_CLOSE_STATUS_ABNORMAL_CLOSE, why);
}

static int tail_receive(struct tail *t, struct lws *wsi, const void *in, size_t len)
{
    if (lws_is_first_fragment(wsi)) {
        t->len = 0;
        t->binary = lws_frame_is_binary(wsi);
    }
    if (tail_append(t, in, len) < 0) {
        printf("# message over %zu bytes; reconnecting\n", TAIL_MAX_MESSAGE);
        return -1;
    }
    if (!lws_is_final_fragment(wsi))
        return 0;
    if (tail_on_message(t) < 0) {
        printf("# protocol error in \"%.*s\"\n", (int)(t->len < 80 ? t->len : 80), t->buf);
        t->exit_code = TAIL_EXIT_STOPPED;
        t->done = 1;
        return -1;
    }
    t->len = 0;
    return 0;
}

static void tail_peer_close(struct tail *t, const unsigned char *in, size_t len)
{
    t->peer_code = len >= 2 ? (in[0] << 8 | in[1]) : LWS_CLOSE_STATUS_NO_STATUS;
    size_t n = len > 2 ? len - 2 : 0;
    if (n >= sizeof(t->peer_reason))
        n = sizeof(t->peer_reason) - 1;
    memcpy(t->peer_reason, in + 2, n);
    t->peer_reason[n] = '\0';
}

static int tail_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                         size_t len)
{
    struct tail *t = lws_get_opaque_user_data(wsi);
    (void)user;

    switch (reason) {
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
        if (t != NULL)
            tail_connect_failed(t, wsi, in ? (const char *)in : "error");
        return 0;
    case LWS_CALLBACK_CLIENT_RECEIVE:
        return tail_receive(t, wsi, in, len);
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        tail_peer_close(t, in, len);
        return 0;
    case LWS_CALLBACK_CLIENT_WRITEABLE:
        if (t->closing || tail_interrupted) {
            lws_close_reason(wsi, LWS_CLOSE_STATUS_NORMAL, (unsigned char *)"bye", 3);
            return -1;
        }
        return 0;
    case LWS_CALLBACK_CLIENT_CLOSED:
        if (t->peer_code != 0)
            tail_closed(t, t->peer_code, t->peer_reason);
        else
            tail_closed(t, LWS_CLOSE_STATUS_ABNORMAL_CLOSE, "connection lost");
        return 0;
    default:
        return lws_callback_http_dummy(wsi, reason, user, in, len);
    }
}

static const struct lws_protocols tail_protocols[] = {
    {TAIL_SUBPROTOCOL, tail_callback, 0, 0, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

/* ---- setup ---- */

static void tail_on_signal(int sig)
{
    (void)sig;
    tail_interrupted = 1;
}

static void tail_usage(FILE *out)
{
    fprintf(out, "usage: wshub-tail [-s SINCE -e EPOCH] [-n COUNT] [-k] [-v] URL\n"
                 "  URL       ws://host[:port]/ws or wss://...\n"
                 "  -s, -e    resume after sequence SINCE of epoch EPOCH (16 hex digits)\n"
                 "  -n COUNT  exit after COUNT messages\n"
                 "  -k        accept a self-signed TLS certificate\n"
                 "  -v        log libwebsockets warnings to stderr\n");
}

static int tail_set_url(struct tail *t, const char *url)
{
    const char *scheme;
    if (strlen(url) >= sizeof(t->url))
        return -1;
    strcpy(t->url, url);
    if (lws_parse_uri(t->url, &scheme, &t->address, &t->port, &t->path) != 0)
        return -1;
    if (strcmp(scheme, "wss") == 0 || strcmp(scheme, "https") == 0)
        t->tls_flags |= LCCSCF_USE_SSL;
    else if (strcmp(scheme, "ws") != 0 && strcmp(scheme, "http") != 0)
        return -1;
    if (t->address[0] == '\0')
        return -1;
    int default_port = t->port == ((t->tls_flags & LCCSCF_USE_SSL) ? 443 : 80);
    if (default_port)
        snprintf(t->host_header, sizeof(t->host_header), "%s", t->address);
    else
        snprintf(t->host_header, sizeof(t->host_header), "%s:%d", t->address, t->port);
    return 0;
}

static int tail_options(struct tail *t, int argc, char **argv)
{
    int c, verbose = 0;
    while ((c = getopt(argc, argv, "s:e:n:kvh")) != -1) {
        switch (c) {
        case 's':
            if (tail_parse_seq(optarg, &t->last) < 0)
                return -1;
            t->has_position = 1;
            break;
        case 'e':
            if (!tail_is_epoch(optarg))
                return -1;
            memcpy(t->epoch, optarg, sizeof(t->epoch));
            break;
        case 'n':
            t->want = atoll(optarg);
            break;
        case 'k':
            t->tls_flags |= LCCSCF_ALLOW_SELFSIGNED | LCCSCF_SKIP_SERVER_CERT_HOSTNAME_CHECK;
            break;
        case 'v':
            verbose = 1;
            break;
        default:
            return -1;
        }
    }
    lws_set_log_level(verbose ? LLL_ERR | LLL_WARN : LLL_ERR, NULL);
    if (optind != argc - 1 || (t->epoch[0] && !t->has_position))
        return -1;
    return tail_set_url(t, argv[optind]);
}

int main(int argc, char **argv)
{
    static struct tail t; /* static: zeroed, and the timer must outlive any stack frame */
    struct lws_context_creation_info info;
    struct sigaction sa;

    if (tail_options(&t, argc, argv) < 0) {
        tail_usage(stderr);
        return 1;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = tail_on_signal; /* no SA_RESTART: the signal ends lws_service's poll */
    if (sigaction(SIGINT, &sa, NULL) < 0 || sigaction(SIGTERM, &sa, NULL) < 0) {
        fprintf(stderr, "wshub-tail: sigaction() failed: %s\n", strerror(errno));
        return 1;
    }

    memset(&info, 0, sizeof(info));
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = tail_protocols;
    info.options = (t.tls_flags & LCCSCF_USE_SSL) ? LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT : 0;
    info.fd_limit_per_thread = 1 + 1 + 1;
    t.ctx = lws_create_context(&info);
    if (t.ctx == NULL) {
        fprintf(stderr, "wshub-tail: lws_create_context() failed\n");
        return 1;
    }
    t.exit_code = 0;
    lws_sul_schedule(t.ctx, 0, &t.sul, tail_connect, 1);
    while (!t.done) {
        if (tail_interrupted && !t.closing) {
            t.closing = 1;
            if (t.wsi == NULL)
                break; /* between connections: nothing to close */
            lws_callback_on_writable(t.wsi);
        }
        if (lws_service(t.ctx, 0) < 0)
            break;
    }
    lws_context_destroy(t.ctx);
    free(t.buf);
    if (t.duplicates > 0)
        fprintf(stderr, "wshub-tail: %lld duplicate messages dropped\n", t.duplicates);
    return t.exit_code;
}
