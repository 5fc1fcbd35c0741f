/* ctl_json.c -- a small read-only JSON walker for wshub-admin's answers.
 *
 * wshubctl only needs to pick a few values out of documents the admin program wrote itself
 * (stats.json, {"error": "...", "detail": ...}), so this is not a parser that builds a tree:
 * every function takes a pointer to a value inside the text and returns a pointer to another
 * one, skipping what lies between. Nothing is allocated and the text is never modified.
 * Malformed input makes the functions return NULL (or -1), never read past the terminating NUL:
 * every skip stops at '\0'. Nesting is limited to CTL_JSON_MAX_DEPTH so a hostile answer cannot
 * exhaust the stack.
 */
#include "ctl.h"

#include <stdlib.h>
#include <string.h>

#define CTL_JSON_MAX_DEPTH 32

static const char *ws(const char *p)
{
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
        p++;
    return p;
}

/* p at '"': returns the character after the closing quote, or NULL. */
static const char *skip_string(const char *p)
{
    for (p++; *p != '\0'; p++) {
        if (*p == '\\') {
            if (*++p == '\0')
                return NULL;
        } else if (*p == '"') {
            return p + 1;
        }
    }
    return NULL;
}

static const char *skip_value(const char *p, int depth);

/* p at '{' or '[': returns the character after the matching close, or NULL. */
static const char *skip_container(const char *p, int depth)
{
    char close = *p == '{' ? '}' : ']';
    int is_object = *p == '{';
    p = ws(p + 1);
    if (*p == close)
        return p + 1;
    for (;;) {
        if (is_object) {
            if (*p != '"' || (p = skip_string(p)) == NULL || *(p = ws(p)) != ':')
                return NULL;
            p = ws(p + 1);
        }
        if ((p = skip_value(p, depth + 1)) == NULL)
            return NULL;
        p = ws(p);
        if (*p == close)
            return p + 1;
        if (*p != ',')
            return NULL;
        p = ws(p + 1);
    }
}

/* Skips any value. Returns the character after it, or NULL. */
static const char *skip_value(const char *p, int depth)
{
    p = ws(p);
    if (depth > CTL_JSON_MAX_DEPTH)
        return NULL;
    if (*p == '"')
        return skip_string(p);
    if (*p == '{' || *p == '[')
        return skip_container(p, depth);
    const char *start = p;
    while (*p != '\0' && strchr(",}] \t\r\n", *p) == NULL)
        p++;
    return p > start ? p : NULL;
}

const char *ctl_json_member(const char *v, const char *key)
{
    size_t klen = strlen(key);
    const char *p = ws(v);
    if (*p != '{')
        return NULL;
    p = ws(p + 1);
    while (*p == '"') {
        const char *name = p + 1, *end = skip_string(p);
        if (end == NULL || *(p = ws(end)) != ':')
            return NULL;
        p = ws(p + 1);
        if ((size_t)(end - 1 - name) == klen && memcmp(name, key, klen) == 0)
            return p;
        if ((p = skip_value(p, 1)) == NULL)
            return NULL;
        p = ws(p);
        if (*p != ',')
            return NULL;
        p = ws(p + 1);
    }
    return NULL;
}

const char *ctl_json_item(const char *v, int index)
{
    const char *p = ws(v);
    if (*p != '[')
        return NULL;
    p = ws(p + 1);
    if (*p == ']')
        return NULL;
    for (int i = 0;; i++) {
        if (i == index)
            return p;
        if ((p = skip_value(p, 1)) == NULL || *(p = ws(p)) != ',')
            return NULL;
        p = ws(p + 1);
    }
}

const char *ctl_json_path(const char *v, const char *path)
{
    char part[64];
    while (v != NULL && *path != '\0') {
        size_t n = strcspn(path, ".");
        if (n >= sizeof(part))
            return NULL;
        memcpy(part, path, n);
        part[n] = '\0';
        path += n + (path[n] == '.');
        if (*ws(v) == '[') {
            char *end;
            long i = strtol(part, &end, 10);
            v = (*end == '\0' && i >= 0 && i < 1 << 20) ? ctl_json_item(v, (int)i) : NULL;
        } else {
            v = ctl_json_member(v, part);
        }
    }
    return v;
}

/* Copies a string's contents, resolving the simple escapes; \uXXXX becomes '?' (wshub-admin
 * writes only ASCII in the places wshubctl prints). */
static int copy_string(const char *p, char *out, size_t outlen)
{
    size_t n = 0;
    for (p++; *p != '"'; p++) {
        char c = *p;
        if (c == '\0')
            return -1;
        if (c == '\\') {
            c = *++p;
            if (c == 'u') {
                for (int i = 0; i < 4; i++)
                    if (*++p == '\0')
                        return -1;
                c = '?';
            } else {
                c = c == 'n' ? '\n' : c == 't' ? '\t' : c == 'r' ? '\r' : c;
            }
        }
        if (n + 1 < outlen)
            out[n++] = c;
    }
    out[n] = '\0';
    return 0;
}

int ctl_json_scalar(const char *v, char *out, size_t outlen)
{
    const char *p = ws(v);
    if (outlen == 0 || *p == '{' || *p == '[')
        return -1;
    if (*p == '"')
        return copy_string(p, out, outlen);
    const char *end = skip_value(p, 0);
    if (end == NULL)
        return -1;
    size_t n = (size_t)(end - p) < outlen - 1 ? (size_t)(end - p) : outlen - 1;
    memcpy(out, p, n);
    out[n] = '\0';
    return 0;
}

const char *ctl_json_str(const char *v, const char *path, const char *dflt)
{
    static char bufs[8][256];
    static int next;
    char *out = bufs[next++ % 8];
    const char *p = ctl_json_path(v, path);
    if (p == NULL || ctl_json_scalar(p, out, sizeof(bufs[0])) < 0)
        return dflt;
    return out;
}

int ctl_json_raw(const char *v, char *out, size_t outlen)
{
    const char *p = ws(v);
    const char *end = skip_value(p, 0);
    if (end == NULL || outlen == 0)
        return -1;
    size_t n = (size_t)(end - p) < outlen - 1 ? (size_t)(end - p) : outlen - 1;
    memcpy(out, p, n);
    out[n] = '\0';
    return 0;
}

int ctl_json_is_null(const char *v)
{
    return v != NULL && strncmp(ws(v), "null", 4) == 0;
}
