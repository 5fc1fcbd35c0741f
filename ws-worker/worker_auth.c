/* worker_auth.c -- admission before the upgrade: Origin, token, per-IP and per-user limits.
 *
 * worker_handshake_check() runs in LWS_CALLBACK_HTTP_CONFIRM_UPGRADE, so every refusal is a
 * real HTTP response (403 Origin, 401 token, 429 limits) and not one byte of WebSocket is sent.
 * Order, cheapest and least revealing first: the client's address (a trusted proxy's
 * X-Forwarded-For), the Origin allowlist, the token (worker_auth_token.c finds it,
 * worker_auth_jwt.c verifies it), then the shared per-address and per-user counts
 * (worker_limits.c), which are taken last so a refused token never holds a place.
 *
 * The grant crosses from CONFIRM_UPGRADE to ESTABLISHED in `sec->pending`: lws runs both inside
 * one call (lib/roles/http/server/server.c goes from the callback straight to
 * lws_process_ws_upgrade), so one slot is enough. If the upgrade fails in between (lws refuses a
 * malformed key, say) no ESTABLISHED follows; the grant is then dropped, and its counts given
 * back, by the next handshake check or by a zero-delay timer on the next loop iteration,
 * whichever comes first. At ESTABLISHED the user id (sub) goes to the connection-table row and
 * the counts and the channels claim to the connection; CLOSED gives them back.
 *
 * Authentication is on whenever a jwt_key is configured (auth auto, the default) or required
 * (auth on: no keys is a configuration error); "auth off" turns it off explicitly. Off is loud:
 * a warning at start and the segment's security word (SHM_SEC_*), which the stats page shows in
 * red. Every refusal is counted by reason (shm_reject_reason) by the caller, and logged here
 * once, at most WORKER_REFUSAL_LOG lines a second (then a count), with the client's address and
 * why, never the token (the kid and Origin, client-supplied, are shown escaped).
 */
#include "worker_auth.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_status.h"
#include "log.h"

/* ---- refusal log ---- */

/* Copies client-supplied text for a log line: printable ASCII only, at most 80 characters. */
static void log_safe(char *out, size_t outlen, const char *in)
{
    size_t o = 0;
    for (; *in && o + 4 < outlen && o < 80; in++)
        out[o++] = (*in >= 0x20 && *in < 0x7f && *in != '"') ? *in : '?';
    out[o] = '\0';
}

void worker_auth_log_refusal(struct worker *w, const struct worker_client_addr *a, unsigned status,
                             const char *detail)
{
    struct worker_security *sec = w->sec;
    uint64_t window = shm_now_ms() / 1000;
    if (window != sec->log_window_ms) {
        if (sec->log_suppressed > 0)
            log_info("%u more handshake refusals not logged", sec->log_suppressed);
        sec->log_window_ms = window;
        sec->log_lines = sec->log_suppressed = 0;
    }
    if (sec->log_lines >= WORKER_REFUSAL_LOG) {
        sec->log_suppressed++;
        return;
    }
    sec->log_lines++;
    log_info("handshake from %s refused with %u: %s", a->text, status, detail);
}

/* ---- the grant between CONFIRM_UPGRADE and ESTABLISHED ---- */

static void pending_clear(struct worker *w, int release)
{
    struct worker_pending *p = &w->sec->pending;
    if (p->wsi == NULL)
        return;
    if (release)
        worker_limits_release(w, p->addr_key, p->user_key);
    free(p->channels);
    memset(p, 0, sizeof(*p));
    ev_timer_stop(w->loop, &w->sec->pending_timer);
}

static void pending_timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct worker *w = ev_userdata(loop);
    (void)t;
    (void)revents;
    if (w->sec->pending.wsi != NULL)
        log_debug("upgrade failed after the handshake check: its grant is given back");
    pending_clear(w, 1);
}

static int pending_set(struct worker *w, struct lws *wsi, uint64_t addr_key, uint64_t user_key,
                       const struct worker_claims *cl)
{
    struct worker_pending *p = &w->sec->pending;
    p->channels = cl->has_channels ? strdup(cl->channels) : NULL;
    if (cl->has_channels && p->channels == NULL)
        return -1;
    p->wsi = wsi;
    p->addr_key = addr_key;
    p->user_key = user_key;
    snprintf(p->user, sizeof(p->user), "%s", cl->user);
    ev_timer_set(&w->sec->pending_timer, 0., 0.);
    ev_timer_start(w->loop, &w->sec->pending_timer);
    return 0;
}

/* ---- the checks ---- */

