"""RFC 6455 conformance of the workers (docs/rfc6455.md): one test per rule, against the running
stack directly and, for the key rules, through nginx.

Each test speaks raw bytes on a socket, because a WebSocket library would refuse to send what is
tested here. A refused handshake must be a real HTTP answer (its status checked) followed by the
end of the TCP connection, never a 101. A broken frame rule must be answered with a close frame
carrying the expected code, after which the client answers the close as a client would and the
server must close the TCP connection promptly (well within lws's 5 s close-ack timeout).
Every frame the server sends in these tests is itself checked against the rules (unmasked, no
RSV bits, known opcode, control frames whole and at most 125 bytes, valid close payload, UTF-8
text), so "never send an invalid frame" is tested everywhere, and once more with the server's
own frames: broadcasts, keepalive pings, the close of an admin kick and of a shutdown.

Stacks use ports 22000-22999 and instance names starting with "rfc".
"""
import base64
import hashlib
import os
import re
import select
import socket
import ssl
import struct
import time

import pytest

import wshub_stack
from wshub_stack import Stack, wait_for

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CLOSE_WAIT = 5.0   # seconds for the server's close frame to arrive
TCP_CLOSE = 2.5    # seconds for the TCP connection to end after the close handshake


# ---------------------------------------------------------------------------------------------
# Stacks


def _make_stack(nginx=True, options=None):
    opts = {"client_message_rate": "0", "client_max_message": "128k"}
    opts.update(options or {})
    return Stack(workers=1, nginx=nginx, options=opts)


@pytest.fixture(scope="module")
def stack():
    st = _make_stack()
    try:
        st.start()
        yield st
    finally:
        st.teardown()
    assert not st.problems, st.problems


@pytest.fixture
def own_stack():
    """A stack of the test's own, for options the shared one does not have."""
    made = []

    def make(**kw):
        st = _make_stack(**kw)
        made.append(st)
        return st.start()

    yield make
    for st in made:
        st.teardown()
        assert not st.problems, st.problems


def ports(stack, via):
    return stack.nginx.port if via == "nginx" else stack.hub.port


# ---------------------------------------------------------------------------------------------
# Raw client


def frame(opcode, payload=b"", fin=True, rsv=0, masked=True, key=None, len_form=None):
    """A client frame: masked (with a random key) unless masked=False; len_form forces the 7,
    16 or 64-bit length encoding."""
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    n = len(payload)
    if len_form is None:
        len_form = 7 if n < 126 else (16 if n < 65536 else 64)
    mbit = 0x80 if masked else 0
    if len_form == 7:
        hdr = bytes([b0, mbit | n])
    elif len_form == 16:
        hdr = bytes([b0, mbit | 126]) + struct.pack("!H", n)
    else:
        hdr = bytes([b0, mbit | 127]) + struct.pack("!Q", n)
    if not masked:
        return hdr + payload
    key = os.urandom(4) if key is None else key
    return hdr + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def close_payload(code, reason=b""):
    return struct.pack("!H", code) + reason


