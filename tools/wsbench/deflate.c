/* deflate.c -- permessage-deflate for wsbench's clients and JSON payloads (see deflate.h).
 *
 * The response check is strict because the client's accounting depends on it: a server that
 * keeps its deflate context between messages (no server_no_context_takeover in its answer)
 * would send messages this client cannot inflate from their first bytes alone.
 */
#include "deflate.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

#include "client.h"
#include "publisher.h"

static const uint8_t deflate_trailer[4] = {0x00, 0x00, 0xff, 0xff};

/* Does the comma/semicolon-separated value [v, e) hold the token `t` (case-insensitive)? */
static int deflate_has(const char *v, const char *e, const char *t)
{
    size_t tl = strlen(t);
    while (v < e) {
        while (v < e && (*v == ' ' || *v == '\t' || *v == ',' || *v == ';'))
            v++;
        const char *s = v;
        while (v < e && *v != ',' && *v != ';')
            v++;
        const char *te = v;
        while (te > s && (te[-1] == ' ' || te[-1] == '\t'))
            te--;
        if ((size_t)(te - s) == tl && strncasecmp(s, t, tl) == 0)
            return 1;
    }
    return 0;
}

int deflate_accepted(const char *head, size_t len)
{
    static const char name[] = "sec-websocket-extensions:";
    const char *end = head + len, *line = head;
    int found = 0;
    while (line < end) {
        const char *eol = memchr(line, '\n', (size_t)(end - line));
        eol = eol != NULL ? eol : end;
        if ((size_t)(eol - line) > sizeof(name) - 1 &&
            strncasecmp(line, name, sizeof(name) - 1) == 0) {
            const char *v = line + sizeof(name) - 1, *e = eol;
            if (e > v && e[-1] == '\r')
                e--;
            if (!deflate_has(v, e, "permessage-deflate") ||
                !deflate_has(v, e, "server_no_context_takeover") || memchr(v, ',', (size_t)(e - v)))
                return -1;
            found = 1;
        }
        line = eol + 1;
    }
    return found;
}

size_t deflate_prefix(const uint8_t *in, size_t len, int whole, uint8_t *out, size_t cap)
{
    static z_stream zs;
    static int ready;
    if (!ready) {
        if (inflateInit2(&zs, -15) != Z_OK)
            return 0;
        ready = 1;
    } else if (inflateReset(&zs) != Z_OK) {
        return 0;
    }
    zs.next_in = (Bytef *)in;
    zs.avail_in = (uInt)len;
    zs.next_out = out;
    zs.avail_out = (uInt)cap;
    int rc = inflate(&zs, Z_SYNC_FLUSH);
    if (rc == Z_OK && whole && zs.avail_in == 0 && zs.avail_out > 0) {
        zs.next_in = (Bytef *)deflate_trailer;
        zs.avail_in = sizeof(deflate_trailer);
        rc = inflate(&zs, Z_SYNC_FLUSH);
    }
    if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR)
        return 0;
    return cap - zs.avail_out;
}

const struct frame_event *deflate_event(const struct frame_event *ev, struct frame_event *out)
{
    static uint8_t plain[8 * FRAME_PREFIX_MAX];
    int whole = ev->data_len == ev->len;
    *out = *ev;
    out->compressed = 0;
    out->data = plain;
    out->data_len = deflate_prefix(ev->data, ev->data_len, whole, plain, sizeof(plain));
    out->len = whole && out->data_len < sizeof(plain) ? out->data_len : DEFLATE_LEN_UNKNOWN;
    return out;
}

/* One trade record, from the generator state. */
static int deflate_record(char *buf, size_t cap, uint64_t *st)
{
    static const char *const syms[] = {"BTC-USD", "ETH-USD", "SOL-USD", "ADA-USD", "XRP-USD"};
    static const char *const venues[] = {"alpha", "beta", "gamma"};
    uint64_t a = publisher_mix(st), b = publisher_mix(st);
    return snprintf(buf, cap,
                    "{\"id\":%" PRIu64 ",\"sym\":\"%s\",\"px\":%" PRIu64 ".%02" PRIu64
                    ",\"qty\":%" PRIu64 ".%04" PRIu64 ",\"side\":\"%s\",\"venue\":\"%s\","
                    "\"ts\":%" PRIu64 "},",
                    a % 10000000, syms[a >> 60 & 3], 100 + (b % 60000), b >> 20 & 63, b >> 32 & 15,
                    b >> 40 & 8191, (a >> 30) & 1 ? "buy" : "sell", venues[(a >> 40) % 3],
                    (uint64_t)1700000000000 + (a >> 8 & 0xffffff));
}

size_t deflate_json_payload(char *buf, size_t size, const char *run_id, uint64_t seq,
                            int64_t now_ns)
{
    char rec[192];
    uint64_t st = seq * 0x9e3779b97f4a7c15ULL + 1;
    int n = snprintf(buf, size + 1, "{\"r\":\"%.*s\",\"s\":%" PRIu64 ",\"t\":%" PRId64 ",\"d\":[",
                     CLIENT_RUN_ID_LEN, run_id, seq, now_ns);
    int r = deflate_record(rec, sizeof(rec), &st);
    if (n < 0 || (size_t)n + (size_t)r + 12 > size) /* not even one record: the plain form */
        return publisher_payload(buf, size, run_id, seq, now_ns);
    size_t len = (size_t)n;
    while (len + (size_t)r + 11 <= size) { /* room left for {}],"p":"" and "} */
        memcpy(buf + len, rec, (size_t)r);
        len += (size_t)r;
        r = deflate_record(rec, sizeof(rec), &st);
    }
    memcpy(buf + len, "{}],\"p\":\"", 9);
    len += 9;
    memset(buf + len, 'x', size - 2 - len);
    memcpy(buf + size - 2, "\"}", 3);
    return size;
}
