#!/usr/bin/python3
"""wsserver.py -- a tiny WebSocket broadcast server for testing wsbench itself.

Two implementations of the WebSocket side behind one HTTP publish port:
  --impl raw  our own asyncio RFC 6455 server, so that faults can be injected on purpose:
              a wrong Sec-WebSocket-Accept, a non-101 status, silence, a dropped, duplicated,
              swapped or one-byte-short broadcast for one connection (the "victim": the first
              to connect), a broadcast dropped for every connection after the first K (churn
              comebacks),
              pings before each broadcast (pong payloads are checked), fragmented messages,
              close frames (the echo is checked), and every client frame must be masked;
  --impl lib  the Debian `websockets` package's server, an independent implementation that
              checks wsbench's handshake and framing and pings on its own (it closes a
              connection whose pong does not come back).
--v1 (raw only) speaks wshub.v1 as docs/protocol.md specifies: a welcome, `m <seq>` headers,
resume from ?since=&epoch= out of a ring of the last --retain broadcasts (expired / reset
otherwise), seqs that start at 1000 and step by 3 (not contiguous, as wshub's may be), and POST
answers {"seq":N}. Its faults: every connection closed with 1012 or cut without a close frame
after broadcast N, handshakes refused with 503 for a while after a cut, and for the victim a
broadcast skipped silently, sent twice, replaced by a gap notice, or a wrong welcome.
HTTP on the publish port: POST /pub broadcasts the body (the Nth POST is broadcast N, from 0);
GET /stats returns counters as JSON. Prints one JSON line {"ws_port", "pub_port", "pid"} on
stdout once listening, and runs until killed.
"""
import argparse
import asyncio
import base64
import hashlib
import json
import os
import struct
import sys

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

STATS = {
    "connections": 0, "handshakes": 0, "broadcasts": 0, "frames_sent": 0,
    "pings_sent": 0, "pongs_ok": 0, "pongs_bad": 0, "unmasked_frames": 0,
    "bad_frames": 0, "close_frames_sent": 0, "close_echo_ok": 0, "close_echo_bad": 0,
    "client_closes": 0, "peers": [], "posts": 0, "open": 0,
    "post_min": None, "post_max": None, "late_dropped": 0,
    "v1_resumed": 0, "v1_expired": 0, "v1_refused": 0, "v1_cut": 0,
}
PEERS = set()
V1 = "wshub.v1"


def frame(opcode, payload, fin=True):
    n = len(payload)
    b0 = (0x80 if fin else 0) | opcode
    if n < 126:
        head = struct.pack("!BB", b0, n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, 126, n)
    else:
        head = struct.pack("!BBQ", b0, 127, n)
    return head + payload


