/* admin_workers.c -- POST /admin/workers/restart: ask the hub for a graceful rolling restart.
 *
 * The admin program cannot restart workers itself (they are the hub's children), so it only
 * records the request: one atomic increment of hdr->restart_requested. The hub checks that counter
 * on every tick (about 250 ms) and, when it changed, runs the same rolling restart as SIGHUP
 * (hub/hub_restart.c): a new worker generation from the re-read config, the old one draining with
 * close 1012. Requests arriving during a restart queue one more. A counter rather than a flag
 * means two requests are never merged into "no change", and nothing has to reset it.
 *
 * The answer is 202 Accepted: the restart happens afterwards, and its progress shows in
 * stats.json (hub.generation, each worker's generation and state). It carries the generation
 * current when the request was recorded and the counter's new value.
 */
#include "admin.h"

#include <stdio.h>

#include "log.h"

void admin_handle_restart(struct admin_req *r)
{
    struct admin_seg *seg = admin_req_segment(r);
    if (seg == NULL)
        return;
    struct shm_header *h = seg->shm.hdr;
    uint32_t gen = atomic_load_explicit(&h->generation, memory_order_relaxed);
    uint64_t n = atomic_fetch_add_explicit(&h->restart_requested, 1, memory_order_release) + 1;
    const char *from = admin_req_param(r, "REMOTE_ADDR");
    log_notice("rolling restart requested (request %llu, generation %u) from %s",
               (unsigned long long)n, gen, from ? from : "?");
    char body[128];
    int len = snprintf(body, sizeof(body),
                       "{\"restart\":\"requested\",\"generation\":%u,\"restart_requested\":%llu}\n",
                       gen, (unsigned long long)n);
    admin_respond(r, 202, "application/json", "", body, (size_t)len);
}
