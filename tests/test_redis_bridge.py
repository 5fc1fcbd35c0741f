"""The Redis bridge (issue 8): several wshub instances behind one Redis stream act as one server.

A real redis-server (tests/redis_server.py: its own port and directory, AOF fsynced on every
write) and three real wshub instances (own instance names, ports, run dirs, segments), each
with its own WebSocket clients:

- a broadcast POSTed to any instance reaches every client of every instance exactly once, and
  all clients see the same order, which is the stream's order (XRANGE);
- Redis SIGKILLed and restarted while all three publish continuously: every POST is answered
  at once, nothing is lost or doubled; each instance delivers its own messages in the order they
  were published and everybody else's in stream order (the documented outage guarantee);
- an instance SIGKILLed and restarted catches up: its ring gets every entry published while it
  was down, as history (stats), and its new clients then receive exactly the live messages;
- a Redis that answers slowly (DEBUG SLEEP 2) does not slow local delivery: one message caught
  at the moment the breaker trips waits about redis_timeout, the next ones are delivered in
  milliseconds while Redis still sleeps, and the other instances get them afterwards;
- without redis in the config, the bridge reports "off" and nothing changes.

Latency numbers are printed (run with -s); tests/measure_redis_bridge.py measures the bridge's
added latency, cross-instance throughput and loss across a 30 s outage.
"""
import asyncio
import random
import shutil
import threading
import time

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

import redis_server
from wsclients import Client, in_thread, until
from wshub_stack import make_base_dir, wait_for

pytestmark = pytest.mark.skipif(not redis_server.available(),
                                reason="redis-server missing: run scripts/deps.sh")

TIMEOUT_MS = 200  # redis_timeout in these tests


class TimedClient(Client):
    """A Client that also records when each message arrived (monotonic clock)."""

    def __init__(self, name, ws):
        self.times = []
        super().__init__(name, ws)

    async def _read(self):
        try:
            while True:
                m = await self.ws.recv()
                self.times.append(time.monotonic())
                self.messages.append(m)
        except ConnectionClosed as e:
            self.close_code = e.rcvd.code if e.rcvd is not None else None
            self.lib_code = e.code
        except Exception as e:  # recorded and reported by the test
            self.error = e
        finally:
            self.closed.set()

    def arrival(self, msg):
        return self.times[self.messages.index(msg)]


async def timed_connect(url, name):
    ws = await websockets.connect(url, compression=None, ping_interval=None, max_queue=None,
                                  open_timeout=30, close_timeout=5, max_size=64 << 20)
    return TimedClient(name, ws)


class Cluster:
    """N wshub instances (one worker each unless told) on one Redis, under one key prefix."""

    def __init__(self, make_stack, rs, n=3, workers=1):
        self.redis = rs
        self.prefix = "wsrt%06x:" % random.getrandbits(24)
        options = {"redis": rs.address, "redis_prefix": self.prefix,
                   "redis_timeout": "%dms" % TIMEOUT_MS, "redis_backoff_max": "1s"}
        self.stacks = [make_stack(workers=workers, nginx=False, options=options)
                       for _ in range(n)]
        self.wait_state("closed")

    def bridge(self, i):
        return self.stacks[i].hub.stats()["redis_bridge"]

    def wait_state(self, state, timeout=15, which=None):
        for i in which if which is not None else range(len(self.stacks)):
            wait_for(lambda: self.bridge(i)["state"] == state, timeout,
                     "instance %d's bridge %s" % (i, state))

    def post(self, i, body):
        """POST on instance i; returns (seconds the POST took, response)."""
        t = time.monotonic()
        data = body if isinstance(body, bytes) else body.encode()
        ctype = "application/octet-stream" if isinstance(body, bytes) else "text/plain"
        r = self.stacks[i].hub.fcgi("POST", "/admin/broadcast", data, {"Content-Type": ctype})
        assert r.status == 202, r
        return time.monotonic() - t, r

    def stream(self):
        """The cluster's order: payloads of the stream's entries, oldest first."""
        entries = self.redis.client().xrange(self.prefix + "stream")
        out = []
        for _, f in entries:
            p = f[b"p"]
            out.append(p if int(f.get(b"f", b"0")) & 1 else p.decode())
        return out

    async def clients(self, per_instance):
        specs = [(i, k) for i in range(len(self.stacks)) for k in range(per_instance)]
        made = await asyncio.gather(*(timed_connect(self.stacks[i].hub.ws_url, "i%d-c%d" % (i, k))
                                      for i, k in specs))
        by = {}
        for (i, _), c in zip(specs, made):
            by.setdefault(i, []).append(c)
        return by


