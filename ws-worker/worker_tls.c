/* worker_tls.c -- TLS on the workers themselves, and the handshake's size and time limits.
 *
 * For deployments without a front (nginx, Apache), tls_cert and tls_key make every worker speak
 * wss:// on the shared listening socket. lws 4.1.6 builds the vhost's SSL_CTX when
 * LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT is set and a certificate is given, also for a vhost with
 * port CONTEXT_PORT_NO_LISTEN_SERVER (lib/tls/tls-server.c only skips CONTEXT_PORT_NO_LISTEN),
 * and lws_adopt_socket_vhost() already adopts with LWS_ADOPT_ALLOW_SSL (lib/core-net/adopt.c),
 * so worker_accept.c needs no change: each accepted socket starts with a TLS handshake.
 * Policy: TLS 1.2 and 1.3 only (SSL_OP_NO_TLSv1, _TLSv1_1; tls_min_version 1.3 drops 1.2 too),
 * tls_ciphers for 1.2 (default: ECDHE with AES-GCM or ChaCha20-Poly1305, forward secrecy and
 * AEAD only, Mozilla's "intermediate"), OpenSSL's AEAD suites for 1.3, no renegotiation, no
 * compression (lws sets that and server preference itself).
 *
 * Reload: a rolling restart (SIGHUP) re-execs the workers with the re-read configuration, so new
 * connections get the new certificate while old ones finish on the old. A certificate that
 * cannot be used is caught in worker_tls_check() before the context exists, and the worker exits
 * 2 (fatal): at a reload that abandons the restart and the old generation keeps serving, instead
 * of lws failing to create the context and the hub respawning a worker that can never start.
 *
 * Limits that live in the context: max_header_size (lws's header buffer per handshake: a
 * request with more is dropped without a response, lws 4.1.6 has no 431 path) and
 * handshake_timeout, which cuts slowloris clients. lws arms it per phase, in whole seconds, and
 * does not re-arm it per byte: timeout_secs from adoption to the first request byte (and for the
 * TLS accept), then timeout_secs_ah_idle, set to the same, from the first byte until the headers
 * are complete (lib/roles/http/parsers.c, __lws_header_table_reset). So a handshake gets at most
 * about 2 x handshake_timeout (3 x with TLS), plus up to 1 s of timer lag (worker.c).
 */
#include "worker_auth.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <string.h>

#include "log.h"

#define WORKER_TLS13_SUITES                                                                        \
    "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256"

static void tls_log_openssl(const char *what, const char *path)
{
    char buf[256];
    unsigned long e = ERR_get_error();
    ERR_error_string_n(e, buf, sizeof(buf));
    log_error(0, "%s(%s) failed: %s", what, path, e ? buf : "unknown error");
    ERR_clear_error();
}

/* Loads the pair into a scratch SSL_CTX and checks they belong together. Returns 0 or -1. */
int worker_tls_check(const struct conf *c)
{
    if (c->tls_cert[0] == '\0')
        return 0;
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    int ok = 0;
    if (ctx == NULL)
        tls_log_openssl("SSL_CTX_new", "-");
    else if (SSL_CTX_use_certificate_chain_file(ctx, c->tls_cert) != 1)
        tls_log_openssl("SSL_CTX_use_certificate_chain_file", c->tls_cert);
    else if (SSL_CTX_use_PrivateKey_file(ctx, c->tls_key, SSL_FILETYPE_PEM) != 1)
        tls_log_openssl("SSL_CTX_use_PrivateKey_file", c->tls_key);
    else if (SSL_CTX_check_private_key(ctx) != 1)
        tls_log_openssl("SSL_CTX_check_private_key", c->tls_key);
    else if (SSL_CTX_set_cipher_list(ctx, c->tls_ciphers) != 1)
        tls_log_openssl("SSL_CTX_set_cipher_list", c->tls_ciphers);
    else
        ok = 1;
    SSL_CTX_free(ctx);
    return ok ? 0 : -1;
}

void worker_tls_context_info(struct worker *w, struct lws_context_creation_info *info)
{
    const struct conf *c = &w->conf;
    info->timeout_secs = (c->handshake_timeout_ms + 999) / 1000;
    info->timeout_secs_ah_idle = info->timeout_secs;
    info->max_http_header_data = 0; /* 0: lws takes the wider max_http_header_data2 */
    info->max_http_header_data2 = c->max_header_size;
    if (c->tls_cert[0] == '\0')
        return;
    info->options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
    info->ssl_cert_filepath = c->tls_cert;
    info->ssl_private_key_filepath = c->tls_key;
    info->ssl_cipher_list = c->tls_ciphers;
    info->tls1_3_plus_cipher_list = WORKER_TLS13_SUITES;
    info->ssl_options_set = SSL_OP_NO_SSLv3 | SSL_OP_NO_TLSv1 | SSL_OP_NO_TLSv1_1 |
                            SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION;
    if (strcmp(c->tls_min_version, "1.3") == 0)
        info->ssl_options_set |= SSL_OP_NO_TLSv1_2;
}
