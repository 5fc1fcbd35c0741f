"""DELETE /admin/connections/{id}: wshub-admin leaves a close request in the connection's row
and rings the owning worker's doorbell; the worker closes exactly that connection with the
requested code (1008 by default), counts it as close reason "admin", and every other client
keeps receiving broadcasts."""
import asyncio

from wsclients import connect, in_thread, until
from wshub_stack import wait_for


def rows(stack):
    return stack.admin("GET", "/admin/connections").json()["connections"]


def test_kick_closes_one_connection(make_stack):
    stack = make_stack(workers=2)

    async def run():
        clients = [await connect(stack.hub.ws_url, name="c%d" % i) for i in range(4)]
        clients.append(await connect(stack.nginx.ws_url, name="via-nginx"))
        await in_thread(wait_for, lambda: len(rows(stack)) == 5, 10, "5 rows")
        # Which row is which client: each sends a distinct number of messages.
        for i, c in enumerate(clients):
            for _ in range(i + 1):
                await c.ws.send("hi")
        await in_thread(wait_for, lambda: sorted(r["messages_in"] for r in rows(stack)) ==
                        [1, 2, 3, 4, 5], 10, "per-row message counts")
        by_client = {r["messages_in"] - 1: r for r in rows(stack)}

        # Default code 1008, asked through nginx (the deployed path).
        victim = by_client[1]
        r = await in_thread(stack.admin, "DELETE", "/admin/connections/%d" % victim["id"])
        assert r.status == 202, r
        assert r.json() == {"id": victim["id"], "worker": victim["worker"], "code": 1008,
                            "status": "closing"}, r.json()
        await until(lambda: clients[1].closed.is_set(), 10, "the kicked client to close")
        assert clients[1].close_code == 1008, (clients[1].close_code, clients[1].lib_code)

        # A chosen application code, on the proxied connection.
        victim = by_client[4]
        r = await in_thread(stack.admin, "DELETE",
                            "/admin/connections/%d?code=4001" % victim["id"])
        assert r.status == 202 and r.json()["code"] == 4001, r
        await until(lambda: clients[4].closed.is_set(), 10, "the proxied client to close")
        assert clients[4].close_code == 4001, clients[4].close_code

        # Nobody else was touched: they still get broadcasts, and the rows are gone.
        r = await in_thread(stack.broadcast, "after the kicks")
        assert r.status == 202
        survivors = [clients[0], clients[2], clients[3]]
        await until(lambda: all(c.messages == ["after the kicks"] for c in survivors), 10,
                    "survivors receive")
        assert not any(c.closed.is_set() for c in survivors)
        await in_thread(wait_for, lambda: len(rows(stack)) == 3, 10, "3 rows left")
        left = {r["id"] for r in await in_thread(rows, stack)}
        assert left == {by_client[i]["id"] for i in (0, 2, 3)}, left

        # Counted once each as "admin", never as policy; a second DELETE finds nothing.
        st = await in_thread(stack.stats)
        assert st["totals"]["closed"]["admin"] == 2, st["totals"]["closed"]
        assert st["totals"]["closed"]["policy"] == 0, st["totals"]["closed"]
        assert st["totals"]["connections"] == 3
        r = await in_thread(stack.admin, "DELETE", "/admin/connections/%d" % victim["id"])
        assert r.status == 404, r
        m = await in_thread(stack.metrics)
        assert m.sum("wshub_connections_closed_total", reason="admin") == 2
        for c in survivors:
            await c.close()

    asyncio.run(run())


def test_kick_idle_worker_is_woken(make_stack):
    """The owning worker is asleep (nothing to send, no traffic): the doorbell wakes it, so the
    close does not wait for some unrelated event."""
    stack = make_stack(workers=1, nginx=False)

    async def run():
        c = await connect(stack.hub.ws_url)
        await in_thread(wait_for, lambda: len(rows(stack)) == 1, 10, "1 row")
        conn_id = (await in_thread(rows, stack))[0]["id"]
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        r = await in_thread(stack.admin, "DELETE", "/admin/connections/%d?code=3000" % conn_id)
        assert r.status == 202, r
        await until(lambda: c.closed.is_set(), 5, "the close")
        elapsed = loop.time() - t0
        assert c.close_code == 3000
        # Well inside the worker's 1 s tick: the doorbell, not the timer, woke it.
        assert elapsed < 0.6, "close took %.3f s" % elapsed

    asyncio.run(run())
