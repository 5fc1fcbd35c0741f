/* worker_auth_token.c -- where a handshake's token comes from.
 *
 * Three places, tried in this order, the first that has one wins:
 *   1. Authorization: Bearer <token>  (scheme case-insensitive; other schemes are ignored, so a
 *      proxy's Basic credentials do not hide a token in the query)
 *   2. ?token=<token>                 (browsers cannot set headers on a WebSocket)
 *   3. the cookie named by jwt_cookie
 * A token is copied only into the caller's buffer and never logged: the caller logs where it
 * came from (worker_token_source_name), not what it was. lws joins repeated headers with ',',
 * which no token contains, so "Authorization" sent twice simply fails verification.
 *
 * ?token= is read fragment by fragment from lws's URI arguments: lws_get_urlarg_by_name() stops
 * at the first argument longer than its buffer, which would let a long dummy argument hide the
 * token and turn a refusal into a "missing token".
 */
#include "worker_auth.h"

#include <string.h>
#include <strings.h>

/* Copies value[0..n) into out; WORKER_TOKEN_TOO_LONG when it does not fit. */
static enum worker_token_source token_copy(const char *value, size_t n,
                                           enum worker_token_source src, char *out, size_t outlen)
{
    while (n > 0 && (value[n - 1] == ' ' || value[n - 1] == '\t'))
        n--;
    if (n >= outlen || n > WORKER_TOKEN_MAX)
        return WORKER_TOKEN_TOO_LONG;
    memcpy(out, value, n);
    out[n] = '\0';
    return n > 0 ? src : WORKER_TOKEN_NONE;
}

static enum worker_token_source token_from_header(struct lws *wsi, char *out, size_t outlen)
{
    char buf[WORKER_TOKEN_MAX + 64];
    int total = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_AUTHORIZATION);
    if (total <= 0)
        return WORKER_TOKEN_NONE;
    if (total >= (int)sizeof(buf) ||
        lws_hdr_copy(wsi, buf, sizeof(buf), WSI_TOKEN_HTTP_AUTHORIZATION) < 0)
        return WORKER_TOKEN_TOO_LONG;
    if (strncasecmp(buf, "Bearer ", 7) != 0)
        return WORKER_TOKEN_NONE; /* another scheme: not ours */
    const char *p = buf + 7;
    while (*p == ' ')
        p++;
    return token_copy(p, strlen(p), WORKER_TOKEN_HEADER, out, outlen);
}

static enum worker_token_source token_from_query(struct lws *wsi, char *out, size_t outlen)
{
    char buf[WORKER_TOKEN_MAX + 16];
    for (int n = 0;; n++) {
        int len = lws_hdr_fragment_length(wsi, WSI_TOKEN_HTTP_URI_ARGS, n);
        if (len <= 0)
            return WORKER_TOKEN_NONE;
        if (len >= (int)sizeof(buf))
            return WORKER_TOKEN_TOO_LONG; /* cannot look inside: refuse rather than skip it */
        if (lws_hdr_copy_fragment(wsi, buf, sizeof(buf), WSI_TOKEN_HTTP_URI_ARGS, n) < 0)
            return WORKER_TOKEN_NONE;
        if (strncmp(buf, "token=", 6) == 0)
            return token_copy(buf + 6, strlen(buf + 6), WORKER_TOKEN_QUERY, out, outlen);
    }
}

/* Finds "name=value" in a Cookie header ("a=1; b=2"). */
static enum worker_token_source token_from_cookie(struct worker *w, struct lws *wsi, char *out,
                                                  size_t outlen)
{
    char buf[WORKER_TOKEN_MAX * 2];
    const char *name = w->conf.jwt_cookie;
    size_t nlen = strlen(name);
    int total = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_COOKIE);
    if (nlen == 0 || total <= 0)
        return WORKER_TOKEN_NONE;
    if (total >= (int)sizeof(buf) || lws_hdr_copy(wsi, buf, sizeof(buf), WSI_TOKEN_HTTP_COOKIE) < 0)
        return WORKER_TOKEN_TOO_LONG;
    for (char *p = buf; *p;) {
        while (*p == ' ' || *p == ';')
            p++;
        size_t n = strcspn(p, ";");
        if (n > nlen && strncmp(p, name, nlen) == 0 && p[nlen] == '=') {
            const char *v = p + nlen + 1;
            size_t vlen = n - nlen - 1;
            if (vlen >= 2 && v[0] == '"' && v[vlen - 1] == '"') {
                v++;
                vlen -= 2;
            }
            return token_copy(v, vlen, WORKER_TOKEN_COOKIE, out, outlen);
        }
        p += n;
    }
    return WORKER_TOKEN_NONE;
}

enum worker_token_source worker_token_find(struct worker *w, struct lws *wsi, char *out,
                                           size_t outlen)
{
    enum worker_token_source s = token_from_header(wsi, out, outlen);
    if (s == WORKER_TOKEN_NONE)
        s = token_from_query(wsi, out, outlen);
    if (s == WORKER_TOKEN_NONE)
        s = token_from_cookie(w, wsi, out, outlen);
    return s;
}

const char *worker_token_source_name(enum worker_token_source s)
{
    switch (s) {
    case WORKER_TOKEN_HEADER:
        return "Authorization header";
    case WORKER_TOKEN_QUERY:
        return "token query parameter";
    case WORKER_TOKEN_COOKIE:
        return "cookie";
    case WORKER_TOKEN_TOO_LONG:
        return "oversized token";
    default:
        return "no token";
    }
}
