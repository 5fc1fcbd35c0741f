#!/usr/bin/python3
"""chanserver.py -- a tiny channel server for testing wsbench --channels (test_channels.py).

Subscribers name their channels the way wshub and Nchan take them: /ws/<name>, /sub/<name>, or
?channel=a,b. A POST to /pub/<name> or /pub?channel=<name> is delivered to that channel's
subscribers only (the Nth POST is broadcast N, from 0). Faults, each for one broadcast, to prove
each wsbench counter moves:
  --drop N    the first subscriber of broadcast N's channel does not get it (lost)
  --dup N     ... gets it twice (duplicated)
  --leak N    broadcast N also goes to every subscriber of another channel (wrong_channel)
  --pub-fail N  POST N is answered 500 and not delivered (not expected of anybody)
  --ignore-channels  every broadcast goes to every subscriber (a server without channels)
GET /stats returns {"subscribers": {channel: count}, "posts": {channel: count}, ...}.
Prints {"ws_port", "pub_port", "pid"} on stdout once listening and runs until killed.
"""
import argparse
import asyncio
import base64
import hashlib
import json
import os
import sys
from urllib.parse import parse_qs, unquote, urlsplit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wsserver import GUID, frame  # noqa: E402

STATS = {"subscribers": {}, "posts": {}, "refused": 0, "delivered": 0, "leaked": 0}


def channels_of(target, *prefixes):
    """The channels a request target names: /<prefix>/<name> and/or ?channel=a,b."""
    u = urlsplit(target)
    out = []
    for prefix in prefixes:
        if u.path.startswith(prefix + "/") and len(u.path) > len(prefix) + 1:
            out.append(unquote(u.path[len(prefix) + 1:]))
    for v in parse_qs(u.query).get("channel", []):
        out.extend(x for x in v.split(",") if x)
    return out


class Server:
    def __init__(self, args):
        self.args = args
        self.subs = {}      # channel -> [writer, ...] in connection order
        self.posts = 0

    async def ws_client(self, reader, writer):
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        target = head.split(b" ", 2)[1].decode()
        chans = channels_of(target, "/ws", "/sub")
        key = b""
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"sec-websocket-key:"):
                key = line.split(b":", 1)[1].strip()
        if not chans:
            STATS["refused"] += 1
            writer.write(b"HTTP/1.1 400 No channel\r\nContent-Length: 0\r\n\r\n")
            writer.close()
            return
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        for c in chans:
            self.subs.setdefault(c, []).append(writer)
            STATS["subscribers"][c] = STATS["subscribers"].get(c, 0) + 1
        try:
            while True:     # only the client's close matters; echo it and end
                b0, b1 = await reader.readexactly(2)
                n = b1 & 0x7F
                if n == 126:
                    n = int.from_bytes(await reader.readexactly(2), "big")
                elif n == 127:
                    n = int.from_bytes(await reader.readexactly(8), "big")
                data = await reader.readexactly(n + (4 if b1 & 0x80 else 0))
                if b0 & 0x0F == 0x8:
                    mask, raw = data[:4], data[4:]
                    code = bytes(c ^ mask[i & 3] for i, c in enumerate(raw[:2]))
                    writer.write(frame(0x8, code))
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            for c in chans:
                if writer in self.subs.get(c, []):
                    self.subs[c].remove(writer)
            writer.close()

    def publish(self, channel, body):
        n = self.posts
        self.posts += 1
        a = self.args
        if n == a.pub_fail:
            return 500
        STATS["posts"][channel] = STATS["posts"].get(channel, 0) + 1
        msg = frame(0x1, body)
        targets = ([w for ws in self.subs.values() for w in ws] if a.ignore_channels
                   else list(self.subs.get(channel, [])))
        for i, w in enumerate(targets):
            if i == 0 and n == a.drop:
                continue
            w.write(msg)
            STATS["delivered"] += 1
            if i == 0 and n == a.dup:
                w.write(msg)
        if n == a.leak:
            other = next((c for c in sorted(self.subs) if c != channel and self.subs[c]), None)
            for w in self.subs.get(other, []):
                w.write(msg)
                STATS["leaked"] += 1
        return 200

    async def http_client(self, reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                hdrs = {l.split(":", 1)[0].strip().lower(): l.split(":", 1)[1].strip()
                        for l in lines[1:] if ":" in l}
                body = await reader.readexactly(int(hdrs.get("content-length", "0")))
                chans = channels_of(target, "/pub")
                if method == "POST" and len(chans) == 1:
                    status, out = self.publish(chans[0], body), b"ok"
                elif method == "GET" and target == "/stats":
                    status, out = 200, json.dumps(STATS).encode()
                else:
                    status, out = 404, b"no"
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
    for name in ("drop", "dup", "leak", "pub-fail"):
        ap.add_argument("--" + name, type=int, default=-1)
    ap.add_argument("--ignore-channels", action="store_true")
    args = ap.parse_args()
    srv = Server(args)
    ws = await asyncio.start_server(srv.ws_client, "127.0.0.1", 0, backlog=4096)
    pub = await asyncio.start_server(srv.http_client, "127.0.0.1", 0)
    print(json.dumps({"ws_port": ws.sockets[0].getsockname()[1],
                      "pub_port": pub.sockets[0].getsockname()[1], "pid": os.getpid()}),
          flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
