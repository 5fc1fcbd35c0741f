"""The admin API's error contract (issue 2, and issue 4's 405/404 rules), through nginx as
deployed and, where nginx could hide the answer, straight to wshub-admin's FastCGI socket:
every error is a JSON body with the right status."""
import asyncio
import os
import shutil
import signal
import socket
import subprocess

import wshub_stack
from wsclients import connect, in_thread, until
from wshub_stack import Hub, fcgi_request, make_base_dir, wait_for

MAX = 1024


def assert_json_error(r, status, key="error"):
    """`key` names the field that says what was wrong: "error" for the API, "reason" for
    /healthz (issue 4: 503 with a JSON reason)."""
    assert r.status == status, r
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers
    body = r.json()
    assert isinstance(body, dict) and body.get(key), "error body must say what was wrong: %r" \
        % body
    return body


def test_admin_errors(make_stack):
    stack = make_stack(workers=1, options={"max_message": "1k"})
    hub = stack.hub
    text = {"Content-Type": "text/plain; charset=utf-8"}

    # Empty body: 400, through nginx and direct.
    assert_json_error(stack.broadcast(b""), 400)
    assert_json_error(hub.fcgi("POST", "/admin/broadcast", b"", text), 400)

    # Over max_message: 413. nginx refuses before wshub-admin (client_max_body_size =
    # max_message, JSON error page); wshub-admin refuses by itself too.
    assert stack.broadcast(b"a" * MAX).status == 202
    assert_json_error(stack.broadcast(b"a" * (MAX + 1)), 413)
    assert_json_error(hub.fcgi("POST", "/admin/broadcast", b"a" * (MAX + 1), text), 413)
    assert_json_error(hub.fcgi("POST", "/admin/broadcast", b"a" * (64 * MAX), text), 413)

    # Invalid UTF-8 in a text message: 400 (a WebSocket client would fail the connection with
    # 1007). Stray continuation byte, overlong '/', UTF-16 surrogate, beyond U+10FFFF, truncated.
    for bad in (b"\xff\xfe", b"ok \x80", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80",
                b"abc\xe2\x82"):
        assert_json_error(stack.broadcast(bad), 400)

    # Wrong method: 405 with Allow.
    r = stack.admin("GET", "/admin/broadcast")
    assert_json_error(r, 405)
    assert "POST" in r.headers.get("allow", ""), r.headers
    r = stack.admin("POST", "/admin/stats.json", b"x", text)
    assert_json_error(r, 405)
    assert "GET" in r.headers.get("allow", ""), r.headers
    r = stack.admin("DELETE", "/metrics")
    assert_json_error(r, 405)
    assert "GET" in r.headers.get("allow", ""), r.headers

    # Unknown path under /admin/: 404 JSON from wshub-admin; elsewhere 404 JSON from nginx.
    assert_json_error(stack.admin("GET", "/admin/nope"), 404)
    assert_json_error(hub.fcgi("GET", "/admin/nope"), 404)
    assert_json_error(stack.admin("GET", "/nope"), 404)

    # Only the one valid broadcast was published; the refusals that reached wshub-admin (two
    # empty, two too large, six invalid UTF-8; nginx kept the other 413 to itself) were counted.
    st = stack.stats()
    assert st["ring"]["published"] == 1, st["ring"]
    assert st["ring"]["broadcasts_rejected"] >= 10, st["ring"]


def test_admin_binary_and_text(make_stack):
    """Content-Type application/octet-stream makes a binary message, anything else text; the
    client gets exactly the bytes/characters that were posted."""
    stack = make_stack(workers=1, options={"max_message": "1k"})

    async def run():
        c = await connect(stack.hub.ws_url)
        await in_thread(lambda: wait_for(lambda: stack.stats()["connections"]["in_use"] == 1,
                                         10, "the client to be counted"))
        payload = bytes(range(256)) * 4  # every byte value, exactly max_message
        r = await in_thread(stack.broadcast, payload, "application/octet-stream")
        assert r.status == 202, r
        r = await in_thread(stack.broadcast, "naïve ✓".encode(), "text/plain; charset=utf-8")
        assert r.status == 202, r
        await until(lambda: len(c.messages) >= 2 or c.closed.is_set(), 10, "2 messages")
        assert c.messages == [payload, "naïve ✓"], c.messages
        assert isinstance(c.messages[0], bytes) and isinstance(c.messages[1], str)
        await c.close()

    asyncio.run(run())


def test_hub_stopped_behind_nginx(make_stack):
    """The hub stopped, nginx still up: the admin socket is gone with the hub (it starts
    wshub-admin), nginx cannot connect (502 inside), and its error page turns that into the API's
    503 "hub not running" with a JSON body. The WebSocket path answers the same way."""
    stack = make_stack(workers=1)
    assert stack.hub.stop() == 0
    r = stack.broadcast("anyone there?")
    assert_json_error(r, 503)
    assert_json_error(stack.admin("GET", "/healthz"), 503)  # from nginx: no admin
    status, _, s, _ = wshub_stack.raw_upgrade("127.0.0.1", stack.nginx.port, "/ws")
    s.close()
    assert status == 503, status
    log = wshub_stack.tail(stack.nginx.error_log, 200)
    assert "admin.sock failed" in log, "nginx should have failed to reach the socket:\n" + log


def test_admin_without_hub_answers_503():
    """wshub-admin started by someone else (spawn-fcgi, mod_fcgid: the FastCGI socket on fd 0)
    while no hub runs: it must stay up and answer 503 with JSON, not crash or hang."""
    base = make_base_dir()
    hub = Hub(base, workers=1)  # config and paths only; the hub is never started
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(hub.admin_socket)
    listener.listen(16)
    err = open(os.path.join(base, "admin.out"), "wb")
    admin = subprocess.Popen([wshub_stack.binary("wshub-admin"), "-c", hub.conf_file],
                             stdin=listener.fileno(), stdout=err, stderr=err)
    err.close()
    listener.close()
    try:
        def answer():
            assert admin.poll() is None, "wshub-admin exited with %s:\n%s" % (
                admin.returncode, wshub_stack.tail(os.path.join(base, "admin.out")))
            return fcgi_request(hub.admin_socket, "POST", "/admin/broadcast", b"hello",
                                {"Content-Type": "text/plain"}, timeout=2)

        r = wait_for(answer, 10, "wshub-admin to answer")
        assert_json_error(r, 503)
        assert_json_error(fcgi_request(hub.admin_socket, "GET", "/healthz"), 503, "reason")
        assert not os.path.exists(hub.segment)
    finally:
        if admin.poll() is None:
            admin.send_signal(signal.SIGTERM)
            try:
                rc = admin.wait(5)
            except subprocess.TimeoutExpired:
                admin.kill()
                rc = admin.wait()
                raise AssertionError("wshub-admin ignored SIGTERM for 5 s")
            assert rc == 0, "wshub-admin exit status on SIGTERM: %r\n%s" % (
                rc, wshub_stack.tail(os.path.join(base, "admin.out")))
    found = wshub_stack.sanitizer_reports(os.path.join(base, "admin.out"))
    assert not found, found
    shutil.rmtree(base, ignore_errors=True)
