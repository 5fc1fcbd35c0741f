/* worker_auth.h -- what the admission files share (private to ws-worker/worker_auth*.c,
 * worker_limits.c and worker_tls.c; the rest of the worker sees only worker.h).
 *
 *   worker_auth.c         the seam: handshake check, ESTABLISHED, CLOSED; start-up; refusal log
 *   worker_auth_token.c   where the token comes from: Authorization, ?token=, the cookie
 *   worker_auth_jwt.c     keys by kid, each bound to one algorithm; signatures (libjwt, OpenSSL)
 *   worker_auth_origin.c  the Origin allowlist: exact origins and *.domain patterns
 *   worker_limits.c       client address (trusted proxies), per-IP / per-user counts, rate
 *   worker_claims.c       exp, nbf, iss, aud, sub, channels (pure; fuzzed)
 *   worker_tls.c          TLS on the worker's own vhost, handshake size and time limits
 *
 * Everything is built once at start from the configuration (a rolling restart re-execs the
 * workers, which is how keys, origins and certificates are reloaded) and read on the loop
 * thread only.
 */
#ifndef WSHUB_WORKER_AUTH_H
#define WSHUB_WORKER_AUTH_H

#include <stdint.h>

#include "connlimit.h"
#include "worker.h"
#include "worker_claims.h"

#define WORKER_TOKEN_MAX   4096 /* longest token accepted, bytes */
#define WORKER_KID_MAX     64
#define WORKER_ROW_USER    48 /* sizeof(shm_conn.user) */
#define WORKER_REFUSAL_LOG 20 /* refusal lines logged per second per worker, then a summary */

/* One verification key (jwt_key). */
struct worker_jwt_key {
    char kid[WORKER_KID_MAX + 1];
    char alg_name[8];   /* as the token header must spell it: "HS256" */
    int alg;            /* jwt_alg_t */
    unsigned char *key; /* HS: the secret bytes; RS, ES: the PEM text, NUL-terminated */
    int key_len;
    void *pkey; /* RS, ES: the parsed public key (EVP_PKEY *), NULL for HS */
};

/* One allow_origin entry. */
struct worker_origin_rule {
    char scheme[8];   /* "http" or "https" */
    char host[256];   /* lower case; for a pattern, the domain after "*." */
    uint16_t port;    /* explicit, or 80 / 443 */
    uint8_t wildcard; /* any subdomain (one or more labels) of host, not host itself */
    uint8_t any;      /* "*": every origin, and a missing one */
};

/* One trusted_proxy entry. */
struct worker_cidr {
    uint8_t family; /* AF_INET or AF_INET6 */
    uint8_t bits;
    uint8_t addr[16];
};

/* The client's address as far as limits and logs are concerned. */
struct worker_client_addr {
    uint8_t family; /* AF_INET, AF_INET6, or 0 when unknown */
    uint8_t addr[16];
    char text[48]; /* for log lines */
};

/* What CONFIRM_UPGRADE granted, held until ESTABLISHED (lws runs both in one call). */
struct worker_pending {
    struct lws *wsi;    /* NULL: nothing pending */
    uint64_t iteration; /* ev_iteration() when granted */
    uint64_t addr_key, user_key;
    char user[WORKER_CLAIMS_USER_MAX + 1];
    char *channels; /* malloc'd, or NULL */
};

struct worker_security {
    int auth;     /* tokens are required */
    int auth_off; /* "auth off" was written in the configuration */
    struct worker_jwt_key keys[CONF_LIST_MAX];
    int nkeys;
    struct worker_origin_rule origins[CONF_LIST_MAX];
    int norigins;
    int origin_any;
    struct worker_cidr proxies[CONF_LIST_MAX];
    int nproxies;
    struct worker_claims_policy policy;
    struct connlimit_holder holder;
    struct worker_pending pending;
    ev_timer pending_timer;  /* drops a grant whose upgrade failed after CONFIRM_UPGRADE */
    uint64_t log_window_ms;  /* refusal log limiter: current one-second window */
    uint32_t log_lines;      /* lines logged in it */
    uint32_t log_suppressed; /* refusals not logged since the last summary */
};

