"""The wshub.v1 subprotocol (docs/protocol.md): sequence numbers, resume, gaps, crash recovery.

- a wshub.v1 client gets a welcome then "m <seq>" envelopes (text and binary), while a plain
  client on the same server keeps getting raw payloads;
- a client that reconnects with ?since=&epoch= gets exactly the messages after `since`, on
  whichever worker it lands, and a worker started later (respawned) can still serve the resume;
- `since` older than what is retained -> "expired"; another epoch or a sequence never issued ->
  "reset"; malformed values and unknown subprotocol offers -> HTTP 400 before the upgrade;
- kill -9 of a worker under traffic: its clients reconnect and resume, no loss, no duplicate;
- slow_consumer skip: a stalled wshub.v1 client is told "g <from> <to> skipped" and keeps going;
- kill -9 of the hub: workers close their clients with 1001 and exit, a new hub replaces the
  stale segment with a new epoch, and an old resume point is answered "reset".
"""
import asyncio
import os
import signal
import socket
import time

import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatusCode

from wsclients import in_thread, until, v1_parse as parse
from wshub_stack import parse_frames, pid_alive, wait_for

V1 = "wshub.v1"


class V1Client:
    """A resuming client: reconnects after any loss with ?since=<last>&epoch=<epoch> and records
    every message, welcome and gap."""

    def __init__(self, url, name):
        self.url, self.name = url, name
        self.epoch, self.last = None, None
        self.seqs, self.bodies, self.welcomes, self.gaps, self.closes = [], [], [], [], []
        self.ws, self.task, self.stopping = None, None, False
        self.reconnect = True  # False: record a close and stop there

    async def start(self):
        await self._connect()
        self.task = asyncio.ensure_future(self._run())
        return self

    async def _connect(self):
        url = self.url
        if self.last is not None:
            url += "?since=%d&epoch=%s" % (self.last, self.epoch)
        self.ws = await websockets.connect(url, subprotocols=[V1], ping_interval=None,
                                           max_queue=None, open_timeout=10, close_timeout=2)
        assert self.ws.subprotocol == V1
        fields, body = parse(await self.ws.recv())
        assert fields[0] == "w" and body == b"", fields
        self.welcomes.append(fields[3])
        self.epoch, self.last = fields[1], int(fields[2])

    async def _run(self):
        while not self.stopping:
            try:
                msg = await self.ws.recv()
            except ConnectionClosed as e:
                self.closes.append(e.rcvd.code if e.rcvd else None)
                if not self.reconnect:
                    return
                while not self.stopping:
                    try:
                        await self._connect()
                        break
                    except (OSError, InvalidStatusCode, ConnectionClosed, asyncio.TimeoutError):
                        await asyncio.sleep(0.05)
                continue
            fields, body = parse(msg)
            if fields[0] == "m":
                seq = int(fields[1])
                assert seq > self.last, "%s: seq %d after %d" % (self.name, seq, self.last)
                self.seqs.append(seq)
                self.bodies.append(body)
                self.last = seq
            elif fields[0] == "g":
                self.gaps.append((int(fields[1]), int(fields[2]), fields[3]))
                self.last = int(fields[2])

    async def stop(self):
        self.stopping = True
        await self.ws.close()
        await self.task


def post(stack, body, binary=False):
    ctype = "application/octet-stream" if binary else "text/plain; charset=utf-8"
    r = stack.hub.fcgi("POST", "/admin/broadcast", body, {"Content-Type": ctype})
    assert r.status == 202, r
    return r.json()["seq"]


def worker_pids(stack):
    return {w["slot"]: w["pid"] for w in stack.stats()["workers"]
            if w.get("pid") and w.get("state") == "running"}


# ---------------------------------------------------------------------------------------------