def request(port, path="/ws", method="GET", version="HTTP/1.1", host=True, key=True,
            ws_version="13", connection="Upgrade", upgrade="websocket", extra=None):
    """An opening handshake; each part can be changed or left out (None)."""
    lines = ["%s %s %s" % (method, path, version)]
    if host is True:
        lines.append("Host: 127.0.0.1:%d" % port)
    elif host is not None:
        lines.append("Host: %s" % host)
    if upgrade is not None:
        lines.append("Upgrade: %s" % upgrade)
    if connection is not None:
        lines.append("Connection: %s" % connection)
    if key is True:
        key = base64.b64encode(os.urandom(16)).decode()
    if key is not None:
        lines.append("Sec-WebSocket-Key: %s" % key)
    if ws_version is not None:
        lines.append("Sec-WebSocket-Version: %s" % ws_version)
    if extra:
        lines.append(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def parse_server_frames(data):
    """Server frames -> ([(opcode, fin, rsv, payload, masked, len_field)], leftover)."""
    out, i = [], 0
    while len(data) - i >= 2:
        b0, b1 = data[i], data[i + 1]
        n, hl = b1 & 0x7F, 2
        if n == 126:
            if len(data) - i < 4:
                break
            n, hl = struct.unpack("!H", data[i + 2:i + 4])[0], 4
        elif n == 127:
            if len(data) - i < 10:
                break
            n, hl = struct.unpack("!Q", data[i + 2:i + 10])[0], 10
        masked = bool(b1 & 0x80)
        hl += 4 if masked else 0
        if len(data) - i < hl + n:
            break
        out.append((b0 & 0x0F, bool(b0 & 0x80), (b0 >> 4) & 7, data[i + hl:i + hl + n], masked,
                    b1 & 0x7F))
        i += hl + n
    return out, data[i:]


def valid_close_code(code):
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


def check_server_frame(f, text_utf8=True):
    """The rules of RFC 6455 section 5 for a frame the server sent."""
    opcode, fin, rsv, payload, masked, len_field = f
    assert not masked, "server frame is masked: %r" % (f,)
    assert rsv == 0, "server frame has RSV bits: %r" % (f,)
    assert opcode in (0, 1, 2, 8, 9, 10), "server frame has reserved opcode %x" % opcode
    n = len(payload)
    assert (len_field < 126 and n == len_field) or (len_field == 126 and 126 <= n < 65536) or \
        (len_field == 127 and n >= 65536), "length not in its shortest form: %r" % (f,)
    if opcode >= 8:
        assert fin and n <= 125, "bad server control frame: %r" % (f,)
    if opcode == 8:
        assert n != 1, "server close frame with a 1-byte payload"
        if n >= 2:
            code = struct.unpack("!H", payload[:2])[0]
            assert valid_close_code(code), "server close code %d" % code
            payload[2:].decode("utf-8")  # raises on invalid UTF-8
    if opcode == 1 and fin and text_utf8:
        payload.decode("utf-8")


class Raw:
    """One client connection on a plain socket (or TLS with tls=True): the handshake answer,
    then frames."""

    def __init__(self, port, req=None, after=b"", timeout=5, tls=False):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            self.s = ctx.wrap_socket(self.s, server_hostname="localhost")
        self.s.sendall((req or request(port)) + after)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = self._recv()
            if not chunk:
                break
            buf += chunk
        head, _, self.rest = buf.partition(b"\r\n\r\n")
        self.head = head.decode("latin-1")
        m = re.match(r"HTTP/1\.[01] (\d{3}) ", self.head)
        self.status = int(m.group(1)) if m else None
        self.headers = {}
        for line in self.head.split("\r\n")[1:]:
            k, _, v = line.partition(":")
            self.headers[k.strip().lower()] = v.strip()
        self.frames = []  # every frame the server sent, checked on arrival
        self.upgraded = self.status == 101

    def _recv(self):
        try:
            return self.s.recv(65536)
        except (ConnectionResetError, socket.timeout, ssl.SSLError):
            return b""

    def _readable(self, timeout):
        if isinstance(self.s, ssl.SSLSocket) and self.s.pending():
            return True
        return bool(select.select([self.s], [], [], max(timeout, 0))[0])

    def send(self, data):
        self.s.sendall(data)

    def read_frames(self, until, timeout):
        """Reads server frames until until(frames) holds, EOF or the deadline. Returns
        (frames, eof)."""
        deadline = time.monotonic() + timeout
        data, got, eof = self.rest, [], False
        while True:
            fs, data = parse_server_frames(data)
            for f in fs:
                check_server_frame(f)
            got += fs
            if until(got):
                break
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if not self._readable(left):
                break
            chunk = self._recv()
            if not chunk:
                eof = True
                break
            data += chunk
        self.rest = data
        self.frames += got
        return got, eof

    def wait_tcp_close(self, timeout=TCP_CLOSE):
        """Seconds until the server ended the TCP connection (EOF or reset), None if it did not
        within `timeout`. Frames that arrive meanwhile are kept and checked."""
        t0 = time.monotonic()
        data = self.rest
        while time.monotonic() - t0 < timeout:
            if not self._readable(timeout - (time.monotonic() - t0)):
                break
            chunk = self._recv()
            if not chunk:
                if self.upgraded:
                    fs, _ = parse_server_frames(data)
                    for f in fs:
                        check_server_frame(f)
                    self.frames += fs
                return time.monotonic() - t0
            data += chunk
        self.rest = data
        return None

    def expect_close(self, code, why=None, timeout=CLOSE_WAIT):
        """The server's close frame with `code` arrives (after nothing but pongs); the client
        answers it; the server closes TCP. Returns the reason."""
        fs, eof = self.read_frames(lambda fs: any(f[0] == 8 for f in fs), timeout)
        closes = [f for f in fs if f[0] == 8]
        assert closes, "no close frame (%s); frames: %r" % ("EOF" if eof else "timeout", fs)
        payload = closes[0][3]
        assert len(payload) >= 2, "close frame without a code: %r" % payload
        got = struct.unpack("!H", payload[:2])[0]
        assert got == code, "close code %d (%r), want %d" % (got, payload[2:], code)
        if why is not None:
            assert why in payload[2:].decode(), payload
        try:
            self.send(frame(8, payload[:2]))
        except OSError:
            pass
        t = self.wait_tcp_close()
        assert t is not None, "TCP connection still open %.1f s after the close" % TCP_CLOSE
        after = [f for f in self.frames[self.frames.index(closes[0]) + 1:]]
        assert not after, "frames after the close frame: %r" % after
        return payload[2:]

    def expect_refused(self, status, via="direct"):
        """The handshake got `status`, not 101. Straight from a worker, the TCP connection then
        ends; nginx relays the answer and keeps its own HTTP connection to the client open
        (keep-alive), so through nginx the check is that it still speaks HTTP, not WebSocket."""
        assert self.status == status, "want %d, got: %s" % (status, self.head or "(nothing)")
        if via == "nginx":
            self.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = self.rest
            while b"\r\n" not in data:
                chunk = self._recv()
                assert chunk, "nginx closed before answering"
                data += chunk
            # the refusal's body may come first; then nginx's answer to /healthz
            assert re.search(rb"HTTP/1\.1 \d{3} ", data), data
            self.close()
            return
        assert self.wait_tcp_close() is not None, "connection left open after the refusal"

    def close(self):
        self.s.close()


def upgraded(port, **kw):
    c = Raw(port, **kw)
    assert c.status == 101, c.head
    return c


def alive(c, payload=b"still there"):
    """The connection is open and answering: a ping gets its pong."""
    c.send(frame(9, payload))
    fs, eof = c.read_frames(lambda fs: any(f[0] == 10 and f[3] == payload for f in fs), 5)
    assert any(f[0] == 10 and f[3] == payload for f in fs), "no pong (eof=%s): %r" % (eof, fs)
    assert not any(f[0] == 8 for f in fs), fs


# ---------------------------------------------------------------------------------------------
# Opening handshake (RFC 6455 4.2.1)


def test_handshake_valid(stack):
    """The reference case: 101 with the accept key for our nonce."""
    key = base64.b64encode(os.urandom(16)).decode()
    c = upgraded(stack.hub.port, req=request(stack.hub.port, key=key))
    want = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
    assert c.headers.get("sec-websocket-accept") == want, c.head
    alive(c)
    c.close()


@pytest.mark.parametrize("via", ["direct", "nginx"])
def test_handshake_key_missing(stack, via):
    port = ports(stack, via)
    Raw(port, req=request(port, key=None)).expect_refused(400, via)


@pytest.mark.parametrize("key", [
    "abc",
    base64.b64encode(b"x" * 15).decode(),            # 15 bytes
    base64.b64encode(b"x" * 17).decode(),            # 17 bytes
    "!!!!!!!!!!!!!!!!!!!!!!==",                      # 24 characters, not base64
    "AAAAAAAAAAAAAAAAAAAAAB==",                      # 16 bytes + 4 stray bits: not canonical
    "AAAAAAAAAAAAAAAAAAAAAA",                        # no padding
], ids=["short", "15-bytes", "17-bytes", "not-base64", "not-canonical", "no-padding"])
def test_handshake_key_malformed(stack, key):
    port = stack.hub.port
    Raw(port, req=request(port, key=key)).expect_refused(400)


@pytest.mark.parametrize("via,version", [("direct", "12"), ("direct", "8"), ("direct", None),
                                         ("direct", "13, 8"), ("nginx", "12")])
def test_handshake_version_not_13(stack, via, version):
    port = ports(stack, via)
    c = Raw(port, req=request(port, ws_version=version))
    assert c.headers.get("sec-websocket-version") == "13", c.head
    c.expect_refused(426, via)


@pytest.mark.parametrize("via,method", [("direct", m) for m in
                                        ("POST", "PUT", "HEAD", "DELETE", "OPTIONS", "PATCH",
                                         "CONNECT")] + [("nginx", "POST")])
def test_handshake_method_not_get(stack, via, method):
    port = ports(stack, via)
    c = Raw(port, req=request(port, method=method))
    if via == "direct":
        assert c.headers.get("allow") == "GET", c.head
    c.expect_refused(405, via)


def test_handshake_unknown_method(stack):
    """A method lws does not know is refused by lws's parser itself (403) before any callback."""
    port = stack.hub.port
    Raw(port, req=request(port, method="FOO")).expect_refused(403)


@pytest.mark.parametrize("via", ["direct", "nginx"])
def test_handshake_http10(stack, via):
    """Through nginx, nginx-conf/wshub.conf.in refuses it: nginx speaks HTTP/1.1 upstream."""
    port = ports(stack, via)
    Raw(port, req=request(port, version="HTTP/1.0")).expect_refused(400)  # nginx closes too


@pytest.mark.parametrize("host", [None, " "], ids=["missing", "empty"])
def test_handshake_no_host(stack, host):
    port = stack.hub.port
    Raw(port, req=request(port, host=host)).expect_refused(400)


@pytest.mark.parametrize("via", ["direct", "nginx"])
@pytest.mark.parametrize("connection", [None, "keep-alive", "upgraded"])
def test_handshake_connection_without_upgrade(stack, connection, via):
    """Through nginx, nginx-conf/wshub.conf.in refuses it: nginx sets Connection upstream."""
    port = ports(stack, via)
    Raw(port, req=request(port, connection=connection)).expect_refused(400)  # nginx closes too


@pytest.mark.parametrize("connection,upgrade", [("keep-alive, Upgrade", "websocket"),
                                                ("upgrade", "WebSocket")])
def test_handshake_tokens_case_insensitive(stack, connection, upgrade):
    """Firefox sends "keep-alive, Upgrade"; header values are case-insensitive."""
    port = stack.hub.port
    c = upgraded(port, req=request(port, connection=connection, upgrade=upgrade))
    alive(c)
    c.close()


def test_handshake_data_before_101(stack):
    """A client must wait for the 101 before it sends frames."""
    port = stack.hub.port
    Raw(port, after=frame(9, b"early")).expect_refused(400)


def test_handshake_refusals_counted(stack):
    before = stack.stats()["totals"]["rejected"]["bad_request"]
    port = stack.hub.port
    Raw(port, req=request(port, key=None)).expect_refused(400)
    wait_for(lambda: stack.stats()["totals"]["rejected"]["bad_request"] == before + 1, 5,
             "rejected.bad_request + 1")


# ---------------------------------------------------------------------------------------------
# Frames (RFC 6455 section 5): each broken rule closes with 1002, 1007 or 1008


@pytest.mark.parametrize("via", ["direct", "nginx"])
def test_unmasked_frame(stack, via):
    c = upgraded(ports(stack, via))
    c.send(frame(1, b"hello", masked=False))
    c.expect_close(1002, "unmasked")


@pytest.mark.parametrize("rsv", [1, 2, 4])
def test_reserved_bits(stack, rsv):
    c = upgraded(stack.hub.port)
    c.send(frame(1, b"hello", rsv=rsv))
    c.expect_close(1002, "reserved bits")


def test_reserved_bits_with_deflate(stack):
    """With permessage-deflate negotiated (worker_deflate.c), RSV1 marks a compressed message's
    first frame (RFC 7692 6.1); on a continuation it is still an error, and RSV2 always."""
    import zlib
    port = stack.hub.port
    offer = "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover"
    c = upgraded(port, req=request(port, extra=offer))
    assert "permessage-deflate" in c.headers.get("sec-websocket-extensions", ""), c.head
    z = zlib.compressobj(wbits=-15)
    body = z.compress(b"compressed hello") + z.flush(zlib.Z_SYNC_FLUSH)
    c.send(frame(1, body[:-4], rsv=4))
    alive(c)
    c.send(frame(1, body[:-4], rsv=4, fin=False) + frame(0, b"", rsv=4))
    c.expect_close(1002, "reserved bits")
    c = upgraded(port, req=request(port, extra=offer))
    c.send(frame(2, b"x", rsv=2))
    c.expect_close(1002, "reserved bits")


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
def test_reserved_opcode(stack, opcode):
    c = upgraded(stack.hub.port)
    c.send(frame(opcode, b"x"))
    c.expect_close(1002, "reserved opcode")


@pytest.mark.parametrize("opcode", [8, 9, 10], ids=["close", "ping", "pong"])
def test_control_frame_over_125(stack, opcode):
    c = upgraded(stack.hub.port)
    c.send(frame(opcode, close_payload(1000, b"x" * 124) if opcode == 8 else b"x" * 126))
    c.expect_close(1002, "control frame too long")


@pytest.mark.parametrize("opcode", [8, 9, 10], ids=["close", "ping", "pong"])
def test_control_frame_fragmented(stack, opcode):
    c = upgraded(stack.hub.port)
    c.send(frame(opcode, b"ab", fin=False) + frame(0, b"cd"))
    c.expect_close(1002, "fragmented control")


def test_orphan_continuation(stack):
    c = upgraded(stack.hub.port)
    c.send(frame(0, b"nothing to continue"))
    c.expect_close(1002, "orphan continuation")


@pytest.mark.parametrize("opcode", [1, 2], ids=["text", "binary"])
def test_new_message_inside_fragmented(stack, opcode):
    c = upgraded(stack.hub.port)
    c.send(frame(1, b"part 1", fin=False) + frame(opcode, b"another message"))
    c.expect_close(1002, "expected continuation")


@pytest.mark.parametrize("form,payload", [(16, b"short"), (64, b"x" * 200)], ids=["16", "64"])
def test_length_not_shortest(stack, form, payload):
    c = upgraded(stack.hub.port)
    c.send(frame(2, payload, len_form=form))
    c.expect_close(1002, "bad payload length")


def test_length_top_bit(stack):
    c = upgraded(stack.hub.port)
    c.send(bytes([0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0]) + b"\0\0\0\0")
    c.expect_close(1002, "bad payload length")


def test_close_one_byte(stack):
    c = upgraded(stack.hub.port)
    c.send(frame(8, b"\x03"))
    c.expect_close(1002, "1 byte")


@pytest.mark.parametrize("via,code", [("direct", c) for c in
                                      (0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999,
                                       5000, 65535)] + [("nginx", 1005)])
def test_close_invalid_code(stack, via, code):
    c = upgraded(ports(stack, via))
    c.send(frame(8, close_payload(code, b"bye")))
    c.expect_close(1002, "invalid close code")


@pytest.mark.parametrize("via,code", [("direct", c) for c in
                                      (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012,
                                       1013, 1014, 3000, 3999, 4000, 4999)] + [("nginx", 1000)])
def test_close_valid_echoed(stack, via, code):
    """A valid close is answered with the same code (and reason), then TCP is closed."""
    c = upgraded(ports(stack, via))
    c.send(frame(8, close_payload(code, "au revoir \u2764".encode())))
    fs, _ = c.read_frames(lambda fs: any(f[0] == 8 for f in fs), CLOSE_WAIT)
    closes = [f for f in fs if f[0] == 8]
    assert closes and closes[0][3] == close_payload(code, "au revoir \u2764".encode()), fs
    assert c.wait_tcp_close() is not None, "TCP left open after the close handshake"


def test_close_empty_echoed(stack):
    c = upgraded(stack.hub.port)
    c.send(frame(8, b""))
    fs, _ = c.read_frames(lambda fs: any(f[0] == 8 for f in fs), CLOSE_WAIT)
    assert [f[3] for f in fs if f[0] == 8] == [b""], fs
    assert c.wait_tcp_close() is not None


def test_close_reason_invalid_utf8(stack):
    c = upgraded(stack.hub.port)
    c.send(frame(8, close_payload(1000, b"bad \xff reason")))
    c.expect_close(1007, "UTF-8")


INVALID_UTF8 = {
    "bad-byte": b"a\xffb",
    "overlong": b"\xc0\xaf",
    "surrogate": b"\xed\xa0\x80",
    "above-10ffff": b"\xf4\x90\x80\x80",
    "truncated": b"euro \xe2\x82",
    "lone-continuation": b"\x80",
}


@pytest.mark.parametrize("via,name", [("direct", n) for n in INVALID_UTF8] +
                         [("nginx", "surrogate")])
def test_text_invalid_utf8(stack, via, name):
    c = upgraded(ports(stack, via))
    c.send(frame(1, INVALID_UTF8[name]))
    c.expect_close(1007)


def test_text_invalid_utf8_across_fragments(stack):
    """E2 82 starts a euro sign; a continuation frame then carries a byte that cannot end it."""
    c = upgraded(stack.hub.port)
    c.send(frame(1, b"price: \xe2\x82", fin=False))
    alive(c)  # a control frame between fragments is allowed, and nothing is wrong yet
    c.send(frame(0, b"\x28 euros"))
    c.expect_close(1007)


def test_text_valid_utf8_across_fragments(stack):
    """The same sign split across three fragments is valid: no close, the message counts."""
    before = stack.stats()["totals"]["messages_in"]
    c = upgraded(stack.hub.port)
    c.send(frame(1, b"price: \xe2", fin=False) + frame(0, b"\x82", fin=False) +
           frame(0, b"\xac 5"))
    alive(c)
    wait_for(lambda: stack.stats()["totals"]["messages_in"] >= before + 1, 5, "messages_in + 1")
    c.close()


def test_valid_traffic_passes(stack):
    """Text, binary, empty and fragmented messages, pongs and pings in between, and a
    frame of 70,000 bytes (64-bit length): all reach the worker, no close."""
    before = stack.stats()["totals"]["messages_in"]
    c = upgraded(stack.hub.port)
    c.send(frame(1, "h\u00e9llo".encode()) + frame(2, bytes(range(256))) + frame(1, b"") +
           frame(10, b"unsolicited pong") + frame(2, b"a", fin=False) + frame(9, b"mid") +
           frame(0, b"b", fin=False) + frame(0, b"c") + frame(2, os.urandom(70000)) +
           frame(1, b"x" * 300))
    alive(c)
    wait_for(lambda: stack.stats()["totals"]["messages_in"] >= before + 6, 5, "messages_in + 6")
    c.close()


def test_frames_split_byte_by_byte(stack):
    """Headers, pings and a close that arrive one byte at a time are judged whole."""
    c = upgraded(stack.hub.port)
    data = frame(1, b"slow") + frame(9, b"split ping") + frame(8, close_payload(1000, b"slow"))
    for b in data:
        c.send(bytes([b]))
    fs, _ = c.read_frames(lambda fs: any(f[0] == 8 for f in fs), CLOSE_WAIT)
    assert [f[3] for f in fs if f[0] == 10] == [b"split ping"], fs
    assert [f[3] for f in fs if f[0] == 8] == [close_payload(1000, b"slow")], fs
    assert c.wait_tcp_close() is not None


def test_bad_frame_after_valid_ones(stack):
    """Frames before the bad one in the same segment are still delivered; the bad one closes."""
    before = stack.stats()["totals"]["messages_in"]
    c = upgraded(stack.hub.port)
    c.send(frame(1, b"one") + frame(1, b"two") + frame(9, b"p") + frame(1, b"3", masked=False))
    c.expect_close(1002, "unmasked")
    assert [f[3] for f in c.frames if f[0] == 10] == [b"p"], c.frames
    wait_for(lambda: stack.stats()["totals"]["messages_in"] >= before + 2, 5, "messages_in + 2")


def test_protocol_closes_counted(stack):
    before = stack.stats()["totals"]["closed"]["protocol_error"]
    c = upgraded(stack.hub.port)
    c.send(frame(7, b""))
    c.expect_close(1002)
    wait_for(lambda: stack.stats()["totals"]["closed"]["protocol_error"] >= before + 1, 5,
             "closed.protocol_error + 1")


# ---------------------------------------------------------------------------------------------
# Ping and pong (RFC 6455 5.5.2, 5.5.3)


@pytest.mark.parametrize("size", [0, 1, 125])
def test_ping_answered_with_payload(stack, size):
    c = upgraded(stack.hub.port)
    payload = os.urandom(size)
    c.send(frame(9, payload))
    fs, _ = c.read_frames(lambda fs: any(f[0] == 10 for f in fs), 5)
    assert [f[3] for f in fs if f[0] == 10] == [payload], fs
    c.close()


@pytest.mark.parametrize("via", ["direct", "nginx"])
def test_ping_burst_1000(stack, via):
    """lws 4.1.6 alone answers about one in thirteen of these."""
    c = upgraded(ports(stack, via))
    pings = [b"ping %04d" % i for i in range(1000)]
    c.send(b"".join(frame(9, p) for p in pings))
    fs, eof = c.read_frames(lambda fs: sum(f[0] == 10 for f in fs) >= 1000, 10)
    assert [f[3] for f in fs if f[0] == 10] == pings, "%d pongs, eof=%s" % (
        sum(f[0] == 10 for f in fs), eof)
    # Still open and in order (the bucket is empty now: no more pings for a while).
    c.send(frame(8, close_payload(1000)))
    fs, _ = c.read_frames(lambda fs: any(f[0] == 8 for f in fs), CLOSE_WAIT)
    assert [f[3] for f in fs if f[0] == 8] == [close_payload(1000)], fs
    assert c.wait_tcp_close() is not None


def test_ping_rate_limit(own_stack):
    """Beyond client_ping_burst, and faster than client_ping_rate: 1008, after the pongs the
    client was entitled to."""
    st = own_stack(nginx=False, options={"client_ping_rate": "1", "client_ping_burst": "20"})
    c = upgraded(st.hub.port)
    c.send(b"".join(frame(9, b"%d" % i) for i in range(25)))
    c.expect_close(1008, "ping rate")
    pongs = [f[3] for f in c.frames if f[0] == 10]
    assert pongs == [b"%d" % i for i in range(20)], pongs


# ---------------------------------------------------------------------------------------------
# The server's own frames


def test_server_frames_valid(own_stack):
    """Broadcasts (text and binary), the keepalive ping, and the close of an admin kick: every
    frame checked by check_server_frame(), the ping answered by the client."""
    st = own_stack(options={"ping_interval": "1s", "idle_timeout": "4s"})
    c = upgraded(st.hub.port)
    assert st.broadcast("caf\u00e9 \u2615").status == 202
    assert st.broadcast(b"\x00\xff binary", content_type="application/octet-stream").status == 202
    fs, _ = c.read_frames(lambda fs: any(f[0] == 9 for f in fs) and
                          sum(f[0] in (1, 2) for f in fs) >= 2, 10)
    assert [f[3] for f in fs if f[0] in (1, 2)] == ["caf\u00e9 \u2615".encode(),
                                                   b"\x00\xff binary"], fs
    ping = [f for f in fs if f[0] == 9][0]
    c.send(frame(10, ping[3]))
    conns = st.admin("GET", "/admin/connections").json()
    ids = [row["id"] for row in conns["connections"]]
    assert len(ids) == 1, conns
    assert st.admin("DELETE", "/admin/connections/%d" % ids[0]).status == 202
    c.expect_close(1008)


def test_shutdown_close_valid(own_stack):
    st = own_stack(nginx=False)
    c = upgraded(st.hub.port)
    alive(c)
    st.hub.signal(15)
    c.expect_close(1001)
    assert st.hub.wait_exit(15) == 0, st.logs()


# ---------------------------------------------------------------------------------------------
# TLS on the workers (tls_cert): lws reads through SSL_read(), filtered the same way


@pytest.fixture(scope="module")
def tls_stack():
    base_cert = wshub_stack.make_base_dir("rfc-cert-")
    cert, key = wshub_stack.make_certificate(base_cert)
    st = _make_stack(nginx=False, options={"tls_cert": cert, "tls_key": key})
    try:
        st.start()
        yield st
    finally:
        st.teardown()
        import shutil
        shutil.rmtree(base_cert, ignore_errors=True)
    assert not st.problems, st.problems


def test_tls_handshake_checks(tls_stack):
    port = tls_stack.hub.port
    Raw(port, req=request(port, key=None), tls=True).expect_refused(400)
    c = Raw(port, req=request(port, ws_version="12"), tls=True)
    assert c.headers.get("sec-websocket-version") == "13", c.head
    c.expect_refused(426)


@pytest.mark.parametrize("bad,code", [(frame(1, b"x", masked=False), 1002),
                                      (frame(8, close_payload(1005)), 1002),
                                      (frame(9, b"x" * 126), 1002),
                                      (frame(1, b"\xed\xa0\x80"), 1007)],
                         ids=["unmasked", "close-1005", "ping-126", "utf8"])
def test_tls_frame_rules(tls_stack, bad, code):
    c = upgraded(tls_stack.hub.port, tls=True)
    c.send(frame(2, b"fine") + bad)
    c.expect_close(code)


def test_tls_ping_burst_and_close(tls_stack):
    c = upgraded(tls_stack.hub.port, tls=True)
    pings = [b"tls %04d" % i for i in range(1000)]
    c.send(b"".join(frame(9, p) for p in pings))
    fs, eof = c.read_frames(lambda fs: sum(f[0] == 10 for f in fs) >= 1000, 10)
    assert [f[3] for f in fs if f[0] == 10] == pings, "%d pongs, eof=%s" % (
        sum(f[0] == 10 for f in fs), eof)
    c.send(frame(8, close_payload(1013, b"later")))
    fs, _ = c.read_frames(lambda fs: any(f[0] == 8 for f in fs), CLOSE_WAIT)
    assert [f[3] for f in fs if f[0] == 8] == [close_payload(1013, b"later")], fs
    assert c.wait_tcp_close() is not None
