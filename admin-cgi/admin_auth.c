/* admin_auth.c -- who may use the admin API: the bearer token, and CSRF checks for browsers.
 *
 * Bearer token. With conf.admin_token set, every admin route but the stats page's static shell
 * (/admin/, page.js, page.css: no data in them) needs "Authorization: Bearer <token>";
 * /metrics and /healthz too unless metrics_public / healthz_public (both 1 by default). The
 * comparison runs in time that depends only on the configured token's length, never on where
 * a guess goes wrong. Missing or wrong: 401 with WWW-Authenticate: Bearer realm="wshub" (plus
 * error="invalid_token" for a wrong one, RFC 6750) and a JSON body. Apache passes the header
 * only with CGIPassAuth On; nginx always does. Without a token wshub-admin warns at start: the
 * web server's restrictions are then the only protection.
 *
 * How the stats page gets the token: its script sends the header on every fetch, with a token it
 * asks the operator for after a 401 and keeps in sessionStorage (per tab, gone when the tab
 * closes). A web server that authenticates operators itself (client certificates, SSO) can
 * instead add the header to requests it forwards: the page then never asks.
 *
 * CSRF. A browser attaches ambient credentials (basic auth, client certificates, an allowed
 * address) to requests any web page makes it send, so a state-changing request (POST, DELETE)
 * that comes from a browser must prove it came from our own page:
 *   - Sec-Fetch-Site, when present, must be "same-origin";
 *   - Origin, when present, must name the host the request was sent to (Host header);
 *   - X-CSRF-Token must equal the token: 32 hex digits of the segment's admin_csrf_key, random,
 *     set once by the first admin process (CAS from 0), so every admin process (mod_fcgid may
 *     run several) agrees and a new hub brings a new token. The page reads it from its <meta>
 *     tag and from the X-CSRF-Token header of each stats.json answer; other origins can read
 *     neither (same-origin policy), and a custom header cannot be sent cross-origin without a
 *     CORS preflight, which we never grant.
 * A request "comes from a browser" when it carries Origin or Sec-Fetch-Site/-Mode: the Fetch
 * standard sends Origin on every cross-origin POST/DELETE, and current browsers send
 * Sec-Fetch-* on every request. Other clients (curl, scripts) cannot be driven by a foreign
 * page, so the API stays usable without the CSRF token. HTML forms are not accepted as such
 * (no header, no form field): the page's script submits them with fetch(). Refusals are 403.
 */
#include "admin.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#include "log.h"

/* 1 when a[0..alen) equals want (NUL-terminated); the time taken depends on strlen(want) only. */
static int secret_equal(const char *a, size_t alen, const char *want)
{
    size_t wlen = strlen(want);
    unsigned diff = (unsigned)(alen != wlen);
    for (size_t i = 0; i < wlen; i++)
        diff |= (unsigned char)(i < alen ? a[i] : 0) ^ (unsigned char)want[i];
    return diff == 0;
}

/* RFC 6750 b64token characters: what a client can send after "Bearer ". */
static int token_char_ok(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           strchr("-._~+/=", c) != NULL;
}

int admin_auth_init(const struct conf *c)
{
    const char *t = c->admin_token;
    if (t[0] == '\0') {
        log_warn(0, "admin_token is not set: the admin API (broadcast, restart, connections) "
                    "relies on the web server's restrictions alone");
        return 0;
    }
    for (const char *p = t; *p; p++) {
        if (!token_char_ok((unsigned char)*p)) {
            log_error(0, "admin_token may only contain A-Z a-z 0-9 - . _ ~ + / =");
            return -1;
        }
    }
    if (strlen(t) < 16)
        log_warn(0, "admin_token is only %zu characters long; use 32 random bytes or more",
                 strlen(t));
    log_info("admin API requires the bearer token (metrics %s, healthz %s)",
             c->metrics_public ? "public" : "token", c->healthz_public ? "public" : "token");
    return 0;
}

static void respond_unauthorized(struct admin_req *r, int wrong)
{
    const char *hdr = wrong
                          ? "WWW-Authenticate: Bearer realm=\"wshub\", error=\"invalid_token\"\r\n"
                          : "WWW-Authenticate: Bearer realm=\"wshub\"\r\n";
    const char *body = wrong ? "{\"error\":\"unauthorized\",\"detail\":\"invalid token\"}\n"
                             : "{\"error\":\"unauthorized\",\"detail\":\"send Authorization: "
                               "Bearer <admin_token>\"}\n";
    admin_respond(r, 401, "application/json", hdr, body, strlen(body));
}

