/* ctl_fcgi.c -- one FastCGI request over a Unix stream socket, as a web server would send it.
 *
 * FastCGI 1.0 in the few records a responder request needs, every record an 8-byte header
 * (version 1, type, request id, content length, padding length) and up to 65535 bytes:
 *
 *   -> BEGIN_REQUEST {role RESPONDER, flags 0: the application closes the connection after}
 *   -> PARAMS name-value pairs ... PARAMS {}        (the CGI variables)
 *   -> STDIN body chunks ...      STDIN {}          (the request body)
 *   <- STDOUT ... STDERR ... END_REQUEST            (a CGI response: headers, blank line, body)
 *
 * Everything we send is built in one buffer and written before anything is read. That cannot
 * deadlock: wshub-admin reads the whole body before it answers (libfcgi buffers the rest), and
 * if it answers early (413 before reading a too large body) and closes, our write fails with
 * EPIPE and we go on to read the answer already queued on the socket. SIGPIPE is avoided with
 * MSG_NOSIGNAL. SO_SNDTIMEO/SO_RCVTIMEO bound every wait, so a wedged server cannot hang a
 * script that calls wshubctl.
 */
#include "ctl.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#define FCGI_VERSION_1     1
#define FCGI_BEGIN_REQUEST 1
#define FCGI_END_REQUEST   3
#define FCGI_PARAMS        4
#define FCGI_STDIN         5
#define FCGI_STDOUT        6
#define FCGI_STDERR        7
#define FCGI_RESPONDER     1
#define FCGI_HEADER_LEN    8
#define FCGI_MAX_CONTENT   65535
#define CTL_REQUEST_ID     1
#define CTL_MAX_RESPONSE   (64u << 20) /* refuse to buffer more than this */

/* A growable byte buffer; `failed` is sticky so callers check once. */
struct ctl_buf {
    unsigned char *data;
    size_t len, cap;
    int failed;
};

static void buf_put(struct ctl_buf *b, const void *p, size_t n)
{
    if (b->failed || n == 0) /* n == 0: p may be NULL, which memcpy must not get */
        return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n)
            cap *= 2;
        unsigned char *d = realloc(b->data, cap);
        if (d == NULL) {
            b->failed = 1;
            return;
        }
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

/* Appends one record (content may be empty: the end-of-stream marker). */
static void fcgi_record(struct ctl_buf *b, int type, const void *content, size_t len)
{
    static const unsigned char zeros[8];
    size_t pad = (8 - len % 8) % 8;
    unsigned char h[FCGI_HEADER_LEN] = {FCGI_VERSION_1,
                                        (unsigned char)type,
                                        CTL_REQUEST_ID >> 8,
                                        CTL_REQUEST_ID & 0xff,
                                        (unsigned char)(len >> 8),
                                        (unsigned char)(len & 0xff),
                                        (unsigned char)pad,
                                        0};
    buf_put(b, h, sizeof(h));
    buf_put(b, content, len);
    buf_put(b, zeros, pad);
}

/* Appends a stream (PARAMS or STDIN) in maximal records, then its empty terminator. */
static void fcgi_stream(struct ctl_buf *b, int type, const unsigned char *p, size_t len)
{
    while (len > 0) {
        size_t n = len > FCGI_MAX_CONTENT ? FCGI_MAX_CONTENT : len;
        fcgi_record(b, type, p, n);
        p += n;
        len -= n;
    }
    fcgi_record(b, type, NULL, 0);
}

static void fcgi_length(struct ctl_buf *b, size_t n)
{
    if (n < 128) {
        unsigned char c = (unsigned char)n;
        buf_put(b, &c, 1);
    } else {
        unsigned char c[4] = {(unsigned char)((n >> 24) | 0x80), (unsigned char)(n >> 16),
                              (unsigned char)(n >> 8), (unsigned char)n};
        buf_put(b, c, 4);
    }
}

static void fcgi_pair(struct ctl_buf *b, const char *name, const char *value)
{
    fcgi_length(b, strlen(name));
    fcgi_length(b, strlen(value));
    buf_put(b, name, strlen(name));
    buf_put(b, value, strlen(value));
}

