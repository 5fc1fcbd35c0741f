/* fuzz.h -- what every harness in fuzz/ shares: the entry point, checks, a reference UTF-8 decoder.
 *
 * Each fuzz/fuzz_<name>.c defines LLVMFuzzerTestOneInput() and nothing else global, so the same
 * object links two ways (fuzz/fuzz.mk): with clang's libFuzzer (-fsanitize=fuzzer) to search, and
 * with fuzz/replay_main.c, a plain main() that feeds it the seed corpus and every regression file,
 * built by the normal compiler for `make test` and `make test-asan`. A harness needing set-up does
 * it on its first call (both drivers call it the same way) and never relies on running last.
 *
 * FUZZ_CHECK() is the harnesses' oracle: a property that must hold for every input. It prints
 * what broke and aborts, which libFuzzer reports as a crash and saves as an artifact, and which
 * fails the replay. Sanitizers catch the rest (out-of-bounds, use after free, leaks, UB).
 */
#ifndef WSHUB_FUZZ_H
#define WSHUB_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_CHECK(cond, ...)                                                                      \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: fuzz check failed: %s -- ", __FILE__, __LINE__, #cond);        \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* A NUL-terminated copy of data[0..n) (stops at an embedded NUL, as a C string would), or aborts
 * when out of memory. The caller frees it. */
static inline char *fuzz_strndup(const uint8_t *data, size_t n)
{
    char *s = malloc(n + 1);
    FUZZ_CHECK(s != NULL, "malloc(%zu)", n + 1);
    memcpy(s, data, n);
    s[n] = '\0';
    return s;
}

/* Reference UTF-8 decoder, written differently from admin_utf8.c on purpose (decode the code
 * point, then judge it) so the two can be compared. Returns the length of the well-formed
 * sequence at s[0..n) (1..4), or 0 when none starts there. */
static inline size_t fuzz_utf8_seq(const uint8_t *s, size_t n)
{
    uint32_t cp;
    size_t len;
    if (n == 0)
        return 0;
    if (s[0] < 0x80)
        return 1;
    if ((s[0] & 0xE0) == 0xC0) {
        len = 2;
        cp = s[0] & 0x1Fu;
    } else if ((s[0] & 0xF0) == 0xE0) {
        len = 3;
        cp = s[0] & 0x0Fu;
    } else if ((s[0] & 0xF8) == 0xF0) {
        len = 4;
        cp = s[0] & 0x07u;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t k = 1; k < len; k++) {
        if ((s[k] & 0xC0) != 0x80)
            return 0;
        cp = cp << 6 | (s[k] & 0x3Fu);
    }
    static const uint32_t min_of_len[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_of_len[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return len;
}

/* 1 when s[0..n) is well-formed UTF-8; else 0 with the offset of the first bad sequence. */
static inline int fuzz_utf8_valid(const uint8_t *s, size_t n, size_t *bad_at)
{
    for (size_t i = 0; i < n;) {
        size_t k = fuzz_utf8_seq(s + i, n - i);
        if (k == 0) {
            *bad_at = i;
            return 0;
        }
        i += k;
    }
    return 1;
}

#endif /* WSHUB_FUZZ_H */
