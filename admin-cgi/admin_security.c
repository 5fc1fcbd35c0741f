/* admin_security.c -- what the workers enforce, for stats.json, /metrics and the stats page.
 *
 * Each worker writes its security word (shm_worker.security, SHM_SEC_*) once at start, from its
 * own configuration, before it serves; we summarise the running and draining workers. "auth" is
 * "on" when every one of them requires tokens, "off" when none does, "mixed" while a rolling
 * restart switches between the two, "unknown" before any worker has started. The page shows a
 * red banner whenever it is not "on", so "auth off" (or a forgotten jwt_key) cannot go unseen.
 * The connection-limits table (shm/connlimit.c) adds its fill level and its refusals.
 */
#include "admin.h"

#include <stdio.h>

struct sec_summary {
    unsigned workers;  /* running or draining workers that published their word */
    unsigned all, any; /* AND and OR of their words */
};

static void sec_summarise(const struct shm *s, struct sec_summary *out)
{
    out->workers = 0;
    out->all = ~0u;
    out->any = 0;
    for (unsigned i = 0; i < SHM_MAX_WORKERS; i++) {
        const struct shm_worker *w = shm_worker(s, i);
        uint32_t st = atomic_load_explicit(&w->state, memory_order_relaxed);
        uint32_t word = atomic_load_explicit(&w->security, memory_order_relaxed);
        if ((st != SHM_WORKER_RUNNING && st != SHM_WORKER_DRAINING) || !(word & SHM_SEC_SET))
            continue;
        out->workers++;
        out->all &= word;
        out->any |= word;
    }
    if (out->workers == 0)
        out->all = 0;
}

static const char *sec_auth_state(const struct sec_summary *x)
{
    if (x->workers == 0)
        return "unknown";
    if (x->all & SHM_SEC_AUTH)
        return "on";
    return (x->any & SHM_SEC_AUTH) ? "mixed" : "off";
}

static const char *json_bool(unsigned v)
{
    return v ? "true" : "false";
}

void admin_security_json(struct admin_buf *b, const struct shm *s)
{
    struct sec_summary x;
    const struct shm_limits_ctl *lc = &s->hdr->limits;
    sec_summarise(s, &x);
    admin_buf_printf(
        b,
        "\"security\":{\"auth\":\"%s\",\"auth_off_explicit\":%s,\"origin_allowlist\":%s,"
        "\"tls\":%s,\"limit_per_ip\":%s,\"limit_per_user\":%s,\"connlimit\":{\"capacity\":%u,"
        "\"full\":%llu,\"stale_removed\":%llu,\"lock_recoveries\":%llu}},",
        sec_auth_state(&x), json_bool(x.any & SHM_SEC_AUTH_OFF), json_bool(x.all & SHM_SEC_ORIGIN),
        json_bool(x.all & SHM_SEC_TLS), json_bool(x.all & SHM_SEC_LIMIT_ADDR),
        json_bool(x.all & SHM_SEC_LIMIT_USER), lc->capacity,
        (unsigned long long)atomic_load_explicit(&lc->full, memory_order_relaxed),
        (unsigned long long)atomic_load_explicit(&lc->stale_removed, memory_order_relaxed),
        (unsigned long long)atomic_load_explicit(&lc->lock_recoveries, memory_order_relaxed));
}

void admin_security_prom(struct admin_buf *b, const struct shm *s)
{
    struct sec_summary x;
    const struct shm_limits_ctl *lc = &s->hdr->limits;
    sec_summarise(s, &x);
    admin_buf_printf(b,
                     "# HELP wshub_auth_enforced 1 when every running worker requires a token "
                     "(jwt_key set, auth not off), else 0.\n"
                     "# TYPE wshub_auth_enforced gauge\nwshub_auth_enforced %d\n",
                     x.workers > 0 && (x.all & SHM_SEC_AUTH) ? 1 : 0);
    admin_buf_printf(b,
                     "# HELP wshub_connlimit_full_total Handshakes refused because the "
                     "connection-limits table had no free entry.\n"
                     "# TYPE wshub_connlimit_full_total counter\nwshub_connlimit_full_total %llu\n",
                     (unsigned long long)atomic_load_explicit(&lc->full, memory_order_relaxed));
}
