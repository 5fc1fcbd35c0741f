/* worker_limits.c -- the client's address, connections per address and per user, message rate.
 *
 * Address. The peer of the socket, unless the peer is a trusted_proxy: then the last entry of
 * X-Forwarded-For, which is the one that proxy appended itself (nginx's
 * $proxy_add_x_forwarded_for and Apache's mod_proxy both append), so a client cannot choose its
 * address by sending the header itself; entries before it are the client's word and ignored.
 * X-Real-IP is not used: Apache passes a client's own X-Real-IP through unchanged. One proxy hop
 * is supported. An IPv6 client is counted by its /64, the smallest block a subscriber usually
 * gets, so rotating addresses within it does not multiply the limit.
 *
 * Counts. shm/connlimit.c keeps them in the segment so a limit holds across workers; this file
 * takes them in CONFIRM_UPGRADE (refused: 429) and gives them back when the connection closes
 * (worker_auth_closed) or when the upgrade fails after the grant (worker_auth.c). A limit of 0
 * is not counted at all: a rolling restart re-execs every worker, so a limit switched on by a
 * reload starts from the new generation's own connections.
 *
 * Message rate. A token bucket per connection: client_message_burst messages at once, refilled
 * at client_message_rate per second, in thousandths of a message so slow rates stay exact. A
 * client message beyond it closes the connection with 1008. Only whole data messages count; a
 * message split into many fragments is bounded by client_max_message (1009) instead, and pings
 * are another limit's business.
 */
#include "worker_auth.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http_status.h"
#include "log.h"

/* ---- trusted proxies ---- */

static int cidr_parse(const char *s, struct worker_cidr *c)
{
    char buf[64];
    snprintf(buf, sizeof(buf), "%s", s);
    char *slash = strchr(buf, '/');
    long bits = -1;
    if (slash != NULL) {
        char *end;
        *slash = '\0';
        bits = strtol(slash + 1, &end, 10);
        if (*end != '\0' || slash[1] == '\0')
            return -1;
    }
    memset(c, 0, sizeof(*c));
    if (inet_pton(AF_INET, buf, c->addr) == 1) {
        c->family = AF_INET;
        bits = bits < 0 ? 32 : bits;
        if (bits > 32)
            return -1;
    } else if (inet_pton(AF_INET6, buf, c->addr) == 1) {
        c->family = AF_INET6;
        bits = bits < 0 ? 128 : bits;
        if (bits > 128)
            return -1;
    } else {
        return -1;
    }
    c->bits = (uint8_t)bits;
    return 0;
}

static int cidr_contains(const struct worker_cidr *c, const struct worker_client_addr *a)
{
    if (c->family != a->family)
        return 0;
    unsigned full = c->bits / 8, rest = c->bits % 8;
    if (memcmp(c->addr, a->addr, full) != 0)
        return 0;
    if (rest == 0)
        return 1;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (c->addr[full] & mask) == (a->addr[full] & mask);
}

int worker_limits_load(struct worker *w)
{
    struct worker_security *sec = w->sec;
    for (int i = 0; i < w->conf.trusted_proxies.n; i++) {
        if (cidr_parse(w->conf.trusted_proxies.item[i], &sec->proxies[i]) < 0) {
            log_error(0, "trusted_proxy \"%s\": expected an IPv4/IPv6 address or CIDR",
                      w->conf.trusted_proxies.item[i]);
            return -1;
        }
        sec->nproxies = i + 1;
    }
    sec->holder.slot = w->slot;
    sec->holder.pid = (int32_t)getpid();
    return 0;
}

/* ---- the client's address ---- */

static void addr_set_text(struct worker_client_addr *a)
{
    if (a->family == 0 || inet_ntop(a->family == AF_INET ? AF_INET : AF_INET6, a->addr, a->text,
                                    sizeof(a->text)) == NULL)
        snprintf(a->text, sizeof(a->text), "unknown");
}

static void addr_from_sockaddr(const struct sockaddr_storage *ss, struct worker_client_addr *a)
{
    memset(a, 0, sizeof(*a));
    if (ss->ss_family == AF_INET) {
        a->family = AF_INET;
        memcpy(a->addr, &((const struct sockaddr_in *)ss)->sin_addr, 4);
    } else if (ss->ss_family == AF_INET6) {
        const struct in6_addr *in6 = &((const struct sockaddr_in6 *)ss)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(in6)) {
            a->family = AF_INET;
            memcpy(a->addr, in6->s6_addr + 12, 4);
        } else {
            a->family = AF_INET6;
            memcpy(a->addr, in6->s6_addr, 16);
        }
    }
    addr_set_text(a);
}

