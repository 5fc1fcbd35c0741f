"""Admission before the upgrade (docs/security.md): every bad token, origin and over-limit case
against the running stack, directly and through nginx, checking the HTTP status, that nothing
was upgraded (no 101, `accepted` unchanged), that each refusal is counted by its reason, and that
no token reaches a log; valid tokens (HS256 by query, header and cookie, RS256, ES256) still
connect and get broadcasts, with their sub as the user id in GET /admin/connections. Also:
auth off is loud (log, stats.json, /metrics), per-IP and per-user limits across workers (and
behind a trusted proxy that a client cannot fool with its own X-Forwarded-For), counts given back
when a worker is killed or an upgrade fails after the check, client message rate (1008) and size
(1009), slow and oversized handshakes, and wshub-admin's request hardening.

HS tokens and every crafted case are minted here with hmac/base64; RS256/ES256 with Debian's
python3-jwt and python3-cryptography (scripts/deps.sh). Direct clients bind 127.0.0.2 and up, so
that 127.0.0.1 (nginx) can be the trusted proxy.
"""
import asyncio
import base64
import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

import wshub_stack
from wsclients import connect, in_thread, until
from wshub_stack import make_base_dir, wait_for

ISSUER, AUDIENCE = "wshub-tests", "wshub"


# ---------------------------------------------------------------------------------------------
# Keys and tokens


def b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign_hs(secret, header, payload, alg="HS256"):
    """A JWS with HMAC over exactly the given header and payload bytes (dicts are JSON-encoded;
    bytes are used as they are, for crafted JSON)."""
    enc = [b64u(x if isinstance(x, bytes) else json.dumps(x).encode()) for x in (header, payload)]
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    signing_input = ".".join(enc)
    return signing_input + "." + b64u(hmac.new(secret, signing_input.encode(), digest).digest())


class Keys:
    """Key material for one test, in files the workers read."""

    def __init__(self):
        self.dir = make_base_dir("wshub-keys-")
        self.secret = base64.b64encode(os.urandom(36))  # 48 bytes of text
        self.other_secret = base64.b64encode(os.urandom(36))
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.rsa_pub = self.rsa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.ec_pub = self.ec.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.files = {}
        for name, data in (("hs.secret", self.secret + b"\n"), ("rsa.pub", self.rsa_pub),
                           ("ec.pub", self.ec_pub)):
            path = os.path.join(self.dir, name)
            with open(path, "wb") as f:
                f.write(data)
            os.chmod(path, 0o644)
            self.files[name] = path

    def conf_lines(self):
        return ["jwt_key k1 HS256 file:%s" % self.files["hs.secret"],
                "jwt_key r1 RS256 %s" % self.files["rsa.pub"],
                "jwt_key e1 ES256 %s" % self.files["ec.pub"]]

    def claims(self, sub="alice", **kw):
        now = int(time.time())
        c = {"sub": sub, "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 300}
        c.update(kw)
        return {k: v for k, v in c.items() if v is not None}

    def hs(self, sub="alice", kid="k1", **kw):
        return sign_hs(self.secret, {"alg": "HS256", "typ": "JWT", "kid": kid},
                       self.claims(sub, **kw))

    def rs(self, sub="alice", kid="r1", **kw):
        pem = self.rsa.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())
        return pyjwt.encode(self.claims(sub, **kw), pem, algorithm="RS256", headers={"kid": kid})

    def es(self, sub="alice", kid="e1", **kw):
        pem = self.ec.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        return pyjwt.encode(self.claims(sub, **kw), pem, algorithm="ES256", headers={"kid": kid})


@pytest.fixture
def keys():
    k = Keys()
    yield k
    shutil.rmtree(k.dir, ignore_errors=True)


def start_stack(make_stack, keys, lines=(), options=None, workers=2, nginx=True):
    """A stack whose config gets `lines` appended (list options repeat, a dict cannot)."""
    opts = {"jwt_issuer": ISSUER, "jwt_audience": AUDIENCE, "trusted_proxy": "127.0.0.1"}
    opts.update(options or {})
    stack = make_stack(workers=workers, options=opts, nginx=nginx, start=False)
    with open(stack.hub.conf_file, "a") as f:
        for line in (keys.conf_lines() if keys else []) + list(lines):
            f.write(line + "\n")
    return stack.start()


