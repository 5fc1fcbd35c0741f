/* worker_claims.h -- the checks on a verified token's claims: a pure function.
 *
 * worker_auth_jwt.c verifies the signature (libjwt) and hands the payload's JSON text, exactly as
 * signed, to worker_claims_check(), which decides from that text, the policy and `now` alone: no
 * libwebsockets, no clock, no global state, so a libFuzzer harness can drive it directly
 * (fuzz/). Needs jansson only.
 *
 * Rules (docs/security.md): the payload is one JSON object without duplicate names; exp and nbf,
 * when present, are numbers (NumericDate, fractions allowed) checked with `leeway_s` of clock
 * skew; exp is required unless the policy says otherwise; iss must equal the configured issuer
 * and aud (a string, or an array of strings) must contain the configured audience, when those
 * are configured; sub, when present, is 1..WORKER_CLAIMS_USER_MAX bytes of printable UTF-8
 * without control characters and becomes the connection's user id; channels, when present, is an
 * array of up to WORKER_CLAIMS_CHANNELS channel names or patterns ([A-Za-z0-9._:-] and '*', which
 * matches any run of characters; 1..55 characters each) that limits what the connection may
 * subscribe to (worker_channels.c); an empty array allows none.
 */
#ifndef WSHUB_WORKER_CLAIMS_H
#define WSHUB_WORKER_CLAIMS_H

#include <stddef.h>
#include <stdint.h>

#define WORKER_CLAIMS_USER_MAX      255 /* bytes of sub */
#define WORKER_CLAIMS_CHANNELS      32  /* entries of channels */
#define WORKER_CLAIMS_CHANNEL_MAX   55  /* bytes of one channel name (RING_MAX_CHANNEL_LEN) */
#define WORKER_CLAIMS_CHANNELS_TEXT (WORKER_CLAIMS_CHANNELS * (WORKER_CLAIMS_CHANNEL_MAX + 1))

struct worker_claims_policy {
    const char *issuer;   /* required iss; "" or NULL = not checked */
    const char *audience; /* required member of aud; "" or NULL = not checked */
    int64_t leeway_s;     /* clock skew allowed on exp and nbf, seconds */
    int require_exp;      /* 1: a token without exp is refused */
};

struct worker_claims {
    char user[WORKER_CLAIMS_USER_MAX + 1];          /* sub, "" when absent */
    char channels[WORKER_CLAIMS_CHANNELS_TEXT + 1]; /* comma-separated, "" when absent */
    int has_channels;                               /* the claim was present (may be []) */
    int64_t exp;                                    /* seconds, INT64_MAX when absent */
};

enum worker_claims_verdict {
    WORKER_CLAIMS_OK = 0,
    WORKER_CLAIMS_MALFORMED,     /* not a JSON object, duplicate names, a claim of the wrong type */
    WORKER_CLAIMS_EXPIRED,       /* now >= exp + leeway */
    WORKER_CLAIMS_NOT_YET_VALID, /* now + leeway < nbf */
    WORKER_CLAIMS_NO_EXP,        /* exp missing and required */
    WORKER_CLAIMS_ISSUER,        /* iss missing or not the configured issuer */
    WORKER_CLAIMS_AUDIENCE,      /* aud missing or without the configured audience */
    WORKER_CLAIMS_SUBJECT,       /* sub empty, too long or with control characters */
    WORKER_CLAIMS_CHANNELS_BAD   /* channels not an array of valid names */
};

/* Checks the claims in json[0..len) (need not be NUL-terminated) against the policy at time
 * `now` (seconds since the epoch) and fills *out on success. */
enum worker_claims_verdict worker_claims_check(const char *json, size_t len,
                                               const struct worker_claims_policy *p, int64_t now,
                                               struct worker_claims *out);

/* A short static description of a verdict, for logs ("token expired"). */
const char *worker_claims_verdict_text(enum worker_claims_verdict v);

#endif /* WSHUB_WORKER_CLAIMS_H */