/* "X-Name: value" -> HTTP_X_NAME=value. Returns -1 for a header without a colon. */
static int fcgi_header_pair(struct ctl_buf *b, const char *header)
{
    char name[128] = "HTTP_";
    const char *colon = strchr(header, ':');
    size_t n = colon ? (size_t)(colon - header) : 0;
    if (n == 0 || n + 6 > sizeof(name))
        return -1;
    for (size_t i = 0; i < n; i++) {
        char c = header[i];
        name[5 + i] = c == '-' ? '_' : (c >= 'a' && c <= 'z') ? (char)(c - 'a' + 'A') : c;
    }
    name[5 + n] = '\0';
    const char *value = colon + 1;
    while (*value == ' ' || *value == '\t')
        value++;
    fcgi_pair(b, name, value);
    return 0;
}

/* The CGI variables nginx's wshub snippet sends, for our request. */
static int fcgi_params(struct ctl_buf *b, const struct ctl_request *req)
{
    char path[1024], clen[32];
    const char *q = strchr(req->uri, '?');
    size_t plen = q ? (size_t)(q - req->uri) : strlen(req->uri);
    if (plen >= sizeof(path))
        return -1;
    memcpy(path, req->uri, plen);
    path[plen] = '\0';
    snprintf(clen, sizeof(clen), "%zu", req->body_len);
    struct ctl_buf p = {0};
    fcgi_pair(&p, "GATEWAY_INTERFACE", "CGI/1.1");
    fcgi_pair(&p, "SERVER_SOFTWARE", "wshubctl/" CTL_VERSION);
    fcgi_pair(&p, "SERVER_PROTOCOL", "HTTP/1.1");
    fcgi_pair(&p, "REQUEST_METHOD", req->method);
    fcgi_pair(&p, "REQUEST_URI", req->uri);
    fcgi_pair(&p, "DOCUMENT_URI", path);
    fcgi_pair(&p, "SCRIPT_NAME", path);
    fcgi_pair(&p, "QUERY_STRING", q ? q + 1 : "");
    fcgi_pair(&p, "CONTENT_LENGTH", req->body != NULL ? clen : "");
    if (req->content_type != NULL)
        fcgi_pair(&p, "CONTENT_TYPE", req->content_type);
    for (int i = 0; i < req->n_headers; i++) {
        if (fcgi_header_pair(&p, req->headers[i]) < 0) {
            free(p.data);
            return -1;
        }
    }
    fcgi_stream(b, FCGI_PARAMS, p.data, p.len);
    int failed = p.failed;
    free(p.data);
    return failed ? -1 : 0;
}

/* Connects with both timeouts set. Returns the fd or -1 (message in err). */
static int fcgi_connect(const char *path, int timeout_ms, char *err, size_t errlen)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    if (strlen(path) >= sizeof(sa.sun_path)) {
        snprintf(err, errlen, "admin socket path too long: %s", path);
        return -1;
    }
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket(AF_UNIX) failed: %s", strerror(errno));
        return -1;
    }
    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0 ||
        connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

/* Explains a failed connect() to an operator. */
static void fcgi_connect_error(const char *path, int e, char *err, size_t errlen)
{
    const char *hint = "";
    if (e == ENOENT)
        hint = " (is wshub running? the path comes from run_dir/admin_socket in the "
               "configuration, or --socket)";
    else if (e == EACCES || e == EPERM)
        hint = " (run as root or as a member of the socket's group, admin_socket_group)";
    else if (e == ECONNREFUSED)
        hint = " (nothing accepts on it: wshub is not running, or wshub-admin exited)";
    snprintf(err, errlen, "cannot connect to admin socket %s: %s%s", path, strerror(e), hint);
}

