/* channels.h -- `--channels C`: subscribers spread over C channels, each broadcast to one.
 *
 * Connection i subscribes to channel i mod C, and broadcast SEQ goes to the channel
 * chan_of(SEQ): SEQ mod C (--channel-pick round-robin) or a hash of --seed and SEQ (random). Both
 * sides are pure functions of the options, so every process knows the whole plan without
 * asking: the publisher which URL to POST to, a subscriber which broadcasts are its own. A
 * broadcast of another channel is counted as wrong_channel, never as a delivery. The channel
 * enters the URLs through the token {c} (its number) in --url and --publish-url, so one tool
 * drives any server's channel syntax:
 *
 *     wshub  --url ws://H/ws/ch{c}      --publish-url http://H/admin/broadcast?channel=ch{c}
 *     Nchan  --url ws://H/sub/ch{c}     --publish-url http://H/pub/ch{c}
 *
 * The existing per-connection accounting stays as it is, fed with a broadcast's rank within its
 * channel (0, 1, 2, ... in publishing order) instead of its run-wide sequence number: the
 * 64-wide duplicate/reorder window then sees a channel's consecutive broadcasts as consecutive.
 * Expected counts are per channel: the parent sends, with EXPECT, how many of each channel's
 * broadcasts the server accepted (2xx), read from the publisher's answers.
 */
#ifndef WSBENCH_CHANNELS_H
#define WSBENCH_CHANNELS_H

#include <stddef.h>
#include <stdint.h>

#include "opts.h"

#define CHAN_TOKEN        "{c}"
#define CHAN_MAX          1000000u   /* --channels */
#define CHAN_MAX_MESSAGES (1u << 24) /* -m with --channels: a rank table entry per broadcast */

struct client;
struct conn;

/* Copies tmpl into out with every {c} replaced by k in decimal. Returns the length, or -1 when
 * it does not fit in cap. */
int chan_expand(char *out, size_t cap, const char *tmpl, uint32_t k);

/* Does s contain the {c} token? */
int chan_has_token(const char *s);

/* The channel of broadcast seq (o->channels > 0). */
uint32_t chan_of(const struct opts *o, uint64_t seq);

/* The channel of connection `global_index`. */
uint32_t chan_of_conn(const struct opts *o, uint32_t global_index);

/* Per broadcast, its rank among the broadcasts of its channel; malloc'd, o->messages entries,
 * NULL when out of memory. */
uint32_t *chan_ranks(const struct opts *o);

/* The path of connection `global_index`'s upgrade request: o->ws.path with {c} expanded when
 * --channels is on, else o->ws.path itself. NULL when it does not fit in cap. */
const char *chan_ws_path(const struct opts *o, uint32_t global_index, char *buf, size_t cap);

/* The path broadcast seq is POSTed to, the same way. */
const char *chan_pub_path(const struct opts *o, uint64_t seq, char *buf, size_t cap);

/* Checks the --channels options against each other and the URLs. Prints why and returns -1. */
int chan_resolve(struct opts *o);

/* --- in a client process (client_int.h) --- */

/* Allocates the rank table and the per-channel expectations. Returns 0, or -1. */
int chan_client_init(struct client *cl);

/* Reads EXPECT's trailer (accepted broadcasts per channel) from the command pipe. Returns 0, or
 * -1 with errno set. */
int chan_read_expect(struct client *cl, int fd);

/* Broadcast seq reached connection c: counts it as wrong_channel and returns -1 when it belongs
 * to another channel; else returns 0 and sets *pos to the sequence the connection's window
 * accounts it under (its rank in the channel, or seq itself without --channels). */
int chan_on_receipt(struct client *cl, const struct conn *c, uint64_t seq, uint64_t *pos);

/* Broadcasts connection c must receive: the accepted ones of its channel (cl->expected
 * without --channels; -1 before EXPECT). */
int64_t chan_expected(const struct client *cl, const struct conn *c);

#endif /* WSBENCH_CHANNELS_H */
