/* worker_auth_origin.c -- the Origin allowlist (allow_origin), matched without prefix tricks.
 *
 * A browser always sends Origin on a WebSocket handshake and a page cannot forge it, so the
 * allowlist is what stops another site's page from opening a connection with the user's
 * cookies (cross-site WebSocket hijacking). Both the configured entries and the header are
 * parsed into (scheme, host, port) and compared field by field, never as strings with
 * strncmp/strstr: "https://example.com.evil.org" and "https://evilexample.com" are other hosts,
 * "http://example.com" another scheme, "https://example.com:8443" another port, and "null"
 * (sandboxed frames, file: pages) parses as nothing and matches nothing.
 *
 * Entries: "https://app.example.com", "http://localhost:8080", a pattern: "https://" followed by
 * "*.example.com" (any subdomain at any depth, not example.com itself: list both if both are
 * wanted), a bare
 * "app.example.com" or "*.example.com" (meaning https), or "*" (any origin). A pattern needs at
 * least two labels after "*." so "*.com" is refused. Hosts compare case-insensitively; default
 * ports are made explicit (80, 443). The header must be exactly scheme://host[:port] as browsers
 * send it (RFC 6454): no path, no trailing slash or dot, no user info, nothing else; a header
 * sent twice reaches us joined with ',' and is refused.
 */
#include "worker_auth.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

static int host_char_ok(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.';
}

/* Lower-cases and checks a DNS name or IPv4 address: labels of [a-z0-9-], no empty label. */
static int host_name_ok(char *h)
{
    size_t n = strlen(h);
    if (n == 0 || h[0] == '.' || h[n - 1] == '.' || strstr(h, "..") != NULL)
        return 0;
    for (char *p = h; *p; p++) {
        *p = (char)tolower((unsigned char)*p);
        if (!host_char_ok((unsigned char)*p))
            return 0;
    }
    return 1;
}

/* "[v6]" literal: hex digits, ':' and '.' inside the brackets. */
static int host_v6_ok(char *h)
{
    size_t n = strlen(h);
    if (n < 4 || h[0] != '[' || h[n - 1] != ']')
        return 0;
    for (char *p = h + 1; p < h + n - 1; p++) {
        *p = (char)tolower((unsigned char)*p);
        if (!isxdigit((unsigned char)*p) && *p != ':' && *p != '.')
            return 0;
    }
    return 1;
}

static int parse_port(const char *s, uint16_t *port)
{
    char *end;
    if (!isdigit((unsigned char)s[0]) || strlen(s) > 5)
        return -1;
    long v = strtol(s, &end, 10);
    if (*end != '\0' || v < 1 || v > 65535)
        return -1;
    *port = (uint16_t)v;
    return 0;
}

/* Parses "scheme://host[:port]" (or, for a configured entry, a bare host or "*.domain") into r.
 * Returns 0 or -1. */
static int origin_parse(const char *in, int config, struct worker_origin_rule *r)
{
    char buf[300];
    const char *sep = strstr(in, "://");
    const char *auth = sep ? sep + 3 : in;
    memset(r, 0, sizeof(*r));
    if (sep == NULL && !config)
        return -1;
    if (sep != NULL) {
        size_t sl = (size_t)(sep - in);
        if (sl == 0 || sl >= sizeof(r->scheme))
            return -1;
        for (size_t i = 0; i < sl; i++)
            r->scheme[i] = (char)tolower((unsigned char)in[i]);
    } else {
        snprintf(r->scheme, sizeof(r->scheme), "https");
    }
    if (strcmp(r->scheme, "http") != 0 && strcmp(r->scheme, "https") != 0)
        return -1;
    if (strlen(auth) >= sizeof(buf))
        return -1;
    snprintf(buf, sizeof(buf), "%s", auth);
    size_t n = strlen(buf);
    if (config && n > 0 && buf[n - 1] == '/')
        buf[--n] = '\0'; /* "https://example.com/" in a config file means the origin */
    char *host = buf, *colon = strrchr(buf, ':');
    if (colon != NULL && (buf[0] != '[' || colon > strchr(buf, ']'))) {
        *colon = '\0';
        if (parse_port(colon + 1, &r->port) < 0)
            return -1;
    } else {
        r->port = strcmp(r->scheme, "https") == 0 ? 443 : 80;
    }
    if (config && strncmp(host, "*.", 2) == 0) {
        r->wildcard = 1;
        host += 2;
        if (strchr(host, '.') == NULL) /* "*.com": every site */
            return -1;
    }
    if (strlen(host) >= sizeof(r->host))
        return -1;
    snprintf(r->host, sizeof(r->host), "%.255s", host);
    return host_name_ok(r->host) || (!r->wildcard && host_v6_ok(r->host)) ? 0 : -1;
}

int worker_origin_rules_load(struct worker_security *sec, const struct conf *c)
{
    for (int i = 0; i < c->allow_origins.n; i++) {
        const char *e = c->allow_origins.item[i];
        if (strcmp(e, "*") == 0) {
            sec->origin_any = 1;
            continue;
        }
        if (origin_parse(e, 1, &sec->origins[sec->norigins]) < 0) {
            log_error(0,
                      "allow_origin \"%s\": expected https://host[:port], https://*.domain, "
                      "a bare host or *",
                      e);
            return -1;
        }
        sec->norigins++;
    }
    return 0;
}

static int rule_matches(const struct worker_origin_rule *r, const struct worker_origin_rule *o)
{
    if (strcmp(r->scheme, o->scheme) != 0 || r->port != o->port)
        return 0;
    if (!r->wildcard)
        return strcmp(r->host, o->host) == 0;
    size_t hl = strlen(o->host), dl = strlen(r->host);
    return hl > dl + 1 && o->host[hl - dl - 1] == '.' && strcmp(o->host + hl - dl, r->host) == 0;
}

int worker_origin_allowed(const struct worker_security *sec, const char *origin)
{
    struct worker_origin_rule o;
    if (sec->origin_any)
        return 1;
    if (origin_parse(origin, 0, &o) < 0)
        return 0;
    for (int i = 0; i < sec->norigins; i++)
        if (rule_matches(&sec->origins[i], &o))
            return 1;
    return 0;
}
