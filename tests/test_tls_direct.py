"""TLS on the workers themselves (tls_cert, tls_key; docs/security.md), for deployments without a
front: wss:// clients connect and receive broadcasts, tokens are checked over TLS as over plain
TCP; TLS 1.0/1.1 and ciphers outside the list are refused (each refusal checked against a control
server, `openssl s_server`, that the same client does reach, so the test cannot pass because
the client simply could not speak the old protocol); plain ws:// on the TLS port is not
upgraded; a rolling restart (SIGHUP) serves a replaced certificate to new connections, and a
broken replacement abandons the restart while the old generation keeps serving.
"""
import asyncio
import base64
import hashlib
import hmac
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import warnings

import pytest

from wsclients import connect, in_thread, until
from wshub_stack import free_port, make_certificate, wait_for


def b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256(secret, claims):
    si = b64u(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "k1"}).encode()) + "." + \
        b64u(json.dumps(claims).encode())
    return si + "." + b64u(hmac.new(secret, si.encode(), hashlib.sha256).digest())


def client_context(cafile):
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.check_hostname = False  # the certificate names 127.0.0.1 too, but keep it simple
    return ctx


def tls_stack(make_stack, workers=2, options=None, secret=None):
    stack = make_stack(workers=workers, options=options, nginx=False, start=False)
    certdir = os.path.join(stack.base, "tls")  # removed with the stack's directory
    os.makedirs(certdir)
    cert, key = make_certificate(certdir)
    stack.hub.options.update({"tls_cert": cert, "tls_key": key})
    stack.hub.write_conf()
    if secret is not None:
        path = os.path.join(certdir, "hs.secret")
        with open(path, "wb") as f:
            f.write(secret)
        with open(stack.hub.conf_file, "a") as f:
            f.write("jwt_key k1 HS256 file:%s\n" % path)
    stack.start()
    stack.cert, stack.key = cert, key
    return stack


