/* proto.c -- wshub.v1 header lines and resume paths (see proto.h).
 *
 * A small cursor walks the header: each field is read by a function that refuses anything the
 * spec does not allow (leading zeros are allowed in decimals, as the spec does not forbid them;
 * "+", "-", spaces inside a field and empty fields are not). Known fields are checked, and
 * whatever follows them up to the newline is skipped whole, so later fields cost nothing.
 */
#include "proto.h"

#include <stdio.h>
#include <string.h>

const char *const proto_status_names[PROTO_STATUS_N] = {"fresh", "resumed", "expired", "reset"};
const char *const proto_gap_names[PROTO_GAP_N] = {"skipped", "overrun", "other"};

struct cursor {
    const uint8_t *p;
    size_t i, end; /* end = index of the newline */
};

static int proto_bad(struct proto_msg *m, const char *why)
{
    m->kind = PROTO_BAD;
    m->error = why;
    return -1;
}

/* One space, then a field: [start, i) of non-space bytes before the newline. */
static int proto_field(struct cursor *c, size_t *start)
{
    if (c->i >= c->end || c->p[c->i] != ' ')
        return -1;
    c->i++;
    *start = c->i;
    while (c->i < c->end && c->p[c->i] != ' ')
        c->i++;
    return c->i > *start ? 0 : -1;
}

static int proto_decimal(struct cursor *c, uint64_t *out)
{
    size_t s;
    uint64_t v = 0;
    if (proto_field(c, &s) < 0 || c->i - s > 20)
        return -1;
    for (size_t k = s; k < c->i; k++) {
        uint8_t d = c->p[k];
        if (d < '0' || d > '9')
            return -1;
        if (v > (UINT64_MAX - (d - '0')) / 10)
            return -1;
        v = v * 10 + (d - '0');
    }
    *out = v;
    return 0;
}

static int proto_epoch(struct cursor *c, uint64_t *out)
{
    size_t s;
    uint64_t v = 0;
    if (proto_field(c, &s) < 0 || c->i - s != 16)
        return -1;
    for (size_t k = s; k < c->i; k++) {
        uint8_t d = c->p[k];
        if (d >= '0' && d <= '9')
            v = v << 4 | (uint64_t)(d - '0');
        else if (d >= 'a' && d <= 'f')
            v = v << 4 | (uint64_t)(d - 'a' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

/* A word field: its index in names[0..n), or `other` when it is none of them (-1 if empty). */
static int proto_word(struct cursor *c, const char *const *names, int n, int other)
{
    size_t s;
    if (proto_field(c, &s) < 0)
        return -1;
    for (int k = 0; k < n; k++)
        if (strlen(names[k]) == c->i - s && memcmp(c->p + s, names[k], c->i - s) == 0)
            return k;
    return other;
}

enum proto_kind proto_parse(const uint8_t *p, size_t len, uint64_t total, struct proto_msg *m)
{
    const uint8_t *nl = len > 0 ? memchr(p, '\n', len) : NULL;
    struct cursor c = {.p = p, .i = 1};

    memset(m, 0, sizeof(*m));
    if (nl == NULL) {
        proto_bad(m, len < total ? "header line longer than the bytes kept"
                                 : "no newline after the header");
        return m->kind;
    }
    c.end = (size_t)(nl - p);
    m->body_off = c.end + 1;
    if (c.end == 0)
        return proto_bad(m, "empty header"), m->kind;
    switch (p[0]) {
    case 'w': {
        int st;
        if (proto_epoch(&c, &m->epoch) < 0)
            return proto_bad(m, "welcome: bad epoch"), m->kind;
        if (proto_decimal(&c, &m->last) < 0)
            return proto_bad(m, "welcome: bad last"), m->kind;
        if ((st = proto_word(&c, proto_status_names, PROTO_STATUS_N, -1)) < 0)
            return proto_bad(m, "welcome: bad status"), m->kind;
        m->status = (enum proto_status)st;
        if (total != m->body_off)
            return proto_bad(m, "welcome: body not empty"), m->kind;
        m->kind = PROTO_WELCOME;
        return m->kind;
    }
    case 'm':
        if (proto_decimal(&c, &m->seq) < 0)
            return proto_bad(m, "message: bad seq"), m->kind;
        m->kind = PROTO_MESSAGE;
        return m->kind;
    case 'g': {
        if (proto_decimal(&c, &m->from) < 0 || proto_decimal(&c, &m->to) < 0)
            return proto_bad(m, "gap: bad range"), m->kind;
        if (m->from > m->to)
            return proto_bad(m, "gap: from > to"), m->kind;
        int r = proto_word(&c, proto_gap_names, PROTO_GAP_OTHER, PROTO_GAP_OTHER);
        if (r < 0)
            return proto_bad(m, "gap: no reason"), m->kind;
        m->reason = (enum proto_gap_reason)r;
        if (total != m->body_off)
            return proto_bad(m, "gap: body not empty"), m->kind;
        m->kind = PROTO_GAP;
        return m->kind;
    }
    default:
        if (p[0] < 'a' || p[0] > 'z' || (c.end > 1 && p[1] != ' '))
            return proto_bad(m, "no type letter"), m->kind;
        m->kind = PROTO_UNKNOWN;
        return m->kind;
    }
}

int proto_resume_path(char *out, size_t cap, const char *path, uint64_t since, uint64_t epoch)
{
    int n = snprintf(out, cap, "%s%ssince=%llu&epoch=%016llx", path,
                     strchr(path, '?') == NULL ? "?" : "&", (unsigned long long)since,
                     (unsigned long long)epoch);
    return n < 0 || (size_t)n >= cap ? -1 : n;
}