/* worker_auth.c */
/* Logs one refusal (rate-limited), with the client and a detail; never the token. */
void worker_auth_log_refusal(struct worker *w, const struct worker_client_addr *a, unsigned status,
                             const char *detail);

/* worker_auth_token.c */
enum worker_token_source {
    WORKER_TOKEN_NONE = 0,
    WORKER_TOKEN_HEADER, /* Authorization: Bearer */
    WORKER_TOKEN_QUERY,  /* ?token= */
    WORKER_TOKEN_COOKIE, /* jwt_cookie */
    WORKER_TOKEN_TOO_LONG
};
/* Copies the request's token into out (NUL-terminated). */
enum worker_token_source worker_token_find(struct worker *w, struct lws *wsi, char *out,
                                           size_t outlen);
const char *worker_token_source_name(enum worker_token_source s);

/* worker_auth_jwt.c */
enum worker_jwt_verdict {
    WORKER_JWT_OK = 0,
    WORKER_JWT_MALFORMED,     /* not three base64url parts, bad header JSON, crit, typ */
    WORKER_JWT_UNSIGNED,      /* alg none */
    WORKER_JWT_UNKNOWN_KID,   /* no key with that kid (or no "default" key for a kid-less one) */
    WORKER_JWT_ALG_MISMATCH,  /* the header's alg is not the key's */
    WORKER_JWT_BAD_SIGNATURE, /* libjwt refused it */
    WORKER_JWT_CLAIMS         /* see the claims verdict */
};
/* Loads every jwt_key (reads secret and PEM files, checks each key against its algorithm).
 * Returns 0, or -1 after logging why. */
int worker_jwt_keys_load(struct worker_security *sec, const struct conf *c);
void worker_jwt_keys_free(struct worker_security *sec);
/* Verifies token and its claims at `now`. On WORKER_JWT_CLAIMS *cv says which claim failed;
 * kid_out receives the kid used (for logs). */
enum worker_jwt_verdict worker_jwt_verify(const struct worker_security *sec, const char *token,
                                          int64_t now, struct worker_claims *claims,
                                          enum worker_claims_verdict *cv, char *kid_out,
                                          size_t kidlen);
const char *worker_jwt_verdict_text(enum worker_jwt_verdict v);

/* worker_auth_origin.c */
/* Parses every allow_origin entry. Returns 0, or -1 after logging the bad one. */
int worker_origin_rules_load(struct worker_security *sec, const struct conf *c);
/* 1 when `origin` (the header's value) is allowed. */
int worker_origin_allowed(const struct worker_security *sec, const char *origin);

/* worker_limits.c */
int worker_limits_load(struct worker *w);
/* The client address: the peer, or the last X-Forwarded-For hop of a trusted proxy. Returns 0,
 * or -1 when a trusted proxy sent an unusable X-Forwarded-For. */
int worker_client_addr(struct worker *w, struct lws *wsi, struct worker_client_addr *a);
/* Takes the per-address and per-user counts for a handshake. Returns 0, or the status to
 * refuse with (429, 503) and sets *reason and *why. */
unsigned worker_limits_acquire(struct worker *w, const struct worker_client_addr *a,
                               const char *user, uint64_t *addr_key, uint64_t *user_key,
                               enum shm_reject_reason *reason, const char **why);
void worker_limits_release(struct worker *w, uint64_t addr_key, uint64_t user_key);
/* Starts the message-rate bucket of a new connection. */
void worker_limits_conn_start(struct worker *w, struct worker_conn *c);

/* worker_tls.c */
/* Loads tls_cert and tls_key into a scratch context: 0, or -1 after logging why. */
int worker_tls_check(const struct conf *c);

#endif /* WSHUB_WORKER_AUTH_H */
