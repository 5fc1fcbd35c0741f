"""The admin API's routes beyond broadcast (issue 4): GET /admin/connections (rows of the shared
connection table, filtered and paged), POST /admin/workers/restart (202, recorded in the
segment and visible in stats.json and /metrics), and their error answers (400, 404, 405 with
Allow, all JSON)."""
import asyncio

from wsclients import connect, in_thread
from wshub_stack import wait_for


def test_connections_list(make_stack):
    stack = make_stack(workers=2)

    async def run():
        clients = [await connect(stack.hub.ws_url) for _ in range(5)]
        clients.append(await connect(stack.nginx.ws_url))
        await in_thread(wait_for, lambda: stack.stats()["connections"]["in_use"] == 6, 10,
                        "6 rows")
        r = await in_thread(stack.broadcast, "counted per row")
        assert r.status == 202
        await in_thread(wait_for, lambda: all(
            c["messages_out"] == 1 for c in stack.admin("GET", "/admin/connections").json()[
                "connections"]), 10, "every row to count the delivery")

        r = await in_thread(stack.admin, "GET", "/admin/connections")
        assert r.status == 200 and r.headers["content-type"].startswith("application/json"), r
        body = r.json()
        assert (body["total"], body["limit"], body["offset"]) == (6, 100, 0), body
        rows = body["connections"]
        ids = [c["id"] for c in rows]
        assert len(ids) == 6 and ids == sorted(ids) and len(set(ids)) == 6, ids
        st = await in_thread(stack.stats)
        pids = {w["slot"] for w in st["workers"]}
        for c in rows:
            assert c["worker"] in pids and c["worker_generation"] == 1, c
            assert c["state"] == "open" and c["kick_code"] == 0, c
            assert c["remote"].startswith("127.0.0.1:"), c
            assert c["user"] == "" and c["channels"] == [], c
            assert c["connected_at_ms"] <= c["last_seen_ms"] <= st["generated_at_ms"], c
            assert (c["messages_out"], c["bytes_out"]) == (1, len("counted per row")), c
            assert (c["messages_in"], c["bytes_in"]) == (0, 0), c
        per_worker = {w["slot"]: w["connections"] for w in st["workers"]}
        for slot, n in per_worker.items():
            assert sum(1 for c in rows if c["worker"] == slot) == n, (slot, per_worker)

        # Paging: a window of the same order; past the end, empty; total stays the count.
        page = (await in_thread(stack.admin, "GET", "/admin/connections?limit=2&offset=1")).json()
        assert (page["total"], page["limit"], page["offset"]) == (6, 2, 1), page
        assert [c["id"] for c in page["connections"]] == ids[1:3]
        page = (await in_thread(stack.admin, "GET", "/admin/connections?offset=6")).json()
        assert page["total"] == 6 and page["connections"] == [], page
        page = (await in_thread(stack.admin, "GET", "/admin/connections?limit=1000")).json()
        assert len(page["connections"]) == 6
        # Filter on the user id (no client is authenticated yet, so none matches a name).
        page = (await in_thread(stack.admin, "GET", "/admin/connections?user=alice")).json()
        assert page["total"] == 0 and page["connections"] == [], page

        # Bad parameters: 400 with a JSON reason.
        for q in ("limit=0", "limit=1001", "limit=x", "offset=-1", "limit=", "offset=1e3",
                  "user=%zz"):
            r = await in_thread(stack.admin, "GET", "/admin/connections?" + q)
            assert r.status == 400 and r.json()["error"], (q, r)

        # A client that leaves disappears from the list.
        await clients[0].close()
        await in_thread(wait_for, lambda: stack.admin("GET", "/admin/connections").json()[
            "total"] == 5, 10, "5 rows after one client left")
        left = [c["id"] for c in
                (await in_thread(stack.admin, "GET", "/admin/connections")).json()["connections"]]
        assert ids[0] not in left and left == ids[1:], (ids, left)
        for c in clients[1:]:
            await c.close()

    asyncio.run(run())


def test_restart_request(make_stack):
    stack = make_stack(workers=2)
    st = stack.stats()
    assert st["hub"]["restart_requested"] == 0
    for n in (1, 2):
        r = stack.admin("POST", "/admin/workers/restart", b"")
        assert r.status == 202 and r.headers["content-type"].startswith("application/json"), r
        assert r.json() == {"restart": "requested", "generation": st["hub"]["generation"],
                            "restart_requested": n}, r.json()
    assert stack.stats()["hub"]["restart_requested"] == 2
    assert stack.metrics().sum("wshub_restart_requests_total") == 2
    with open(stack.hub.log_file) as f:
        assert "rolling restart requested (request 2" in f.read()

    r = stack.admin("GET", "/admin/workers/restart")
    assert r.status == 405 and r.headers.get("allow") == "POST" and r.is_json(), r
    r = stack.admin("POST", "/admin/connections", b"x", {"Content-Type": "text/plain"})
    assert r.status == 405 and r.headers.get("allow") == "GET, HEAD" and r.is_json(), r
    r = stack.admin("GET", "/admin/connections/1")
    assert r.status == 405 and r.headers.get("allow") == "DELETE" and r.is_json(), r
    r = stack.admin("GET", "/admin/workers")
    assert r.status == 404 and r.is_json(), r


def test_kick_refusals(make_stack):
    """DELETE /admin/connections/{id} answers for what it cannot do, before any worker is
    involved: unknown id 404, malformed id 400, a close code no server may send 400."""
    stack = make_stack(workers=1)
    r = stack.admin("DELETE", "/admin/connections/12345")
    assert r.status == 404 and r.json() == {"error": "no such connection",
                                            "detail": {"id": 12345}}, r
    for bad in ("0", "abc", "1x", "-1", "99999999999999999999999"):
        r = stack.admin("DELETE", "/admin/connections/" + bad)
        assert r.status == 400 and r.json()["error"] == "invalid connection id", (bad, r)
    for code in ("999", "1004", "1005", "1006", "1010", "1015", "1016", "2999", "5000", "x"):
        r = stack.admin("DELETE", "/admin/connections/1?code=" + code)
        assert r.status == 400 and r.is_json(), (code, r)
