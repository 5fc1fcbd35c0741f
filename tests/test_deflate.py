"""permessage-deflate (RFC 7692, ws-worker/worker_deflate.c, docs/deflate.md) against the real
stack: negotiation with the offers clients really make (Chromium, Python's websockets, raw
handshakes with client_max_window_bits, server_no_context_takeover, a server window we cannot
honour, nothing at all), broadcasts compressed once and read back by every kind of client, the
selective rule (small or incompressible messages go out plain on the same connection), wshub.v1
envelopes inside the compressed payload (also for a client resuming into frames built while no
client compressed), client-to-server compressed messages (fragmented, with a pong between the
fragments), a decompression bomb (1009, no memory jump), invalid data (1007), RSV1 where it may
not be (1002), the option turned off, and the memory of an idle compressing connection.

Stacks here listen on ports 25000-25999 with instance names starting with "dfl" (one worker
unless said otherwise, no nginx: broadcasts go to wshub-admin's FastCGI socket)."""
import asyncio
import json
import os
import random
import socket
import struct
import time
import zlib

import pytest
import websockets
from websockets.extensions import permessage_deflate as pmd

import cdp
from wsclients import connect, in_thread, until
from wshub_stack import _port_is_free, parse_frames, wait_for, ws_handshake_request

OFFER_PLAIN = "permessage-deflate"
ANSWER = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"


def json_message(seed, records=24):
    """A ~2.5 KiB JSON document of the kind dashboards push: compressible, not trivially."""
    rnd = random.Random(seed)
    items = [{"id": rnd.randrange(10 ** 6), "symbol": rnd.choice(["BTC-USD", "ETH-USD", "SOL-USD"]),
              "price": round(rnd.uniform(10, 50000), 2), "qty": round(rnd.uniform(0, 5), 4),
              "side": rnd.choice(["buy", "sell"]), "venue": rnd.choice(["alpha", "beta"])}
             for _ in range(records)]
    return json.dumps({"type": "trades", "seq": seed, "items": items})


def dfl_stack(make_stack, workers=1, options=None):
    """A stack on a free port of 25000-25999, instance dfl-<n>."""
    stack = make_stack(workers=workers, options=options, nginx=False, start=False)
    hub = stack.hub
    hub.port = next(p for p in random.sample(range(25000, 26000), 1000) if _port_is_free(p))
    hub.instance = "dfl-%d-%04x" % (os.getpid() % 100000, random.getrandbits(16))
    hub.options.update({"listen": "127.0.0.1:%d" % hub.port, "instance": hub.instance})
    hub.write_conf()
    return stack.start()


# ---- a raw client: frames as they are on the wire -------------------------------------------

def deflate_body(data, level=1):
    """One message as a permessage-deflate client sends it (no context, trailer removed)."""
    c = zlib.compressobj(level, zlib.DEFLATED, -15)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def inflate_body(data):
    d = zlib.decompressobj(-15)
    return d.decompress(data + b"\x00\x00\xff\xff") + d.flush()


