/* fuzz_admin_query.c -- admin_query_get() (admin-cgi/admin_http.c), the admin API's query strings.
 *
 * Every query parameter of the admin API (channel, user, limit, offset, code) goes through this
 * one function: find `name` among the '&'-separated pairs, then decode the value
 * (application/x-www-form-urlencoded: '+' is a space, %XX a byte; a bad escape, a decoded NUL or
 * a value that does not fit is an error).
 * Input: one byte choosing the output size (1..256), the name, a NUL, the query string.
 * Oracles: a second implementation written from that description (split first, then decode)
 * must agree on the result (found, absent, malformed) and on the decoded bytes; the output
 * buffer is allocated at exactly the size passed, so writing one byte past it is an ASan error.
 */
#include "admin.h"
#include "fuzz.h"

static int ref_hex(char c)
{
    static const char lower[] = "0123456789abcdef", upper[] = "0123456789ABCDEF";
    const char *p;
    if (c == '\0')
        return -1;
    if ((p = strchr(lower, c)) != NULL)
        return (int)(p - lower);
    if ((p = strchr(upper, c)) != NULL)
        return (int)(p - upper);
    return -1;
}

/* Decodes v[0..n) into out (outlen bytes with the NUL). Returns 1 or -1. */
static int ref_decode(const char *v, size_t n, char *out, size_t outlen)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)v[i];
        if (c == '%') {
            if (n - i < 3 || ref_hex(v[i + 1]) < 0 || ref_hex(v[i + 2]) < 0)
                return -1;
            c = ref_hex(v[i + 1]) * 16 + ref_hex(v[i + 2]);
            i += 2;
        } else if (c == '+') {
            c = ' ';
        }
        if (c == 0 || o >= outlen - 1)
            return -1;
        out[o++] = (char)c;
    }
    out[o] = '\0';
    return 1;
}

static int ref_query_get(const char *q, const char *name, char *out, size_t outlen)
{
    size_t qlen = strlen(q);
    for (size_t start = 0; start < qlen;) {
        size_t len = strcspn(q + start, "&");
        size_t klen = strcspn(q + start, "=");
        if (klen > len)
            klen = len;
        if (klen == strlen(name) && strncmp(q + start, name, klen) == 0) {
            size_t voff = klen < len ? klen + 1 : len;
            return ref_decode(q + start + voff, len - voff, out, outlen);
        }
        start += len + 1;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t outlen = (size_t)data[0] + 1;
    char *name = fuzz_strndup(data + 1, size - 1);
    size_t nlen = strlen(name);
    const char *query = nlen < size - 1 ? name + nlen + 1 : "";
    char *out = malloc(outlen), *want = malloc(outlen);
    FUZZ_CHECK(out != NULL && want != NULL, "malloc");

    int rc = admin_query_get(query, name, out, outlen);
    int ref = ref_query_get(query, name, want, outlen);
    FUZZ_CHECK(rc == ref, "name '%s' query '%s' outlen %zu: got %d, reference %d", name, query,
               outlen, rc, ref);
    if (rc == 1)
        FUZZ_CHECK(strcmp(out, want) == 0, "name '%s' query '%s': decoded '%s', reference '%s'",
                   name, query, out, want);
    free(out);
    free(want);
    free(name);
    return 0;
}
