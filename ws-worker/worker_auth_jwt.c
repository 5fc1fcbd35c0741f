/* worker_auth_jwt.c -- verification keys chosen by kid, each bound to one algorithm.
 *
 * libjwt 1.10 takes the algorithm from the token it is verifying, so on its own it accepts an
 * HS256 token "signed" with an RSA key's public PEM used as the HMAC secret (algorithm
 * confusion), and it has no notion of kid. We therefore read the token's header ourselves
 * first (strict base64url, JSON without duplicate names): alg "none" is refused, the kid picks
 * exactly one configured key (a token without kid uses the key named "default"), and the alg
 * must be the one that key was configured with, before the signature is checked with that key
 * alone: by libjwt (jwt_decode, then jwt_get_alg() compared once more) for HS256/384/512, and by
 * OpenSSL's EVP_DigestVerify with the public key parsed once at start for RS* and ES*, because
 * libjwt's API takes PEM text and parses it for every token (measured on this machine: 316 us
 * per RS256 and 391 us per ES256 token through libjwt, against 16 us and 60 us for the
 * signature operations themselves; docs/security.md). The claims are then read from the payload
 * bytes exactly as signed (worker_claims.c), not through libjwt's grant getters.
 * A "crit" header is refused (we implement no extension); jku, x5u and jwk are never fetched or
 * trusted: keys come from the configuration only.
 *
 * Keys are loaded once at start: HS secrets from the configuration line or file:PATH (at least
 * as long as the hash, RFC 7518 3.2), public keys from PEM files, each parsed with OpenSSL to
 * check it suits its algorithm (RSA of 2048 bits or more; the EC curve the algorithm names) and
 * kept parsed. An ES* signature is r || s of fixed length (RFC 7518 3.4), converted to DER for
 * OpenSSL; an RS* signature must be exactly the modulus long. Debian's libjwt 1.10.2-1+deb12u1
 * compares HMACs in constant time (CVE-2024-25189 fixed).
 */
#include "worker_auth.h"

#include <errno.h>
#include <jansson.h>
#include <jwt.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"

#define JWT_FILE_MAX (64 * 1024) /* a PEM file or a secret file */

/* ---- loading ---- */

/* Reads a whole small file into a NUL-terminated malloc'd buffer. */
static unsigned char *read_small_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "re");
    if (f == NULL) {
        log_error(errno, "jwt_key: fopen(%s) failed", path);
        return NULL;
    }
    unsigned char *buf = malloc(JWT_FILE_MAX + 1);
    size_t n = buf ? fread(buf, 1, JWT_FILE_MAX + 1, f) : 0;
    int bad = buf == NULL || ferror(f) || n > JWT_FILE_MAX;
    fclose(f);
    if (bad) {
        log_error(errno, "jwt_key: cannot read %s (or larger than %d bytes)", path, JWT_FILE_MAX);
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

static int hs_min_len(int alg)
{
    return alg == JWT_ALG_HS512 ? 64 : alg == JWT_ALG_HS384 ? 48 : 32;
}

static int load_secret(struct worker_jwt_key *k, const char *src)
{
    size_t n = strlen(src);
    if (strncmp(src, "file:", 5) == 0) {
        k->key = read_small_file(src + 5, &n);
        if (k->key == NULL)
            return -1;
        if (n > 0 && k->key[n - 1] == '\n')
            n--;
        if (n > 0 && k->key[n - 1] == '\r')
            n--;
    } else {
        k->key = (unsigned char *)strdup(src);
        if (k->key == NULL)
            return -1;
    }
    k->key_len = (int)n;
    if (k->key_len < hs_min_len(k->alg)) {
        log_error(0, "jwt_key %s: an %s secret needs at least %d bytes (RFC 7518 3.2), got %d",
                  k->kid, k->alg_name, hs_min_len(k->alg), k->key_len);
        return -1;
    }
    return 0;
}

/* Parses the PEM public key, checks it suits the algorithm and keeps it in k->pkey. */
static int load_public_key(struct worker_jwt_key *k, const char *path)
{
    BIO *bio = BIO_new_mem_buf(k->key, k->key_len);
    EVP_PKEY *pkey = bio ? PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL) : NULL;
    int ok = 0;
    char group[64] = "";
    size_t glen = 0;
    const char *want = k->alg == JWT_ALG_ES256   ? "prime256v1"
                       : k->alg == JWT_ALG_ES384 ? "secp384r1"
                                                 : "secp521r1";
    if (pkey == NULL) {
        log_error(0, "jwt_key %s: %s holds no PEM public key (\"BEGIN PUBLIC KEY\")", k->kid, path);
    } else if (k->alg_name[0] == 'R') {
        ok = EVP_PKEY_get_base_id(pkey) == EVP_PKEY_RSA && EVP_PKEY_get_bits(pkey) >= 2048;
        if (!ok)
            log_error(0, "jwt_key %s: %s is not an RSA key of 2048 bits or more", k->kid, path);
    } else {
        ok = EVP_PKEY_get_base_id(pkey) == EVP_PKEY_EC &&
             EVP_PKEY_get_group_name(pkey, group, sizeof(group), &glen) == 1 &&
             strcmp(group, want) == 0;
        if (!ok)
            log_error(0, "jwt_key %s: %s is not an EC key on %s (%s needs it)", k->kid, path, want,
                      k->alg_name);
    }
    if (ok)
        k->pkey = pkey;
    else
        EVP_PKEY_free(pkey);
    BIO_free(bio);
    return ok ? 0 : -1;
}

