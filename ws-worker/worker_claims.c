/* worker_claims.c -- the checks on a verified token's claims (worker_claims.h has the rules).
 *
 * A pure function of (payload JSON text, policy, now): the fuzz harness in fuzz/ calls it with
 * arbitrary bytes. The text is parsed with jansson with JSON_REJECT_DUPLICATES, because two
 * "exp" members would let a signer's JSON library and ours disagree on which one counts; libjwt
 * parses the same bytes without that flag, which is why we never read claims through it.
 *
 * Times are whole seconds; a fractional NumericDate is floored (RFC 7519 allows fractions) and
 * values beyond int64 saturate, so "exp": 1e300 simply never expires and no arithmetic here can
 * overflow. Everything not listed in worker_claims.h (iat, jti, custom claims) is ignored.
 */
#include "worker_claims.h"

#include <jansson.h>
#include <math.h> /* isnan */
#include <string.h>

/* A NumericDate as whole seconds. Returns 0, or -1 when `v` is not a number. */
static int claims_time(const json_t *v, int64_t *out)
{
    if (json_is_integer(v)) {
        *out = (int64_t)json_integer_value(v);
        return 0;
    }
    if (!json_is_real(v))
        return -1;
    double d = json_real_value(v);
    if (isnan(d))
        return -1;
    if (d >= 9.0e18)
        *out = INT64_MAX;
    else if (d <= -9.0e18)
        *out = INT64_MIN;
    else {
        *out = (int64_t)d; /* toward zero; then floor */
        if ((double)*out > d)
            (*out)--;
    }
    return 0;
}

static int64_t sat_add(int64_t a, int64_t b) /* b >= 0 */
{
    return a > INT64_MAX - b ? INT64_MAX : a + b;
}

static enum worker_claims_verdict claims_times(const json_t *root,
                                               const struct worker_claims_policy *p, int64_t now,
                                               struct worker_claims *out)
{
    const json_t *exp = json_object_get(root, "exp"), *nbf = json_object_get(root, "nbf");
    int64_t leeway = p->leeway_s > 0 ? p->leeway_s : 0, t;
    out->exp = INT64_MAX;
    if (exp != NULL) {
        if (claims_time(exp, &t) < 0)
            return WORKER_CLAIMS_MALFORMED;
        if (now >= sat_add(t, leeway))
            return WORKER_CLAIMS_EXPIRED;
        out->exp = t;
    } else if (p->require_exp) {
        return WORKER_CLAIMS_NO_EXP;
    }
    if (nbf != NULL) {
        if (claims_time(nbf, &t) < 0)
            return WORKER_CLAIMS_MALFORMED;
        if (sat_add(now, leeway) < t)
            return WORKER_CLAIMS_NOT_YET_VALID;
    }
    return WORKER_CLAIMS_OK;
}

static enum worker_claims_verdict claims_issuer(const json_t *root,
                                                const struct worker_claims_policy *p)
{
    const json_t *iss = json_object_get(root, "iss");
    if (iss != NULL && !json_is_string(iss))
        return WORKER_CLAIMS_MALFORMED;
    if (p->issuer == NULL || p->issuer[0] == '\0')
        return WORKER_CLAIMS_OK;
    if (iss == NULL || strcmp(json_string_value(iss), p->issuer) != 0 ||
        json_string_length(iss) != strlen(p->issuer))
        return WORKER_CLAIMS_ISSUER;
    return WORKER_CLAIMS_OK;
}

static int audience_is(const json_t *v, const char *want)
{
    return json_is_string(v) && json_string_length(v) == strlen(want) &&
           strcmp(json_string_value(v), want) == 0;
}

static enum worker_claims_verdict claims_audience(const json_t *root,
                                                  const struct worker_claims_policy *p)
{
    const json_t *aud = json_object_get(root, "aud"), *v;
    size_t i;
    int found = 0;
    if (aud != NULL && !json_is_string(aud) && !json_is_array(aud))
        return WORKER_CLAIMS_MALFORMED;
    json_array_foreach(aud, i, v)
    {
        if (!json_is_string(v))
            return WORKER_CLAIMS_MALFORMED;
    }
    if (p->audience == NULL || p->audience[0] == '\0')
        return WORKER_CLAIMS_OK;
    if (json_is_string(aud))
        found = audience_is(aud, p->audience);
    json_array_foreach(aud, i, v)
    {
        found |= audience_is(v, p->audience);
    }
    return found ? WORKER_CLAIMS_OK : WORKER_CLAIMS_AUDIENCE;
}