/* The last entry of X-Forwarded-For. Returns 0, 1 when there is no header, -1 when malformed. */
static int addr_from_forwarded(struct lws *wsi, struct worker_client_addr *a)
{
    char buf[1024];
    int n = lws_hdr_total_length(wsi, WSI_TOKEN_X_FORWARDED_FOR);
    if (n <= 0)
        return 1;
    if (n >= (int)sizeof(buf) || lws_hdr_copy(wsi, buf, sizeof(buf), WSI_TOKEN_X_FORWARDED_FOR) < 0)
        return -1;
    char *last = strrchr(buf, ',');
    last = last ? last + 1 : buf;
    while (*last == ' ' || *last == '\t')
        last++;
    size_t len = strcspn(last, " \t");
    last[len] = '\0';
    memset(a, 0, sizeof(*a));
    if (inet_pton(AF_INET, last, a->addr) == 1) {
        a->family = AF_INET;
    } else if (inet_pton(AF_INET6, last, a->addr) == 1) {
        a->family = AF_INET6;
        if (IN6_IS_ADDR_V4MAPPED((struct in6_addr *)a->addr)) {
            memmove(a->addr, a->addr + 12, 4);
            memset(a->addr + 4, 0, 12);
            a->family = AF_INET;
        }
    } else {
        return -1;
    }
    addr_set_text(a);
    return 0;
}

int worker_client_addr(struct worker *w, struct lws *wsi, struct worker_client_addr *a)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    memset(a, 0, sizeof(*a));
    if (getpeername(lws_get_socket_fd(wsi), (struct sockaddr *)&ss, &sl) < 0) {
        log_debug("getpeername() failed: %s", strerror(errno)); /* the client already left */
        snprintf(a->text, sizeof(a->text), "unknown");
        return 0;
    }
    addr_from_sockaddr(&ss, a);
    for (int i = 0; i < w->sec->nproxies; i++) {
        if (cidr_contains(&w->sec->proxies[i], a)) {
            struct worker_client_addr fwd;
            int rc = addr_from_forwarded(wsi, &fwd);
            if (rc < 0)
                return -1;
            if (rc == 0)
                *a = fwd;
            break;
        }
    }
    return 0;
}

/* ---- per-address and per-user counts ---- */

unsigned worker_limits_acquire(struct worker *w, const struct worker_client_addr *a,
                               const char *user, uint64_t *addr_key, uint64_t *user_key,
                               enum shm_reject_reason *reason, const char **why)
{
    const struct conf *c = &w->conf;
    *addr_key = *user_key = 0;
    if (c->max_connections_per_ip > 0 && a->family != 0) /* IPv6: the /64 */
        *addr_key =
            connlimit_key(&w->shm, CONNLIMIT_KIND_ADDR, a->addr, a->family == AF_INET ? 4 : 8);
    if (c->max_connections_per_user > 0 && user[0] != '\0')
        *user_key = connlimit_key(&w->shm, CONNLIMIT_KIND_USER, user, strlen(user));
    switch (connlimit_acquire(&w->shm, &w->sec->holder, *addr_key,
                              (uint32_t)c->max_connections_per_ip, *user_key,
                              (uint32_t)c->max_connections_per_user)) {
    case CONNLIMIT_OK:
        return 0;
    case CONNLIMIT_ADDR_FULL:
        *reason = SHM_REJECT_LIMIT;
        *why = "too many connections from this address";
        break;
    case CONNLIMIT_USER_FULL:
        *reason = SHM_REJECT_LIMIT_USER;
        *why = "too many connections for this user";
        break;
    default:
        *reason = SHM_REJECT_TABLE_FULL;
        *why = "server busy";
        *addr_key = *user_key = 0;
        return HTTP_STATUS_SERVICE_UNAVAILABLE;
    }
    *addr_key = *user_key = 0;
    return 429;
}

void worker_limits_release(struct worker *w, uint64_t addr_key, uint64_t user_key)
{
    connlimit_release(&w->shm, &w->sec->holder, addr_key, user_key);
}

/* ---- message rate ---- */

static uint32_t now_ms32(void)
{
    return (uint32_t)(shm_mono_ns() / 1000000u);
}

void worker_limits_conn_start(struct worker *w, struct worker_conn *c)
{
    c->rate_tokens = (uint32_t)w->conf.client_message_burst * 1000u;
    c->rate_ms = now_ms32();
}

int worker_limits_message(struct worker *w, struct worker_conn *c)
{
    static const char text[] = "message rate exceeded";
    uint64_t cap = (uint64_t)w->conf.client_message_burst * 1000u;
    if (w->conf.client_message_rate <= 0)
        return 0;
    uint32_t now = now_ms32();
    uint64_t refill =
        (uint64_t)(uint32_t)(now - c->rate_ms) * (uint64_t)w->conf.client_message_rate;
    uint64_t tokens = (uint64_t)c->rate_tokens + refill;
    c->rate_ms = now;
    c->rate_tokens = (uint32_t)(tokens > cap ? cap : tokens);
    if (c->rate_tokens >= 1000u) {
        c->rate_tokens -= 1000u;
        return 0;
    }
    c->close_at = c->cursor;
    c->close_code = LWS_CLOSE_STATUS_POLICY_VIOLATION;
    c->close_reason = SHM_CLOSE_POLICY;
    lws_close_reason(c->wsi, LWS_CLOSE_STATUS_POLICY_VIOLATION, (unsigned char *)text,
                     sizeof(text) - 1);
    return -1;
}