class RawConn:
    def __init__(self, server, reader, writer, index):
        self.server, self.reader, self.writer, self.index = server, reader, writer, index
        self.expect_pongs = []      # payloads of pings not yet answered, in order
        self.close_sent = None      # status code of the close we sent
        self.held = None            # a broadcast held back to swap with the next

    def send(self, data):
        self.writer.write(data)
        STATS["frames_sent"] += 1

    def ping(self, payload):
        self.expect_pongs.append(payload)
        STATS["pings_sent"] += 1
        self.send(frame(0x9, payload))

    def send_message(self, body, n):
        a = self.server.args
        parts = max(1, a.fragment)
        if parts == 1 or len(body) < parts:
            self.send(frame(0x1, body))
            return
        step = (len(body) + parts - 1) // parts
        chunks = [body[i:i + step] for i in range(0, len(body), step)]
        for k, c in enumerate(chunks):
            op = 0x1 if k == 0 else 0x0
            self.send(frame(op, c, fin=(k == len(chunks) - 1)))
            if k == 0 and a.ping:   # a control frame between fragments is legal
                self.ping(b"mid-%d-%d" % (n, self.index))

    def deliver(self, body, n):
        a = self.server.args
        if a.ping:
            self.ping(b"p-%d-%d-%s" % (n, self.index, os.urandom(4).hex().encode()))
        victim = self.index == 0
        if victim and n == a.drop:
            return
        if a.drop_late is not None and self.index >= a.drop_late[0] and n == a.drop_late[1]:
            STATS["late_dropped"] += 1
            return
        if victim and n == a.trim:
            body = body[:-1]
        if victim and n == a.swap:
            self.held = body
            return
        self.send_message(body, n)
        if victim and n == a.dup:
            self.send_message(body, n)
        if self.held is not None and victim and n == a.swap + 1:
            self.send_message(self.held, a.swap)
            self.held = None

    def deliver_v1(self, seq, body, n):
        """One broadcast under wshub.v1, with the victim's faults."""
        a = self.server.args
        victim = self.index == 0
        if victim and n == a.v1_skip:
            return
        if victim and n == a.v1_gap:
            self.send(frame(0x1, b"g %d %d skipped\n" % (seq, seq)))
            return
        msg = b"m %d\n" % seq + body
        self.send(frame(0x1, msg))
        if victim and n == a.v1_dup:
            self.send(frame(0x1, msg))

    def close(self, code):
        self.close_sent = code
        STATS["close_frames_sent"] += 1
        self.send(frame(0x8, struct.pack("!H", code) + b"bye"))
        if not self.server.args.data_after_close and self in self.server.conns:
            self.server.conns.remove(self)   # RFC 6455 5.5.1: no data after a close frame

    async def read_frames(self):
        r = self.reader
        while True:
            b0, b1 = await r.readexactly(2)
            op, masked, n = b0 & 0x0F, b1 & 0x80, b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", await r.readexactly(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", await r.readexactly(8))[0]
            if not masked:
                STATS["unmasked_frames"] += 1
                payload = await r.readexactly(n)
            else:
                key = await r.readexactly(4)
                raw = await r.readexactly(n)
                payload = bytes(c ^ key[i & 3] for i, c in enumerate(raw))
            if op == 0xA:
                if self.expect_pongs and self.expect_pongs[0] == payload and masked:
                    self.expect_pongs.pop(0)
                    STATS["pongs_ok"] += 1
                else:
                    STATS["pongs_bad"] += 1
            elif op == 0x8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                if self.close_sent is not None:
                    ok = masked and code == self.close_sent
                    STATS["close_echo_ok" if ok else "close_echo_bad"] += 1
                else:
                    STATS["client_closes"] += 1
                    self.writer.write(frame(0x8, payload[:2]))
                return
            elif op == 0x9:
                self.writer.write(frame(0xA, payload))
            else:
                STATS["bad_frames"] += 1