static enum worker_claims_verdict claims_subject(const json_t *root, struct worker_claims *out)
{
    const json_t *sub = json_object_get(root, "sub");
    out->user[0] = '\0';
    if (sub == NULL)
        return WORKER_CLAIMS_OK;
    if (!json_is_string(sub))
        return WORKER_CLAIMS_MALFORMED;
    size_t n = json_string_length(sub);
    const unsigned char *s = (const unsigned char *)json_string_value(sub);
    if (n == 0 || n > WORKER_CLAIMS_USER_MAX)
        return WORKER_CLAIMS_SUBJECT;
    for (size_t i = 0; i < n; i++)
        if (s[i] < 0x20 || s[i] == 0x7f) /* jansson has checked the UTF-8; NUL included */
            return WORKER_CLAIMS_SUBJECT;
    memcpy(out->user, s, n);
    out->user[n] = '\0';
    return WORKER_CLAIMS_OK;
}

/* A channel name or pattern: '*' matches any run of characters (worker_channels.c). */
static int channel_name_ok(const char *s, size_t n)
{
    if (n == 0 || n > WORKER_CLAIMS_CHANNEL_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == ':' || c == '-' || c == '*'))
            return 0;
    }
    return 1;
}

static enum worker_claims_verdict claims_channels(const json_t *root, struct worker_claims *out)
{
    const json_t *ch = json_object_get(root, "channels"), *v;
    size_t i, used = 0;
    out->channels[0] = '\0';
    out->has_channels = ch != NULL;
    if (ch == NULL)
        return WORKER_CLAIMS_OK;
    if (!json_is_array(ch) || json_array_size(ch) > WORKER_CLAIMS_CHANNELS)
        return WORKER_CLAIMS_CHANNELS_BAD;
    json_array_foreach(ch, i, v)
    {
        size_t n = json_is_string(v) ? json_string_length(v) : 0;
        if (!json_is_string(v) || !channel_name_ok(json_string_value(v), n))
            return WORKER_CLAIMS_CHANNELS_BAD;
        if (used > 0)
            out->channels[used++] = ',';
        memcpy(out->channels + used, json_string_value(v), n);
        used += n;
    }
    out->channels[used] = '\0';
    return WORKER_CLAIMS_OK;
}

enum worker_claims_verdict worker_claims_check(const char *json, size_t len,
                                               const struct worker_claims_policy *p, int64_t now,
                                               struct worker_claims *out)
{
    json_error_t error;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &error);
    enum worker_claims_verdict v = WORKER_CLAIMS_MALFORMED;
    if (root != NULL && json_is_object(root)) {
        v = claims_times(root, p, now, out);
        if (v == WORKER_CLAIMS_OK)
            v = claims_issuer(root, p);
        if (v == WORKER_CLAIMS_OK)
            v = claims_audience(root, p);
        if (v == WORKER_CLAIMS_OK)
            v = claims_subject(root, out);
        if (v == WORKER_CLAIMS_OK)
            v = claims_channels(root, out);
    }
    json_decref(root);
    return v;
}

const char *worker_claims_verdict_text(enum worker_claims_verdict v)
{
    switch (v) {
    case WORKER_CLAIMS_OK:
        return "valid";
    case WORKER_CLAIMS_MALFORMED:
        return "malformed claims";
    case WORKER_CLAIMS_EXPIRED:
        return "token expired";
    case WORKER_CLAIMS_NOT_YET_VALID:
        return "token not yet valid (nbf)";
    case WORKER_CLAIMS_NO_EXP:
        return "token without exp";
    case WORKER_CLAIMS_ISSUER:
        return "wrong issuer";
    case WORKER_CLAIMS_AUDIENCE:
        return "wrong audience";
    case WORKER_CLAIMS_SUBJECT:
        return "unusable sub";
    case WORKER_CLAIMS_CHANNELS_BAD:
        return "malformed channels claim";
    }
    return "invalid claims";
}
