"""The worker writes broadcasts to idle connections directly, outside lws's WRITEABLE callback
(ws-worker/worker_deliver.c). These tests drive the states where that would be wrong while
broadcasts keep flowing: a close started by lws (protocol error, close frame not yet acked), a
close started by the client, and a client that resets its connection. In every case the stream
must stay whole frames, no data frame may follow the server's close frame, and the counters must
stay exact for the clients that keep reading."""
import asyncio
import os
import socket
import struct
import threading
import time

from wsclients import connect, in_thread, until
from wshub_stack import parse_frames, raw_upgrade, wait_for


def masked(opcode, payload=b""):
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + body


def read_for(sock, early, seconds):
    """Everything the server sends within `seconds` (or until EOF), without answering."""
    sock.settimeout(0.1)
    buf, deadline = early, time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(1 << 16)
        except socket.timeout:
            continue
        except ConnectionResetError:
            break
        if not chunk:
            break
        buf += chunk
    return buf


def publish_background(stack, count, interval, prefix):
    """Publishes `count` broadcasts `interval` seconds apart in a thread; returns the thread."""
    def run():
        for i in range(count):
            r = stack.hub.fcgi("POST", "/admin/broadcast", ("%s %04d" % (prefix, i)).encode(),
                               {"Content-Type": "text/plain; charset=utf-8"})
            assert r.status == 202, r
            time.sleep(interval)
    t = threading.Thread(target=run)
    t.start()
    return t


def check_stream(buf, close_code):
    """Whole frames only, data frames in order, the close frame last with close_code."""
    frames, leftover = parse_frames(buf)
    assert leftover == b"", "a partial frame at the end: %r" % leftover[:32]
    opcodes = [f[0] for f in frames]
    assert 8 in opcodes, "no close frame; opcodes %r" % opcodes[-10:]
    first_close = opcodes.index(8)
    assert first_close == len(frames) - 1, \
        "frames after the server's close frame: %r" % opcodes[first_close:]
    code = struct.unpack("!H", frames[-1][2][:2])[0]
    assert code == close_code, "close code %d" % code
    data = [f[2].decode() for f in frames if f[0] == 1]
    seqs = [int(d.split()[-1]) for d in data]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), "out of order: %r" % seqs
    return len(data)


def test_protocol_error_close_is_last_frame(make_stack):
    """lws closes with 1002 on a reserved opcode and waits up to 5 s for the client's close; the
    client never answers and keeps reading while broadcasts flow: nothing may follow the 1002."""
    stack = make_stack(workers=1, nginx=False)
    asyncio.run(protocol_error_scenario(stack))


async def protocol_error_scenario(stack):
    normal = await connect(stack.hub.ws_url)
    status, head, raw, early = raw_upgrade("127.0.0.1", stack.hub.port, "/ws")
    assert status == 101, head
    try:
        await in_thread(wait_for, lambda: stack.stats()["connections"]["in_use"] == 2, 10,
                        "both clients counted")
        pub = publish_background(stack, 60, 0.02, "pe")
        await until(lambda: len(normal.messages) >= 5, 10, "the first broadcasts")
        raw.sendall(masked(3))  # reserved opcode: lws answers 1002 and awaits our close
        buf = await in_thread(read_for, raw, early, 2.0)
        await in_thread(pub.join)
        n = check_stream(buf, 1002)
        await until(lambda: len(normal.messages) >= 60, 10, "the reading client to get all 60")
        assert normal.messages == ["pe %04d" % i for i in range(60)]
        st = await in_thread(wait_for, lambda: (lambda s: s if s["connections"]["in_use"] == 1
                                                else None)(stack.stats()), 10,
                             "the closed client's row to be freed")
        # lws does not tell the worker why it closed, so the reason is counted as peer_gone
        # (a known gap); what matters here is that it is counted once.
        assert sum(st["totals"]["closed"].values()) == 1, st["totals"]
        print("protocol error client got %d data frames, then only the 1002" % n)
    finally:
        raw.close()
        normal.task.cancel()


def test_client_close_is_answered_last(make_stack):
    """The client sends Close 1000 in the middle of a stream of broadcasts: the server's echo is
    the last frame it sends (data it had already sent before may precede it)."""
    stack = make_stack(workers=1, nginx=False)
    asyncio.run(client_close_scenario(stack))


