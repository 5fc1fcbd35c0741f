/* fuzz_admin_utf8.c -- admin_utf8_valid() (admin-cgi/admin_utf8.c) and admin_buf_json_str().
 *
 * The UTF-8 check guards every text broadcast (a worker frames it without looking, and a client
 * closes with 1007 on bad UTF-8), and admin_buf_json_str() puts strings from the connection
 * table and from requests into JSON answers. Input: any bytes.
 * Oracles, each against fuzz.h's reference decoder (decode, then judge the code point):
 *   - admin_utf8_valid() accepts exactly the well-formed inputs and reports the same offset
 *     for the first bad sequence, with or without the bad_at pointer;
 *   - admin_buf_json_str() of the input up to its first NUL is byte for byte what RFC 8259
 *     asks for: quote and backslash escaped, control characters as \u00xx, valid UTF-8 copied,
 *     and each byte that starts no valid sequence replaced by \ufffd.
 */
#include "admin.h"
#include "fuzz.h"

/* The JSON string admin_buf_json_str() must produce for s, built with the reference decoder. */
static void expected_json(struct admin_buf *b, const char *s)
{
    size_t n = strlen(s);
    admin_buf_puts(b, "\"");
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        size_t k = fuzz_utf8_seq((const uint8_t *)s + i, n - i);
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            admin_buf_append(b, esc, 2);
        } else if (c < 0x20) {
            admin_buf_printf(b, "\\u%04x", c);
        } else if (k > 0) {
            admin_buf_append(b, s + i, k);
            i += k;
            continue;
        } else {
            admin_buf_puts(b, "\\ufffd");
        }
        i++;
    }
    admin_buf_puts(b, "\"");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t bad = SIZE_MAX, ref_bad = SIZE_MAX;
    int ok = admin_utf8_valid(data, size, &bad);
    int ref = fuzz_utf8_valid(data, size, &ref_bad);
    FUZZ_CHECK(ok == ref, "admin_utf8_valid %d, reference %d (size %zu)", ok, ref, size);
    FUZZ_CHECK(ok || bad == ref_bad, "first bad sequence at %zu, reference %zu", bad, ref_bad);
    FUZZ_CHECK(admin_utf8_valid(data, size, NULL) == ok, "bad_at NULL changes the verdict");

    char *s = fuzz_strndup(data, size);
    struct admin_buf got = {0}, want = {0};
    admin_buf_json_str(&got, s);
    expected_json(&want, s);
    FUZZ_CHECK(!got.failed && !want.failed, "out of memory");
    FUZZ_CHECK(got.len == want.len && memcmp(got.data, want.data, got.len) == 0,
               "json_str(%zu bytes) gave %zu bytes, expected %zu", strlen(s), got.len, want.len);
    FUZZ_CHECK(admin_utf8_valid((const uint8_t *)got.data, got.len, NULL),
               "json_str produced invalid UTF-8");
    admin_buf_free(&got);
    admin_buf_free(&want);
    free(s);
    return 0;
}
