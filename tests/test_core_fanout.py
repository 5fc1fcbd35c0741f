"""The core path end to end (issue 2's "done when"): 1,000 clients over every worker, some
through nginx, 100 broadcasts POSTed through nginx to wshub-admin; every client gets every message
exactly once, in order, intact; stats.json and /metrics agree on the counts; SIGTERM closes every
client with 1001, the hub exits 0 and the shared-memory segment is gone."""
import asyncio
import os
import signal
import time

from wsclients import connect_many, in_thread, until

WORKERS = 3
N_CLIENTS = 1000
N_VIA_NGINX = 100
N_MESSAGES = 100


def message(i):
    # Index first (order check), then UTF-8 beyond ASCII and some length, so a torn, truncated
    # or re-encoded payload cannot compare equal.
    return "broadcast %03d | héllo wörld ✓ 🚀 | %s" % (i, "x" * (i * 7 % 200))


def client_specs(stack):
    specs = []
    for i in range(N_CLIENTS):
        if i < N_VIA_NGINX:
            # Through nginx, offering permessage-deflate as browsers do.
            specs.append({"url": stack.nginx.ws_url, "name": "nginx%d" % i,
                          "compression": "deflate"})
        else:
            # Straight to the workers' port, from several loopback source addresses (as many
            # clients on a real network would be, and beyond one address's port range).
            specs.append({"url": stack.hub.ws_url, "name": "direct%d" % i,
                          "local_addr": "127.0.0.%d" % (2 + i % 32)})
    return specs


def test_core_fanout(make_stack):
    stack = make_stack(workers=WORKERS, options={"shutdown_timeout": "10s"})
    asyncio.run(scenario(stack))


async def scenario(stack):
    clients = await connect_many(client_specs(stack), concurrency=100)
    try:
        await check_spread(stack)
        seqs, sent_bytes = await broadcast_all(stack)
        await check_delivery(clients)
        await check_counts(stack, seqs, sent_bytes)
        await check_shutdown(stack, clients)
    finally:
        for c in clients:
            c.task.cancel()


async def check_spread(stack):
    def all_counted():
        st = stack.stats()
        return st if st["totals"]["connections"] == N_CLIENTS else None

    st = await in_thread(lambda: _wait_sync(all_counted, 20, "totals.connections == 1000"))
    assert st["connections"]["in_use"] == N_CLIENTS, st["connections"]
    per_worker = {w["slot"]: w["connections"] for w in st["workers"]}
    assert len(st["workers"]) == WORKERS, st["workers"]
    # Workers balance their accepts (ws-worker/worker_accept.c): each holds at least half of
    # its fair share even though the first worker to wake could take a whole burst.
    fair = N_CLIENTS // WORKERS
    assert all(n >= fair // 2 for n in per_worker.values()), \
        "every worker must hold at least half its share of %d: %r" % (fair, per_worker)
    assert sum(per_worker.values()) == N_CLIENTS, per_worker
    print("connections per worker: %r" % per_worker)


async def broadcast_all(stack):
    seqs, sent = [], 0
    for i in range(N_MESSAGES):
        r = await in_thread(stack.broadcast, message(i))
        assert r.status == 202, r
        seqs.append(r.json()["seq"])
        sent += len(message(i).encode())
    assert seqs == list(range(seqs[0], seqs[0] + N_MESSAGES)), \
        "seq must grow by exactly 1 per broadcast: %r" % seqs
    return seqs, sent


async def check_delivery(clients):
    t0 = time.monotonic()
    await until(lambda: all(len(c.messages) >= N_MESSAGES or c.closed.is_set() for c in clients),
                60, "every client to receive %d messages" % N_MESSAGES)
    print("last delivery %.3fs after the last 202" % (time.monotonic() - t0))
    expected = [message(i) for i in range(N_MESSAGES)]
    bad = [c for c in clients if c.messages != expected]
    assert not bad, describe_bad(bad, expected)


def describe_bad(bad, expected):
    c = bad[0]
    first = next((i for i, (a, b) in enumerate(zip(c.messages, expected)) if a != b),
                 min(len(c.messages), len(expected)))
    return ("%d of the clients did not get exactly the %d messages in order; e.g. %s got %d "
            "messages, first difference at %d: %r (closed: %s, close code %s, error %r)" %
            (len(bad), len(expected), c.name, len(c.messages), first,
             c.messages[first] if first < len(c.messages) else None, c.closed.is_set(),
             c.close_code, c.error))


async def check_counts(stack, seqs, sent_bytes):
    want_out = N_MESSAGES * N_CLIENTS

    def counted():
        st = stack.stats()
        return st if st["totals"]["messages_out"] >= want_out else None

    st = await in_thread(lambda: _wait_sync(counted, 10, "totals.messages_out == %d" % want_out))
    assert st["totals"]["messages_out"] == want_out, st["totals"]
    assert st["totals"]["bytes_out"] == sent_bytes * N_CLIENTS, st["totals"]
    assert st["ring"]["published"] == N_MESSAGES, st["ring"]
    assert st["ring"]["next_seq"] == seqs[-1] + 1, st["ring"]
    assert st["totals"]["connections"] == N_CLIENTS
    assert st["totals"]["accepted"] == N_CLIENTS, st["totals"]
    assert sum(w["messages_out"] for w in st["workers"]) == want_out, st["workers"]

    m = await in_thread(stack.metrics)
    assert m.sum("wshub_messages_sent_total") == want_out
    assert m.sum("wshub_sent_bytes_total") == sent_bytes * N_CLIENTS
    assert m.sum("wshub_ring_published_messages_total") == N_MESSAGES
    assert m.sum("wshub_ring_next_sequence") == seqs[-1] + 1
    assert m.sum("wshub_connections") == N_CLIENTS
    assert m.sum("wshub_connection_table_in_use") == N_CLIENTS
    assert m.sum("wshub_connections_accepted_total") == N_CLIENTS
    # Per-worker labels add up to the same totals.
    per_worker = {int(w["slot"]): w["messages_out"] for w in st["workers"]}
    for slot, n in per_worker.items():
        assert m.sum("wshub_messages_sent_total", worker=slot) == n, (slot, n)


async def check_shutdown(stack, clients):
    hub = stack.hub
    hub.note_children()
    t0 = time.monotonic()
    hub.signal(signal.SIGTERM)
    await until(lambda: all(c.closed.is_set() for c in clients), 20,
                "every client to be closed after SIGTERM")
    codes = {}
    for c in clients:
        codes[c.close_code] = codes.get(c.close_code, 0) + 1
    assert codes == {1001: N_CLIENTS}, "close codes after SIGTERM (None = no close frame): %r" % \
        codes
    assert all(len(c.messages) == N_MESSAGES for c in clients), "nothing may arrive after"
    rc = await in_thread(hub.wait_exit, 20)
    print("hub stopped %.3fs after SIGTERM" % (time.monotonic() - t0))
    assert rc == 0, "hub exit status %r" % rc
    assert not os.path.exists(hub.segment), "segment %s still exists" % hub.segment


def _wait_sync(fn, timeout, what):
    from wshub_stack import wait_for
    return wait_for(fn, timeout, what, interval=0.05)
