/* hub_redis_conn.c -- the bridge's Redis connections: connect, authenticate, run a command.
 *
 * hiredis 0.14.1's blocking API, one context per connection, used only by the bridge thread.
 * Every connection gets redisSetTimeout(redis_timeout) right after connecting, so no command
 * can block the thread longer than that: a Redis that answers slowly (DEBUG SLEEP, a stalled
 * AOF fsync, a saturated network) shows up here as a timeout and opens the breaker instead of
 * slowing anything else. hiredis 0.14 has no TLS: docs/redis-bridge.md shows stunnel in front.
 *
 * Errors are written into the caller's buffer as "<command>: <what Redis or the socket said>",
 * the text the stats show as the breaker's last error.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hub_redis_int.h"
#include "log.h"

static struct timeval br_timeval(uint32_t ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (suseconds_t)(ms % 1000) * 1000};
    return tv;
}

void br_context_error(const struct br *b, const redisContext *c, const char *what, char *err,
                      size_t errlen)
{
    /* hiredis reports a socket timeout as the text of EAGAIN. */
    if (c != NULL && c->err == REDIS_ERR_IO && strcmp(c->errstr, strerror(EAGAIN)) == 0)
        snprintf(err, errlen, "%s: timed out after %u ms", what, b->timeout_ms);
    else if (c != NULL && c->errstr[0] != '\0')
        snprintf(err, errlen, "%s: %s", what, c->errstr);
    else
        snprintf(err, errlen, "%s: no reply", what);
}

void br_disconnect(redisContext **c)
{
    if (*c != NULL)
        redisFree(*c);
    *c = NULL;
}

redisReply *br_command(struct br *b, redisContext *c, int argc, const char **argv,
                       const size_t *lens, char *err, size_t errlen)
{
    redisReply *r = redisCommandArgv(c, argc, argv, lens);

    if (r == NULL) {
        br_context_error(b, c, argv[0], err, errlen);
        return NULL;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        snprintf(err, errlen, "%s: %s", argv[0], r->str);
        freeReplyObject(r);
        return NULL;
    }
    return r;
}

static int br_auth(struct br *b, redisContext *c, char *err, size_t errlen)
{
    const char *argv[3] = {"AUTH", b->user, b->password};
    int argc = 3;
    redisReply *r;

    if (b->password[0] == '\0')
        return 0;
    if (b->user[0] == '\0') {
        argv[1] = b->password;
        argc = 2;
    }
    if ((r = br_command(b, c, argc, argv, NULL, err, errlen)) == NULL)
        return -1;
    freeReplyObject(r);
    return 0;
}

redisContext *br_connect(struct br *b, char *err, size_t errlen)
{
    struct timeval tv = br_timeval(b->timeout_ms);
    redisContext *c = b->port == 0 ? redisConnectUnixWithTimeout(b->host, tv)
                                   : redisConnectWithTimeout(b->host, b->port, tv);

    if (c == NULL) {
        snprintf(err, errlen, "connect: out of memory");
        return NULL;
    }
    if (c->err) {
        br_context_error(b, c, "connect", err, errlen);
        redisFree(c);
        return NULL;
    }
    /* hiredis opens its socket without SOCK_CLOEXEC; the workers must not inherit it. */
    if (fcntl(c->fd, F_SETFD, FD_CLOEXEC) < 0)
        log_warn(errno, "fcntl(redis fd %d, FD_CLOEXEC) failed", c->fd);
    if (redisSetTimeout(c, tv) != REDIS_OK) {
        br_context_error(b, c, "redisSetTimeout", err, errlen);
        redisFree(c);
        return NULL;
    }
    if (b->port != 0 && redisEnableKeepAlive(c) != REDIS_OK)
        log_warn(0, "redis bridge: TCP keepalive not enabled: %s", c->errstr);
    if (br_auth(b, c, err, errlen) < 0) {
        redisFree(c);
        return NULL;
    }
    return c;
}

int br_id_parse(const char *s, size_t len, uint64_t *ms, uint64_t *seq)
{
    char tmp[BR_ID_LEN], *dash, *end;

    if (len == 0 || len >= sizeof(tmp))
        return -1;
    memcpy(tmp, s, len);
    tmp[len] = '\0';
    if ((dash = strchr(tmp, '-')) == NULL || dash == tmp || dash[1] == '\0')
        return -1;
    *dash = '\0';
    errno = 0;
    *ms = strtoull(tmp, &end, 10);
    if (errno != 0 || *end != '\0')
        return -1;
    *seq = strtoull(dash + 1, &end, 10);
    if (errno != 0 || *end != '\0')
        return -1;
    return 0;
}

int br_id_cmp(const char *a, const char *b)
{
    uint64_t ams = 0, aseq = 0, bms = 0, bseq = 0;

    if (br_id_parse(a, strlen(a), &ams, &aseq) < 0)
        ams = aseq = 0;
    if (br_id_parse(b, strlen(b), &bms, &bseq) < 0)
        bms = bseq = 0;
    if (ams != bms)
        return ams < bms ? -1 : 1;
    if (aseq != bseq)
        return aseq < bseq ? -1 : 1;
    return 0;
}

int br_reply_is_id(const redisReply *r)
{
    uint64_t ms, seq;
    return r != NULL && r->type == REDIS_REPLY_STRING &&
           br_id_parse(r->str, (size_t)r->len, &ms, &seq) == 0;
}