static int load_key(struct worker_jwt_key *k, const char *line)
{
    char kid[CONF_LIST_ITEM], alg[CONF_LIST_ITEM], src[CONF_LIST_ITEM];
    size_t n = 0;
    memset(k, 0, sizeof(*k));
    if (sscanf(line, "%511s %511s %511[^\n]", kid, alg, src) != 3 || strlen(kid) > WORKER_KID_MAX ||
        strlen(alg) >= sizeof(k->alg_name)) {
        log_error(0, "jwt_key: cannot parse \"<kid> <alg> <key>\"");
        return -1;
    }
    snprintf(k->kid, sizeof(k->kid), "%.64s", kid);
    snprintf(k->alg_name, sizeof(k->alg_name), "%.7s", alg);
    k->alg = (int)jwt_str_alg(alg);
    if (k->alg == JWT_ALG_INVAL || k->alg == JWT_ALG_NONE) {
        log_error(0, "jwt_key %s: unknown algorithm %s", kid, alg);
        return -1;
    }
    if (alg[0] == 'H')
        return load_secret(k, src);
    k->key = read_small_file(src, &n);
    if (k->key == NULL)
        return -1;
    k->key_len = (int)n;
    return load_public_key(k, src);
}

int worker_jwt_keys_load(struct worker_security *sec, const struct conf *c)
{
    for (int i = 0; i < c->jwt_keys.n; i++) {
        if (load_key(&sec->keys[i], c->jwt_keys.item[i]) < 0) {
            free(sec->keys[i].key);
            sec->keys[i].key = NULL;
            EVP_PKEY_free(sec->keys[i].pkey);
            sec->keys[i].pkey = NULL;
            return -1;
        }
        sec->nkeys = i + 1;
        log_info("jwt_key %s: %s key loaded", sec->keys[i].kid, sec->keys[i].alg_name);
    }
    return 0;
}

void worker_jwt_keys_free(struct worker_security *sec)
{
    for (int i = 0; i < sec->nkeys; i++) {
        if (sec->keys[i].key != NULL)
            memset(sec->keys[i].key, 0, (size_t)sec->keys[i].key_len);
        free(sec->keys[i].key);
        sec->keys[i].key = NULL;
        EVP_PKEY_free(sec->keys[i].pkey);
        sec->keys[i].pkey = NULL;
    }
    sec->nkeys = 0;
}

/* ---- verifying ---- */

static int b64url_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

/* Strict base64url without padding (RFC 7515 2): rejects other characters, a length of 1 mod 4
 * and non-zero unused bits (so every byte string has exactly one encoding). Returns the decoded
 * length, or -1. */
