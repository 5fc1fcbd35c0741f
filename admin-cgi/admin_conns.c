/* admin_conns.c -- GET /admin/connections (list) and DELETE /admin/connections/{id} (close one).
 *
 * The list reads the shared connection table row by row with conntab_read(), which keeps a row
 * only when it was copied whole (conn_id is the row's seqlock), so a row is never shown half
 * old, half new. Matching rows (?user= filters on the exact user id) are sorted by connection id,
 * oldest first, and ?offset= / ?limit= (default 100, at most 1000) cut the page; "total" counts
 * every match. Cost: O(table capacity) per request plus 16 bytes per match for the sort, fine for
 * an operator's request, not for polling a big table every second.
 *
 * Closing a connection needs its owner: only the worker holding the socket can send the close
 * frame. So DELETE leaves a request in shared memory and wakes that worker:
 *   1. find the row holding the id (O(capacity));
 *   2. conntab_kick(): under the table lock, and only if the row still holds that id, set the
 *      row's kick_code, then bump the owner's kicks_pending (a row freed and reused by another
 *      connection meanwhile is never kicked: every change of conn_id takes the same lock);
 *   3. ring the owner's doorbell; the worker sees kicks_pending change on its next loop pass,
 *      scans its own connections for a kick_code and closes those with that code (counted as
 *      close reason "admin").
 * The answer is 202: the close frame goes out asynchronously, within one loop pass of the worker.
 * Codes: 1008 (policy violation) by default, or ?code=N for a code a server may send: 1000-1003,
 * 1007-1009, 1011-1014 or 3000-4999 (1004-1006 and 1015 are reserved, 1010 is the client's).
 */
#include "admin.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conntab.h"
#include "doorbell.h"
#include "log.h"

#define CONNS_LIMIT_DEFAULT 100
#define CONNS_LIMIT_MAX     1000
#define KICK_CODE_DEFAULT   1008

struct conn_ref {
    uint64_t id;
    uint32_t row;
};

/* Parses a decimal query parameter into [min, max]. Returns 0 (absent: *out = dflt), 1, or -1
 * after answering 400. */
static int query_number(struct admin_req *r, const char *name, uint64_t min, uint64_t max,
                        uint64_t dflt, uint64_t *out)
{
    char buf[24], detail[128];
    int found = admin_query_get(r->query, name, buf, sizeof(buf));
    *out = dflt;
    if (found == 0)
        return 0;
    char *end = NULL;
    errno = 0;
    unsigned long long v =
        found > 0 && buf[0] >= '0' && buf[0] <= '9' ? strtoull(buf, &end, 10) : 0;
    if (found < 0 || end == NULL || *end != '\0' || errno != 0 || v < min || v > max) {
        snprintf(detail, sizeof(detail), "%s must be a whole number from %llu to %llu", name,
                 (unsigned long long)min, (unsigned long long)max);
        admin_respond_error_str(r, 400, "invalid query parameter", detail);
        return -1;
    }
    *out = v;
    return 1;
}

static int conn_ref_cmp(const void *a, const void *b)
{
    uint64_t x = ((const struct conn_ref *)a)->id, y = ((const struct conn_ref *)b)->id;
    return x < y ? -1 : x > y;
}

/* Collects the rows matching `user` (NULL = all) into *refs, sorted by id. Returns the count, or
 * -1 when out of memory. */
static long conns_collect(const struct shm *s, const char *user, struct conn_ref **refs)
{
    uint32_t cap = s->hdr->conntab.capacity;
    size_t n = 0, room = 0;
    struct shm_conn row;
    *refs = NULL;
    for (uint32_t i = 0; i < cap; i++) {
        if (!conntab_read(s, i, &row) || (user != NULL && strcmp(row.user, user) != 0))
            continue;
        if (n == room) {
            size_t grow = room ? room * 2 : 256;
            struct conn_ref *p = realloc(*refs, grow * sizeof(**refs));
            if (p == NULL) {
                log_error(errno, "realloc(%zu) failed listing connections", grow * sizeof(**refs));
                free(*refs);
                *refs = NULL;
                return -1;
            }
            *refs = p;
            room = grow;
        }
        (*refs)[n].id = row.conn_id;
        (*refs)[n].row = i;
        n++;
    }
    if (n > 1)
        qsort(*refs, n, sizeof(**refs), conn_ref_cmp);
    return (long)n;
}

static const char *conn_state_name(uint8_t st)
{
    return st == SHM_CONN_OPEN ? "open" : st == SHM_CONN_CLOSING ? "closing" : "free";
}

static void json_conn(struct admin_buf *b, const struct shm *s, const struct shm_conn *c)
{
    char addr[64];
    conntab_format_addr(c, addr, sizeof(addr));
    admin_buf_printf(b, "{\"id\":%llu,\"worker\":%u,\"worker_generation\":%u,\"state\":\"%s\",",
                     (unsigned long long)c->conn_id, c->worker, c->worker_generation,
                     conn_state_name(c->state));
    admin_buf_puts(b, "\"remote\":");
    admin_buf_json_str(b, addr);
    admin_buf_puts(b, ",\"user\":");
    admin_buf_json_str(b, c->user);
    admin_buf_puts(b, ",\"channels\":");
    admin_channels_of_row(b, s, c);
    admin_buf_printf(b,
                     ",\"connected_at_ms\":%llu,\"last_seen_ms\":%llu,\"messages_out\":%llu,"
                     "\"bytes_out\":%llu,\"messages_in\":%llu,\"bytes_in\":%llu,"
                     "\"kick_code\":%u}",
                     (unsigned long long)c->connected_at_ms, (unsigned long long)c->last_seen_ms,
                     (unsigned long long)c->messages_out, (unsigned long long)c->bytes_out,
                     (unsigned long long)c->messages_in, (unsigned long long)c->bytes_in,
                     (unsigned)c->kick_code);
}