def test_envelopes_and_raw_side_by_side(make_stack):
    stack = make_stack(workers=2, nginx=True)

    async def scenario():
        v1 = await V1Client(stack.hub.ws_url, "v1").start()
        proxied = await V1Client(stack.nginx.ws_url, "v1-nginx").start()
        raw = await websockets.connect(stack.hub.ws_url, ping_interval=None)
        assert raw.subprotocol is None
        assert v1.welcomes == ["fresh"]
        seqs = [await in_thread(post, stack, b"text %d" % i) for i in range(5)]
        seqs.append(await in_thread(post, stack, b"\x00\x01bin\n\xff", True))
        for c in (v1, proxied):
            await until(lambda: len(c.seqs) == 6, 10, "6 messages for " + c.name)
            assert c.seqs == seqs
            assert c.bodies == [b"text %d" % i for i in range(5)] + [b"\x00\x01bin\n\xff"]
        got = [await asyncio.wait_for(raw.recv(), 5) for _ in range(6)]
        assert got == ["text %d" % i for i in range(5)] + [b"\x00\x01bin\n\xff"]
        await raw.close()
        await v1.stop()
        await proxied.stop()

    asyncio.run(scenario())


def test_resume_exactly_after_since(make_stack):
    stack = make_stack(workers=2, nginx=False)

    async def scenario():
        seqs = [await in_thread(post, stack, b"m%02d" % i) for i in range(20)]
        bodies = [b"m%02d" % i for i in range(20)]
        # Connections land on both workers; each resumes from a different point.
        for k in range(12):
            since = seqs[k]
            ws = await websockets.connect(stack.hub.ws_url + "?since=%d&epoch=%s" % (
                since, await current_epoch(stack)), subprotocols=[V1], ping_interval=None)
            fields, _ = parse(await ws.recv())
            assert fields[3] == "resumed" and int(fields[2]) == since, fields
            got = [parse(await asyncio.wait_for(ws.recv(), 5)) for _ in seqs[k + 1:]]
            assert [int(f[1]) for f, _ in got] == seqs[k + 1:]
            assert [b for _, b in got] == bodies[k + 1:]
            live = await in_thread(post, stack, b"live %d" % k)
            seqs.append(live)
            bodies.append(b"live %d" % k)
            fields, body = parse(await asyncio.wait_for(ws.recv(), 5))
            assert int(fields[1]) == live and body == b"live %d" % k
            await ws.close()
        # Without epoch the current one is assumed.
        ws = await websockets.connect(stack.hub.ws_url + "?since=%d" % seqs[-2],
                                      subprotocols=[V1])
        fields, _ = parse(await ws.recv())
        assert fields[3] == "resumed"
        assert int(parse(await asyncio.wait_for(ws.recv(), 5))[0][1]) == seqs[-1]
        await ws.close()

    asyncio.run(scenario())


async def current_epoch(stack):
    ws = await websockets.connect(stack.hub.ws_url, subprotocols=[V1])
    fields, _ = parse(await ws.recv())
    await ws.close()
    return fields[1]


def test_resume_refusals(make_stack):
    stack = make_stack(workers=1, nginx=False,
                       options={"max_message": "4k", "worker_buffer": "64k", "ring_size": "64k"})

    async def scenario():
        epoch = await current_epoch(stack)
        first = await in_thread(post, stack, b"first")
        # Push "first" out of the 64k ring and buffer.
        for i in range(40):
            await in_thread(post, stack, b"x" * 3000)
        newest = await in_thread(post, stack, b"newest")
        cases = [("?since=%d&epoch=%s" % (first, epoch), "expired"),
                 ("?since=%d&epoch=%s" % (first, "0123456789abcdef"), "reset"),
                 ("?since=%d&epoch=%s" % (newest + 1000, epoch), "reset"),
                 (None, "resumed")]
        for query, status in cases:
            query = query or "?since=%d&epoch=%s" % (newest, epoch)
            ws = await websockets.connect(stack.hub.ws_url + query, subprotocols=[V1])
            fields, _ = parse(await ws.recv())
            assert fields[3] == status, (query, fields)
            if status != "resumed":
                assert int(fields[2]) == newest, "live from now: %r" % fields
            live = await in_thread(post, stack, b"after")
            assert int(parse(await asyncio.wait_for(ws.recv(), 5))[0][1]) == live
            await ws.close()
            newest = live
        for query in ["?since=", "?since=abc", "?since=-1", "?since=%2B5", "?since=1%20",
                      "?since=99999999999999999999999", "?since=1&epoch=xyz",
                      "?since=1&epoch=0123456789abcde", "?epoch=0123456789abcdef0"]:
            with pytest.raises(InvalidStatusCode) as e:
                await websockets.connect(stack.hub.ws_url + query, subprotocols=[V1])
            assert e.value.status_code == 400, query
        for offer in (["chat"], ["chat", "superchat"]):
            with pytest.raises(InvalidStatusCode) as e:
                await websockets.connect(stack.hub.ws_url, subprotocols=offer)
            assert e.value.status_code == 400
        ws = await websockets.connect(stack.hub.ws_url, subprotocols=["chat", V1])
        assert ws.subprotocol == V1
        await ws.close()

    asyncio.run(scenario())
    assert stack.stats()["totals"]["rejected"]["bad_request"] >= 11


