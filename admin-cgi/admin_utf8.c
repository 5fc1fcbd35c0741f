/* admin_utf8.c -- strict UTF-8 validation for text broadcasts.
 *
 * A WebSocket text frame must carry valid UTF-8 (RFC 6455 section 8.1) and clients close with
 * 1007 otherwise, so a text broadcast is checked here, once, before it enters the ring: the
 * workers frame it without looking. The rules are RFC 3629's (Unicode table 3-7): no overlong
 * forms, no UTF-16 surrogates (U+D800..U+DFFF), nothing above U+10FFFF, no truncated sequence at
 * the end. Each lead byte fixes the sequence length and the allowed range of the second byte;
 * the remaining bytes must be plain continuation bytes. Runs of ASCII are skipped eight bytes at
 * a time, which is most of a typical JSON payload.
 */
#include "admin.h"

#include <string.h>

/* For a non-ASCII lead byte: the number of continuation bytes (0 = invalid lead) and the range
 * the first continuation byte must fall in. */
static size_t utf8_lead(uint8_t c, uint8_t *lo, uint8_t *hi)
{
    *lo = 0x80;
    *hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF)
        return 1;
    if (c == 0xE0) {
        *lo = 0xA0; /* below would be an overlong 2-byte form */
        return 2;
    }
    if (c == 0xED) {
        *hi = 0x9F; /* above would be a surrogate */
        return 2;
    }
    if (c >= 0xE1 && c <= 0xEF)
        return 2;
    if (c == 0xF0) {
        *lo = 0x90; /* below would be an overlong 3-byte form */
        return 3;
    }
    if (c >= 0xF1 && c <= 0xF3)
        return 3;
    if (c == 0xF4) {
        *hi = 0x8F; /* above would be beyond U+10FFFF */
        return 3;
    }
    return 0; /* 0x80..0xC1 (continuation or overlong lead) and 0xF5..0xFF */
}

static int utf8_is_ascii8(const uint8_t *p)
{
    uint64_t w;
    memcpy(&w, p, sizeof(w));
    return (w & 0x8080808080808080ULL) == 0;
}

int admin_utf8_valid(const uint8_t *s, size_t n, size_t *bad_at)
{
    size_t i = 0;
    while (i < n) {
        if (n - i >= 8 && utf8_is_ascii8(s + i)) {
            i += 8;
            continue;
        }
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        uint8_t lo, hi;
        size_t need = utf8_lead(s[i], &lo, &hi);
        if (need == 0 || n - i - 1 < need || s[i + 1] < lo || s[i + 1] > hi)
            goto bad;
        for (size_t k = 2; k <= need; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                goto bad;
        }
        i += need + 1;
    }
    return 1;
bad:
    if (bad_at)
        *bad_at = i;
    return 0;
}