/* Writes everything; a peer that closed early (EPIPE, ECONNRESET) ends the write quietly. */
static int fcgi_send_all(int fd, const unsigned char *p, size_t len, char *err, size_t errlen)
{
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EPIPE || errno == ECONNRESET))
            return 0;
        if (n < 0) {
            snprintf(err, errlen, "send() to the admin socket failed: %s",
                     errno == EAGAIN ? "timed out" : strerror(errno));
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Reads exactly n bytes. Returns 0, or -1 (EOF or error, message in err). */
static int fcgi_read_full(int fd, unsigned char *p, size_t n, char *err, size_t errlen)
{
    while (n > 0) {
        ssize_t r = recv(fd, p, n, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            snprintf(err, errlen, "reading the answer failed: %s",
                     r == 0            ? "wshub-admin closed the connection early"
                     : errno == EAGAIN ? "timed out"
                                       : strerror(errno));
            return -1;
        }
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

/* Reads records until END_REQUEST; STDOUT and STDERR are collected. */
static int fcgi_read_records(int fd, struct ctl_buf *out, struct ctl_buf *errout, char *err,
                             size_t errlen)
{
    unsigned char h[FCGI_HEADER_LEN], content[FCGI_MAX_CONTENT + 255];
    for (;;) {
        if (fcgi_read_full(fd, h, sizeof(h), err, errlen) < 0)
            return -1;
        size_t len = ((size_t)h[4] << 8 | h[5]) + h[6];
        if (h[0] != FCGI_VERSION_1 || fcgi_read_full(fd, content, len, err, errlen) < 0) {
            if (h[0] != FCGI_VERSION_1)
                snprintf(err, errlen, "not a FastCGI answer (version byte %u)", h[0]);
            return -1;
        }
        size_t clen = (size_t)h[4] << 8 | h[5];
        if (h[1] == FCGI_END_REQUEST)
            return 0;
        if (h[1] == FCGI_STDOUT)
            buf_put(out, content, clen);
        else if (h[1] == FCGI_STDERR)
            buf_put(errout, content, clen);
        if (out->failed || errout->failed || out->len > CTL_MAX_RESPONSE) {
            snprintf(err, errlen, "answer too large or out of memory");
            return -1;
        }
    }
}

/* Splits a CGI response (headers, blank line, body) into resp. */
static int cgi_parse(struct ctl_buf *out, struct ctl_response *resp, char *err, size_t errlen)
{
    buf_put(out, "", 1); /* NUL-terminate for the string functions below */
    if (out->failed) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    char *text = (char *)out->data;
    char *end = strstr(text, "\r\n\r\n");
    size_t sep = 4;
    if (end == NULL && (end = strstr(text, "\n\n")) != NULL)
        sep = 2;
    if (end == NULL) {
        snprintf(err, errlen, "answer has no CGI header block");
        return -1;
    }
    *end = '\0';
    resp->status = 200;
    for (char *line = strtok(text, "\r\n"); line != NULL; line = strtok(NULL, "\r\n")) {
        if (strncasecmp(line, "Status:", 7) == 0)
            resp->status = atoi(line + 7);
        else if (strncasecmp(line, "Content-Type:", 13) == 0)
            snprintf(resp->content_type, sizeof(resp->content_type), "%s",
                     line + 13 + strspn(line + 13, " \t"));
    }
    resp->body_len = out->len - 1 - (size_t)(end + sep - text);
    resp->body = malloc(resp->body_len + 1);
    if (resp->body == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    memcpy(resp->body, end + sep, resp->body_len + 1);
    return 0;
}

int ctl_fcgi_request(const char *path, const struct ctl_request *req, struct ctl_response *resp,
                     int *unreachable, char *err, size_t errlen)
{
    static const unsigned char begin[8] = {0, FCGI_RESPONDER, 0, 0, 0, 0, 0, 0};
    struct ctl_buf send_buf = {0}, out = {0}, errout = {0};
    int rc = -1;

    memset(resp, 0, sizeof(*resp));
    *unreachable = 0;
    fcgi_record(&send_buf, FCGI_BEGIN_REQUEST, begin, sizeof(begin));
    if (fcgi_params(&send_buf, req) < 0) {
        snprintf(err, errlen, "request too large, or a header without ':'");
        goto out_free;
    }
    fcgi_stream(&send_buf, FCGI_STDIN, req->body, req->body != NULL ? req->body_len : 0);
    if (send_buf.failed) {
        snprintf(err, errlen, "out of memory building the request");
        goto out_free;
    }
    int fd = fcgi_connect(path, req->timeout_ms, err, errlen);
    if (fd < 0) {
        fcgi_connect_error(path, errno, err, errlen);
        *unreachable = 1;
        goto out_free;
    }
    if (fcgi_send_all(fd, send_buf.data, send_buf.len, err, errlen) == 0 &&
        fcgi_read_records(fd, &out, &errout, err, errlen) == 0 &&
        cgi_parse(&out, resp, err, errlen) == 0)
        rc = 0;
    close(fd);
    if (errout.len > 0) {
        buf_put(&errout, "", 1);
        resp->stderr_text = errout.failed ? NULL : (char *)errout.data;
        errout.data = resp->stderr_text ? NULL : errout.data;
    }
out_free:
    free(send_buf.data);
    free(out.data);
    free(errout.data);
    return rc;
}

void ctl_response_free(struct ctl_response *resp)
{
    free(resp->body);
    free(resp->stderr_text);
    memset(resp, 0, sizeof(*resp));
}