static unsigned check_origin(struct worker *w, struct lws *wsi, const struct worker_client_addr *a,
                             enum shm_reject_reason *reason, const char **why)
{
    const struct worker_security *sec = w->sec;
    char origin[300], safe[96], detail[160];
    if (sec->norigins == 0 || sec->origin_any)
        return 0; /* no allowlist configured */
    int n = lws_hdr_total_length(wsi, WSI_TOKEN_ORIGIN);
    if (n <= 0) {
        if (strcmp(w->conf.origin_missing, "deny") != 0)
            return 0;
        *reason = SHM_REJECT_ORIGIN_MISSING;
        *why = "origin required";
        worker_auth_log_refusal(w, a, HTTP_STATUS_FORBIDDEN, "no Origin header");
        return HTTP_STATUS_FORBIDDEN;
    }
    if (n < (int)sizeof(origin) &&
        lws_hdr_copy(wsi, origin, sizeof(origin), WSI_TOKEN_ORIGIN) > 0 &&
        worker_origin_allowed(sec, origin))
        return 0;
    if (n >= (int)sizeof(origin))
        snprintf(origin, sizeof(origin), "(%d bytes)", n);
    log_safe(safe, sizeof(safe), origin);
    snprintf(detail, sizeof(detail), "origin \"%s\" not allowed", safe);
    worker_auth_log_refusal(w, a, HTTP_STATUS_FORBIDDEN, detail);
    *reason = SHM_REJECT_ORIGIN;
    *why = "origin not allowed";
    return HTTP_STATUS_FORBIDDEN;
}

/* Maps a verification failure to its counter and answer. */
static void token_refusal(enum worker_jwt_verdict v, enum worker_claims_verdict cv,
                          enum shm_reject_reason *reason, const char **why)
{
    *reason = SHM_REJECT_AUTH;
    *why = "invalid token";
    if (v == WORKER_JWT_CLAIMS && cv == WORKER_CLAIMS_EXPIRED) {
        *reason = SHM_REJECT_AUTH_EXPIRED;
        *why = "token expired";
    } else if (v == WORKER_JWT_CLAIMS && cv == WORKER_CLAIMS_NOT_YET_VALID) {
        *reason = SHM_REJECT_AUTH_EXPIRED;
        *why = "token not yet valid";
    }
}

static unsigned check_token(struct worker *w, struct lws *wsi, const struct worker_client_addr *a,
                            struct worker_claims *claims, enum shm_reject_reason *reason,
                            const char **why)
{
    char token[WORKER_TOKEN_MAX + 1], kid[WORKER_KID_MAX + 1], safe[96], detail[256];
    enum worker_claims_verdict cv = WORKER_CLAIMS_OK;
    enum worker_jwt_verdict v = WORKER_JWT_MALFORMED;
    enum worker_token_source src = worker_token_find(w, wsi, token, sizeof(token));
    kid[0] = '\0';
    if (src == WORKER_TOKEN_NONE) {
        *reason = SHM_REJECT_AUTH_MISSING;
        *why = "missing token";
        worker_auth_log_refusal(w, a, HTTP_STATUS_UNAUTHORIZED, "no token");
        return HTTP_STATUS_UNAUTHORIZED;
    }
    if (src != WORKER_TOKEN_TOO_LONG)
        v = worker_jwt_verify(w->sec, token, (int64_t)(shm_now_ms() / 1000), claims, &cv, kid,
                              sizeof(kid));
    memset(token, 0, sizeof(token));
    if (v == WORKER_JWT_OK)
        return 0;
    token_refusal(v, cv, reason, why);
    log_safe(safe, sizeof(safe), kid[0] ? kid : "-");
    snprintf(detail, sizeof(detail), "%s (%s, kid \"%s\")",
             v == WORKER_JWT_CLAIMS ? worker_claims_verdict_text(cv) : worker_jwt_verdict_text(v),
             worker_token_source_name(src), safe);
    worker_auth_log_refusal(w, a, HTTP_STATUS_UNAUTHORIZED, detail);
    return HTTP_STATUS_UNAUTHORIZED;
}

unsigned worker_handshake_check(struct worker *w, struct lws *wsi, enum shm_reject_reason *reason,
                                const char **why)
{
    struct worker_client_addr a;
    struct worker_claims claims;
    uint64_t addr_key, user_key;
    unsigned status;
    char safe[96], detail[160];

    pending_clear(w, 1); /* a grant still here belongs to an upgrade that failed */
    memset(&claims, 0, sizeof(claims));
    if (worker_client_addr(w, wsi, &a) < 0) {
        *reason = SHM_REJECT_BAD_REQUEST;
        *why = "bad X-Forwarded-For";
        worker_auth_log_refusal(w, &a, HTTP_STATUS_BAD_REQUEST, "bad X-Forwarded-For");
        return HTTP_STATUS_BAD_REQUEST;
    }
    if ((status = check_origin(w, wsi, &a, reason, why)) != 0)
        return status;
    if (w->sec->auth && (status = check_token(w, wsi, &a, &claims, reason, why)) != 0)
        return status;
    status = worker_limits_acquire(w, &a, claims.user, &addr_key, &user_key, reason, why);
    if (status != 0) {
        log_safe(safe, sizeof(safe), claims.user[0] ? claims.user : "-");
        snprintf(detail, sizeof(detail), "%s (user \"%s\")", *why, safe);
        worker_auth_log_refusal(w, &a, status, detail);
        return status;
    }
    if (pending_set(w, wsi, addr_key, user_key, &claims) < 0) {
        worker_limits_release(w, addr_key, user_key);
        *reason = SHM_REJECT_WORKER_FULL;
        *why = "out of memory";
        return HTTP_STATUS_SERVICE_UNAVAILABLE;
    }
    return 0;
}

