"""nginx in front, as nginx-conf/ configures it: TLS termination (wss:// and https:// with a
certificate made at test time) and the admin restriction by address."""
import asyncio
import http.client
import signal
import ssl

from wsclients import connect, in_thread, until
from wshub_stack import wait_for


def test_wss_through_nginx(make_stack):
    stack = make_stack(workers=2, tls=True)
    ngx = stack.nginx
    ctx = ssl.create_default_context(cafile=ngx.cert)

    def https(method, path, body=None, headers=None):
        conn = http.client.HTTPSConnection("127.0.0.1", ngx.tls_port, context=ctx, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            return r.status, r.read()
        finally:
            conn.close()

    async def run():
        secure = await connect("wss://127.0.0.1:%d/ws" % ngx.tls_port, ssl=ctx)
        plain = await connect(ngx.ws_url)
        await in_thread(wait_for, lambda: stack.stats()["connections"]["in_use"] == 2, 10,
                        "2 clients counted")
        status, body = await in_thread(https, "POST", "/admin/broadcast", "über TLS".encode(),
                                       {"Content-Type": "text/plain; charset=utf-8"})
        assert status == 202, (status, body)
        status, body = await in_thread(https, "GET", "/healthz")
        assert status == 200, (status, body)
        await until(lambda: secure.messages and plain.messages, 10, "the broadcast")
        assert secure.messages == plain.messages == ["über TLS"]

        stack.hub.signal(signal.SIGTERM)
        await until(lambda: secure.closed.is_set() and plain.closed.is_set(), 15,
                    "both clients closed")
        assert (secure.close_code, plain.close_code) == (1001, 1001)
        assert await in_thread(stack.hub.wait_exit, 15) == 0

    asyncio.run(run())


def test_admin_restricted_to_allowed_addresses(make_stack):
    """The admin locations allow 127.0.0.1 and ::1 only: from 127.0.0.2 nginx answers 403 (JSON)
    for /admin/, /metrics and /healthz, while /ws stays open."""
    stack = make_stack(workers=1)
    port = stack.nginx.port

    def from_other_address(method, path, body=None):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10,
                                          source_address=("127.0.0.2", 0))
        try:
            conn.request(method, path, body=body)
            r = conn.getresponse()
            return r.status, r.getheader("Content-Type"), r.read()
        finally:
            conn.close()

    for method, path, body in (("POST", "/admin/broadcast", b"not from here"),
                               ("GET", "/admin/stats.json", None), ("GET", "/metrics", None),
                               ("GET", "/healthz", None)):
        status, ctype, out = from_other_address(method, path, body)
        assert status == 403 and ctype.startswith("application/json"), (path, status, out)
    assert stack.stats()["ring"]["published"] == 0

    async def run():
        c = await connect(stack.nginx.ws_url, local_addr="127.0.0.2")
        await c.close()

    asyncio.run(run())
