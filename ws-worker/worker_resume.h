/* worker_resume.h -- parsing a client's resume point (docs/protocol.md), free of lws.
 *
 * Pure functions on strings, so that a fuzzer and the unit tests can drive them without a
 * connection. The worker calls them from the handshake with the values of the `since` and
 * `epoch` query parameters.
 */
#ifndef WSHUB_WORKER_RESUME_H
#define WSHUB_WORKER_RESUME_H

#include <stddef.h>
#include <stdint.h>

struct resume_point {
    int has_since;  /* `since` was given */
    int has_epoch;  /* `epoch` was given */
    uint64_t since; /* last sequence the client processed */
    uint64_t epoch; /* the epoch that sequence belongs to */
};

/* Parses the two query values; either may be NULL (absent). `since` is 1 to 20 decimal digits
 * without sign or leading '+', at most UINT64_MAX - 1; `epoch` is exactly 16 hex digits (either
 * case). Returns 0, or -1 with a static reason in *why for a malformed value. */
int resume_parse(const char *since, const char *epoch, struct resume_point *out, const char **why);

#endif /* WSHUB_WORKER_RESUME_H */