def test_worker_killed_clients_resume(make_stack):
    stack = make_stack(workers=2, nginx=False)

    async def scenario():
        clients = [await V1Client(stack.hub.ws_url, "c%d" % i).start() for i in range(40)]
        published = []
        stop = asyncio.Event()

        async def publisher():
            i = 0
            while not stop.is_set():
                published.append(await in_thread(post, stack, b"p%05d" % i))
                i += 1
                await asyncio.sleep(0.005)

        pub = asyncio.ensure_future(publisher())
        await until(lambda: len(published) >= 50, 20, "50 broadcasts")
        victim = worker_pids(stack)[0]
        os.kill(victim, signal.SIGKILL)
        await until(lambda: sum(1 for c in clients if c.closes) >= 5, 20,
                    "the victim's clients to notice")
        await until(lambda: worker_pids(stack).get(0) not in (None, victim), 20,
                    "slot 0 respawned")
        n = len(published)
        await until(lambda: len(published) >= n + 100, 30, "100 more broadcasts")
        stop.set()
        await pub
        await until(lambda: all(c.seqs and c.seqs[-1] == published[-1] for c in clients), 30,
                    "every client to reach the last broadcast")
        hit = [c for c in clients if c.closes]
        for c in clients:
            await c.stop()
        for c in clients:
            start = published.index(c.seqs[0])
            assert c.seqs == published[start:], "%s: lost or duplicated" % c.name
            assert c.gaps == [] and set(c.welcomes) <= {"fresh", "resumed"}, (c.welcomes, c.gaps)
        assert hit and all(c.welcomes[1:] == ["resumed"] * (len(c.welcomes) - 1) for c in hit)
        print("\n%d of %d clients lost their worker and resumed without loss" % (
            len(hit), len(clients)))

    asyncio.run(scenario())


def test_respawned_worker_serves_old_resume_points(make_stack):
    stack = make_stack(workers=1, nginx=False)

    async def scenario():
        epoch = await current_epoch(stack)
        seqs = [await in_thread(post, stack, b"old %d" % i) for i in range(10)]
        pid = worker_pids(stack)[0]
        os.kill(pid, signal.SIGKILL)
        await in_thread(wait_for, lambda: worker_pids(stack).get(0) not in (None, pid), 20,
                        "the worker respawned")
        ws = await websockets.connect(stack.hub.ws_url + "?since=%d&epoch=%s" % (seqs[2], epoch),
                                      subprotocols=[V1])
        fields, _ = parse(await ws.recv())
        assert fields[3] == "resumed", fields
        got = [parse(await asyncio.wait_for(ws.recv(), 5)) for _ in seqs[3:]]
        assert [int(f[1]) for f, _ in got] == seqs[3:]
        await ws.close()

    asyncio.run(scenario())