int admin_auth_check(struct admin_req *r)
{
    const char *want = r->ctx->conf.admin_token;
    if (want[0] == '\0')
        return 1;
    const char *h = admin_req_param(r, "HTTP_AUTHORIZATION");
    size_t n = 0;
    if (h != NULL && strncasecmp(h, "Bearer", 6) == 0 && (h[6] == ' ' || h[6] == '\0')) {
        for (h += 6; *h == ' ';)
            h++;
        n = strlen(h);
        while (n > 0 && (h[n - 1] == ' ' || h[n - 1] == '\t'))
            n--;
    }
    if (n == 0) { /* no header, another scheme, or "Bearer" alone */
        respond_unauthorized(r, 0);
        return 0;
    }
    if (!secret_equal(h, n, want)) {
        log_info("401 for %s %s from %s: wrong admin token", r->method, r->path,
                 admin_req_param(r, "REMOTE_ADDR") ? admin_req_param(r, "REMOTE_ADDR") : "?");
        respond_unauthorized(r, 1);
        return 0;
    }
    return 1;
}

/* ---- CSRF ---- */

/* Loads the segment's CSRF key, creating it if this is the first admin process to need it. */
static int csrf_key(struct shm *s, uint64_t key[2])
{
    for (int i = 0; i < 2; i++) {
        _Atomic uint64_t *slot = &s->hdr->admin_csrf_key[i];
        uint64_t v = atomic_load_explicit(slot, memory_order_acquire);
        while (v == 0) {
            uint64_t fresh = 0;
            if (getrandom(&fresh, sizeof(fresh), 0) != (ssize_t)sizeof(fresh)) {
                log_error(errno, "getrandom() failed for the CSRF key");
                return -1;
            }
            uint64_t expected = 0;
            if (fresh != 0 && atomic_compare_exchange_strong(slot, &expected, fresh))
                v = fresh;
            else
                v = expected; /* another process won, or fresh was 0 and we loop */
        }
        key[i] = v;
    }
    return 0;
}

int admin_csrf_token(struct shm *s, char *out, size_t outlen)
{
    uint64_t key[2];
    if (outlen < ADMIN_CSRF_TOKEN_LEN + 1 || csrf_key(s, key) < 0)
        return -1;
    snprintf(out, outlen, "%016llx%016llx", (unsigned long long)key[0], (unsigned long long)key[1]);
    return 0;
}

/* The authority part of an Origin ("https://host:port" -> "host:port"), or NULL. */
static const char *origin_authority(const char *origin, size_t *len)
{
    const char *p = strstr(origin, "://");
    if (p == NULL)
        return NULL;
    p += 3;
    size_t n = strcspn(p, "/?#");
    if (n == 0 || p[n] != '\0')
        return NULL; /* an Origin never has a path */
    *len = n;
    return p;
}

static int csrf_refuse(struct admin_req *r, const char *why)
{
    log_info("403 for %s %s: CSRF check failed: %s", r->method, r->path, why);
    admin_respond_error_str(r, 403, "csrf check failed", why);
    return 0;
}

int admin_csrf_check(struct admin_req *r)
{
    const char *origin = admin_req_param(r, "HTTP_ORIGIN");
    const char *site = admin_req_param(r, "HTTP_SEC_FETCH_SITE");
    const char *mode = admin_req_param(r, "HTTP_SEC_FETCH_MODE");
    if (origin == NULL && site == NULL && mode == NULL)
        return 1; /* not a browser: nothing a foreign page could forge */
    if (site != NULL && strcmp(site, "same-origin") != 0)
        return csrf_refuse(r, "cross-site request (Sec-Fetch-Site)");
    if (origin != NULL) {
        const char *host = admin_req_param(r, "HTTP_HOST");
        size_t n = 0;
        const char *auth = origin_authority(origin, &n);
        if (auth == NULL || host == NULL || strlen(host) != n || strncasecmp(auth, host, n) != 0)
            return csrf_refuse(r, "Origin does not match Host");
    }
    struct admin_seg *seg = admin_req_segment(r);
    if (seg == NULL)
        return 0; /* answered 503 */
    char want[ADMIN_CSRF_TOKEN_LEN + 1];
    const char *got = admin_req_param(r, "HTTP_X_CSRF_TOKEN");
    if (admin_csrf_token(&seg->shm, want, sizeof(want)) < 0) {
        admin_respond_error(r, 500, "no CSRF key", NULL);
        return 0;
    }
    if (got == NULL || !secret_equal(got, strlen(got), want))
        return csrf_refuse(r, "missing or stale X-CSRF-Token (reload the page)");
    return 1;
}
