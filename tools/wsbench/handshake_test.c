/* handshake_test.c -- the RFC 6455 example key, the request, and each way a response fails. */
#include "handshake.h"
#include "check.h"

#include <stdio.h>
#include <string.h>

static int failures; /* counted by CHECK (check.h) */

static enum handshake_result check(const char *resp, const char *accept)
{
    size_t head = 0;
    int status = 0;
    return handshake_check(resp, strlen(resp), accept, NULL, &head, &status);
}

static enum handshake_result check_proto(const char *proto_line, const char *accept)
{
    char resp[512];
    size_t head = 0;
    int status = 0;
    snprintf(resp, sizeof(resp),
             "HTTP/1.1 101 x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n%s"
             "Sec-WebSocket-Accept: %s\r\n\r\n",
             proto_line, accept);
    return handshake_check(resp, strlen(resp), accept, "wshub.v1", &head, &status);
}

int main(void)
{
    char accept[HANDSHAKE_ACCEPT_LEN + 1], key[HANDSHAKE_KEY_LEN + 1], req[1024], resp[512];
    const uint8_t raw[16] = "the sample nonce";
    const char *hdrs[] = {"Origin: http://example.com"};

    handshake_make_key(raw, key);
    CHECK(strcmp(key, "dGhlIHNhbXBsZSBub25jZQ==") == 0); /* RFC 6455 section 1.3 */
    CHECK(handshake_accept_for(key, accept) == 0);
    CHECK(strcmp(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") == 0);

    int n = handshake_request(req, sizeof(req), "h:1", "/ws?x=1", key, hdrs, 1);
    CHECK(n > 0 && (size_t)n == strlen(req));
    CHECK(strstr(req, "GET /ws?x=1 HTTP/1.1\r\nHost: h:1\r\n") == req);
    CHECK(strstr(req, "\r\nOrigin: http://example.com\r\n\r\n") != NULL);
    CHECK(handshake_request(req, 40, "h:1", "/", key, NULL, 0) == -1);

    snprintf(resp, sizeof(resp),
             "HTTP/1.1 101 Switching Protocols\r\nupgrade: WebSocket\r\nConnection: keep-alive, "
             "Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
             accept);
    size_t head = 0, rl = strlen(resp);
    int status = 0;
    memcpy(resp + rl, "\x81\x00", 2); /* a frame right behind the head */
    CHECK(handshake_check(resp, rl + 2, accept, NULL, &head, &status) == HANDSHAKE_OK);
    CHECK(status == 101 && head == rl);
    resp[rl] = '\0';
    CHECK(check("HTTP/1.1 101 Switching", accept) == HANDSHAKE_INCOMPLETE);
    CHECK(check("HTTP/1.1 403 Forbidden\r\n\r\n", accept) == HANDSHAKE_BAD_STATUS);
    CHECK(check("HTTP/1.0 101 x\r\n\r\n", accept) == HANDSHAKE_BAD_STATUS);
    CHECK(check("SSH-2.0-OpenSSH\r\n\r\n", accept) == HANDSHAKE_MALFORMED);
    snprintf(resp, sizeof(resp),
             "HTTP/1.1 101 x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Accept: %.27sX\r\n\r\n",
             accept);
    CHECK(check(resp, accept) == HANDSHAKE_BAD_ACCEPT);
    CHECK(check("HTTP/1.1 101 x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", accept) ==
          HANDSHAKE_BAD_ACCEPT);
    snprintf(resp, sizeof(resp),
             "HTTP/1.1 101 x\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", accept);
    CHECK(check(resp, accept) == HANDSHAKE_BAD_UPGRADE);
    snprintf(resp, sizeof(resp),
             "HTTP/1.1 101 x\r\nUpgrade: websocket\r\nConnection: close\r\n"
             "Sec-WebSocket-Accept: %s\r\n\r\n",
             accept);
    CHECK(check(resp, accept) == HANDSHAKE_BAD_UPGRADE);

    /* The subprotocol offered must be the one selected, exactly (its name is case-sensitive). */
    CHECK(check_proto("Sec-WebSocket-Protocol: wshub.v1\r\n", accept) == HANDSHAKE_OK);
    CHECK(check_proto("sec-websocket-protocol:wshub.v1  \r\n", accept) == HANDSHAKE_OK);
    CHECK(check_proto("", accept) == HANDSHAKE_BAD_PROTOCOL);
    CHECK(check_proto("Sec-WebSocket-Protocol: wshub.v2\r\n", accept) == HANDSHAKE_BAD_PROTOCOL);
    CHECK(check_proto("Sec-WebSocket-Protocol: WSHUB.V1\r\n", accept) == HANDSHAKE_BAD_PROTOCOL);
    CHECK(check_proto("Sec-WebSocket-Protocol: wshub.v1, x\r\n", accept) == HANDSHAKE_BAD_PROTOCOL);
    if (failures) {
        fprintf(stderr, "handshake_test: %d failures\n", failures);
        return 1;
    }
    printf("handshake_test: ok\n");
    return 0;
}
