/* handshake.c -- building the upgrade request and judging the server's answer (handshake.h).
 *
 * Header matching is case-insensitive on names and on the token values the RFC makes
 * case-insensitive (websocket, upgrade); the accept value is compared exactly. The response head
 * is parsed in place from the caller's buffer: nothing here allocates.
 */
#include "handshake.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static const char handshake_guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

static void handshake_base64(const uint8_t *in, size_t len, char *out)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;

    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < len)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < len)
            v |= in[i + 2];
        out[o++] = tbl[(v >> 18) & 63];
        out[o++] = tbl[(v >> 12) & 63];
        out[o++] = i + 1 < len ? tbl[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < len ? tbl[v & 63] : '=';
    }
    out[o] = '\0';
}

void handshake_make_key(const uint8_t raw[16], char *key)
{
    handshake_base64(raw, 16, key);
}

int handshake_accept_for(const char *key, char *accept)
{
    char joined[HANDSHAKE_KEY_LEN + sizeof(handshake_guid)];
    uint8_t md[EVP_MAX_MD_SIZE];
    unsigned md_len = 0;
    int n = snprintf(joined, sizeof(joined), "%s%s", key, handshake_guid);

    if (n < 0 || (size_t)n >= sizeof(joined))
        return -1;
    if (EVP_Digest(joined, (size_t)n, md, &md_len, EVP_sha1(), NULL) != 1 || md_len != 20)
        return -1;
    handshake_base64(md, md_len, accept);
    return 0;
}

int handshake_request(char *buf, size_t cap, const char *host_header, const char *path,
                      const char *key, const char *const *headers, int n_headers)
{
    int n = snprintf(buf, cap,
                     "GET %s HTTP/1.1\r\n"
                     "Host: %s\r\n"
                     "Upgrade: websocket\r\n"
                     "Connection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\n"
                     "Sec-WebSocket-Version: 13\r\n",
                     path, host_header, key);
    if (n < 0 || (size_t)n >= cap)
        return -1;
    for (int i = 0; i < n_headers; i++) {
        int m = snprintf(buf + n, cap - (size_t)n, "%s\r\n", headers[i]);
        if (m < 0 || (size_t)m >= cap - (size_t)n)
            return -1;
        n += m;
    }
    if ((size_t)n + 3 > cap)
        return -1;
    memcpy(buf + n, "\r\n", 3);
    return n + 2;
}

/* Does the comma-separated header value [v, end) contain `token` (case-insensitive)? */
static int handshake_has_token(const char *v, const char *end, const char *token)
{
    size_t tl = strlen(token);

    while (v < end) {
        while (v < end && (*v == ' ' || *v == '\t' || *v == ','))
            v++;
        const char *s = v;
        while (v < end && *v != ',')
            v++;
        const char *e = v;
        while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        if ((size_t)(e - s) == tl && strncasecmp(s, token, tl) == 0)
            return 1;
    }
    return 0;
}

/* Value of header `name` in the head [buf, end), trimmed, or NULL. */
static const char *handshake_header(const char *buf, const char *end, const char *name,
                                    const char **vend)
{
    size_t nl = strlen(name);
    const char *line = memchr(buf, '\n', (size_t)(end - buf));

    while (line != NULL && line + 1 < end) {
        line++;
        const char *eol = memchr(line, '\n', (size_t)(end - line));
        if (eol == NULL)
            eol = end;
        if ((size_t)(eol - line) > nl && line[nl] == ':' && strncasecmp(line, name, nl) == 0) {
            const char *v = line + nl + 1, *e = eol;
            while (v < e && (*v == ' ' || *v == '\t'))
                v++;
            while (e > v && (e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t'))
                e--;
            *vend = e;
            return v;
        }
        line = eol < end ? eol : NULL;
    }
    return NULL;
}

enum handshake_result handshake_check(const char *buf, size_t len, const char *expected_accept,
                                      const char *protocol, size_t *head_len, int *status)
{
    const char *blank = memmem(buf, len, "\r\n\r\n", 4);
    const char *v, *ve;

    *status = 0;
    if (blank == NULL)
        return HANDSHAKE_INCOMPLETE;
    *head_len = (size_t)(blank - buf) + 4;
    const char *end = blank + 2; /* keep the last header's CRLF */
    if (len < 12 || memcmp(buf, "HTTP/1.", 7) != 0 || buf[8] != ' ')
        return HANDSHAKE_MALFORMED;
    if (sscanf(buf + 9, "%3d", status) != 1)
        return HANDSHAKE_MALFORMED;
    if (*status != 101 || buf[7] != '1')
        return HANDSHAKE_BAD_STATUS;
    v = handshake_header(buf, end, "Upgrade", &ve);
    if (v == NULL || !handshake_has_token(v, ve, "websocket"))
        return HANDSHAKE_BAD_UPGRADE;
    v = handshake_header(buf, end, "Connection", &ve);
    if (v == NULL || !handshake_has_token(v, ve, "upgrade"))
        return HANDSHAKE_BAD_UPGRADE;
    v = handshake_header(buf, end, "Sec-WebSocket-Accept", &ve);
    if (v == NULL || (size_t)(ve - v) != HANDSHAKE_ACCEPT_LEN ||
        memcmp(v, expected_accept, HANDSHAKE_ACCEPT_LEN) != 0)
        return HANDSHAKE_BAD_ACCEPT;
    if (protocol != NULL) {
        v = handshake_header(buf, end, "Sec-WebSocket-Protocol", &ve);
        if (v == NULL || (size_t)(ve - v) != strlen(protocol) ||
            memcmp(v, protocol, (size_t)(ve - v)) != 0)
            return HANDSHAKE_BAD_PROTOCOL;
    }
    return HANDSHAKE_OK;
}
