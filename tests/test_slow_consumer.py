"""Backpressure: a client that stops reading falls out of its worker's frame buffer and is closed
with 1013 (and counted), instead of being buffered without bound; a client that keeps reading
on the same worker gets every message."""
import asyncio
import socket
import struct
import time

from wsclients import connect, in_thread, until
from wshub_stack import parse_frames, raw_upgrade, wait_for

MSG_SIZE = 4000


def message(i):
    head = "slow %06d " % i
    return head + "y" * (MSG_SIZE - len(head))


def test_slow_consumer(make_stack):
    stack = make_stack(workers=1, nginx=False,
                       options={"max_message": "4k", "worker_buffer": "64k", "ring_size": "1m"})
    asyncio.run(scenario(stack))


async def scenario(stack):
    hub = stack.hub
    normal = await connect(hub.ws_url)
    # The slow client: a tiny receive buffer, and it never reads until the end.
    status, head, slow, early = raw_upgrade("127.0.0.1", hub.port, "/ws", rcvbuf=4096)
    assert status == 101, head
    try:
        await in_thread(wait_for, lambda: stack.stats()["connections"]["in_use"] == 2, 10,
                        "both clients counted")
        sent = await in_thread(publish_paced, stack, normal, messages_to_overflow())
        await until(lambda: len(normal.messages) >= sent or normal.closed.is_set(), 30,
                    "the reading client to get all %d messages" % sent)
        assert normal.messages == [message(i) for i in range(sent)], \
            "reading client: %d messages, closed=%s code=%s" % (
                len(normal.messages), normal.closed.is_set(), normal.close_code)

        frames = await in_thread(read_to_eof, slow, early)
        data = [f for f in frames if f[0] in (1, 2)]
        got = [p.decode() for _, _, p in data]
        assert got == [message(i) for i in range(len(got))], \
            "the slow client's messages must be an in-order prefix"
        assert len(got) < sent
        assert frames and frames[-1][0] == 8, "last frame must be Close, got opcodes %r" % \
            [f[0] for f in frames[-5:]]
        code = struct.unpack("!H", frames[-1][2][:2])[0]
        assert code == 1013, "close code %d" % code

        st = await in_thread(wait_for, lambda: (lambda st: st if st["connections"]["in_use"]
                                                == 1 else None)(stack.stats()),
                             5, "the slow client's row to be freed")
        assert st["totals"]["closed"].get("slow_consumer") == 1, st["totals"]
        assert st["totals"]["slow_consumers"] == 1, st["totals"]
        print("slow client got %d of %d messages before its 1013" % (len(got), sent))
        assert not normal.closed.is_set()
    finally:
        slow.close()
        normal.task.cancel()


def messages_to_overflow():
    """Enough messages to overflow everything that may hold data for a client that does not
    read: the kernel's send buffer (autotuned up to tcp_wmem's maximum), the client's small
    receive buffer, lws's partial-write buffer and the worker's 64 KiB frame buffer."""
    try:
        with open("/proc/sys/net/ipv4/tcp_wmem") as f:
            wmem_max = int(f.read().split()[2])
    except (OSError, ValueError, IndexError):
        wmem_max = 4 << 20
    return (wmem_max + (2 << 20)) // MSG_SIZE + 1


def publish_paced(stack, reader, count, window=4):
    """Publishes `count` messages straight to wshub-admin, never more than `window` ahead of
    the reading client: it must not become a slow consumer itself (64 KiB is 16 messages)."""
    for i in range(count):
        wait_for(lambda: len(reader.messages) >= i - window or reader.closed.is_set(), 10,
                 "the reading client to keep up (it has %d of %d)" % (len(reader.messages), i))
        assert not reader.closed.is_set(), "the reading client was closed (code %s) after %d " \
            "messages" % (reader.close_code, len(reader.messages))
        r = stack.hub.fcgi("POST", "/admin/broadcast", message(i).encode(),
                           {"Content-Type": "text/plain; charset=utf-8"})
        assert r.status == 202, r
    return count


def read_to_eof(sock, early, timeout=15):
    """Reads until the server's Close frame (answered, as a client must) or EOF."""
    sock.settimeout(2)
    buf, deadline = early, time.monotonic() + timeout
    while time.monotonic() < deadline:
        frames, _ = parse_frames(buf)
        if frames and frames[-1][0] == 8:
            mask = b"\x11\x22\x33\x44"
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(frames[-1][2][:2]))
            try:
                sock.sendall(bytes([0x88, 0x80 | len(payload)]) + mask + payload)
            except OSError:
                pass
            return frames
        try:
            chunk = sock.recv(1 << 16)
        except socket.timeout:
            continue
        except ConnectionResetError:
            break
        if not chunk:
            break
        buf += chunk
    return parse_frames(buf)[0]