# ---------------------------------------------------------------------------------------------
# Raw handshakes


def upgrade(port, path="/ws", headers=(), local="127.0.0.2", timeout=5, keep=False):
    """Sends one upgrade request with extra header lines. Returns (status or None if the server
    closed without answering, response head, body) -- and the socket when keep."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    if local:
        s.bind((local, 0))
    s.connect(("127.0.0.1", port))
    req = ("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
           "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n" %
           (path, port, base64.b64encode(os.urandom(16)).decode()))
    req += "".join(h + "\r\n" for h in headers) + "\r\n"
    s.sendall(req.encode())
    buf = b""
    try:
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
        head, _, body = buf.partition(b"\r\n\r\n")
        m = re.match(rb"HTTP/1\.[01] (\d{3})", head)
        status = int(m.group(1)) if m else None
        if status is not None and status != 101:
            length = re.search(rb"(?i)content-length: *(\d+)", head)
            while length and len(body) < int(length.group(1)):
                chunk = s.recv(4096)
                if not chunk:
                    break
                body += chunk
    except (ConnectionResetError, socket.timeout):
        head, body, status = b"", b"", None
    if keep:
        return status, head.decode("latin-1"), body, s
    s.close()
    return status, head.decode("latin-1"), body


def rejected(stack):
    return stack.stats()["totals"]["rejected"]


def log_text(stack):
    out = ""
    for path in (stack.hub.log_file, stack.hub.out_file) + \
            ((stack.nginx.error_log, os.path.join(stack.nginx.prefix, "access.log"))
             if stack.nginx else ()):
        try:
            with open(path, errors="replace") as f:
                out += f.read()
        except OSError:
            pass
    return out


def assert_no_token_in_logs(stack, tokens):
    text = log_text(stack)
    for t in tokens:
        for part in [t] + [p for p in t.split(".") if len(p) > 16]:
            assert part not in text, "a token (or part of one) reached a log: %r" % part[:40]


# ---------------------------------------------------------------------------------------------
# Tokens


def bad_tokens(keys):
    """(name, token, reason counted) for every token that must be refused with 401."""
    now = int(time.time())
    hdr = {"alg": "HS256", "typ": "JWT", "kid": "k1"}
    good = keys.hs()
    h, p, sig = good.split(".")
    tampered_payload = b64u(json.dumps(keys.claims("mallory")).encode())
    return [
        ("malformed: one part", "abcdef", "auth"),
        ("malformed: two parts", "abc.def", "auth"),
        ("malformed: not base64url", "a*b.c*d.e*f", "auth"),
        ("malformed: padding", h + "=." + p + "." + sig, "auth"),
        ("malformed: header not JSON", b64u(b"{alg") + "." + p + "." + sig, "auth"),
        ("unsigned alg none",
         b64u(json.dumps({"alg": "none", "typ": "JWT"}).encode()) + "." + p + ".", "auth"),
        ("unsigned alg None with kid",
         b64u(json.dumps({"alg": "None", "kid": "k1"}).encode()) + "." + p + ".", "auth"),
        ("wrong key", sign_hs(keys.other_secret, hdr, keys.claims()), "auth"),
        ("unknown kid", keys.hs(kid="k9"), "auth"),
        ("no kid and no default key",
         sign_hs(keys.secret, {"alg": "HS256"}, keys.claims()), "auth"),
        ("expired", keys.hs(exp=now - 120), "auth_expired"),
        ("expired long ago, fractional exp", keys.hs(exp=now - 86400.5), "auth_expired"),
        ("not yet valid", keys.hs(nbf=now + 600), "auth_expired"),
        ("no exp", keys.hs(exp=None), "auth"),
        ("exp not a number", keys.hs(exp="tomorrow"), "auth"),
        ("wrong issuer", keys.hs(iss="someone-else"), "auth"),
        ("no issuer", keys.hs(iss=None), "auth"),
        ("wrong audience", keys.hs(aud="other"), "auth"),
        ("audience array without ours", keys.hs(aud=["a", "b"]), "auth"),
        ("sub with a control character", keys.hs(sub="ali\nce"), "auth"),
        ("sub not a string", keys.hs(sub=42), "auth"),
        ("channels not a list", keys.hs(channels="news"), "auth"),
        ("duplicate exp claim",
         sign_hs(keys.secret, hdr, ('{"sub":"x","iss":"%s","aud":"%s","exp":1,"exp":%d}' %
                                    (ISSUER, AUDIENCE, now + 300)).encode()), "auth"),
        ("crit header", sign_hs(keys.secret, dict(hdr, crit=["exp"]), keys.claims()), "auth"),
        ("typ not JWT", sign_hs(keys.secret, dict(hdr, typ="JWE"), keys.claims()), "auth"),
        ("algorithm confusion: HS256 signed with the RSA public key",
         sign_hs(keys.rsa_pub, {"alg": "HS256", "typ": "JWT", "kid": "r1"}, keys.claims()),
         "auth"),
        ("algorithm confusion: HS256 with the EC public key",
         sign_hs(keys.ec_pub, {"alg": "HS256", "kid": "e1"}, keys.claims()), "auth"),
        ("algorithm confusion: RS256 token naming the HS key", keys.rs(kid="k1"), "auth"),
        ("HS384 token for the HS256 key",
         sign_hs(keys.secret, dict(hdr, alg="HS384"), keys.claims(), alg="HS384"), "auth"),
        ("tampered payload", h + "." + tampered_payload + "." + sig, "auth"),
        ("tampered header (kid)",
         b64u(json.dumps(dict(hdr, kid="r1")).encode()) + "." + p + "." + sig, "auth"),
        ("tampered signature", h + "." + p + "." + sig[:-2] + ("AA" if sig[-2:] != "AA" else "BA"),
         "auth"),
        ("RS256 signature over another payload",
         ".".join(keys.rs().split(".")[:1] + [tampered_payload] + keys.rs().split(".")[2:]),
         "auth"),
        ("ES256 signature over another payload",
         ".".join(keys.es().split(".")[:1] + [tampered_payload] + keys.es().split(".")[2:]),
         "auth"),
        ("ES256 signature cut short", keys.es()[:-8], "auth"),
        ("oversized token", "a" * 5000 + "." + p + "." + sig, "auth"),
    ]


def test_bad_tokens_refused_direct_and_through_nginx(make_stack, keys):
    stack = start_stack(make_stack, keys)
    cases = bad_tokens(keys)
    before = stack.stats()["totals"]
    expected = {}
    tokens = []
    for via, port in (("direct", stack.hub.port), ("nginx", stack.nginx.port)):
        local = "127.0.0.2" if via == "direct" else None
        status, head, body = upgrade(port, local=local)
        assert status == 401, (via, "missing", head)
        assert "www-authenticate: bearer" in head.lower(), head
        expected["auth_missing"] = expected.get("auth_missing", 0) + 1
        for name, token, reason in cases:
            tokens.append(token)
            # each through the header and the query parameter (the oversized one by header only:
            # it would not fit nginx's default header buffers as a query)
            ways = [["Authorization: Bearer " + token]]
            if len(token) < 3000:
                ways.append(None)
            for extra in ways:
                path = "/ws" if extra else "/ws?token=" + token
                status, head, body = upgrade(port, path=path, headers=extra or (), local=local)
                assert status == 401, "%s (%s, %s): %s %r" % (name, via, "header" if extra
                                                               else "query", head, body)
                assert b"token" in body, body  # "missing token", "invalid token", "token expired"
                expected[reason] = expected.get(reason, 0) + 1
    after = stack.stats()["totals"]
    assert after["accepted"] == before["accepted"], "a refused handshake was upgraded"
    for reason, n in expected.items():
        assert after["rejected"][reason] - before["rejected"][reason] == n, \
            (reason, n, after["rejected"])
    m = stack.metrics()
    assert m.sum("wshub_handshakes_rejected_total", reason="auth_expired") == \
        after["rejected"]["auth_expired"]
    # Refusals are logged at most 20 a second per worker, then counted: after a pause, one
    # more refusal of each kind shows its own line, and the summary of those not logged.
    time.sleep(1.1)
    confused = [t for n, t, _ in cases if n.startswith("algorithm confusion: HS256 signed")][0]
    unsigned = [t for n, t, _ in cases if n == "unsigned alg none"][0]
    for token in (confused, keys.hs(exp=int(time.time()) - 100), unsigned):
        for local in ("127.0.0.2", "127.0.0.3"):  # both workers, most likely
            assert upgrade(stack.hub.port, "/ws?token=" + token, local=local)[0] == 401
    assert_no_token_in_logs(stack, tokens)
    log = log_text(stack)
    assert re.search(r"refused with 401: algorithm does not match the key \(token query "
                     r"parameter, kid \"r1\"\)", log), log[-3000:]
    assert "refused with 401: token expired" in log and "unsigned token (alg none)" in log
    assert re.search(r"\d+ more handshake refusals not logged", log), log[-3000:]


def test_valid_tokens_connect_and_name_the_user(make_stack, keys):
    stack = start_stack(make_stack, keys, options={"jwt_cookie": "wshub_jwt"})
    direct, proxied = stack.hub.ws_url, stack.nginx.ws_url
    tokens = {"hs-query": keys.hs("u-query"), "hs-header": keys.hs("u-header"),
              "hs-cookie": keys.hs("u-cookie"), "rs256": keys.rs("u-rsa"),
              "es256": keys.es("u-ec"), "nginx": keys.hs("u-nginx"),
              "aud-array": keys.hs("u-aud", aud=["x", AUDIENCE]),
              "channels": keys.hs("u-chan", channels=["news", "sports.live"]),
              "long-sub": keys.hs("u" * 60)}

    async def scenario():
        clients = [
            await connect(direct + "?token=" + tokens["hs-query"]),
            await connect(direct, extra_headers={"Authorization": "Bearer " +
                                                 tokens["hs-header"]}),
            await connect(direct, extra_headers={"Cookie": "a=b; wshub_jwt=" +
                                                 tokens["hs-cookie"] + "; c=d"}),
            await connect(direct + "?token=" + tokens["rs256"]),
            await connect(direct + "?foo=bar&token=" + tokens["es256"]),
            await connect(proxied, extra_headers={"Authorization": "Bearer " + tokens["nginx"]}),
            await connect(direct + "?token=" + tokens["aud-array"]),
            await connect(direct + "?token=" + tokens["channels"]),
            await connect(direct + "?token=" + tokens["long-sub"]),
        ]
        r = await in_thread(stack.broadcast, "hello, authenticated")
        assert r.status == 202, r
        await until(lambda: all(c.messages for c in clients), 10, "the broadcast everywhere")
        assert all(c.messages == ["hello, authenticated"] for c in clients)
        rows = (await in_thread(stack.admin, "GET", "/admin/connections")).json()["connections"]
        users = sorted(row["user"] for row in rows)
        long_row = [u for u in users if u.startswith("uuu")]
        assert len(long_row) == 1 and len(long_row[0]) == 47 and "~" in long_row[0], users
        assert sorted(u for u in users if not u.startswith("uuu")) == sorted(
            ["u-query", "u-header", "u-cookie", "u-rsa", "u-ec", "u-nginx", "u-aud", "u-chan"])
        r = await in_thread(stack.admin, "GET", "/admin/connections?user=u-rsa")
        assert [row["user"] for row in r.json()["connections"]] == ["u-rsa"]
        for c in clients:
            await c.close()

    asyncio.run(scenario())
    sec = stack.stats()["security"]
    assert sec["auth"] == "on" and not sec["auth_off_explicit"], sec
    assert stack.metrics().sum("wshub_auth_enforced") == 1
    assert_no_token_in_logs(stack, list(tokens.values()))


# ---------------------------------------------------------------------------------------------
# Origins


ORIGIN_CASES = [
    ("https://example.com", 101),
    ("https://EXAMPLE.com", 101),
    ("https://app.example.com", 101),
    ("https://a.b.example.com", 101),
    ("https://example.com:443", 101),
    ("http://localhost:8080", 101),
    ("https://example.com.evil.org", 403),
    ("https://evilexample.com", 403),
    ("https://example.com.", 403),
    ("https://.example.com", 403),
    ("https://example.com/", 403),
    ("https://user@example.com", 403),
    ("null", 403),
    ("http://example.com", 403),
    ("https://example.com:8443", 403),
    ("http://localhost:8081", 403),
    ("https://localhost:8080", 403),
    ("wss://example.com", 403),
    ("example.com", 403),
    ("https://exa%6dple.com", 403),
]


def test_origin_allowlist(make_stack, keys):
    stack = start_stack(make_stack, keys, lines=[
        "allow_origin https://example.com", "allow_origin https://*.example.com",
        "allow_origin http://localhost:8080"])
    token = keys.hs()
    before = rejected(stack)
    accepted = stack.stats()["totals"]["accepted"]
    want_ok = 0
    for via, port, local in (("direct", stack.hub.port, "127.0.0.2"),
                             ("nginx", stack.nginx.port, None)):
        for origin, want in ORIGIN_CASES:
            status, head, body = upgrade(port, "/ws?token=" + token, ["Origin: " + origin],
                                         local=local)
            assert status == want, (via, origin, head)
            want_ok += want == 101
        # two Origin headers reach the worker joined with ',' and are refused
        status, head, _ = upgrade(port, "/ws?token=" + token,
                                  ["Origin: https://example.com", "Origin: https://evil.org"],
                                  local=local)
        assert status == 403, (via, head)
        # no Origin at all (not a browser): allowed by default
        assert upgrade(port, "/ws?token=" + token, local=local)[0] == 101
        want_ok += 1
    # origin is checked before the token: a foreign page learns nothing about tokens
    assert upgrade(stack.hub.port, "/ws", ["Origin: https://evil.org"])[0] == 403
    after = rejected(stack)
    n_bad = sum(1 for _, w in ORIGIN_CASES if w == 403) * 2 + 2 + 1
    assert after["origin"] - before["origin"] == n_bad, after
    wait_for(lambda: stack.stats()["totals"]["accepted"] - accepted == want_ok, 5,
             "accepted == the allowed handshakes")
    assert stack.stats()["security"]["origin_allowlist"] is True
    assert 'origin "https://example.com.evil.org" not allowed' in log_text(stack)


def test_origin_missing_deny(make_stack, keys):
    stack = start_stack(make_stack, keys, lines=["allow_origin https://example.com"],
                        options={"origin_missing": "deny"}, nginx=False)
    token = keys.hs()
    status, _, body = upgrade(stack.hub.port, "/ws?token=" + token)
    assert status == 403 and b"origin required" in body
    assert upgrade(stack.hub.port, "/ws?token=" + token, ["Origin: https://example.com"])[0] == 101
    assert rejected(stack)["origin_missing"] == 1


# ---------------------------------------------------------------------------------------------
# Authentication off, loudly


@pytest.mark.parametrize("mode", ["explicit", "no-keys"])
def test_auth_off_is_loud(make_stack, keys, mode):
    explicit = mode == "explicit"
    stack = start_stack(make_stack, keys if explicit else None,
                        options={"auth": "off"} if explicit else None, nginx=False)
    assert upgrade(stack.hub.port)[0] == 101  # no token needed
    log = log_text(stack)
    assert "AUTHENTICATION IS OFF" in log, log[-2000:]
    assert ('("auth off" in the configuration)' in log) == explicit
    sec = stack.stats()["security"]
    assert sec["auth"] == "off" and sec["auth_off_explicit"] == explicit, sec
    assert stack.metrics().sum("wshub_auth_enforced") == 0


def test_bad_key_configuration_is_fatal(make_stack, keys, tmp_path):
    """A key the worker cannot use stops the start with a clear line (exit 2), never a worker
    that runs without it: a short HS256 secret, an EC key given as RS256, a missing file."""
    short = tmp_path / "short.secret"
    short.write_text("0123456789")
    for line, words in ((("jwt_key s HS256 file:%s" % short), "at least 32 bytes"),
                        ("jwt_key r RS256 %s" % keys.files["ec.pub"], "not an RSA key"),
                        ("jwt_key e ES256 /nonexistent/key.pem", "fopen(/nonexistent/key.pem)")):
        stack = make_stack(workers=1, nginx=False, start=False)
        with open(stack.hub.conf_file, "a") as f:
            f.write(line + "\n")
        stack.hub.start()
        rc = stack.hub.wait_exit(20)
        assert rc is not None and rc != 0, "hub kept running with %r" % line
        assert words in log_text(stack), (line, log_text(stack)[-2000:])


# ---------------------------------------------------------------------------------------------
# Limits


def test_connections_per_ip_and_per_user(make_stack, keys):
    stack = start_stack(make_stack, keys, options={"max_connections_per_ip": 3,
                                                   "max_connections_per_user": 2})
    held = []

    def hold(port, token, local, extra=()):
        status, head, body, s = upgrade(port, "/ws?token=" + token, extra, local=local, keep=True)
        if status == 101:
            held.append(s)
        else:
            s.close()
        return status, body

    try:
        # per IP, across both workers: three from 127.0.0.2 (different users), the fourth 429
        for i in range(3):
            assert hold(stack.hub.port, keys.hs("ip-user-%d" % i), "127.0.0.2")[0] == 101
        status, body = hold(stack.hub.port, keys.hs("ip-user-9"), "127.0.0.2")
        assert status == 429 and b"address" in body, body
        assert hold(stack.hub.port, keys.hs("ip-user-9"), "127.0.0.3")[0] == 101
        # a direct (untrusted) client cannot pick its address with X-Forwarded-For
        assert hold(stack.hub.port, keys.hs("ip-user-8"), "127.0.0.2",
                    ["X-Forwarded-For: 10.1.2.3"])[0] == 429
        # per user: two connections of bob from two addresses, the third is refused
        assert hold(stack.hub.port, keys.hs("bob"), "127.0.0.4")[0] == 101
        assert hold(stack.hub.port, keys.es("bob"), "127.0.0.5")[0] == 101
        status, body = hold(stack.hub.port, keys.rs("bob"), "127.0.0.6")
        assert status == 429 and b"user" in body, body
        # behind nginx (trusted): the client is X-Forwarded-For's last hop, which nginx adds;
        # a client's own X-Forwarded-For entry in front of it changes nothing
        for i in range(3):
            assert hold(stack.nginx.port, keys.hs("px-%d" % i), "127.0.0.7",
                        ["X-Forwarded-For: 10.9.9.%d" % i])[0] == 101
        assert hold(stack.nginx.port, keys.hs("px-9"), "127.0.0.7")[0] == 429
        assert hold(stack.nginx.port, keys.hs("px-9"), "127.0.0.8")[0] == 101
        r = rejected(stack)
        assert (r["limit"], r["limit_user"]) == (3, 1), r
        rows = stack.admin("GET", "/admin/connections").json()["connections"]
        assert len(rows) == 3 + 1 + 2 + 3 + 1
        # closing one of bob's gives the place back (CLOSED releases the count)
        bob = [s for s in held if s.getsockname()[0] == "127.0.0.4"][0]
        bob.close()
        held.remove(bob)
        wait_for(lambda: hold(stack.hub.port, keys.rs("bob"), "127.0.0.6")[0] == 101, 10,
                 "bob's released place")
    finally:
        for s in held:
            s.close()
    assert "too many connections for this user (user \"bob\")" in log_text(stack)


def test_limits_released_by_a_killed_worker_and_a_failed_upgrade(make_stack, keys):
    stack = start_stack(make_stack, keys, options={"max_connections_per_user": 1,
                                                   "max_connections_per_ip": 1}, nginx=False)
    # a grant whose upgrade then fails (no Sec-WebSocket-Key: lws, or the RFC checks, refuse it)
    s = socket.create_connection(("127.0.0.1", stack.hub.port), timeout=5)
    s.sendall(("GET /ws?token=%s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n" % keys.hs("carol"))
              .encode())
    try:
        answer = s.recv(4096)
    except (ConnectionResetError, socket.timeout):
        answer = b""
    s.close()
    assert not answer.startswith(b"HTTP/1.1 101"), answer
    # ... gives its place back: carol (and 127.0.0.1) can connect now
    status, _, _, sock = upgrade(stack.hub.port, "/ws?token=" + keys.hs("carol"),
                                 local="127.0.0.1", keep=True)
    assert status == 101
    assert upgrade(stack.hub.port, "/ws?token=" + keys.hs("carol"), local="127.0.0.9")[0] == 429
    # SIGKILL the worker holding carol: its counts stop counting at once
    row = wait_for(lambda: [r for r in stack.admin("GET", "/admin/connections")
                            .json()["connections"] if r["user"] == "carol"], 5, "carol's row")[0]
    pid = [w["pid"] for w in stack.stats()["workers"] if w["slot"] == row["worker"]][0]
    os.kill(pid, 9)
    wait_for(lambda: upgrade(stack.hub.port, "/ws?token=" + keys.hs("carol"),
                             local="127.0.0.9")[0] == 101, 15, "carol's place after the kill")
    sock.close()


def test_client_message_rate_and_size(make_stack, keys):
    stack = start_stack(make_stack, keys, options={"client_message_rate": 5,
                                                   "client_message_burst": 10,
                                                   "client_max_message": "1k"}, nginx=False)
    url = stack.hub.ws_url + "?token=" + keys.hs()

    async def scenario():
        flood, calm, big = await connect(url), await connect(url), await connect(url)
        for i in range(40):
            try:
                await flood.ws.send("m%d" % i)
            except Exception:
                break
        await until(lambda: flood.closed.is_set(), 10, "the flooding client closed")
        assert flood.close_code == 1008, (flood.close_code, flood.lib_code)
        for i in range(6):  # within burst and rate
            await calm.ws.send("ok %d" % i)
            await asyncio.sleep(0.25)
        await big.ws.send("x" * 1025)
        await until(lambda: big.closed.is_set(), 10, "the oversized message closed")
        assert big.close_code == 1009, big.close_code
        assert not calm.closed.is_set(), "a client within the rate was closed"
        await calm.close()

    asyncio.run(scenario())
    closed = stack.stats()["totals"]["closed"]
    assert closed["policy"] == 1 and closed["too_big"] == 1, closed


def test_slow_and_oversized_handshakes(make_stack, keys):
    stack = start_stack(make_stack, keys, options={"handshake_timeout": "2s",
                                                   "max_header_size": "2k"}, nginx=False)
    port = stack.hub.port
    # slowloris: a header byte every 0.3 s never completes a request. lws arms the timeout per
    # phase (accept to first byte, first byte to whole headers), so the cut comes within
    # 2 x handshake_timeout plus up to 1 s of timer lag
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    start = time.monotonic()
    req = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nX-Slow: " + b"a" * 200
    cut = None
    for i in range(len(req)):
        try:
            s.sendall(req[i:i + 1])
            time.sleep(0.3)
        except (BrokenPipeError, ConnectionResetError):
            cut = time.monotonic() - start
            break
        if time.monotonic() - start > 8:
            break
    if cut is None:  # the send side may still be open after the server closed
        s.settimeout(2)
        try:
            got = s.recv(100)
        except (ConnectionResetError, socket.timeout):
            got = None
        assert got == b"", "slow handshake not dropped: %r" % got
        cut = time.monotonic() - start
    s.close()
    assert 1.5 < cut < 6.5, "slow handshake cut after %.1f s (handshake_timeout 2s)" % cut
    # an idle connection that sends nothing is dropped too
    s = socket.create_connection(("127.0.0.1", port), timeout=6)
    assert s.recv(10) == b""
    s.close()
    # headers over max_header_size: dropped without an upgrade
    status, head, _ = upgrade(port, "/ws?token=" + keys.hs(), ["X-Big: " + "b" * 3000])
    assert status != 101, head
    # under it: fine
    assert upgrade(port, "/ws?token=" + keys.hs(), ["X-Small: " + "b" * 500])[0] == 101


# ---------------------------------------------------------------------------------------------
# wshub-admin hardening


def test_admin_request_hardening(make_stack):
    stack = make_stack(workers=1, nginx=False, options={"admin_request_timeout": "1s",
                                                         "admin_threads": 2})
    sock_path = stack.hub.admin_socket
    # a body where none is taken: 413 before anything is done
    r = stack.hub.fcgi("POST", "/admin/workers/restart", body=b"x" * 5000)
    assert r.status == 413 and r.json()["error"] == "request body too large", r
    assert stack.stats()["hub"]["restart_requested"] == 0
    # a peer that connects and says nothing holds a thread at most admin_request_timeout
    silent = [socket.socket(socket.AF_UNIX) for _ in range(2)]
    for s in silent:
        s.connect(sock_path)
    start = time.monotonic()
    r = stack.hub.fcgi("GET", "/healthz", timeout=10)
    assert r.status == 200 and time.monotonic() - start < 5, (r, time.monotonic() - start)
    for s in silent:
        s.close()
    # a body that stops coming: 408 within the timeout
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(sock_path)
    params = {"REQUEST_METHOD": "POST", "REQUEST_URI": "/admin/broadcast",
              "CONTENT_LENGTH": "1000", "CONTENT_TYPE": "text/plain"}
    pairs = b"".join(wshub_stack._fcgi_pair(k.encode(), v.encode()) for k, v in params.items())
    s.sendall(wshub_stack._fcgi_record(wshub_stack.FCGI_BEGIN_REQUEST,
                                       b"\0\1\0\0\0\0\0\0") +
              wshub_stack._fcgi_record(wshub_stack.FCGI_PARAMS, pairs) +
              wshub_stack._fcgi_record(wshub_stack.FCGI_PARAMS, b"") +
              wshub_stack._fcgi_record(wshub_stack.FCGI_STDIN, b"only some of it"))
    start = time.monotonic()
    out = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        out += chunk
        if b"Status:" in out and b"}\n" in out:
            break
    s.close()
    assert b"Status: 408" in out and time.monotonic() - start < 5, out[:300]
    assert stack.stats()["ring"]["published"] == 0
    # every answer says nosniff
    r = stack.hub.fcgi("GET", "/admin/stats.json")
    assert r.headers.get("x-content-type-options") == "nosniff"
    # a 503 tells a client that the hub is not running, not its pid or segment name (public
    # /healthz): the hub stopped (SIGSTOP) until its heartbeat is stale
    os.kill(stack.hub.pid, signal.SIGSTOP)
    try:
        r = wait_for(lambda: (lambda x: x if x.status == 503 else None)(
            stack.hub.fcgi("GET", "/healthz", timeout=5)), 15, "healthz 503")
    finally:
        os.kill(stack.hub.pid, signal.SIGCONT)
    body = r.json()
    assert body["reason"] == "hub not running" and body["detail"] is None, body
    assert str(stack.hub.pid) not in r.body.decode(), r
    wait_for(lambda: stack.hub.fcgi("GET", "/healthz", timeout=5).status == 200, 15,
             "healthz 200 again")


def test_security_options_checked_by_wshub_t(tmp_path):
    """`wshub -t` names the file and line of a security option it cannot accept (exit 2)."""
    cases = [("auth on", "auth on needs at least one jwt_key"),
             ("auth maybe", "expected auto, on or off"),
             ("jwt_key k1 HS257 secret", "algorithm 'HS257'"),
             ("jwt_key k1 HS256", "expected <kid> <alg>"),
             ("jwt_key k/1 HS256 x", "kid 'k/1'"),
             ("origin_missing maybe", "expected allow or deny"),
             ("allow_origin https://exa mple.com", "not an origin"),
             ("trusted_proxy 10.0.0.0/8;", "not an address or CIDR"),
             ("tls_cert /etc/ssl/a.pem", "tls_cert and tls_key go together"),
             ("tls_min_version 1.1", "expected 1.2 or 1.3"),
             ("max_connections_per_ip 70000", "out of range")]
    for i, (line, words) in enumerate(cases):
        conf = tmp_path / ("c%d.conf" % i)
        conf.write_text("# test\n" + line + "\n")
        r = subprocess.run([wshub_stack.binary("wshub"), "-t", "-c", str(conf)],
                           capture_output=True, text=True)
        assert r.returncode == 2 and ("c%d.conf:2:" % i) in r.stderr and words in r.stderr, \
            (line, r.returncode, r.stderr)
    conf = tmp_path / "twice.conf"
    conf.write_text("jwt_key a HS256 0123456789abcdef0123456789abcdef\n"
                    "jwt_key a HS512 0123456789abcdef0123456789abcdef\n")
    r = subprocess.run([wshub_stack.binary("wshub"), "-t", "-c", str(conf)], capture_output=True,
                       text=True)
    assert r.returncode == 2 and "kid 'a' is given twice" in r.stderr, r.stderr