void admin_handle_connections(struct admin_req *r)
{
    char user[sizeof(((struct shm_conn *)0)->user)];
    uint64_t limit, offset;
    int has_user = admin_query_get(r->query, "user", user, sizeof(user));
    if (has_user < 0) {
        admin_respond_error_str(r, 400, "invalid query parameter", "user: bad escape or too long");
        return;
    }
    if (query_number(r, "limit", 1, CONNS_LIMIT_MAX, CONNS_LIMIT_DEFAULT, &limit) < 0 ||
        query_number(r, "offset", 0, UINT32_MAX, 0, &offset) < 0)
        return;
    struct admin_seg *seg = admin_req_segment(r);
    if (seg == NULL)
        return;
    const struct shm *s = &seg->shm;
    struct conn_ref *refs;
    long n = conns_collect(s, has_user ? user : NULL, &refs);
    if (n < 0) {
        admin_respond_error(r, 500, "out of memory", NULL);
        return;
    }
    struct admin_buf *b = &r->thr->out;
    admin_buf_printf(b, "{\"total\":%ld,\"limit\":%llu,\"offset\":%llu,\"connections\":[", n,
                     (unsigned long long)limit, (unsigned long long)offset);
    int first = 1;
    for (uint64_t k = offset; k < (uint64_t)n && k < offset + limit; k++) {
        struct shm_conn row;
        if (!conntab_read(s, refs[k].row, &row) || row.conn_id != refs[k].id)
            continue; /* closed since the scan */
        if (!first)
            admin_buf_puts(b, ",");
        first = 0;
        json_conn(b, s, &row);
    }
    admin_buf_puts(b, "]}\n");
    free(refs);
    if (b->failed)
        admin_respond_error(r, 500, "out of memory", NULL);
    else
        admin_respond(r, 200, "application/json", "", b->data, b->len);
}

/* ---- DELETE /admin/connections/{id} ---- */

/* Close codes a server may put in a close frame (RFC 6455 7.4, IANA registry). */
static int close_code_ok(uint64_t code)
{
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1009) ||
           (code >= 1011 && code <= 1014) || (code >= 3000 && code <= 4999);
}

/* Parses the {id} path segment: 1..20 digits, non-zero. Returns 0 or -1. */
static int parse_conn_id(const char *s, uint64_t *id)
{
    size_t n = strlen(s);
    if (n == 0 || n > 20 || strspn(s, "0123456789") != n)
        return -1;
    errno = 0;
    unsigned long long v = strtoull(s, NULL, 10);
    if (errno != 0 || v == 0)
        return -1;
    *id = v;
    return 0;
}

static void kick_not_found(struct admin_req *r, uint64_t id)
{
    char detail[64];
    snprintf(detail, sizeof(detail), "{\"id\":%llu}", (unsigned long long)id);
    admin_respond_error(r, 404, "no such connection", detail);
}

void admin_handle_kick(struct admin_req *r)
{
    uint64_t id, code;
    if (parse_conn_id(r->path_rest, &id) < 0) {
        admin_respond_error_str(r, 400, "invalid connection id", r->path_rest);
        return;
    }
    if (query_number(r, "code", 1000, 4999, KICK_CODE_DEFAULT, &code) < 0)
        return;
    if (!close_code_ok(code)) {
        admin_respond_error_str(r, 400, "invalid close code",
                                "use 1000-1003, 1007-1009, 1011-1014 or 3000-4999");
        return;
    }
    struct admin_seg *seg = admin_req_segment(r);
    if (seg == NULL)
        return;
    struct shm *s = &seg->shm;
    uint32_t row = conntab_find(s, id);
    int worker = row == CONNTAB_NONE ? -1 : conntab_kick(s, row, id, (uint16_t)code);
    if (worker < 0 && (row == CONNTAB_NONE || errno == ESRCH)) {
        kick_not_found(r, id);
        return;
    }
    if (worker < 0) {
        log_error(errno, "conntab_kick(row %u, id %llu) failed", row, (unsigned long long)id);
        admin_respond_error(r, 500, "close request failed", NULL); /* details in the log */
        return;
    }
    doorbell_ring_slot(s, (unsigned)worker);
    log_notice("connection %llu (worker %d) to be closed with %llu on admin request",
               (unsigned long long)id, worker, (unsigned long long)code);
    char body[128];
    int len = snprintf(body, sizeof(body),
                       "{\"id\":%llu,\"worker\":%d,\"code\":%llu,\"status\":\"closing\"}\n",
                       (unsigned long long)id, worker, (unsigned long long)code);
    admin_respond(r, 202, "application/json", "", body, (size_t)len);
}