def client_frame(op, payload, fin=True, rsv1=False):
    """A masked client frame."""
    b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | op
    n = len(payload)
    if n < 126:
        head = bytes([b0, 0x80 | n])
    elif n < 65536:
        head = bytes([b0, 0x80 | 126]) + struct.pack("!H", n)
    else:
        head = bytes([b0, 0x80 | 127]) + struct.pack("!Q", n)
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class Raw:
    """A WebSocket client on a plain socket that keeps each server frame's first byte, so RSV1
    can be checked."""

    def __init__(self, port, offer=OFFER_PLAIN, path="/ws", protocol=None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        req = ws_handshake_request("127.0.0.1", port, path).decode()[:-2]
        if offer is not None:
            req += "Sec-WebSocket-Extensions: %s\r\n" % offer
        if protocol:
            req += "Sec-WebSocket-Protocol: %s\r\n" % protocol
        self.sock.sendall((req + "\r\n").encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = self.sock.recv(4096)
            assert chunk, "connection closed during the handshake: %r" % buf
            buf += chunk
        head, _, self.buf = buf.partition(b"\r\n\r\n")
        self.head = head.decode("latin-1")
        self.status = int(self.head.split()[1])
        self.extensions = [line.split(":", 1)[1].strip() for line in self.head.split("\r\n")
                           if line.lower().startswith("sec-websocket-extensions:")]

    def frames(self, count, timeout=10):
        """The next `count` server frames as (first byte, payload)."""
        out = []
        deadline = time.monotonic() + timeout
        while True:
            while len(out) < count and self._frame_len():
                n = self._frame_len()
                (parsed,), _ = parse_frames(self.buf[:n])
                out.append((self.buf[0], parsed[2]))
                self.buf = self.buf[n:]
            if len(out) == count:
                return out
            left = deadline - time.monotonic()
            assert left > 0, "timed out waiting for %d frames (got %d)" % (count, len(out))
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            assert chunk, "connection closed after %d frames: %r" % (len(out), out[-1:])
            self.buf += chunk

    def _frame_len(self):
        b = self.buf
        if len(b) < 2:
            return 0
        n, hl = b[1] & 0x7F, 2
        if n == 126:
            if len(b) < 4:
                return 0
            n, hl = struct.unpack("!H", b[2:4])[0], 4
        elif n == 127:
            if len(b) < 10:
                return 0
            n, hl = struct.unpack("!Q", b[2:10])[0], 10
        return hl + n if len(b) >= hl + n else 0

    def messages(self, count, timeout=10):
        """The next `count` data messages as (compressed, text), control frames skipped."""
        out = []
        while len(out) < count:
            (b0, payload), = self.frames(1, timeout)
            op = b0 & 0x0F
            assert b0 & 0x80, "fragmented server message"
            assert not b0 & 0x30, "RSV2/RSV3 set: %#x" % b0
            if op in (1, 2):
                data = inflate_body(payload) if b0 & 0x40 else payload
                out.append((bool(b0 & 0x40), data.decode() if op == 1 else data))
            else:
                assert not b0 & 0x40, "RSV1 on a control frame: %#x" % b0
                assert op != 8, "closed: %r" % payload
        return out

    def send(self, data):
        self.sock.sendall(data)

    def close_code(self, timeout=10):
        """Reads until the server's close frame; returns its code (None if TCP just ended)."""
        deadline = time.monotonic() + timeout
        while True:
            while self._frame_len():
                (b0, payload), = self.frames(1)
                if b0 & 0x0F == 8:
                    return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
            left = deadline - time.monotonic()
            assert left > 0, "no close frame within %s s" % timeout
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                return None
            if not chunk:
                return None
            self.buf += chunk

    def close(self):
        self.sock.close()


def worker_pids(stack):
    return [w["pid"] for w in stack.stats()["workers"] if w.get("pid")]


def rss(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS for %d" % pid)


def totals(stack):
    return stack.stats()["totals"]


def publish(stack, body):
    r = stack.broadcast(body)
    assert r.status in (200, 202), r
    return r


# ---- negotiation -----------------------------------------------------------------------------

@pytest.mark.parametrize("offer,answer", [
    ("permessage-deflate", ANSWER),
    ("permessage-deflate; client_max_window_bits", ANSWER),       # Chromium, websockets
    ("permessage-deflate; client_max_window_bits=10", ANSWER),    # our inflater reads any
    ("permessage-deflate; server_no_context_takeover", ANSWER),
    ("permessage-deflate; client_no_context_takeover",
     "permessage-deflate; client_no_context_takeover; server_no_context_takeover"),
    ("permessage-deflate; server_max_window_bits=15", ANSWER + "; server_max_window_bits=15"),
    ("x-webkit-deflate-frame, permessage-deflate", ANSWER),
    ("permessage-deflate; server_max_window_bits=10", None),      # we deflate with 15 bits
    ("permessage-deflate; foo", None),                            # unknown parameter
    ("permessage-deflate; server_no_context_takeover; server_no_context_takeover", None),
    (None, None),                                                  # nothing offered
])
def test_negotiation(make_stack, offer, answer):
    stack = dfl_stack(make_stack)
    c = Raw(stack.hub.port, offer)
    try:
        assert c.status == 101, c.head
        assert c.extensions == ([answer] if answer else []), c.head
        body = json_message(1)
        publish(stack, body)
        (compressed, text), = c.messages(1)
        assert text == body
        assert compressed == (answer is not None)
    finally:
        c.close()


def test_python_clients(make_stack):
    """websockets 10.4 with and without compression, and with offers it builds itself."""
    stack = dfl_stack(make_stack)
    url = stack.hub.ws_url

    async def run():
        plain = await connect(url, name="plain")
        default = await connect(url, name="deflate", compression="deflate")
        snct = await connect(url, name="server_no_context_takeover", extensions=[
            pmd.ClientPerMessageDeflateFactory(server_no_context_takeover=True)])
        cmwb = await connect(url, name="client_max_window_bits=9", extensions=[
            pmd.ClientPerMessageDeflateFactory(client_max_window_bits=9)])
        smwb = await connect(url, name="server_max_window_bits=10 (declined)", extensions=[
            pmd.ClientPerMessageDeflateFactory(server_max_window_bits=10)])
        clients = [plain, default, snct, cmwb, smwb]
        for c in clients:
            ext = c.ws.response_headers.get("Sec-WebSocket-Extensions")
            if c in (plain, smwb):
                assert ext is None, (c.name, ext)
            else:
                assert ext is not None and ext.startswith("permessage-deflate"), (c.name, ext)
        bodies = [json_message(i) for i in range(5)] + ["tiny", json_message(9) * 8]
        for b in bodies:
            await in_thread(publish, stack, b)
        await until(lambda: all(len(c.messages) == len(bodies) for c in clients), 15,
                    "every client to get every broadcast")
        for c in clients:
            assert c.messages == bodies, c.name
        for c in clients:
            await c.close()

    asyncio.run(run())


# ---- sending: selective, one deflate per broadcast --------------------------------------------

def test_mixed_compressed_and_plain_on_one_connection(make_stack):
    """Above deflate_threshold and shrinking: RSV1 and deflated; below it, or not shrinking
    (random bytes): plain, on the same connection, in publication order. A client without the
    extension gets every one plain."""
    stack = dfl_stack(make_stack, options={"deflate_threshold": "256"})
    c, p = Raw(stack.hub.port), Raw(stack.hub.port, offer=None)
    try:
        bodies = [json_message(1), "x" * 255, json_message(2), "small", os.urandom(1000),
                  "x" * 256, bytes(2000)]
        for b in bodies:
            if isinstance(b, bytes):
                r = stack.broadcast(b, content_type="application/octet-stream")
                assert r.status in (200, 202), r
            else:
                publish(stack, b)
        got = c.messages(len(bodies))
        assert [t for _, t in got] == bodies
        assert [z for z, _ in got] == [True, False, True, False, False, True, True]
        assert p.messages(len(bodies)) == [(False, b) for b in bodies]
    finally:
        c.close()
        p.close()


def test_compressed_frame_is_built_once(make_stack):
    """Two compressing clients get byte-identical compressed frames: the worker deflated the
    broadcast once, not once per connection."""
    stack = dfl_stack(make_stack)
    a, b = Raw(stack.hub.port), Raw(stack.hub.port, "permessage-deflate; client_max_window_bits")
    try:
        body = json_message(3)
        publish(stack, body)
        (fa,), (fb,) = a.frames(1), b.frames(1)
        assert fa == fb and fa[0] == 0xC1, (fa[0], fb[0])
        assert inflate_body(fa[1]).decode() == body
        assert len(fa[1]) * 2 < len(body), "2.5 KiB of JSON should shrink at least 2x"
    finally:
        a.close()
        b.close()


def test_wshub_v1_envelopes_compressed(make_stack):
    """wshub.v1: the welcome is a plain control message; every broadcast is "m <seq>\\n" + body
    inside one compressed payload. A client that resumes into frames the worker built while no
    client compressed gets those plain, the later ones compressed."""
    stack = dfl_stack(make_stack)
    port = stack.hub.port
    early = [json_message(10 + i) for i in range(3)]
    for b in early:  # nobody compresses yet: the twins are not built
        publish(stack, b)
    v1 = Raw(port, protocol="wshub.v1")
    try:
        assert "Sec-WebSocket-Protocol: wshub.v1" in v1.head and v1.extensions == [ANSWER]
        (z, welcome), = v1.messages(1)
        assert not z and welcome.startswith("w ") and welcome.endswith(" fresh\n"), welcome
        epoch, last = welcome.split()[1], int(welcome.split()[2])
        body = json_message(20)
        publish(stack, body)
        (z, text), = v1.messages(1)
        assert z and text == "m %d\n%s" % (last + 1, body)

        # resume from before the early broadcasts
        first = last - len(early) + 1
        r = Raw(port, protocol="wshub.v1", path="/ws?since=%d&epoch=%s" % (first - 1, epoch))
        try:
            got = r.messages(1 + len(early) + 1)
            assert got[0][1].split()[3] == "resumed", got[0]
            assert [t for _, t in got[1:]] == ["m %d\n%s" % (first + i, b)
                                               for i, b in enumerate(early + [body])]
            # built before any compressing client: plain; the one after: compressed
            assert [z for z, _ in got[1:]] == [False] * len(early) + [True]
        finally:
            r.close()
    finally:
        v1.close()


def test_twin_buffers_wrap(make_stack):
    """Many broadcasts through small frame buffers: the compressed twins wrap around their own
    buffers (and the mixed small/large sizes split runs between twin and plain copies) while
    every kind of client still gets every message, intact and in order."""
    stack = dfl_stack(make_stack, options={"worker_buffer": "64k", "max_message": "8k",
                                           "ring_size": "1m", "deflate_threshold": "200"})
    bodies = [json_message(i, records=1 + i % 20) if i % 3 else "small %d" % i
              for i in range(400)]

    async def run():
        url = stack.hub.ws_url
        clients = [await connect(url, name="plain"),
                   await connect(url, name="deflate", compression="deflate"),
                   await connect(url, name="v1", subprotocols=["wshub.v1"]),
                   await connect(url, name="v1 deflate", subprotocols=["wshub.v1"],
                                 compression="deflate")]
        await until(lambda: all(len(c.messages) == 1 for c in clients[2:]), 10, "welcomes")
        for i, b in enumerate(bodies):
            await in_thread(publish, stack, b)
            if i % 50 == 49:  # the clients keep up: no slow-consumer close
                await until(lambda: all(len(c.messages) >= i + 1 for c in clients), 15,
                            "message %d everywhere" % i)
        await until(lambda: all(len(c.messages) >= len(bodies) + (c.name.startswith("v1"))
                                for c in clients) or any(c.closed.is_set() for c in clients),
                    30, "every broadcast everywhere")
        for c in clients:
            assert not c.closed.is_set(), (c.name, c.close_code)
        for c in clients[:2]:
            assert c.messages == bodies, c.name
        for c in clients[2:]:
            got = [m.split("\n", 1)[1] for m in c.messages[1:]]
            assert got == bodies, c.name
            seqs = [int(m.split("\n", 1)[0].split()[1]) for m in c.messages[1:]]
            assert seqs == list(range(seqs[0], seqs[0] + len(bodies))), c.name
        for c in clients:
            await c.close()

    asyncio.run(run())


# ---- receiving: client-to-server compressed messages ------------------------------------------

def test_client_compressed_messages(make_stack):
    """websockets compresses what it sends; a raw client sends a compressed message in three
    fragments with a pong between two of them, then a plain and a compressed one. Each is
    counted with its inflated size and the connection stays open."""
    stack = dfl_stack(make_stack, options={"client_message_rate": "0"})
    t0 = totals(stack)

    async def python_side():
        c = await connect(stack.hub.ws_url, compression="deflate")
        for i in range(3):
            await c.ws.send(json_message(30 + i))
        await c.ws.send("short")
        pong = await c.ws.ping(b"still open?")
        await asyncio.wait_for(pong, 10)
        await c.close()

    asyncio.run(python_side())
    sent = sum(len(json_message(30 + i)) for i in range(3)) + len("short")
    wait_for(lambda: totals(stack)["messages_in"] - t0["messages_in"] == 4, 10, "4 counted")
    assert totals(stack)["bytes_in"] - t0["bytes_in"] == sent

    raw = Raw(stack.hub.port)
    try:
        text = json_message(40).encode()
        z = deflate_body(text)
        a, b = z[:len(z) // 2], z[len(z) // 2:]
        raw.send(client_frame(1, a, fin=False, rsv1=True))
        raw.send(client_frame(0xA, b"unsolicited pong"))
        raw.send(client_frame(0, b[:7], fin=False))
        raw.send(client_frame(0, b[7:], fin=True))
        raw.send(client_frame(1, b"plain one"))
        raw.send(client_frame(1, deflate_body(b"compressed one"), rsv1=True))
        expect = len(text) + len("plain one") + len("compressed one")
        wait_for(lambda: totals(stack)["bytes_in"] - t0["bytes_in"] == sent + expect, 10,
                 "the raw client's 3 messages counted")
        assert totals(stack)["messages_in"] - t0["messages_in"] == 7
        body = json_message(41)
        publish(stack, body)  # still served
        assert raw.messages(1) == [(True, body)]
        raw.send(client_frame(8, struct.pack("!H", 1000)))
        assert raw.close_code() == 1000
    finally:
        raw.close()


def test_decompression_bomb(make_stack):
    """A few KB that inflate to 8 MiB: closed with 1009 once client_max_message (64k) is
    passed, without the worker's memory following the inflated size; again and again."""
    stack = dfl_stack(make_stack)
    (wpid,) = worker_pids(stack)
    bomb = deflate_body(b"\0" * (8 << 20), level=9)
    assert len(bomb) < 16 << 10, len(bomb)
    before = rss(wpid)
    for _ in range(5):
        c = Raw(stack.hub.port)
        try:
            c.send(client_frame(2, bomb, rsv1=True))
            assert c.close_code() == 1009
        finally:
            c.close()
    grown = rss(wpid) - before
    assert grown < 2 << 20, "worker RSS grew by %d bytes for 5 bombs" % grown
    wait_for(lambda: totals(stack)["closed"].get("too_big", 0) >= 5
             if isinstance(totals(stack).get("closed"), dict) else True, 10, "counted")


def test_invalid_compressed_data(make_stack):
    stack = dfl_stack(make_stack)
    port = stack.hub.port
    cases = [
        # not deflate at all: 1007
        ([client_frame(1, b"\xff\xff\xff\xff not deflate", rsv1=True)], 1007),
        # valid deflate of a text message that is not UTF-8 once inflated: 1007 (lws checks
        # what the extension hands it)
        ([client_frame(1, deflate_body(b"ok so far \xc3\x28 broken"), rsv1=True)], 1007),
        # RSV1 on a continuation frame: 1002
        ([client_frame(1, deflate_body(b"abc" * 50)[:5], fin=False, rsv1=True),
          client_frame(0, b"\x00", fin=True, rsv1=True)], 1002),
        # RSV1 on a control frame: 1002
        ([client_frame(0xA, b"pong", rsv1=True)], 1002),
    ]
    for frames, code in cases:
        c = Raw(port)
        try:
            for f in frames:
                c.send(f)
            assert c.close_code() == code, frames
        finally:
            c.close()
    # without the extension, RSV1 is a protocol error too
    c = Raw(port, offer=None)
    try:
        c.send(client_frame(1, deflate_body(b"abc"), rsv1=True))
        assert c.close_code() == 1002
    finally:
        c.close()


# ---- the option off, and memory --------------------------------------------------------------

def test_deflate_off(make_stack):
    stack = dfl_stack(make_stack, options={"deflate": "0"})
    c = Raw(stack.hub.port, "permessage-deflate; client_max_window_bits")
    try:
        assert c.status == 101 and c.extensions == []
        body = json_message(5)
        publish(stack, body)
        assert c.messages(1) == [(False, body)]
    finally:
        c.close()


def test_idle_memory_same_with_deflate(make_stack):
    """An idle connection that negotiated permessage-deflate holds no zlib state: the worker's
    memory per connection is within 300 bytes of a plain one's (1,000 connections each, after a
    warm-up round so the heap has grown once)."""
    stack = dfl_stack(make_stack)
    (wpid,) = worker_pids(stack)
    n = 1000

    def round_(offer):
        r0 = rss(wpid)
        conns = [Raw(stack.hub.port, offer) for _ in range(n)]
        wait_for(lambda: stack.stats()["connections"]["in_use"] == n, 20, "%d connected" % n)
        per = (rss(wpid) - r0) / n
        for c in conns:
            c.close()
        wait_for(lambda: stack.stats()["connections"]["in_use"] == 0, 20, "all closed")
        return per

    round_(None)  # warm-up
    plain = round_(None)
    deflate = round_("permessage-deflate; client_max_window_bits")
    assert deflate - plain < 300, "per connection: %.0f B plain, %.0f B with deflate" % (
        plain, deflate)


# ---- a real browser ----------------------------------------------------------------------------

def test_chromium_receives_compressed_broadcasts(make_stack):
    """Headless Chromium negotiates permessage-deflate itself, reads compressed broadcasts (plain
    and wshub.v1) and plain small ones, and sends a message it compresses itself."""
    assert cdp.available(), "chromium is not installed (scripts/deps.sh installs it)"
    stack = dfl_stack(make_stack, options={"client_message_rate": "0"})
    bodies = [json_message(50), "tiny", json_message(51), json_message(52) * 4]

    async def run():
        browser = await cdp.Browser(stack.base).start()
        try:
            await browser.evaluate("""(() => {
              window.dfl = {raw: [], v1: [], closed: []};
              const open = (proto, into) => new Promise((resolve, reject) => {
                const ws = proto ? new WebSocket(%s, proto) : new WebSocket(%s);
                ws.onmessage = (e) => into.push(e.data);
                ws.onclose = (e) => dfl.closed.push([proto, e.code]);
                ws.onopen = () => resolve(ws);
                ws.onerror = () => reject(new Error('websocket error'));
              });
              return Promise.all([open(null, dfl.raw), open('wshub.v1', dfl.v1)]).then((s) => {
                dfl.sockets = s;
                return s.map((x) => x.extensions);
              });
            })()""" % (json.dumps(stack.hub.ws_url), json.dumps(stack.hub.ws_url)))
            exts = await browser.evaluate("dfl.sockets.map((x) => x.extensions)")
            assert all(e.startswith("permessage-deflate") for e in exts), exts
            await browser.wait_for("dfl.v1.length >= 1", 10, "the welcome")
            welcome = await browser.evaluate("dfl.v1[0]")
            last = int(welcome.split()[2])
            for b in bodies:
                await in_thread(publish, stack, b)
            await browser.wait_for("dfl.raw.length >= %d && dfl.v1.length >= %d" % (
                len(bodies), len(bodies) + 1), 15, "every broadcast in the page")
            raw = await browser.evaluate("dfl.raw")
            v1 = await browser.evaluate("dfl.v1.slice(1)")
            assert raw == bodies
            assert v1 == ["m %d\n%s" % (last + 1 + i, b) for i, b in enumerate(bodies)]

            # The browser compresses what it sends (Chromium always does once negotiated).
            before = (await in_thread(totals, stack))["bytes_in"]
            sent = json_message(53)
            await browser.evaluate("dfl.sockets[0].send(%s)" % json.dumps(sent))
            await in_thread(wait_for, lambda: totals(stack)["bytes_in"] - before == len(sent),
                            10, "the browser's message counted")
            await in_thread(publish, stack, "after")
            await browser.wait_for("dfl.raw.length > %d" % len(bodies), 10, "a later broadcast")
            assert await browser.evaluate("dfl.closed") == []
            assert browser.console_errors == []
        finally:
            await browser.close()

    asyncio.run(run())