def test_slow_consumer_skip_sends_gap(make_stack):
    stack = make_stack(workers=1, nginx=False,
                       options={"max_message": "4k", "worker_buffer": "64k", "ring_size": "1m",
                                "slow_consumer": "skip", "client_send_buffer": "4k"})
    hub = stack.hub
    sock = socket.create_connection(("127.0.0.1", hub.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    sock.sendall(("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
                  "Sec-WebSocket-Protocol: wshub.v1\r\n\r\n" % key).encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    wait_for(lambda: stack.stats()["connections"]["in_use"] == 1, 10, "the client counted")
    # What a client may have queued outside the shared buffer: 2 x SO_SNDBUF + one lws write.
    assert stack.stats()["connections"]["send_buffer_bound"] == 2 * 4096 + 65536
    # The client reads nothing while 200 x 3000 bytes (9x the worker buffer) go by.
    seqs = [post(stack, b"%05d" % i + b"y" * 3000) for i in range(200)]
    wait_for(lambda: stack.stats()["totals"]["slow_consumers"] >= 1, 10, "the skip counted")
    last = post(stack, b"after the stall")
    data = b""
    sock.settimeout(5)
    deadline = time.monotonic() + 20
    while b"after the stall" not in data and time.monotonic() < deadline:
        chunk = sock.recv(65536)
        assert chunk, "connection closed"
        data += chunk
    sock.close()
    frames, _ = parse_frames(data)
    msgs = [p for op, _, p in frames if op in (1, 2)]
    kinds = [parse(m)[0] for m in msgs]
    assert kinds[0][0] == "w" and kinds[0][3] == "fresh"
    gaps = [k for k in kinds if k[0] == "g"]
    assert gaps and all(g[3] == "skipped" for g in gaps), kinds[:5]
    got = [int(k[1]) for k in kinds if k[0] == "m"]
    assert got[-1] == last and got == sorted(set(got))
    # Every sequence is either received or inside a gap notice: nothing vanishes silently.
    covered = set(got)
    for g in gaps:
        covered.update(range(int(g[1]), int(g[2]) + 1))
    assert set(seqs) <= covered
    print("\nstalled client: %d of %d broadcasts received, %d gap notices" % (
        len(got), len(seqs) + 1, len(gaps)))


def test_hub_killed_new_epoch(make_stack):
    stack = make_stack(workers=2, nginx=False)
    hub = stack.hub

    async def scenario():
        clients = [await V1Client(hub.ws_url, "c%d" % i).start() for i in range(10)]
        seq = await in_thread(post, stack, b"before")
        await until(lambda: all(c.seqs == [seq] for c in clients), 10, "the broadcast")
        epoch = clients[0].epoch
        workers = list(worker_pids(stack).values())
        hub.note_children()
        for c in clients:
            c.reconnect = False
        os.kill(hub.pid, signal.SIGKILL)
        await until(lambda: all(c.closes for c in clients), 15, "every client closed")
        assert all(c.closes == [1001] for c in clients), [c.closes for c in clients]
        await in_thread(wait_for, lambda: not any(pid_alive(p) for p in workers), 15,
                        "the workers to exit")
        for c in clients:
            await c.task
        return epoch, seq

    epoch, seq = asyncio.run(scenario())
    hub.wait_exit(5)
    wait_for(lambda: hub.strays() == [], 10, "no orphan (workers, wshub-admin) of the dead hub")
    assert os.path.exists(hub.segment), "the dead hub's segment is left for the next one"
    hub.start().wait_ready()

    async def after():
        ws = await websockets.connect(hub.ws_url + "?since=%d&epoch=%s" % (seq, epoch),
                                      subprotocols=[V1])
        fields, _ = parse(await ws.recv())
        assert fields[1] != epoch and fields[3] == "reset", fields
        await ws.close()

    asyncio.run(after())
    assert "removed stale shared-memory segment" in hub.logs(200)


def test_sigterm_delivers_everything_accepted(make_stack):
    """Broadcasts acknowledged right up to SIGTERM all arrive, then 1001, exit 0, no segment."""
    stack = make_stack(workers=2, nginx=False)
    hub = stack.hub

    async def scenario():
        clients = [await V1Client(hub.ws_url, "c%d" % i).start() for i in range(30)]
        for c in clients:
            c.reconnect = False
        hub.note_children()
        seqs = await in_thread(lambda: [post(stack, b"burst %03d" % i + b"z" * 2000)
                                        for i in range(300)])
        hub.signal(signal.SIGTERM)  # at once after the last acknowledgement
        await until(lambda: all(c.closes for c in clients), 20, "every client closed")
        for c in clients:
            await c.task
            assert c.seqs == seqs, "%s got %d of %d" % (c.name, len(c.seqs), len(seqs))
            assert c.closes == [1001], c.closes

    asyncio.run(scenario())
    assert hub.wait_exit(20) == 0
    assert not os.path.exists(hub.segment)
    assert hub.strays() == []
