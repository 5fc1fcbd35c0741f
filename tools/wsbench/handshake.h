/* handshake.h -- the client side of the WebSocket opening handshake (RFC 6455 section 4).
 *
 * The request carries a fresh random Sec-WebSocket-Key; the response must be "101", carry
 * "Upgrade: websocket", a Connection header with the "upgrade" token, and the
 * Sec-WebSocket-Accept derived from our key (base64 of SHA-1 of key + GUID, via OpenSSL's EVP).
 * Each way of failing has its own result so the benchmark can count failures by reason.
 */
#ifndef WSBENCH_HANDSHAKE_H
#define WSBENCH_HANDSHAKE_H

#include <stddef.h>
#include <stdint.h>

#define HANDSHAKE_KEY_LEN    24 /* base64 of 16 bytes */
#define HANDSHAKE_ACCEPT_LEN 28 /* base64 of 20 bytes */

enum handshake_result {
    HANDSHAKE_INCOMPLETE = 0, /* no blank line yet: read more */
    HANDSHAKE_OK,
    HANDSHAKE_BAD_STATUS,   /* status line is not HTTP/1.1 101 */
    HANDSHAKE_BAD_ACCEPT,   /* Sec-WebSocket-Accept missing or wrong */
    HANDSHAKE_BAD_UPGRADE,  /* Upgrade or Connection header missing or wrong */
    HANDSHAKE_BAD_PROTOCOL, /* Sec-WebSocket-Protocol is not the one asked for */
    HANDSHAKE_MALFORMED     /* not parseable as an HTTP response */
};

/* Base64-encodes 16 random bytes into key (HANDSHAKE_KEY_LEN + 1 bytes, NUL-terminated). */
void handshake_make_key(const uint8_t raw[16], char *key);

/* Computes the Sec-WebSocket-Accept expected for key into accept (HANDSHAKE_ACCEPT_LEN + 1).
 * Returns 0, or -1 if the digest failed. */
int handshake_accept_for(const char *key, char *accept);

/* Writes the GET request. `headers` are extra "Name: value" lines. Returns its length, or -1
 * when it does not fit in cap. */
int handshake_request(char *buf, size_t cap, const char *host_header, const char *path,
                      const char *key, const char *const *headers, int n_headers);

/* Examines the response gathered so far. On anything but HANDSHAKE_INCOMPLETE, *head_len is the
 * length of the head (through the blank line); bytes after it are WebSocket frames. *status gets
 * the HTTP status code when one was parsed. `protocol`, when not NULL, is the subprotocol that
 * was offered: the response must select exactly it (RFC 6455 4.1: a client fails a connection
 * whose server picked none it offered). */
enum handshake_result handshake_check(const char *buf, size_t len, const char *expected_accept,
                                      const char *protocol, size_t *head_len, int *status);

#endif /* WSBENCH_HANDSHAKE_H */
