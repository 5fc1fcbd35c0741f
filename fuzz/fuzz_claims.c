/* fuzz_claims.c -- worker_claims_check() (ws-worker/worker_claims.c), the claims after libjwt.
 *
 * Once libjwt has verified a signature, the payload's JSON decides who the client is and until
 * when: the most security-relevant parser on the handshake path. worker_claims_check() is a pure
 * function of the text, the policy and `now`, so it is called directly.
 * Input: a flag byte (bit 0: exp required, bit 1: issuer "https://issuer.example" configured,
 * bit 2: audience "wshub" configured), `now` (5 bytes, so up to year 36812: the saturating
 * arithmetic near INT64_MAX is out of scope), the leeway (2 bytes, modulo 3601 s), then the JSON
 * payload, passed with its exact length and no NUL after it.
 * Oracle: a second reading of the rules in worker_claims.h, with jansson's parse (the same
 * flags: the parse itself is not what is being tested) and everything else written here:
 * NumericDates compared in long double after floor(), aud as a string or an array, sub and
 * channels character by character. It lists every rule the token breaks; the verdict must be
 * OK exactly when that list is empty, and otherwise one of the broken rules. On OK the output
 * must hold sub, the channels joined with commas, and exp (floored, INT64_MAX when absent).
 * FUZZ_VERBOSE=1 prints each verdict.
 */
#include <jansson.h>
#include <math.h>

#include "fuzz.h"
#include "worker_claims.h"

#define ISSUER   "https://issuer.example"
#define AUDIENCE "wshub"

#define BROKE(v) (1u << (v))

/* A NumericDate, floored; 0 when `v` is not a number. */
static int ref_time(const json_t *v, long double *out)
{
    if (json_is_integer(v)) {
        *out = (long double)json_integer_value(v);
        return 1;
    }
    if (!json_is_real(v) || isnan(json_real_value(v)))
        return 0;
    *out = floorl((long double)json_real_value(v));
    return 1;
}

static int ref_string_is(const json_t *v, const char *want)
{
    return json_is_string(v) && json_string_length(v) == strlen(want) &&
           memcmp(json_string_value(v), want, strlen(want)) == 0;
}

static unsigned ref_times(const json_t *root, int require_exp, long double now, long double leeway)
{
    const json_t *exp = json_object_get(root, "exp"), *nbf = json_object_get(root, "nbf");
    unsigned broke = 0;
    long double t;
    if (exp == NULL && require_exp)
        broke |= BROKE(WORKER_CLAIMS_NO_EXP);
    if (exp != NULL && !ref_time(exp, &t))
        broke |= BROKE(WORKER_CLAIMS_MALFORMED);
    else if (exp != NULL && now >= t + leeway)
        broke |= BROKE(WORKER_CLAIMS_EXPIRED);
    if (nbf != NULL && !ref_time(nbf, &t))
        broke |= BROKE(WORKER_CLAIMS_MALFORMED);
    else if (nbf != NULL && now + leeway < t)
        broke |= BROKE(WORKER_CLAIMS_NOT_YET_VALID);
    return broke;
}

static unsigned ref_iss_aud(const json_t *root, int want_iss, int want_aud)
{
    const json_t *iss = json_object_get(root, "iss"), *aud = json_object_get(root, "aud");
    unsigned broke = 0;
    int found = 0;
    if (iss != NULL && !json_is_string(iss))
        broke |= BROKE(WORKER_CLAIMS_MALFORMED);
    if (want_iss && !ref_string_is(iss, ISSUER))
        broke |= BROKE(WORKER_CLAIMS_ISSUER);
    if (aud != NULL && !json_is_string(aud) && !json_is_array(aud))
        broke |= BROKE(WORKER_CLAIMS_MALFORMED);
    found = ref_string_is(aud, AUDIENCE);
    for (size_t i = 0; json_is_array(aud) && i < json_array_size(aud); i++) {
        if (!json_is_string(json_array_get(aud, i)))
            broke |= BROKE(WORKER_CLAIMS_MALFORMED);
        found |= ref_string_is(json_array_get(aud, i), AUDIENCE);
    }
    if (want_aud && !found)
        broke |= BROKE(WORKER_CLAIMS_AUDIENCE);
    return broke;
}

static unsigned ref_sub(const json_t *root)
{
    const json_t *sub = json_object_get(root, "sub");
    if (sub == NULL)
        return 0;
    if (!json_is_string(sub))
        return BROKE(WORKER_CLAIMS_MALFORMED);
    size_t n = json_string_length(sub);
    const char *s = json_string_value(sub);
    if (n == 0 || n > WORKER_CLAIMS_USER_MAX)
        return BROKE(WORKER_CLAIMS_SUBJECT);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return BROKE(WORKER_CLAIMS_SUBJECT);
    return 0;
}

