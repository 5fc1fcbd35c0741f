"""Handshakes: an upgrade on any path but ws_path is refused with a real HTTP 404 (not a 101 and
not a dropped connection), directly and through nginx, and counted as a bad_path rejection; the
right path upgrades, with or without a query string."""
import base64
import hashlib
import socket

from wshub_stack import raw_upgrade, wait_for, ws_handshake_request

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def upgrade(port, path):
    status, head, s, _ = raw_upgrade("127.0.0.1", port, path)
    s.close()
    return status, head


def test_bad_path(make_stack):
    stack = make_stack(workers=2)
    direct, proxied = stack.hub.port, stack.nginx.port

    for port, path in ((direct, "/nope"), (direct, "/"), (direct, "/ws/"),
                       (direct, "/wsx"), (proxied, "/wsx")):
        status, head = upgrade(port, path)
        assert status == 404, "%s on port %d: %s" % (path, port, head)
    # nginx itself answers paths it does not proxy.
    status, head = upgrade(proxied, "/nope")
    assert status == 404, head

    # Four direct refusals plus one through nginx reached the workers.
    wait_for(lambda: stack.stats()["totals"]["rejected"].get("bad_path", 0) == 5, 5,
             "totals.rejected.bad_path == 5")

    # /ws/<channel> subscribes to a channel (docs/protocol.md); a bad channel name is a 400.
    status, head = upgrade(direct, "/ws/a/b")
    assert status == 400, head
    for port, path in ((direct, "/ws"), (direct, "/ws?token=abc&x=1"), (proxied, "/ws"),
                       (direct, "/ws/room.1"), (proxied, "/ws/room.1")):
        status, head = upgrade(port, path)
        assert status == 101, "%s on port %d: %s" % (path, port, head)


def test_handshake_accept_key(make_stack):
    """The 101 carries the RFC 6455 accept key for our nonce."""
    stack = make_stack(workers=1, nginx=False)
    key = base64.b64encode(b"0123456789abcdef").decode()
    s = socket.create_connection(("127.0.0.1", stack.hub.port), timeout=5)
    try:
        s.sendall(ws_handshake_request("127.0.0.1", stack.hub.port, "/ws", key))
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(4096)
            assert chunk, "connection closed during the handshake: %r" % buf
            buf += chunk
    finally:
        s.close()
    head = buf.split(b"\r\n\r\n")[0].decode("latin-1")
    assert head.startswith("HTTP/1.1 101"), head
    want = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
    headers = {k.strip().lower(): v.strip() for k, _, v in
               (line.partition(":") for line in head.split("\r\n")[1:])}
    assert headers.get("sec-websocket-accept") == want, head
    assert headers.get("upgrade", "").lower() == "websocket", head
