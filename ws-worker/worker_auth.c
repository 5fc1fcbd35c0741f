/* worker_auth.c -- admission before the upgrade: tokens, Origin, per-IP and per-user limits.
 *
 * Nothing is checked yet: every handshake that reached this point is accepted and connections
 * carry no user id. Issue #5 fills this file in.
 */
#include "worker.h"

unsigned worker_handshake_check(struct worker *w, struct lws *wsi, enum shm_reject_reason *reason,
                                const char **why)
{
    (void)w;
    (void)wsi;
    (void)reason;
    (void)why;
    return 0;
}

void worker_auth_established(struct worker *w, struct worker_conn *c, struct lws *wsi, char *user,
                             size_t userlen)
{
    (void)w;
    (void)c;
    (void)wsi;
    if (userlen > 0)
        user[0] = '\0';
}

void worker_auth_closed(struct worker *w, struct worker_conn *c)
{
    (void)w;
    (void)c;
}
