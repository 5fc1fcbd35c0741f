/* client.h -- one wsbench client process: a share of the connections on one epoll loop.
 *
 * Forked by the parent with everything it needs already parsed; it speaks to the parent only
 * through the two pipes described in wire.h and exits when told to stop (or when the parent's
 * end of the command pipe closes, so an aborted parent never leaves clients behind).
 */
#ifndef WSBENCH_CLIENT_H
#define WSBENCH_CLIENT_H

#include <stdint.h>

#include "opts.h"

#define CLIENT_RUN_ID_LEN  8          /* hex characters of the run id in every payload */
#define CLIENT_MAX_TRACKED (1u << 20) /* broadcasts tracked one by one (per-broadcast figures) */

/* Runs connections [first, first + count) of the run as client number `child`. Never
 * returns: exits 0 after sending its result, 1 on a fatal error. */
void client_run(const struct opts *o, uint32_t child, uint32_t first, uint32_t count, int cmd_fd,
                int report_fd, const char *run_id) __attribute__((noreturn));

/* Parses the start of a benchmark payload ({"r":"RUNID","s":SEQ,"t":NS...). Returns 0 and fills
 * seq and send_ns when it carries run_id, else -1. */
int client_parse_payload(const uint8_t *p, size_t len, const char *run_id, uint64_t *seq,
                         int64_t *send_ns);

#endif /* WSBENCH_CLIENT_H */