static int ref_channel_ok(const json_t *v)
{
    static const char ok[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-*";
    size_t n = json_is_string(v) ? json_string_length(v) : 0;
    if (n == 0 || n > WORKER_CLAIMS_CHANNEL_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (json_string_value(v)[i] == '\0' || strchr(ok, json_string_value(v)[i]) == NULL)
            return 0;
    return 1;
}

static unsigned ref_channels(const json_t *root)
{
    const json_t *ch = json_object_get(root, "channels");
    if (ch == NULL)
        return 0;
    if (!json_is_array(ch) || json_array_size(ch) > WORKER_CLAIMS_CHANNELS)
        return BROKE(WORKER_CLAIMS_CHANNELS_BAD);
    for (size_t i = 0; i < json_array_size(ch); i++)
        if (!ref_channel_ok(json_array_get(ch, i)))
            return BROKE(WORKER_CLAIMS_CHANNELS_BAD);
    return 0;
}

/* What worker_claims_check() must have put in *out for an accepted token. */
static void check_output(const json_t *root, const struct worker_claims *out)
{
    const json_t *sub = json_object_get(root, "sub"), *ch = json_object_get(root, "channels");
    const json_t *exp = json_object_get(root, "exp");
    FUZZ_CHECK(strcmp(out->user, sub ? json_string_value(sub) : "") == 0, "user '%s'", out->user);
    FUZZ_CHECK(out->has_channels == (ch != NULL), "has_channels %d", out->has_channels);
    char want[WORKER_CLAIMS_CHANNELS_TEXT + 1] = "";
    for (size_t i = 0; ch != NULL && i < json_array_size(ch); i++) {
        if (i > 0)
            strcat(want, ",");
        strcat(want, json_string_value(json_array_get(ch, i)));
    }
    FUZZ_CHECK(strcmp(out->channels, want) == 0, "channels '%s', expected '%s'", out->channels,
               want);
    long double t;
    if (exp == NULL)
        FUZZ_CHECK(out->exp == INT64_MAX, "exp %lld without the claim", (long long)out->exp);
    else if (ref_time(exp, &t) && t > -9.0e18L && t < 9.0e18L)
        FUZZ_CHECK((long double)out->exp == t, "exp %lld, expected %.0Lf", (long long)out->exp, t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 8)
        return 0;
    int flags = data[0];
    int64_t now = 0;
    for (int i = 0; i < 5; i++)
        now |= (int64_t)data[1 + i] << (8 * i);
    int64_t leeway = (data[6] | data[7] << 8) % 3601;
    struct worker_claims_policy p = {.issuer = (flags & 2) ? ISSUER : "",
                                     .audience = (flags & 4) ? AUDIENCE : NULL,
                                     .leeway_s = leeway,
                                     .require_exp = flags & 1};
    const char *json = (const char *)data + 8;
    size_t len = size - 8;

    struct worker_claims out;
    memset(&out, 0xA5, sizeof(out)); /* garbage: an unset field would show */
    enum worker_claims_verdict v = worker_claims_check(json, len, &p, now, &out);
    const char *text = worker_claims_verdict_text(v);
    FUZZ_CHECK(text != NULL && text[0] != '\0', "verdict %d has no text", (int)v);
    if (getenv("FUZZ_VERBOSE"))
        fprintf(stderr, "%s: %.*s\n", text, (int)len, json);

    json_error_t err;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &err);
    unsigned broke = 0;
    if (root == NULL || !json_is_object(root)) {
        broke = BROKE(WORKER_CLAIMS_MALFORMED);
    } else {
        broke = ref_times(root, p.require_exp, (long double)now, (long double)leeway) |
                ref_iss_aud(root, flags & 2, flags & 4) | ref_sub(root) | ref_channels(root);
    }
    if (broke == 0) {
        FUZZ_CHECK(v == WORKER_CLAIMS_OK, "a valid token refused: %s (%.*s)", text, (int)len, json);
        check_output(root, &out);
    } else {
        FUZZ_CHECK(v != WORKER_CLAIMS_OK, "accepted, but breaks rules %#x: %.*s", broke, (int)len,
                   json);
        FUZZ_CHECK((unsigned)v < 32 && (broke & BROKE(v)), "verdict '%s' but rules %#x broken",
                   text, broke);
    }
    json_decref(root);
    return 0;
}
