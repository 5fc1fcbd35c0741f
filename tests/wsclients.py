"""wsclients.py -- many WebSocket clients in one asyncio loop (websockets 10.4, Debian 12).

A Client wraps one connection and a reader task that records every message and, at the end, how
the connection closed: the close code the server sent (None when the TCP connection just
dropped, which the library reports as 1006). Tests then wait for conditions over all clients
with deadlines (`until`), never for a fixed time.
"""
import asyncio
import time

import websockets
from websockets.exceptions import ConnectionClosed


class Client:
    def __init__(self, name, ws):
        self.name = name
        self.ws = ws
        self.messages = []
        self.closed = asyncio.Event()
        self.close_code = None    # code of the close frame received, None if none came
        self.lib_code = None      # what websockets reports (1006 without a close frame)
        self.error = None
        self.task = asyncio.ensure_future(self._read())

    async def _read(self):
        try:
            while True:
                self.messages.append(await self.ws.recv())
        except ConnectionClosed as e:
            self.close_code = e.rcvd.code if e.rcvd is not None else None
            self.lib_code = e.code
        except Exception as e:  # recorded and reported by the test, never swallowed
            self.error = e
        finally:
            self.closed.set()

    async def close(self):
        await self.ws.close()
        await self.task


async def connect(url, name=None, local_addr=None, compression=None, **kw):
    opts = dict(compression=compression, ping_interval=None, max_queue=None, open_timeout=30,
                close_timeout=5, max_size=64 << 20)
    opts.update(kw)
    if local_addr:
        opts["local_addr"] = (local_addr, 0)
    ws = await websockets.connect(url, **opts)
    return Client(name or url, ws)


async def connect_many(specs, concurrency=64):
    """specs: list of dicts of connect() arguments. Connects them with bounded concurrency (a
    burst of handshakes, as when clients reconnect together) and returns the clients in order."""
    sem = asyncio.Semaphore(concurrency)

    async def one(i, spec):
        async with sem:
            return await connect(name=spec.pop("name", "client%d" % i), **spec)

    return list(await asyncio.gather(*(one(i, dict(s)) for i, s in enumerate(specs))))


def v1_parse(msg):
    """Splits a wshub.v1 message (docs/protocol.md) into (header fields, body bytes)."""
    raw = msg.encode() if isinstance(msg, str) else msg
    nl = raw.index(b"\n")
    return raw[:nl].decode().split(" "), raw[nl + 1:]


async def until(predicate, timeout, what, interval=0.02):
    """Polls predicate() in the loop (so readers keep running) until true or the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        await asyncio.sleep(interval)


async def in_thread(fn, *args):
    """Runs blocking fn (an HTTP call, a signal, a wait) without stalling the readers."""
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)