async def client_close_scenario(stack):
    normal = await connect(stack.hub.ws_url)
    status, head, raw, early = raw_upgrade("127.0.0.1", stack.hub.port, "/ws")
    assert status == 101, head
    try:
        await in_thread(wait_for, lambda: stack.stats()["connections"]["in_use"] == 2, 10,
                        "both clients counted")
        pub = publish_background(stack, 60, 0.01, "cc")
        await until(lambda: len(normal.messages) >= 5, 10, "the first broadcasts")
        raw.sendall(masked(8, struct.pack("!H", 1000)))
        buf = await in_thread(read_for, raw, early, 2.0)
        await in_thread(pub.join)
        check_stream(buf, 1000)
        await until(lambda: len(normal.messages) >= 60, 10, "the reading client to get all 60")
        st = await in_thread(wait_for, lambda: (lambda s: s if s["connections"]["in_use"] == 1
                                                else None)(stack.stats()), 10,
                             "the closed client's row to be freed")
        assert st["totals"]["closed"].get("normal") == 1, st["totals"]
    finally:
        raw.close()
        normal.task.cancel()


def test_reset_clients_do_not_disturb_the_others(make_stack):
    """Clients that reset their connections (RST, unread data pending) while broadcasts flow are
    closed and counted; the clients that read still get every message, counted exactly."""
    stack = make_stack(workers=2, nginx=False)
    asyncio.run(reset_scenario(stack))


async def reset_scenario(stack):
    readers = [await connect(stack.hub.ws_url) for _ in range(4)]
    raws = []
    for _ in range(20):
        status, head, s, _ = raw_upgrade("127.0.0.1", stack.hub.port, "/ws")
        assert status == 101, head
        raws.append(s)
    try:
        await in_thread(wait_for, lambda: stack.stats()["connections"]["in_use"] == 24, 10,
                        "24 clients counted")
        before = stack.stats()["totals"]
        pub = publish_background(stack, 100, 0.005, "rs")
        await until(lambda: all(len(r.messages) >= 10 for r in readers), 10, "first broadcasts")
        for s in raws:  # RST: SO_LINGER 0 with unread data
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
        await in_thread(pub.join)
        await until(lambda: all(len(r.messages) >= 100 for r in readers), 10, "all 100 each")
        for r in readers:
            assert r.messages == ["rs %04d" % i for i in range(100)], r.name
        st = await in_thread(wait_for, lambda: (lambda s: s if s["connections"]["in_use"] == 4
                                                else None)(stack.stats()), 10,
                             "the reset clients' rows to be freed")
        t = st["totals"]
        assert t["closed"].get("peer_gone") == 20, t["closed"]
        # Exact counters: the readers got 400; each reset client was sent between 0 and 100.
        sent = t["messages_out"] - before["messages_out"]
        assert 400 <= sent <= 400 + 20 * 100, sent
        assert t["bytes_out"] - before["bytes_out"] == 7 * sent, "every payload is 7 bytes"
        m = stack.metrics()
        assert m.sum("wshub_delivery_latency_seconds_count") == \
            m.sum("wshub_messages_sent_total"), "one latency sample per delivery"
    finally:
        for r in readers:
            r.task.cancel()


def test_keepalive_pings_and_hangs_up(make_stack):
    """ws-worker/worker_keepalive.c: a client that answers pings outlives idle_timeout several
    times over; a client that never answers is hung up after idle_timeout and counted so."""
    stack = make_stack(workers=1, nginx=False,
                       options={"ping_interval": "1s", "idle_timeout": "2s"})
    asyncio.run(keepalive_scenario(stack))


async def keepalive_scenario(stack):
    alive = await connect(stack.hub.ws_url)  # websockets answers pings by itself
    status, head, silent, early = raw_upgrade("127.0.0.1", stack.hub.port, "/ws")
    assert status == 101, head
    try:
        t0 = time.monotonic()
        buf = await in_thread(read_for, silent, early, 8.0)  # never answers
        frames, leftover = parse_frames(buf)
        assert leftover == b""
        pings = [f for f in frames if f[0] == 9]
        assert pings, "no ping reached the silent client: %r" % frames
        st = await in_thread(wait_for, lambda: (lambda s: s if s["connections"]["in_use"] == 1
                                                else None)(stack.stats()), 10,
                             "the silent client to be hung up")
        assert st["totals"]["closed"].get("idle_timeout") == 1, st["totals"]["closed"]
        # the answering client is still there after more than 3 idle_timeouts
        await until(lambda: time.monotonic() - t0 > 7, 10, "7 s")
        assert not alive.closed.is_set(), "answering client closed: %s" % alive.close_code
        r = stack.broadcast("still here")
        assert r.status == 202, r
        await until(lambda: alive.messages == ["still here"], 5, "the broadcast")
    finally:
        silent.close()
        alive.task.cancel()