/* ---- the connection's identity ---- */

/* The row's user id: sub itself when it fits, else a prefix cut at a character boundary, '~'
 * and 8 hex digits of a hash of the whole (so long ids stay distinct in listings). */
static void row_user(const char *sub, char *out, size_t outlen)
{
    size_t n = strlen(sub);
    if (n < outlen) {
        memcpy(out, sub, n + 1);
        return;
    }
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)sub[i]) * 16777619u;
    size_t keep = outlen - 10;
    while (keep > 0 && ((unsigned char)sub[keep] & 0xc0) == 0x80)
        keep--; /* do not split a UTF-8 sequence */
    snprintf(out, outlen, "%.*s~%08x", (int)keep, sub, h);
}

void worker_auth_established(struct worker *w, struct worker_conn *c, struct lws *wsi, char *user,
                             size_t userlen)
{
    struct worker_pending *p = &w->sec->pending;
    worker_limits_conn_start(w, c);
    if (userlen > 0)
        user[0] = '\0';
    if (p->wsi != wsi) {
        if (w->sec->auth) { /* cannot happen (see the top); if it did, no unchecked client */
            log_error(0, "a connection was upgraded without passing the handshake check: closing");
            worker_conn_schedule_close(c, c->cursor, LWS_CLOSE_STATUS_POLICY_VIOLATION,
                                       SHM_CLOSE_POLICY);
        }
        return;
    }
    c->limit_addr_key = p->addr_key;
    c->limit_user_key = p->user_key;
    c->channels = p->channels;
    p->channels = NULL; /* the connection owns it now */
    if (userlen > 0)
        row_user(p->user, user, userlen);
    pending_clear(w, 0);
}

void worker_auth_closed(struct worker *w, struct worker_conn *c)
{
    worker_limits_release(w, c->limit_addr_key, c->limit_user_key);
    c->limit_addr_key = c->limit_user_key = 0;
    free(c->channels);
    c->channels = NULL;
}

/* ---- start-up ---- */

static uint32_t security_word(const struct worker *w)
{
    const struct worker_security *sec = w->sec;
    uint32_t v = SHM_SEC_SET;
    v |= sec->auth ? SHM_SEC_AUTH : 0;
    v |= sec->auth_off ? SHM_SEC_AUTH_OFF : 0;
    v |= (sec->norigins > 0 && !sec->origin_any) ? SHM_SEC_ORIGIN : 0;
    v |= w->conf.tls_cert[0] ? SHM_SEC_TLS : 0;
    v |= w->conf.max_connections_per_ip > 0 ? SHM_SEC_LIMIT_ADDR : 0;
    v |= w->conf.max_connections_per_user > 0 ? SHM_SEC_LIMIT_USER : 0;
    return v;
}

static void log_posture(const struct worker *w)
{
    const struct worker_security *sec = w->sec;
    const struct conf *c = &w->conf;
    if (sec->auth_off)
        log_warn(0, "AUTHENTICATION IS OFF (\"auth off\" in the configuration): every client is "
                    "accepted without a token");
    else if (!sec->auth)
        log_warn(0, "AUTHENTICATION IS OFF: no jwt_key is configured, every client is accepted "
                    "without a token (configure jwt_key, or write \"auth off\" to say so)");
    else
        log_info("tokens required: %d key(s); from Authorization: Bearer, ?token=%s%s", sec->nkeys,
                 c->jwt_cookie[0] ? " or the cookie " : "", c->jwt_cookie);
    if (c->jwt_cookie[0] && sec->auth && sec->norigins == 0)
        log_warn(0, "jwt_cookie is set but allow_origin is not: any web site can open a "
                    "connection with a visitor's cookie (cross-site WebSocket hijacking)");
}

int worker_auth_init(struct worker *w)
{
    struct worker_security *sec = calloc(1, sizeof(*sec));
    const struct conf *c = &w->conf;
    if (sec == NULL) {
        log_error(0, "calloc(%zu) failed for the security state", sizeof(*sec));
        return -1;
    }
    w->sec = sec;
    sec->auth_off = strcmp(c->auth, "off") == 0;
    sec->auth = !sec->auth_off && c->jwt_keys.n > 0;
    sec->policy.issuer = c->jwt_issuer;
    sec->policy.audience = c->jwt_audience;
    sec->policy.leeway_s = c->jwt_leeway_ms / 1000;
    sec->policy.require_exp = c->jwt_require_exp;
    ev_timer_init(&sec->pending_timer, pending_timer_cb, 0., 0.);
    if (worker_jwt_keys_load(sec, c) < 0 || worker_origin_rules_load(sec, c) < 0 ||
        worker_limits_load(w) < 0 || worker_tls_check(c) < 0)
        return -1;
    atomic_store(&w->self->security, security_word(w));
    log_posture(w);
    return 0;
}