def tls_connect(port, ctx, timeout=5):
    """A TLS handshake with ctx; returns the SSL socket (the caller closes it) or raises."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        return ctx.wrap_socket(raw, server_hostname="localhost")
    except Exception:
        raw.close()
        raise


def handshake_ok(port, ctx):
    try:
        tls_connect(port, ctx).close()
        return True
    except (ssl.SSLError, OSError):
        return False


class ControlServer:
    """`openssl s_server` accepting anything a client may offer, to prove a client context works
    before we show our workers refuse it."""

    def __init__(self, cert, key):
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["openssl", "s_server", "-accept", "127.0.0.1:%d" % self.port, "-cert", cert,
             "-key", key, "-cipher", "ALL:@SECLEVEL=0", "-www", "-quiet"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                 or True, 10, "openssl s_server")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(5)


def old_protocol_context(version):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    with warnings.catch_warnings():  # TLS 1.0 and 1.1 are deprecated: that is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = version
        ctx.maximum_version = version
    return ctx


def weak_cipher_context():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers("ECDHE-ECDSA-AES128-SHA:@SECLEVEL=0")  # CBC with SHA-1: not in our list
    return ctx


def test_wss_clients_get_broadcasts(make_stack):
    stack = tls_stack(make_stack)
    ctx = client_context(stack.cert)
    url = "wss://127.0.0.1:%d/ws" % stack.hub.port

    async def scenario():
        clients = [await connect(url, ssl=ctx) for _ in range(20)]
        for i in range(5):
            r = await in_thread(stack.broadcast, "tls message %d" % i)
            assert r.status == 202, r
        await until(lambda: all(len(c.messages) == 5 for c in clients), 10, "5 messages each")
        assert all(c.messages == ["tls message %d" % i for i in range(5)] for c in clients)
        for c in clients:
            await c.close()

    asyncio.run(scenario())
    st = stack.stats()
    assert st["security"]["tls"] is True and st["totals"]["accepted"] == 20, st["security"]
    # plain ws:// on the TLS port: never upgraded
    s = socket.create_connection(("127.0.0.1", stack.hub.port), timeout=5)
    s.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    try:
        answer = s.recv(4096)
    except (ConnectionResetError, socket.timeout):
        answer = b""
    s.close()
    assert b"101" not in answer, answer
    assert stack.stats()["totals"]["accepted"] == 20


def test_tls_versions_and_ciphers(make_stack):
    stack = tls_stack(make_stack, workers=1)
    port = stack.hub.port
    modern = client_context(stack.cert)
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        ctx = client_context(stack.cert)
        ctx.minimum_version = ctx.maximum_version = version
        s = tls_connect(port, ctx)
        assert s.version() == {ssl.TLSVersion.TLSv1_2: "TLSv1.2",
                               ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]
        if version == ssl.TLSVersion.TLSv1_2:
            cipher = s.cipher()[0]
            assert cipher.startswith("ECDHE-") and ("GCM" in cipher or "CHACHA" in cipher), cipher
        s.close()
    control = ControlServer(stack.cert, stack.key)
    try:
        for name, ctx in (("TLS 1.0", old_protocol_context(ssl.TLSVersion.TLSv1)),
                          ("TLS 1.1", old_protocol_context(ssl.TLSVersion.TLSv1_1)),
                          ("CBC/SHA-1 cipher", weak_cipher_context())):
            assert handshake_ok(control.port, ctx), \
                "control: this client cannot do %s even with openssl s_server" % name
            assert not handshake_ok(port, ctx), "the worker accepted %s" % name
    finally:
        control.stop()
    assert handshake_ok(port, modern)


def test_tokens_over_tls(make_stack):
    secret = base64.b64encode(os.urandom(36))
    stack = tls_stack(make_stack, workers=1, secret=secret)
    ctx = client_context(stack.cert)
    url = "wss://127.0.0.1:%d/ws" % stack.hub.port
    token = hs256(secret, {"sub": "tls-user", "exp": int(time.time()) + 60})

    async def scenario():
        with pytest.raises(Exception) as refused:
            await connect(url, ssl=ctx)
        assert "401" in str(refused.value), refused.value
        c = await connect(url + "?token=" + token, ssl=ctx)
        rows = (await in_thread(stack.admin, "GET", "/admin/connections")).json()
        assert [r["user"] for r in rows["connections"]] == ["tls-user"], rows
        await c.close()

    asyncio.run(scenario())
    assert stack.stats()["totals"]["rejected"]["auth_missing"] == 1


def peer_fingerprint(port, ctx):
    s = tls_connect(port, ctx)
    der = s.getpeercert(binary_form=True)
    s.close()
    return hashlib.sha256(der).hexdigest()


def test_certificate_reload_by_rolling_restart(make_stack):
    stack = tls_stack(make_stack, workers=2, options={"restart_spread": "200ms"})
    port = stack.hub.port
    any_cert = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    any_cert.check_hostname = False
    any_cert.verify_mode = ssl.CERT_NONE
    first = peer_fingerprint(port, any_cert)
    # a new certificate and key, written over the configured files
    newdir = os.path.join(stack.base, "tls2")
    os.makedirs(newdir)
    cert2, key2 = make_certificate(newdir)
    shutil.copy(cert2, stack.cert)
    shutil.copy(key2, stack.key)
    second = hashlib.sha256(ssl.PEM_cert_to_DER_cert(open(cert2).read())).hexdigest()
    assert second != first
    assert peer_fingerprint(port, any_cert) == first, "the old generation should keep its cert"

    # a client that trusts the old certificate (the running workers still serve it)
    old_ctx_file = os.path.join(newdir, "old-cert.pem")
    s = tls_connect(port, any_cert)
    with open(old_ctx_file, "w") as f:
        f.write(ssl.DER_cert_to_PEM_cert(s.getpeercert(True)))
    s.close()

    async def restart():
        old = await connect("wss://127.0.0.1:%d/ws" % port, ssl=client_context(old_ctx_file))
        stack.hub.signal(signal.SIGHUP)
        await until(lambda: old.closed.is_set(), 15, "the old connection closed by the restart")
        assert old.close_code == 1012, old.close_code

    asyncio.run(restart())
    wait_for(lambda: stack.stats()["hub"]["generation"] == 2, 15, "generation 2")
    wait_for(lambda: peer_fingerprint(port, any_cert) == second, 10, "the new certificate")

    # a broken replacement: the new workers cannot load it, the restart is abandoned, and the
    # running generation (with the good certificate) keeps serving
    with open(stack.key, "w") as f:
        f.write("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    stack.hub.signal(signal.SIGHUP)
    wait_for(lambda: "abandon" in open(stack.hub.log_file, errors="replace").read(), 20,
             "the restart abandoned")
    assert "SSL_CTX_use_PrivateKey_file" in open(stack.hub.log_file, errors="replace").read()
    assert peer_fingerprint(port, any_cert) == second
    assert stack.stats()["hub"]["generation"] == 2
    shutil.copy(key2, stack.key)  # teardown stops a healthy stack
