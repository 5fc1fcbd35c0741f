/* proto.h -- the client side of wshub's wshub.v1 subprotocol (docs/protocol.md): parsing the
 * header line of each server message, and building the resume request.
 *
 *   w <epoch> <last> <status>\n      welcome, always first, empty body
 *   m <seq>\n<payload>               one broadcast
 *   g <from> <to> <reason>\n         gap: [from, to] will never come, empty body
 *
 * Pure functions over the first bytes of a message (what the frame parser keeps), testable
 * without a socket. Parsing is strict where the spec is (16 lowercase hex digits, at most 20
 * decimal digits, one space between fields, the newline, empty bodies), because a server that
 * breaks the envelope is what a load generator is for finding; fields after the known ones are
 * skipped, as the spec asks of clients, so a later server that appends some still parses.
 */
#ifndef WSBENCH_PROTO_H
#define WSBENCH_PROTO_H

#include <stddef.h>
#include <stdint.h>

#define PROTO_NAME "wshub.v1"

enum proto_kind {
    PROTO_BAD = 0, /* malformed: `error` says why */
    PROTO_WELCOME, /* w */
    PROTO_MESSAGE, /* m */
    PROTO_GAP,     /* g */
    PROTO_UNKNOWN  /* a type letter this client does not know: to be ignored */
};

/* The welcome's status; names in proto.c in this order. */
enum proto_status { PROTO_FRESH = 0, PROTO_RESUMED, PROTO_EXPIRED, PROTO_RESET, PROTO_STATUS_N };

/* A gap's reason; anything not listed is PROTO_GAP_OTHER (a later server may add reasons). */
enum proto_gap_reason { PROTO_GAP_SKIPPED = 0, PROTO_GAP_OVERRUN, PROTO_GAP_OTHER, PROTO_GAP_N };

extern const char *const proto_status_names[PROTO_STATUS_N];
extern const char *const proto_gap_names[PROTO_GAP_N];

struct proto_msg {
    enum proto_kind kind;
    uint64_t epoch; /* w */
    uint64_t last;  /* w */
    enum proto_status status;
    uint64_t seq;      /* m */
    uint64_t from, to; /* g */
    enum proto_gap_reason reason;
    size_t body_off;   /* where the body starts (after the newline) */
    const char *error; /* PROTO_BAD */
};

/* Parses the header of a message whose first `len` bytes are `p` and whose whole length is
 * `total` (len <= total: the frame parser keeps only a prefix). The header line must end within
 * p. Returns m->kind. */
enum proto_kind proto_parse(const uint8_t *p, size_t len, uint64_t total, struct proto_msg *m);

/* Appends the resume query (`since` and `epoch`, docs/protocol.md) to `path` into out: "?" or
 * "&" as the path needs. Returns the length, or -1 if it does not fit in cap. */
int proto_resume_path(char *out, size_t cap, const char *path, uint64_t since, uint64_t epoch);

#endif /* WSBENCH_PROTO_H */