@pytest.fixture
def rs():
    base = make_base_dir("wshub-redis-")
    server = redis_server.RedisServer(base).start()
    yield server
    server.kill()
    shutil.rmtree(base, ignore_errors=True)


def origin(msg):
    text = msg.decode() if isinstance(msg, bytes) else msg
    return int(text.split("-", 1)[0][1:])


def check_exactly_once(by_instance, published):
    """Every client has every published message once; clients of one instance agree; each
    origin's messages arrive in the order they were published."""
    everything = [m for msgs in published.values() for m in msgs]
    for i, clients in by_instance.items():
        for c in clients:
            assert c.error is None, (c.name, c.error)
            dups = len(c.messages) - len(set(c.messages))
            assert dups == 0, "%s got %d duplicates" % (c.name, dups)
            assert set(c.messages) == set(everything), \
                "%s: missing %r, extra %r" % (c.name, sorted(set(everything) - set(c.messages))[:10],
                                             sorted(set(c.messages) - set(everything))[:10])
            for o, msgs in published.items():
                got = [m for m in c.messages if origin(m) == o]
                assert got == msgs, "%s: instance %d's messages out of order" % (c.name, o)
            assert c.messages == clients[0].messages, \
                "clients of instance %d disagree on the order" % i


async def all_received(by_instance, n, timeout):
    clients = [c for cs in by_instance.values() for c in cs]
    await until(lambda: all(len(c.messages) >= n for c in clients), timeout,
                "every client to have %d messages (have %s)" %
                (n, sorted(set(len(c.messages) for c in clients))))
    await asyncio.sleep(0.3)  # anything beyond n would be a duplicate: give it time to show


# ---------------------------------------------------------------------------------------------


def test_three_instances_one_order(make_stack, rs):
    cluster = Cluster(make_stack, rs, n=3)
    asyncio.run(one_order(cluster))


