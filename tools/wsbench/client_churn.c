/* client_churn.c -- connection churn inside one client process: pool connections leave at a
 * steady rate and come back as new connections (--churn, --churn-pool, --churn-away).
 *
 * The pool is fixed before the run (--churn-pool spread evenly over the connection indices), so
 * the connections outside it stay for the whole run and keep exact loss accounting, while the
 * pool is accounted per session: a session is one opened connection, and its loss is the
 * broadcasts missing between the first and the last sequence it received. What a session could
 * have received before its first receipt is not known to the client, so a session that misses
 * only its first or last broadcasts is not counted; the steady connections catch that kind of
 * loss. A leave sends Close 1001 (a browser tab going away); the socket closes when the server
 * answers, and the new connection starts --churn-away after the leave. Leaves, comebacks and
 * handshake deadlines each wait a constant time, so each lives in a FIFO and only heads are
 * examined: a churn of thousands per second costs no timer per connection.
 */
#include "client_int.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>

#include "log.h"

#define CHURN_PROBES 8 /* pool entries tried for an open connection per leave */

int churn_push(struct churn_queue *q, uint32_t idx, uint32_t gen, int64_t at)
{
    if (q->count == q->cap) {
        uint32_t cap = q->cap ? q->cap * 2 : 256;
        struct churn_ent *e = malloc(cap * sizeof(*e));
        if (e == NULL)
            return -1;
        for (uint32_t k = 0; k < q->count; k++)
            e[k] = q->e[(q->head + k) % q->cap];
        free(q->e);
        q->e = e;
        q->head = 0;
        q->cap = cap;
    }
    q->e[(q->head + q->count) % q->cap] = (struct churn_ent){.idx = idx, .gen = gen, .at = at};
    q->count++;
    return 0;
}

const struct churn_ent *churn_head(const struct churn_queue *q)
{
    return q->count ? &q->e[q->head] : NULL;
}

void churn_pop(struct churn_queue *q)
{
    q->head = (q->head + 1) % q->cap;
    q->count--;
}

/* Is global connection g in the pool? floor(g * F) steps up at evenly spread indices. */
int churn_in_pool(double pool, uint64_t g)
{
    return floor((double)(g + 1) * pool) > floor((double)g * pool);
}

int churn_init(struct client *cl)
{
    const struct opts *o = cl->o;
    if (!(o->churn > 0))
        return 0;
    cl->pool = malloc((cl->count ? cl->count : 1) * sizeof(*cl->pool));
    if (cl->pool == NULL)
        return -1;
    for (uint32_t i = 0; i < cl->count; i++) {
        if (!cl->conns[i].stalled && churn_in_pool(o->churn_pool, (uint64_t)cl->first + i)) {
            cl->conns[i].churner = 1;
            cl->pool[cl->pool_n++] = i;
        }
    }
    cl->res.churn_pool = cl->pool_n;
    cl->churn_rate = o->churn / o->processes;
    return 0;
}

void churn_start(struct client *cl, int64_t now)
{
    cl->churn_on = cl->o->churn > 0 && cl->pool_n > 0;
    cl->churn_t0 = now;
}

/* Adds the session's receipts to the churn totals and starts an empty one. */
void churn_session_end(struct client *cl, struct conn *c)
{
    if (c->unique > 0) {
        uint64_t span = c->max_plus1 - (uint64_t)c->first_seq;
        if (span > c->unique)
            cl->res.churn_gaps += span - c->unique;
        cl->res.churn_unique += c->unique;
    }
    c->unique = c->max_plus1 = 0;
    c->window = 0;
    c->first_seq = 0;
}

/* The new connection of a pool slot completed its handshake. */
void churn_on_open(struct client *cl, struct conn *c, int64_t now)
{
    cl->res.churn_rejoined++;
    hist_record(&cl->res.churn_rejoin, now - (c->deadline_ns - cl->o->connect_timeout_ns));
    c->rejoining = 0;
    churn_session_end(cl, c);
}

static void churn_leave(struct client *cl, uint32_t i, int64_t now)
{
    struct conn *c = &cl->conns[i];
    churn_session_end(cl, c);
    c->churn_gen++;
    c->leaving = 1;
    cl->res.churn_left++;
    if (churn_push(&cl->away, i, c->churn_gen, now + cl->o->churn_away_ns) < 0) {
        log_error(ENOMEM, "queueing a churn comeback failed");
        cl->churn_on = 0;
    }
    conn_send_close(cl, c, 1001); /* OPEN -> CLOSING, or released at once if the send failed */
}

/* Picks an open pool connection at random. Returns its index, or -1 when none was found. */
static int64_t churn_pick(struct client *cl)
{
    uint32_t k = (uint32_t)(client_rand(cl) % cl->pool_n);
    for (int t = 0; t < CHURN_PROBES; t++, k = (k + 1) % cl->pool_n)
        if (cl->conns[cl->pool[k]].state == CONN_OPEN)
            return cl->pool[k];
    return -1;
}

static void churn_comeback(struct client *cl, uint32_t i, int64_t now)
{
    struct conn *c = &cl->conns[i];
    if (c->state == CONN_CLOSING || c->state == CONN_SERVER_CLOSING) {
        cl->res.churn_closes_cut++;
        conn_release(cl, c);
    }
    if (c->state != CONN_DONE && c->state != CONN_IDLE)
        return;
    c->leaving = 0;
    c->rejoining = 1;
    conn_start(cl, i, now);
    if (c->rejoining && churn_push(&cl->joining, i, c->churn_gen, c->deadline_ns) < 0)
        log_error(ENOMEM, "queueing a churn deadline failed");
}

void churn_tick(struct client *cl, int64_t now)
{
    const struct churn_ent *h;

    if (cl->churn_on) {
        uint64_t allowed = (uint64_t)((double)(now - cl->churn_t0) * cl->churn_rate / 1e9);
        for (; cl->churn_done < allowed && cl->churn_on; cl->churn_done++) {
            int64_t i = churn_pick(cl);
            if (i >= 0)
                churn_leave(cl, (uint32_t)i, now);
        }
    }
    while ((h = churn_head(&cl->away)) != NULL && h->at <= now) {
        struct churn_ent e = *h;
        churn_pop(&cl->away);
        if (cl->conns[e.idx].churn_gen == e.gen)
            churn_comeback(cl, e.idx, now);
    }
    while ((h = churn_head(&cl->joining)) != NULL) {
        struct conn *c = &cl->conns[h->idx];
        if (c->churn_gen == h->gen && c->rejoining &&
            (c->state == CONN_CONNECTING || c->state == CONN_HANDSHAKE)) {
            if (c->deadline_ns > now)
                break;
            conn_fail(cl, c, WIRE_FAIL_TIMEOUT, 0);
        }
        churn_pop(&cl->joining);
    }
}

int64_t churn_next_wake(const struct client *cl)
{
    int64_t until = -1;
    const struct churn_ent *h;

    if (cl->churn_on)
        until = cl->churn_t0 + (int64_t)((double)(cl->churn_done + 1) * 1e9 / cl->churn_rate);
    if ((h = churn_head(&cl->away)) != NULL && (until < 0 || h->at < until))
        until = h->at;
    if ((h = churn_head(&cl->joining)) != NULL && (until < 0 || h->at < until))
        until = h->at;
    return until;
}