static long b64url_decode(const char *in, size_t n, unsigned char *out, size_t outcap)
{
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    if (n % 4 == 1)
        return -1;
    for (size_t i = 0; i < n; i++) {
        int v = b64url_value((unsigned char)in[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o >= outcap)
                return -1;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    if (bits > 0 && (acc & ((1u << bits) - 1)) != 0)
        return -1;
    return (long)o;
}

/* Splits "h.p.s" into three parts, header and payload non-empty (an unsigned token has an
 * empty signature: it is refused as such, after its header is read). */
static int token_split(const char *t, const char **dot1, const char **dot2)
{
    *dot1 = strchr(t, '.');
    *dot2 = *dot1 ? strchr(*dot1 + 1, '.') : NULL;
    return *dot1 != NULL && *dot2 != NULL && *dot1 > t && *dot2 > *dot1 + 1 &&
                   strchr(*dot2 + 1, '.') == NULL
               ? 0
               : -1;
}

struct jwt_header {
    char alg[16];
    char kid[WORKER_KID_MAX + 1];
    int has_kid;
};

static enum worker_jwt_verdict header_parse(const char *b64, size_t n, struct jwt_header *h)
{
    unsigned char buf[WORKER_TOKEN_MAX];
    long len = b64url_decode(b64, n, buf, sizeof(buf));
    json_t *root =
        len > 0 ? json_loadb((const char *)buf, (size_t)len, JSON_REJECT_DUPLICATES, NULL) : NULL;
    enum worker_jwt_verdict v = WORKER_JWT_MALFORMED;
    const json_t *alg = json_object_get(root, "alg"), *kid = json_object_get(root, "kid");
    const json_t *typ = json_object_get(root, "typ");
    memset(h, 0, sizeof(*h));
    if (!json_is_object(root) || !json_is_string(alg) || json_string_length(alg) >= sizeof(h->alg))
        goto out;
    if (json_object_get(root, "crit") != NULL)
        goto out; /* RFC 7515 4.1.11: we understand no extension */
    if (typ != NULL && (!json_is_string(typ) || strcasecmp(json_string_value(typ), "JWT") != 0))
        goto out;
    if (kid != NULL && (!json_is_string(kid) || json_string_length(kid) == 0 ||
                        json_string_length(kid) > WORKER_KID_MAX))
        goto out;
    snprintf(h->alg, sizeof(h->alg), "%s", json_string_value(alg));
    if (kid != NULL) {
        snprintf(h->kid, sizeof(h->kid), "%s", json_string_value(kid));
        h->has_kid = 1;
    }
    v = WORKER_JWT_OK;
out:
    json_decref(root);
    return v;
}

static const struct worker_jwt_key *key_for(const struct worker_security *sec,
                                            const struct jwt_header *h)
{
    const char *kid = h->has_kid ? h->kid : "default";
    for (int i = 0; i < sec->nkeys; i++)
        if (strcmp(sec->keys[i].kid, kid) == 0)
            return &sec->keys[i];
    return NULL;
}

/* HS*: libjwt, with the key chosen by kid (Debian's 1.10.2 compares in constant time). */
static enum worker_jwt_verdict signature_check_hmac(const struct worker_jwt_key *k,
                                                    const char *token)
{
    jwt_t *jwt = NULL;
    enum worker_jwt_verdict v = WORKER_JWT_BAD_SIGNATURE;
    if (jwt_decode(&jwt, token, k->key, k->key_len) == 0 && jwt != NULL)
        v = (int)jwt_get_alg(jwt) == k->alg ? WORKER_JWT_OK : WORKER_JWT_ALG_MISMATCH;
    jwt_free(jwt);
    return v;
}

/* ES*: the JWS signature is r || s, each as long as the curve's order (RFC 7518 3.4); OpenSSL
 * wants DER. Returns the DER length in der, or -1. */
static int ecdsa_jose_to_der(const unsigned char *sig, size_t len, size_t half, unsigned char *der,
                             size_t dercap)
{
    ECDSA_SIG *es = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(sig, (int)half, NULL), *s = BN_bin2bn(sig + half, (int)half, NULL);
    int n = -1;
    if (len == 2 * half && es != NULL && r != NULL && s != NULL && ECDSA_SIG_set0(es, r, s) == 1) {
        r = s = NULL; /* owned by es now */
        if (i2d_ECDSA_SIG(es, NULL) <= (int)dercap)
            n = i2d_ECDSA_SIG(es, &der);
    }
    BN_free(r);
    BN_free(s);
    ECDSA_SIG_free(es);
    return n;
}

/* RS*, ES*: OpenSSL with the key parsed once at start (libjwt would parse the PEM again for every
 * token: measured 316 us per RS256 check against 16 us for the RSA operation itself). */
static enum worker_jwt_verdict signature_check_pkey(const struct worker_jwt_key *k,
                                                    const char *token, const char *dot2)
{
    unsigned char sig[1024], der[1024];
    long slen = b64url_decode(dot2 + 1, strlen(dot2 + 1), sig, sizeof(sig));
    const EVP_MD *md = k->alg_name[2] == '5'   ? EVP_sha512()
                       : k->alg_name[2] == '3' ? EVP_sha384()
                                               : EVP_sha256();
    const unsigned char *what = sig;
    size_t wlen = (size_t)slen;
    if (slen <= 0)
        return WORKER_JWT_MALFORMED;
    if (k->alg_name[0] == 'E') {
        size_t half = k->alg == JWT_ALG_ES256 ? 32 : k->alg == JWT_ALG_ES384 ? 48 : 66;
        int n = ecdsa_jose_to_der(sig, (size_t)slen, half, der, sizeof(der));
        if (n <= 0)
            return WORKER_JWT_BAD_SIGNATURE;
        what = der;
        wlen = (size_t)n;
    } else if (slen != EVP_PKEY_get_size(k->pkey)) {
        return WORKER_JWT_BAD_SIGNATURE;
    }
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx != NULL && EVP_DigestVerifyInit(ctx, NULL, md, NULL, k->pkey) == 1 &&
             EVP_DigestVerify(ctx, what, wlen, (const unsigned char *)token,
                              (size_t)(dot2 - token)) == 1;
    EVP_MD_CTX_free(ctx);
    ERR_clear_error();
    return ok ? WORKER_JWT_OK : WORKER_JWT_BAD_SIGNATURE;
}

enum worker_jwt_verdict worker_jwt_verify(const struct worker_security *sec, const char *token,
                                          int64_t now, struct worker_claims *claims,
                                          enum worker_claims_verdict *cv, char *kid_out,
                                          size_t kidlen)
{
    const char *dot1, *dot2;
    struct jwt_header h;
    unsigned char payload[WORKER_TOKEN_MAX];
    *cv = WORKER_CLAIMS_OK;
    kid_out[0] = '\0';
    if (token_split(token, &dot1, &dot2) < 0)
        return WORKER_JWT_MALFORMED;
    enum worker_jwt_verdict v = header_parse(token, (size_t)(dot1 - token), &h);
    if (v != WORKER_JWT_OK)
        return v;
    snprintf(kid_out, kidlen, "%s", h.has_kid ? h.kid : "default");
    if (strcasecmp(h.alg, "none") == 0)
        return WORKER_JWT_UNSIGNED;
    if (dot2[1] == '\0')
        return WORKER_JWT_MALFORMED; /* no signature */
    const struct worker_jwt_key *k = key_for(sec, &h);
    if (k == NULL)
        return WORKER_JWT_UNKNOWN_KID;
    if (strcmp(h.alg, k->alg_name) != 0)
        return WORKER_JWT_ALG_MISMATCH;
    long plen = b64url_decode(dot1 + 1, (size_t)(dot2 - dot1 - 1), payload, sizeof(payload));
    if (plen <= 0 || b64url_decode(dot2 + 1, strlen(dot2 + 1), payload + plen,
                                   sizeof(payload) - (size_t)plen) <= 0)
        return WORKER_JWT_MALFORMED; /* the signature part must be strict base64url too */
    v = k->pkey != NULL ? signature_check_pkey(k, token, dot2) : signature_check_hmac(k, token);
    if (v != WORKER_JWT_OK)
        return v;
    *cv = worker_claims_check((const char *)payload, (size_t)plen, &sec->policy, now, claims);
    return *cv == WORKER_CLAIMS_OK ? WORKER_JWT_OK : WORKER_JWT_CLAIMS;
}

const char *worker_jwt_verdict_text(enum worker_jwt_verdict v)
{
    switch (v) {
    case WORKER_JWT_OK:
        return "valid";
    case WORKER_JWT_MALFORMED:
        return "malformed token";
    case WORKER_JWT_UNSIGNED:
        return "unsigned token (alg none)";
    case WORKER_JWT_UNKNOWN_KID:
        return "unknown key id";
    case WORKER_JWT_ALG_MISMATCH:
        return "algorithm does not match the key";
    case WORKER_JWT_BAD_SIGNATURE:
        return "bad signature";
    case WORKER_JWT_CLAIMS:
        return "claims refused";
    }
    return "invalid token";
}
