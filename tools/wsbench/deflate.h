/* deflate.h -- permessage-deflate (RFC 7692) for wsbench's clients (--deflate), and realistic
 * JSON payloads (--pad json) that make the compression worth measuring.
 *
 * A client offers the extension with both no_context_takeover parameters, so every compressed
 * message stands alone: the first bytes the frame parser keeps of it (FRAME_PREFIX_MAX) inflate
 * with one shared zlib stream, reset per message, into the run id, sequence number and send
 * time the accounting needs -- 100,000 connections keep no zlib state. The price: the exact size
 * of a compressed message is unknown (the rest of it is counted, not kept), so --size-max's
 * bad_size check skips compressed messages.
 */
#ifndef WSBENCH_DEFLATE_H
#define WSBENCH_DEFLATE_H

#include <stddef.h>
#include <stdint.h>

#include "frame.h"

/* A compressed message's length once inflated is unknown unless the parser kept all of it. */
#define DEFLATE_LEN_UNKNOWN UINT64_MAX

#define DEFLATE_OFFER                                                                              \
    "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; "                   \
    "client_no_context_takeover"

/* Did the response head [head, head + len) accept our offer? 1: permessage-deflate with
 * server_no_context_takeover (compressed messages may follow); 0: no extension; -1: an answer
 * we cannot work with (another extension, or no server_no_context_takeover). */
int deflate_accepted(const char *head, size_t len);

/* Inflates the first `len` bytes of one compressed message (all of it when `whole`) into out
 * (cap bytes). Returns the bytes produced, 0 when nothing could be (invalid data). */
size_t deflate_prefix(const uint8_t *in, size_t len, int whole, uint8_t *out, size_t cap);

/* A MESSAGE event with `compressed` set, as if it had come plain: `out` gets the inflated first
 * bytes (valid until the next call) and len = their total when the parser kept the whole
 * message, else DEFLATE_LEN_UNKNOWN. Returns out. */
const struct frame_event *deflate_event(const struct frame_event *ev, struct frame_event *out);

/* --pad json: payload `seq` of exactly `size` bytes, {"r":RUN,"s":SEQ,"t":NS,"d":[trades...],
 * "p":"xx"}: an array of trade records with values drawn from seq (compresses about 3-4x at
 * zlib level 1, like real JSON feeds), then padding to the size. Sizes too small for one
 * record get publisher_payload()'s form. Returns the length. */
size_t deflate_json_payload(char *buf, size_t size, const char *run_id, uint64_t seq,
                            int64_t now_ns);

#endif /* WSBENCH_DEFLATE_H */
