"""Apache 2.4 in front, as apache-conf/ configures it (scripts/render-apache.py), started for real
from a temporary directory: the end-to-end cases through it (ws:// and wss:// with a certificate
made at test time, broadcasts POSTed through it, SIGTERM -> 1001), the admin error contract as
Apache passes or produces it, the address restriction, and the mod_fcgid variant in which Apache
spawns wshub-admin itself."""
import asyncio
import grp
import http.client
import os
import signal
import socket
import ssl
import stat
import subprocess
import time

import wshub_stack
from wsclients import connect_many, in_thread, until
from wshub_stack import IS_ROOT, Metrics, pid_user, raw_upgrade, wait_for

N_PLAIN = 300
N_TLS = 20
N_MESSAGES = 50
TEXT = {"Content-Type": "text/plain; charset=utf-8"}


def message(i):
    return "apache %03d | grüße ✓ | %s" % (i, "y" * (i * 13 % 300))


def https_request(port, cafile, method, path, body=None, headers=None):
    ctx = ssl.create_default_context(cafile=cafile)
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return wshub_stack.Response(r.status, r.getheaders(), r.read())
    finally:
        conn.close()


def request_from(address, port, method, path, body=None, headers=None):
    """An HTTP request from another loopback source address."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(address, 0))
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return wshub_stack.Response(r.status, r.getheaders(), r.read())
    finally:
        conn.close()


def assert_json(r, status, key="error"):
    assert r.status == status, r
    assert r.headers.get("content-type", "").startswith("application/json"), (r, r.headers)
    body = r.json()
    assert isinstance(body, dict) and body.get(key), body
    return body


def apache_footprint(apache):
    """(processes, threads, resident KiB) of the Apache parent and its children."""
    pids = [apache.proc.pid] + [p for p in wshub_stack.descendants_of(apache.proc.pid)
                                if "apache2" in wshub_stack.pid_cmdline(p)]
    threads = rss = 0
    for pid in pids:
        try:
            with open("/proc/%d/status" % pid) as f:
                for line in f:
                    if line.startswith("Threads:"):
                        threads += int(line.split()[1])
                    elif line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
        except OSError:
            pass
    return len(pids), threads, rss


async def check_all_received(clients, n):
    await until(lambda: all(len(c.messages) >= n or c.closed.is_set() for c in clients), 60,
                "every client to receive %d messages" % n)
    expected = [message(i) for i in range(n)]
    bad = [c for c in clients if c.messages != expected]
    assert not bad, "%d clients did not get exactly the %d messages in order; e.g. %s got %d " \
        "(closed %s, code %s, error %r)" % (len(bad), n, bad[0].name, len(bad[0].messages),
                                            bad[0].closed.is_set(), bad[0].close_code,
                                            bad[0].error)


async def check_sigterm_1001(stack, clients):
    stack.hub.signal(signal.SIGTERM)
    await until(lambda: all(c.closed.is_set() for c in clients), 20,
                "every client to be closed after SIGTERM")
    codes = {}
    for c in clients:
        codes[c.close_code] = codes.get(c.close_code, 0) + 1
    assert codes == {1001: len(clients)}, \
        "close codes through Apache after SIGTERM (None = no close frame): %r" % codes
    assert await in_thread(stack.hub.wait_exit, 15) == 0


def test_apache_end_to_end(make_stack):
    """300 ws:// and 20 wss:// clients through Apache (event MPM, several children), 50
    broadcasts POSTed through it (every tenth over https://): every client gets every message
    once, in order; the counters agree through Apache's /metrics; SIGTERM -> 1001 for all."""
    stack = make_stack(workers=2, nginx=False, apache=True, tls=True,
                       apache_clients=N_PLAIN + N_TLS + 50, apache_threads=100,
                       options={"shutdown_timeout": "10s"})
    apache = stack.apache
    asyncio.run(end_to_end(stack, apache))


async def end_to_end(stack, apache):
    tls_ctx = ssl.create_default_context(cafile=apache.cert)
    specs = [{"url": apache.ws_url, "name": "ws%d" % i, "compression": "deflate" if i % 2 else None}
             for i in range(N_PLAIN)]
    specs += [{"url": "wss://127.0.0.1:%d%s" % (apache.tls_port, stack.hub.ws_path),
               "name": "wss%d" % i, "ssl": tls_ctx} for i in range(N_TLS)]
    t0 = time.monotonic()
    clients = await connect_many(specs, concurrency=64)
    print("%d clients connected through Apache in %.2fs" % (len(clients),
                                                           time.monotonic() - t0))
    try:
        total = N_PLAIN + N_TLS
        await in_thread(wait_for, lambda: stack.stats()["connections"]["in_use"] == total, 20,
                        "%d clients counted" % total)
        procs, threads, rss = apache_footprint(apache)
        print("Apache holding %d WebSockets: %d processes, %d threads, %d KiB resident" %
              (total, procs, threads, rss))

        seqs = []
        for i in range(N_MESSAGES):
            body = message(i).encode()
            if i % 10 == 9:
                r = await in_thread(https_request, apache.tls_port, apache.cert, "POST",
                                    "/admin/broadcast", body, TEXT)
            else:
                r = await in_thread(stack.broadcast, body)
            assert r.status == 202, r
            seqs.append(r.json()["seq"])
        assert seqs == list(range(seqs[0], seqs[0] + N_MESSAGES)), seqs
        await check_all_received(clients, N_MESSAGES)

        want = N_MESSAGES * total

        def all_sent():
            mm = stack.metrics()
            return mm if mm.sum("wshub_messages_sent_total") >= want else None

        m = await in_thread(wait_for, all_sent, 10, "wshub_messages_sent_total == %d" % want)
        assert m.sum("wshub_messages_sent_total") == want
        assert m.sum("wshub_ring_published_messages_total") == N_MESSAGES
        assert m.sum("wshub_connections") == total
        r = await in_thread(https_request, apache.tls_port, apache.cert, "GET", "/healthz")
        assert r.status == 200 and r.json()["status"] == "ok", r

        await check_sigterm_1001(stack, clients)
    finally:
        for c in clients:
            c.task.cancel()


def test_apache_admin_errors(make_stack):
    """The admin error contract through Apache: wshub-admin's JSON errors pass through with
    their status (400, 404, 405 + Allow), Apache's own are JSON too (413 over max_message, 404
    elsewhere, 403 from an address not allowed), /metrics and /healthz answer, and the
    Authorization header reaches wshub-admin (CGIPassAuth On)."""
    token = "apache-test-token-0123456789abcdef"
    stack = make_stack(workers=1, nginx=False, apache=True, apache_clients=50,
                       options={"max_message": "1k", "admin_token": token})
    auth = dict(TEXT, Authorization="Bearer " + token)

    def post(body, headers=auth):
        return stack.admin("POST", "/admin/broadcast", body, headers)

    # Authorization passes through: without it 401 from wshub-admin, with it 202.
    assert post(b"no token", TEXT).status == 401
    assert post(b"a" * 1024).status == 202
    assert_json(post(b""), 400)
    for bad in (b"\xff\xfe", b"\xc0\xaf", b"\xed\xa0\x80", b"abc\xe2\x82"):
        assert_json(post(bad), 400)
    # Over max_message: Apache answers from Content-Length alone (JSON, with the limit).
    body = assert_json(post(b"a" * 1025), 413)
    assert body.get("max_message") == 1024, body
    assert_json(post(b"a" * 100000), 413)

    r = stack.admin("GET", "/admin/broadcast", headers=auth)
    assert_json(r, 405)
    assert "POST" in r.headers.get("allow", ""), r.headers
    r = stack.admin("DELETE", "/metrics")
    assert_json(r, 405)
    assert "GET" in r.headers.get("allow", ""), r.headers
    assert_json(stack.admin("GET", "/admin/nope", headers=auth), 404)  # wshub-admin's
    for path in ("/nope", "/", "/index.html", "/admin"):                 # Apache's
        assert_json(stack.admin("GET", path), 404)

    r = stack.admin("GET", "/metrics")
    assert r.status == 200 and r.headers["content-type"].startswith("text/plain"), r
    assert Metrics(r.body.decode()).sum("wshub_ring_published_messages_total") == 1
    assert stack.admin("GET", "/healthz").json()["status"] == "ok"

    # From an address the admin locations do not allow: 403 JSON from Apache, nothing
    # reaches wshub-admin; the WebSocket path stays open to everyone.
    port = stack.apache.port
    for method, path, body in (("POST", "/admin/broadcast", b"not from here"),
                               ("GET", "/admin/stats.json", None), ("GET", "/metrics", None),
                               ("GET", "/healthz", None)):
        assert_json(request_from("127.0.0.2", port, method, path, body, auth), 403)
    status, head, s, _ = raw_upgrade("127.0.0.1", port, stack.hub.ws_path)
    s.close()
    assert status == 101, head
    s = socket.create_connection(("127.0.0.1", port), source_address=("127.0.0.2", 0))
    s.sendall(wshub_stack.ws_handshake_request("127.0.0.1", port, stack.hub.ws_path))
    assert s.recv(4096).startswith(b"HTTP/1.1 101"), "upgrade from 127.0.0.2"
    s.close()
    st = stack.admin("GET", "/admin/stats.json", headers=auth).json()
    assert st["ring"]["published"] == 1, st["ring"]

    # The hub stopped, Apache still up: the admin socket is gone, Apache's 503 is JSON; the
    # WebSocket path answers 503 too.
    assert stack.hub.stop() == 0
    assert_json(post(b"anyone there?"), 503)
    assert_json(stack.admin("GET", "/healthz"), 503)
    status, head, s, _ = raw_upgrade("127.0.0.1", port, stack.hub.ws_path)
    s.close()
    assert status == 503, head


def test_apache_fcgid_variant(make_stack):
    """wshub-fcgid.conf: Apache spawns wshub-admin through mod_fcgid (the hub starts none).
    Broadcasts POSTed through Apache reach every client in order; the admin process is
    Apache's child, running as Apache's user, attached to a segment the hub gave to that
    user's group."""
    stack = make_stack(workers=2, nginx=False, apache="fcgid", apache_clients=60,
                       options={"shutdown_timeout": "10s"})
    apache, hub = stack.apache, stack.hub
    assert not [p for p in wshub_stack.children_of(hub.pid)
                if "wshub-admin" in wshub_stack.pid_cmdline(p)], "the hub started an admin"
    admins = apache.admin_processes()
    assert admins, "mod_fcgid started no wshub-admin:\n" + apache.logs()
    if IS_ROOT:
        users = {pid_user(p) for p in admins} - {None}  # None: exited since
        assert users == {"www-data"}, (admins, users)
        st = os.stat(hub.segment)
        assert stat.S_IMODE(st.st_mode) == 0o660, oct(st.st_mode)
        assert st.st_gid == grp.getgrnam("www-data").gr_gid, st

    async def run():
        specs = [{"url": apache.ws_url, "name": "f%d" % i} for i in range(40)]
        specs += [{"url": hub.ws_url, "name": "d%d" % i} for i in range(10)]
        clients = await connect_many(specs, concurrency=25)
        try:
            await in_thread(wait_for, lambda: stack.stats()["connections"]["in_use"] == 50,
                            15, "50 clients counted")
            for i in range(20):
                r = await in_thread(stack.broadcast, message(i))
                assert r.status == 202, r
            await check_all_received(clients, 20)
            r = await in_thread(stack.broadcast, b"a" * ((1 << 20) + 1))
            assert_json(r, 413)
            apache.note_children()
            await check_sigterm_1001(stack, clients)
        finally:
            for c in clients:
                c.task.cancel()

    asyncio.run(run())
    # With the hub gone, Apache's wshub-admin stays up and says so.
    assert_json(stack.admin("GET", "/healthz"), 503, "reason")


def test_apache_fcgid_segment_permissions(make_stack):
    """Without shm_group the segment is the hub's user's alone (0600): a wshub-admin that
    mod_fcgid starts as www-data cannot map it and answers 503 naming the refusal. (As root
    only: otherwise Apache's children run as the hub's own user.)"""
    if not IS_ROOT:
        import pytest
        pytest.skip("Apache's children run as www-data only when started as root")
    stack = make_stack(workers=1, nginx=False, apache="fcgid", start=False,
                       options={"shm_group": "", "shm_mode": "0600"})
    stack.hub.start()
    wait_for(lambda: os.path.exists(stack.hub.segment), 10, "the segment")
    assert stat.S_IMODE(os.stat(stack.hub.segment).st_mode) == 0o600
    stack.apache.start()

    def refused():  # wshub-admin's own 503 (with a reason), not one of Apache's
        x = stack.apache.get("/healthz")
        return x if x.status == 503 and x.is_json() and "reason" in x.json() else None

    r = wait_for(refused, 15, "wshub-admin's 503")
    body = assert_json(r, 503, "reason")
    assert "Permission denied" in body.get("detail", ""), body
    stack.apache.note_children()


def test_shm_mode_and_group_options(tmp_path):
    """The two options the mod_fcgid variant relies on: shm_mode must keep the owner's rw and
    open nothing to others (-t fails with exit 2, naming the option); an unknown shm_group
    stops the start (exit 2) and leaves no segment behind."""
    wshub = wshub_stack.binary("wshub")
    bad = subprocess.run([wshub, "-t", "--instance=apxt", "--shm_mode=0644"],
                         capture_output=True, text=True)
    assert bad.returncode == 2, bad
    assert "shm_mode" in bad.stderr and "0660" in bad.stderr, bad.stderr
    for mode in ("0600", "0640", "0660"):
        ok = subprocess.run([wshub, "-t", "--instance=apxt", "--shm_mode=" + mode],
                            capture_output=True, text=True)
        assert ok.returncode == 0, (mode, ok.stderr)

    instance = wshub_stack.unique_instance()
    run = subprocess.run([wshub, "--instance=" + instance, "--workers=1", "--admin_threads=0",
                          "--listen=127.0.0.1:%d" % wshub_stack.free_port(),
                          "--run_dir=%s" % tmp_path, "--shm_mode=0660",
                          "--shm_group=no-such-group-wshub"],
                         capture_output=True, text=True, timeout=20)
    assert run.returncode == 2, run
    assert "no-such-group-wshub" in run.stderr, run.stderr
    assert not os.path.exists("/dev/shm/wshub-" + instance)
