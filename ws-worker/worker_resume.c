/* worker_resume.c -- parsing a client's resume point: strict, so a bad value is a 400.
 *
 * strtoull() is not used: it accepts signs, leading spaces, "0x" and silently wraps negative
 * numbers, none of which a resume point may contain. The digits are checked one by one with an
 * overflow test instead. UINT64_MAX itself is refused because `since + 1` must still be a
 * sequence number.
 */
#include "worker_resume.h"

#include <string.h>

static int parse_decimal(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    size_t n = strlen(s);
    if (n == 0 || n > 20)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        uint64_t d = (uint64_t)(s[i] - '0');
        if (v > (UINT64_MAX - 1 - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static int parse_epoch(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    if (strlen(s) != 16)
        return -1;
    for (int i = 0; i < 16; i++) {
        int d = hex_digit(s[i]);
        if (d < 0)
            return -1;
        v = v << 4 | (uint64_t)d;
    }
    *out = v;
    return 0;
}

int resume_parse(const char *since, const char *epoch, struct resume_point *out, const char **why)
{
    memset(out, 0, sizeof(*out));
    if (since != NULL) {
        if (parse_decimal(since, &out->since) < 0) {
            *why = "malformed since: expected a decimal sequence number";
            return -1;
        }
        out->has_since = 1;
    }
    if (epoch != NULL) {
        if (parse_epoch(epoch, &out->epoch) < 0) {
            *why = "malformed epoch: expected 16 hex digits";
            return -1;
        }
        out->has_epoch = 1;
    }
    return 0;
}
