/* admin_utf8_test.c -- unit test of admin_utf8_valid() against an independent decoder.
 *
 * The reference below decodes the way RFC 3629 is usually explained (length from the lead
 * byte's high bits, accumulate, then reject overlong forms, surrogates and values above
 * U+10FFFF) rather than with admin_utf8.c's per-lead-byte ranges, so the two can disagree only
 * if one of them is wrong. Every string of 1 to 3 bytes is checked, the 4-byte lead bytes
 * against every second byte and the interesting third/fourth bytes, then random mostly-ASCII
 * buffers for the eight-byte fast path and the reported offsets, then a few named cases.
 * Runs in well under a second. (An exhaustive run over all 2^32 four-byte strings also passed
 * when this was written; it takes about 35 s, too long for `make test`.)
 */
#include "admin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;

static int ref_valid(const uint8_t *s, size_t n, size_t *bad)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        size_t len;
        uint32_t cp, min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            len = 2, cp = c & 0x1F, min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            len = 3, cp = c & 0x0F, min = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            len = 4, cp = c & 0x07, min = 0x10000;
        } else {
            goto bad;
        }
        for (size_t k = 1; k < len; k++) {
            if (i + k >= n || (s[i + k] & 0xC0) != 0x80)
                goto bad;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if (cp < min || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
            goto bad;
        i += len;
    }
    return 1;
bad:
    *bad = i;
    return 0;
}

static void compare(const uint8_t *s, size_t n)
{
    size_t got_at = SIZE_MAX, want_at = SIZE_MAX;
    int got = admin_utf8_valid(s, n, &got_at);
    int want = ref_valid(s, n, &want_at);
    if (got == want && (got || got_at == want_at))
        return;
    if (failures++ < 10) {
        printf("FAIL len %zu:", n);
        for (size_t i = 0; i < n && i < 16; i++)
            printf(" %02x", s[i]);
        printf(": got %d@%zu, want %d@%zu\n", got, got_at, want, want_at);
    }
}

static void test_short_strings(void)
{
    for (uint32_t v = 0; v < (1u << 24); v++) {
        uint8_t b[3] = {(uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
        compare(b, 1);
        compare(b, 2);
        compare(b, 3);
    }
}

static void test_four_byte_leads(void)
{
    static const uint8_t tails[] = {0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90,
                                    0x9F, 0xA0, 0xBF, 0xC0, 0xFF};
    for (unsigned lead = 0xE0; lead <= 0xFF; lead++)
        for (unsigned b1 = 0; b1 <= 0xFF; b1++)
            for (size_t i = 0; i < sizeof(tails); i++)
                for (size_t j = 0; j < sizeof(tails); j++) {
                    uint8_t b[4] = {(uint8_t)lead, (uint8_t)b1, tails[i], tails[j]};
                    compare(b, 4);
                }
}

static void test_random_buffers(void)
{
    srand(1);
    for (int t = 0; t < 300000; t++) {
        uint8_t b[80];
        size_t n = (size_t)(rand() % 80);
        for (size_t i = 0; i < n; i++)
            b[i] = (uint8_t)((rand() % 8) ? rand() % 128 : rand() % 256);
        compare(b, n);
    }
}

static void expect(const char *name, const char *s, size_t n, int valid, size_t bad_at)
{
    size_t at = SIZE_MAX;
    int got = admin_utf8_valid((const uint8_t *)s, n, &at);
    if (got != valid || (!valid && at != bad_at)) {
        failures++;
        printf("FAIL %s: got %d@%zu\n", name, got, at);
    }
}

static void test_named_cases(void)
{
    expect("empty", "", 0, 1, 0);
    expect("ascii", "hello, world", 12, 1, 0);
    expect("U+0080", "\xC2\x80", 2, 1, 0);
    expect("U+07FF", "\xDF\xBF", 2, 1, 0);
    expect("U+0800", "\xE0\xA0\x80", 3, 1, 0);
    expect("U+D7FF", "\xED\x9F\xBF", 3, 1, 0);
    expect("U+E000", "\xEE\x80\x80", 3, 1, 0);
    expect("U+FFFF", "\xEF\xBF\xBF", 3, 1, 0);
    expect("U+10000", "\xF0\x90\x80\x80", 4, 1, 0);
    expect("U+10FFFF", "\xF4\x8F\xBF\xBF", 4, 1, 0);
    expect("NUL is valid", "a\0b", 3, 1, 0);
    expect("overlong '/' 2 bytes", "ab\xC0\xAF", 4, 0, 2);
    expect("overlong 3 bytes", "\xE0\x80\xAF", 3, 0, 0);
    expect("overlong 4 bytes", "\xF0\x80\x80\xAF", 4, 0, 0);
    expect("surrogate D800", "x\xED\xA0\x80", 4, 0, 1);
    expect("surrogate DFFF", "\xED\xBF\xBF", 3, 0, 0);
    expect("U+110000", "\xF4\x90\x80\x80", 4, 0, 0);
    expect("F5 lead", "\xF5\x80\x80\x80", 4, 0, 0);
    expect("lone continuation", "abcdefgh\x80", 9, 0, 8);
    expect("truncated at end", "abc\xE2\x82", 5, 0, 3);
    expect("bad continuation", "\xE2\x28\xA1", 3, 0, 0);
    expect("FE", "\xFE", 1, 0, 0);
}

int main(void)
{
    test_named_cases();
    test_short_strings();
    test_four_byte_leads();
    test_random_buffers();
    if (failures) {
        printf("admin_utf8_test: %d failures\n", failures);
        return 1;
    }
    printf("admin_utf8_test: ok\n");
    return 0;
}
