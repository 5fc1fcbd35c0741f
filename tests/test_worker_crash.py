"""A worker killed with SIGKILL: its clients lose their connection, the others do not notice; the
hub respawns a worker in the same slot, frees the dead worker's connection rows, and broadcasts
keep reaching the survivors and new clients."""
import asyncio
import os
import signal

from wsclients import connect_many, in_thread, until
from wshub_stack import pid_alive, wait_for

WORKERS = 2


def test_worker_crash(make_stack):
    stack = make_stack(workers=WORKERS, nginx=False)
    asyncio.run(scenario(stack))


async def scenario(stack):
    clients = []
    try:
        # Connect until both workers hold clients (the kernel decides who accepts).
        st = None
        for _ in range(10):
            clients += await connect_many([{"url": stack.hub.ws_url}] * 20, concurrency=20)
            st = await in_thread(wait_counted, stack, len(clients))
            if all(w["connections"] > 0 for w in st["workers"]):
                break
        per_worker = {w["slot"]: w["connections"] for w in st["workers"]}
        assert all(n > 0 for n in per_worker.values()), per_worker

        victim = max(st["workers"], key=lambda w: w["connections"])
        slot, old_pid, lost = victim["slot"], victim["pid"], victim["connections"]
        survivors_n = len(clients) - lost
        os.kill(old_pid, signal.SIGKILL)

        # Exactly the victim's clients see their connection drop (no close frame: 1006).
        await until(lambda: sum(c.closed.is_set() for c in clients) >= lost, 10,
                    "%d clients of the killed worker to notice" % lost)
        dropped = [c for c in clients if c.closed.is_set()]
        survivors = [c for c in clients if not c.closed.is_set()]
        assert len(dropped) == lost and len(survivors) == survivors_n
        assert all(c.close_code is None and c.lib_code == 1006 for c in dropped), \
            [(c.close_code, c.lib_code, c.error) for c in dropped]

        # A new process in the same slot, its rows reclaimed.
        def respawned():
            s = stack.stats()
            w = next(w for w in s["workers"] if w["slot"] == slot)
            ok = (w["pid"] not in (0, old_pid) and pid_alive(w["pid"]) and
                  w["state"] == "running" and s["connections"]["in_use"] == survivors_n and
                  s["totals"]["connections"] == survivors_n)
            return s if ok else None

        st = await in_thread(wait_for, respawned, 5, "slot %d respawned and rows reclaimed" % slot)
        assert not pid_alive(old_pid)
        assert stack.hub.fcgi("GET", "/healthz").status == 200

        # Survivors and newcomers get the next broadcasts, exactly once, in order.
        newcomers = await connect_many([{"url": stack.hub.ws_url}] * 20, concurrency=20)
        clients += newcomers
        await in_thread(wait_counted, stack, survivors_n + len(newcomers))
        base = [len(c.messages) for c in survivors]
        for i in range(3):
            r = await in_thread(stack.broadcast, "after crash %d" % i)
            assert r.status == 202, r
        live = survivors + newcomers
        await until(lambda: all(len(c.messages) - (b or 0) >= 3 or c.closed.is_set()
                                for c, b in zip(live, base + [0] * len(newcomers))),
                    10, "survivors and newcomers to get 3 messages")
        want = ["after crash %d" % i for i in range(3)]
        for c, b in zip(live, base + [0] * len(newcomers)):
            assert c.messages[b:] == want, (c.name, c.messages, c.close_code, c.error)
        assert all(c.messages == [] for c in dropped)
        final = stack.stats()
        assert final["hub"]["state"] == "running", final["hub"]
        pid_now = {w["slot"]: w["pid"] for w in final["workers"]}
        pid_then = {w["slot"]: w["pid"] for w in st["workers"]}
        assert pid_now == pid_then, "a worker died again: %r -> %r" % (pid_then, pid_now)
    finally:
        for c in clients:
            c.task.cancel()


def wait_counted(stack, n):
    return wait_for(lambda: (lambda s: s if s["connections"]["in_use"] == n else None)(
        stack.stats()), 10, "connections.in_use == %d" % n)
