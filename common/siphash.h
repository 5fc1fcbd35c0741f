/* siphash.h -- SipHash-2-4, a keyed 64-bit hash for tables whose keys clients choose.
 *
 * Channel names and user ids come from clients; a hash table keyed by them with a plain hash
 * could be flooded with chosen collisions. Under a random 128-bit key SipHash output cannot be
 * predicted, which is what Redis and the Linux kernel use it for too.
 */
#ifndef WSHUB_SIPHASH_H
#define WSHUB_SIPHASH_H

#include <stddef.h>
#include <stdint.h>

/* SipHash-2-4 of `len` bytes under `key` (Aumasson and Bernstein's reference algorithm). */
uint64_t siphash24(const uint64_t key[2], const void *in, size_t len);

#endif /* WSHUB_SIPHASH_H */