class Server:
    def __init__(self, args):
        self.args = args
        self.conns = []         # raw: RawConn; lib: websockets connections
        self.next_index = 0
        self.posts = 0
        self.epoch = os.urandom(8).hex()
        self.ring = []          # wshub.v1: (seq, body) of the last --retain broadcasts
        self.next_seq = 1000
        self.refuse_until = 0.0

    def v1_welcome(self, path):
        """The welcome for a request path and the (seq, body) to replay after it."""
        from urllib.parse import parse_qs, urlsplit
        q = parse_qs(urlsplit(path).query)
        last = self.next_seq - 3
        if "since" not in q:
            return b"w %s %d fresh\n" % (self.epoch.encode(), last), []
        since = int(q["since"][0])
        epoch = q.get("epoch", [self.epoch])[0]
        oldest = self.ring[0][0] if self.ring else self.next_seq
        if epoch != self.epoch or since > last:
            return b"w %s %d reset\n" % (self.epoch.encode(), last), []
        if since < oldest - 3:
            STATS["v1_expired"] += 1
            return b"w %s %d expired\n" % (self.epoch.encode(), last), []
        if self.args.v1_bad_welcome:
            since += 1
        STATS["v1_resumed"] += 1
        return (b"w %s %d resumed\n" % (self.epoch.encode(), since),
                [(q_, b) for q_, b in self.ring if q_ > since])

    # ---- raw WebSocket side ----
    async def raw_client(self, reader, writer):
        STATS["connections"] += 1
        PEERS.add(writer.get_extra_info("peername")[0])
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        if self.args.silent:
            await reader.read()     # say nothing until the client gives up
            writer.close()
            return
        key, protocols = b"", b""
        path = head.split(b" ", 2)[1].decode()
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"sec-websocket-key:"):
                key = line.split(b":", 1)[1].strip()
            if line.lower().startswith(b"sec-websocket-protocol:"):
                protocols = line.split(b":", 1)[1].strip()
        status = self.args.status
        if self.args.v1 and asyncio.get_running_loop().time() < self.refuse_until:
            status = 503
            STATS["v1_refused"] += 1
        if self.args.v1 and protocols != V1.encode():
            status = 400    # wshub refuses an offer it does not know; this one wants exactly v1
        if status != 101:
            writer.write(b"HTTP/1.1 %d Nope\r\nContent-Length: 0\r\n\r\n" % status)
            await writer.drain()
            writer.close()
            return
        src = b"not-the-key" if self.args.bad_accept else key
        accept = base64.b64encode(hashlib.sha1(src + GUID).digest())
        proto = b""
        if self.args.v1 and not self.args.v1_no_protocol:
            proto = b"Sec-WebSocket-Protocol: " + V1.encode() + b"\r\n"
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\n" + proto + b"Sec-WebSocket-Accept: " + accept +
                     b"\r\n\r\n")
        STATS["handshakes"] += 1
        conn = RawConn(self, reader, writer, self.next_index)
        self.next_index += 1
        if self.args.v1:
            welcome, replay = self.v1_welcome(path)
            conn.send(frame(0x1, welcome))
            for seq, body in replay:
                conn.send(frame(0x1, b"m %d\n" % seq + body))
        self.conns.append(conn)
        STATS["open"] += 1
        if self.args.close_after is not None:
            asyncio.get_running_loop().call_later(self.args.close_after, conn.close, 1001)
        try:
            await conn.read_frames()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            STATS["open"] -= 1
            if conn in self.conns:
                self.conns.remove(conn)
            writer.close()

    # ---- websockets-library side ----
    async def lib_client(self, ws, path=None):
        STATS["connections"] += 1
        STATS["handshakes"] += 1
        STATS["open"] += 1
        PEERS.add(ws.remote_address[0])
        self.conns.append(ws)
        try:
            async for _ in ws:
                pass
        except Exception:
            pass
        finally:
            STATS["open"] -= 1
            self.conns.remove(ws)

    # ---- HTTP publish side ----
    def publish(self, body):
        n = self.posts
        self.posts += 1
        STATS["posts"] += 1
        size = len(body)
        STATS["post_min"] = size if STATS["post_min"] is None else min(STATS["post_min"], size)
        STATS["post_max"] = size if STATS["post_max"] is None else max(STATS["post_max"], size)
        if n == self.args.pub_fail:
            return 500
        STATS["broadcasts"] += 1
        if self.args.v1:
            seq = self.next_seq
            self.next_seq += 3
            self.ring = (self.ring + [(seq, body)])[-self.args.retain:]
            if n == self.args.close_1012_at and self.args.data_after_close:
                for c in list(self.conns):   # the close goes out before broadcast n, wrongly
                    c.close(1012)
            for c in list(self.conns):
                c.deliver_v1(seq, body, n)
            if n == self.args.close_1012_at and not self.args.data_after_close:
                for c in list(self.conns):
                    c.close(1012)
            if n == self.args.cut_at:
                for c in list(self.conns)[::2]:     # every other connection, no close frame
                    STATS["v1_cut"] += 1
                    c.writer.transport.abort()
                self.refuse_until = asyncio.get_running_loop().time() + self.args.refuse_for
            return 200, b'{"seq":%d}' % seq
        if self.args.impl == "raw":
            for c in list(self.conns):
                c.deliver(body, n)
        else:
            import websockets
            websockets.broadcast(list(self.conns), body.decode())
        return 200

    async def http_client(self, reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                hdrs = {l.split(":", 1)[0].strip().lower(): l.split(":", 1)[1].strip()
                        for l in lines[1:] if ":" in l}
                body = await reader.readexactly(int(hdrs.get("content-length", "0")))
                if method == "POST" and path == "/pub":
                    status, out = self.publish(body), b"ok"
                    if isinstance(status, tuple):
                        status, out = status
                elif method == "GET" and path == "/stats":
                    STATS["peers"] = sorted(PEERS)
                    status, out = 200, json.dumps(STATS).encode()
                else:
                    status, out = 404, b"no"
                if self.args.chunked:
                    mid = len(out) // 2
                    writer.write(b"HTTP/1.1 %d X\r\nTransfer-Encoding: chunked\r\n\r\n" % status +
                                 b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" %
                                 (mid, out[:mid], len(out) - mid, out[mid:]))
                else:
                    writer.write(b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n%s" %
                                 (status, len(out), out))
                await writer.drain()
                if hdrs.get("connection", "").lower() == "close":
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()


async def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--impl", choices=["raw", "lib"], default="raw")
    ap.add_argument("--bad-accept", action="store_true", help="send a wrong Sec-WebSocket-Accept")
    ap.add_argument("--status", type=int, default=101, help="answer the upgrade with this status")
    ap.add_argument("--silent", action="store_true", help="never answer the upgrade")
    ap.add_argument("--drop", type=int, default=-1, help="do not send broadcast N to the victim")
    ap.add_argument("--dup", type=int, default=-1, help="send broadcast N twice to the victim")
    ap.add_argument("--swap", type=int, default=-1, help="send N+1 before N to the victim")
    ap.add_argument("--trim", type=int, default=-1,
                    help="send broadcast N to the victim one byte short")
    ap.add_argument("--drop-late", type=int, nargs=2, metavar=("K", "N"), default=None,
                    help="connections after the first K (churn comebacks) miss broadcast N")
    ap.add_argument("--pub-fail", type=int, default=-1, help="answer POST N with 500")
    ap.add_argument("--ping", action="store_true", help="ping every client before each broadcast")
    ap.add_argument("--fragment", type=int, default=1, help="send broadcasts in N fragments")
    ap.add_argument("--close-after", type=float, default=None,
                    help="send close 1001 this many seconds after each handshake")
    ap.add_argument("--chunked", action="store_true", help="chunked HTTP answers")
    ap.add_argument("--lib-ping-interval", type=float, default=None)
    ap.add_argument("--data-after-close", action="store_true",
                    help="keep broadcasting to a connection after sending it a close frame "
                    "(v1: the 1012 of --close-1012-at goes out before broadcast N)")
    ap.add_argument("--v1", action="store_true", help="speak wshub.v1 (raw only)")
    ap.add_argument("--retain", type=int, default=1000, help="v1: broadcasts kept for resume")
    ap.add_argument("--close-1012-at", type=int, default=-1,
                    help="v1: after broadcast N, close every connection with 1012")
    ap.add_argument("--cut-at", type=int, default=-1,
                    help="v1: after broadcast N, cut every other connection (no close frame)")
    ap.add_argument("--refuse-for", type=float, default=0.0,
                    help="v1: answer upgrades with 503 this many seconds after the cut")
    ap.add_argument("--v1-skip", type=int, default=-1, help="v1: the victim misses broadcast N")
    ap.add_argument("--v1-dup", type=int, default=-1, help="v1: the victim gets N twice")
    ap.add_argument("--v1-gap", type=int, default=-1,
                    help="v1: the victim gets a gap notice instead of broadcast N")
    ap.add_argument("--v1-bad-welcome", action="store_true",
                    help="v1: resumed welcomes name the wrong position")
    ap.add_argument("--v1-no-protocol", action="store_true",
                    help="v1: the 101 does not select wshub.v1")
    args = ap.parse_args()

    srv = Server(args)
    if args.impl == "raw":
        ws = await asyncio.start_server(srv.raw_client, "127.0.0.1", 0, backlog=4096)
        ws_port = ws.sockets[0].getsockname()[1]
    else:
        import websockets
        ws = await websockets.serve(srv.lib_client, "127.0.0.1", 0, backlog=4096,
                                    ping_interval=args.lib_ping_interval,
                                    ping_timeout=args.lib_ping_interval)
        ws_port = list(ws.sockets)[0].getsockname()[1]
    pub = await asyncio.start_server(srv.http_client, "127.0.0.1", 0)
    print(json.dumps({"ws_port": ws_port, "pub_port": pub.sockets[0].getsockname()[1],
                      "pid": os.getpid()}), flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