async def one_order(cluster):
    by = await cluster.clients(per_instance=4)
    per_origin = 40
    published = {i: [] for i in range(3)}

    def publisher(i):
        for k in range(per_origin):
            body = ("n%d-%03d" % (i, k)).encode() if k % 10 == 9 else "n%d-%03d ✓" % (i, k)
            cluster.post(i, body)
            published[i].append(body)

    threads = [threading.Thread(target=publisher, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    await in_thread(lambda: [t.join() for t in threads])
    await all_received(by, 3 * per_origin, 20)

    check_exactly_once(by, published)
    stream = await in_thread(cluster.stream)
    for i, clients in by.items():
        assert clients[0].messages == stream, "instance %d's order is not the stream's" % i
    assert any(isinstance(m, bytes) for m in stream), "binary messages travel as binary"
    for i in range(3):
        b = await in_thread(cluster.bridge, i)
        assert b["state"] == "closed" and b["trips"] == 0, b
        assert b["sent"] == per_origin and b["delivered"] == 3 * per_origin, b
        assert b["backlog"] == 0 and b["delivered_ahead"] == 0 and b["skipped_own"] == 0, b
        ids = await in_thread(lambda: cluster.redis.client().xrevrange(
            cluster.prefix + "stream", count=1))
        assert b["last_id"] == ids[0][0].decode(), (b, ids)
    m = await in_thread(cluster.stacks[0].metrics)
    assert m.sum("wshub_bridge_state", state="closed") == 1
    assert m.sum("wshub_bridge_state", state="open") == 0
    assert m.sum("wshub_bridge_sent_messages_total") == per_origin


# ---------------------------------------------------------------------------------------------


def test_redis_killed_and_restarted_loses_nothing(make_stack, rs):
    cluster = Cluster(make_stack, rs, n=3)
    asyncio.run(redis_restart(cluster))


async def redis_restart(cluster):
    by = await cluster.clients(per_instance=2)
    published = {i: [] for i in range(3)}
    post_times = []
    stop = threading.Event()

    def publisher(i):
        k = 0
        while not stop.is_set():
            dt, _ = cluster.post(i, "n%d-%04d" % (i, k))
            published[i].append("n%d-%04d" % (i, k))
            post_times.append(dt)
            k += 1
            time.sleep(0.02)

    def count():
        return min(len(v) for v in published.values())

    threads = [threading.Thread(target=publisher, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    try:
        await until(lambda: count() >= 15, 10, "traffic before the outage")
        cluster.redis.kill()
        killed_at = count()
        await in_thread(cluster.wait_state, "open", 5)
        await until(lambda: count() >= killed_at + 40, 15, "traffic during the outage")
        await in_thread(cluster.redis.start)
        await in_thread(cluster.wait_state, "closed", 15)
        back_at = count()
        await until(lambda: count() >= back_at + 15, 10, "traffic after the outage")
    finally:
        stop.set()
        await in_thread(lambda: [t.join() for t in threads])
    total = sum(len(v) for v in published.values())
    await all_received(by, total, 30)

    check_exactly_once(by, published)
    # Each instance: its own messages in publish order (checked above), everybody else's in the
    # stream's order.
    stream = await in_thread(cluster.stream)
    assert sorted(stream) == sorted(m for v in published.values() for m in v), \
        "the stream holds every message once"
    for i, clients in by.items():
        foreign = [m for m in clients[0].messages if origin(m) != i]
        assert foreign == [m for m in stream if origin(m) != i], \
            "instance %d: other instances' messages not in stream order" % i
    ahead = resent = 0
    for i in range(3):
        b = await in_thread(cluster.bridge, i)
        assert b["state"] == "closed" and b["trips"] >= 1, b
        assert b["backlog"] == 0 and b["backlog_overflow"] == 0 and b["lost_acked"] == 0, b
        assert b["stream_gaps"] == 0 and b["ring_overruns"] == 0 and b["dropped"] == 0, b
        assert b["last_error"], b
        ahead += b["delivered_ahead"]
        resent += b["skipped_own"]  # delivered here during the outage, sent afterwards with d=1
    assert resent > 0, "the outage path (local delivery without Redis) was exercised"
    post_times.sort()
    p50, worst = post_times[len(post_times) // 2], post_times[-1]
    print("\n%d messages across a Redis SIGKILL + restart: 0 lost, 0 duplicated; "
          "POST p50 %.1f ms, max %.1f ms; %d sent from the backlogs, %d delivered ahead" %
          (total, p50 * 1e3, worst * 1e3, resent, ahead))
    assert worst < 1.0, "an admin POST waited %.0f ms" % (worst * 1e3)


# ---------------------------------------------------------------------------------------------


def test_instance_restart_catches_up(make_stack, rs):
    cluster = Cluster(make_stack, rs, n=3)
    asyncio.run(instance_restart(cluster))


async def instance_restart(cluster):
    by = await cluster.clients(per_instance=2)
    for k in range(5):
        for i in range(3):
            await in_thread(cluster.post, i, "n%d-before-%d" % (i, k))
    await all_received(by, 15, 15)
    victim = cluster.stacks[2]
    node = (await in_thread(cluster.bridge, 2))["node"]
    r = cluster.redis.client()
    last = lambda: r.xrevrange(cluster.prefix + "stream", count=1)[0][0]
    await in_thread(wait_for, lambda: r.get(cluster.prefix + "cursor:" + node) == last(), 5,
                    "instance 2's saved cursor at the stream's end")

    victim.hub.kill_group()  # hub, workers and admin: SIGKILL
    await in_thread(victim.hub.proc.wait, 5)
    missed = []
    for k in range(10):
        for i in (0, 1):
            await in_thread(cluster.post, i, "n%d-down-%d" % (i, k))
            missed.append("n%d-down-%d" % (i, k))

    await in_thread(lambda: victim.hub.start().wait_ready())
    await in_thread(cluster.wait_state, "closed", 15, [2])
    b = await in_thread(cluster.bridge, 2)
    assert b["history"] == len(missed), b        # every missed entry is in the new ring
    assert b["delivered"] == 0 and b["stream_gaps"] == 0, b
    assert b["last_id"] == last().decode(), b

    fresh = [await timed_connect(victim.hub.ws_url, "i2-new%d" % k) for k in range(2)]
    live = []
    for k in range(4):
        for i in range(3):
            await in_thread(cluster.post, i, "n%d-after-%d" % (i, k))
            live.append("n%d-after-%d" % (i, k))
    await until(lambda: all(len(c.messages) >= len(live) for c in fresh), 10, "fresh clients")
    survivors = {0: by[0], 1: by[1]}
    await all_received(survivors, 15 + len(missed) + len(live), 10)
    await asyncio.sleep(0.3)
    stream = await in_thread(cluster.stream)
    for c in fresh:
        assert c.messages == [m for m in stream if "-after-" in m], c.messages
    for i, cs in survivors.items():
        for c in cs:
            assert c.messages == stream, "instance %d" % i
    print("\nrestarted instance: %d missed entries kept as history, %d live messages delivered" %
          (b["history"], len(live)))


# ---------------------------------------------------------------------------------------------


def test_slow_redis_does_not_slow_local_delivery(make_stack, rs):
    cluster = Cluster(make_stack, rs, n=2)
    asyncio.run(slow_redis(cluster))


async def local_latency(cluster, client, body):
    t0 = time.monotonic()
    await in_thread(cluster.post, 0, body)
    await until(lambda: body in client.messages, 5, "local delivery of %r" % body)
    return client.arrival(body) - t0


async def slow_redis(cluster):
    by = await cluster.clients(per_instance=1)
    a, b = by[0][0], by[1][0]
    healthy = sorted([await local_latency(cluster, a, "n0-healthy-%d" % k) for k in range(10)])

    sleeper = threading.Thread(
        target=lambda: cluster.redis.client(timeout=10).execute_command("DEBUG", "SLEEP", "2"))
    t0 = time.monotonic()
    sleeper.start()
    await asyncio.sleep(0.05)
    first = await local_latency(cluster, a, "n0-stall-first")
    await in_thread(cluster.wait_state, "open", 1.5, [0])
    during = []
    for k in range(10):
        during.append(await local_latency(cluster, a, "n0-stall-%d" % k))
    elapsed = time.monotonic() - t0
    await in_thread(sleeper.join)
    assert elapsed < 1.9, "the measurements did not all happen during the 2 s sleep (%.2f s)" % \
        elapsed
    await in_thread(cluster.wait_state, "closed", 15)
    sent = ["n0-healthy-%d" % k for k in range(10)] + ["n0-stall-first"] + \
        ["n0-stall-%d" % k for k in range(10)]
    await until(lambda: len(b.messages) >= len(sent), 10, "the other instance catching up")
    await asyncio.sleep(0.3)
    assert b.messages == sent and a.messages == sent, (a.messages, b.messages)
    during.sort()
    print("\nlocal POST->delivery: healthy p50 %.1f ms; during DEBUG SLEEP 2: first %.0f ms "
          "(breaker tripping), then p50 %.1f ms max %.1f ms" %
          (healthy[5] * 1e3, first * 1e3, during[5] * 1e3, during[-1] * 1e3))
    assert first < TIMEOUT_MS / 1e3 * 2 + 0.3, "first message waited %.0f ms" % (first * 1e3)
    assert during[-1] < 0.15, "local delivery slowed by a slow Redis: %r" % during
    st = await in_thread(cluster.bridge, 0)
    assert st["trips"] >= 1 and "timed out" in (st["last_error"] or ""), st


# ---------------------------------------------------------------------------------------------


def test_single_node_bridge_off(make_stack):
    stack = make_stack(workers=1, nginx=False)
    st = stack.hub.stats()
    assert st["redis_bridge"] is None, st["redis_bridge"]
    r = stack.hub.fcgi("POST", "/admin/broadcast", b"x", {"Content-Type": "text/plain"})
    assert r.status == 202 and r.json()["seq"] == 1, r
    assert stack.hub.stats()["ring"]["published"] == 1, "no outbox record without a bridge"
    assert stack.metrics().sum("wshub_bridge_state", state="off") == 1
