"""/metrics against Prometheus's own linter: `promtool check metrics` (Debian's prometheus package)
on a live scrape through nginx, after traffic has filled the histograms. Also the broadcast
size histogram's buckets: powers of two, cumulative, _count = broadcasts, _sum = their bytes."""
import asyncio
import shutil
import subprocess

from wsclients import connect, in_thread, until
from wshub_stack import wait_for

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def promtool_check(text):
    p = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode(), capture_output=True,
                       timeout=30)
    return p.returncode, (p.stdout + p.stderr).decode(errors="replace")


def test_promtool_accepts_live_metrics(make_stack):
    stack = make_stack(workers=2)
    sizes = [1, 2, 3, 100, 128, 129, 4096, 10000]

    async def run():
        clients = [await connect(stack.hub.ws_url) for _ in range(3)]
        await in_thread(wait_for, lambda: stack.stats()["totals"]["connections"] == 3, 10,
                        "3 clients")
        for n in sizes:
            assert (await in_thread(stack.broadcast, "x" * n)).status == 202
        await until(lambda: all(len(c.messages) == len(sizes) for c in clients), 10,
                    "every broadcast delivered")
        for c in clients:
            await c.close()

    asyncio.run(run())

    r = stack.admin("GET", "/metrics")
    assert r.status == 200, r
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4"), r.headers
    text = r.body.decode("utf-8")
    rc, out = promtool_check(text)
    assert rc == 0 and out.strip() == "", "promtool check metrics:\n" + out

    m = stack.metrics()
    assert m.types["wshub_broadcast_message_size_bytes"] == "histogram"
    buckets = {lab["le"]: v for lab, v in m.samples["wshub_broadcast_message_size_bytes_bucket"]}
    assert buckets["1"] == 1 and buckets["2"] == 2 and buckets["4"] == 3, buckets
    assert buckets["64"] == 3 and buckets["128"] == 5 and buckets["256"] == 6, buckets
    assert buckets["4096"] == 7 and buckets["8192"] == 7 and buckets["16384"] == 8, buckets
    assert buckets["+Inf"] == len(sizes)
    finite = sorted((float(le), v) for le, v in buckets.items() if le != "+Inf")
    assert all(a[1] <= b[1] for a, b in zip(finite, finite[1:])), "buckets must be cumulative"
    assert all(int(le) & (int(le) - 1) == 0 for le, _ in finite), "bounds are powers of two"
    assert m.sum("wshub_broadcast_message_size_bytes_count") == len(sizes)
    assert m.sum("wshub_broadcast_message_size_bytes_sum") == sum(sizes)
    # Fan-out latency: one sample per delivery.
    assert m.sum("wshub_delivery_latency_seconds_count") == 3 * len(sizes)
    assert m.types["wshub_delivery_latency_seconds"] == "histogram"


def test_promtool_catches_a_broken_exposition():
    """The check above can fail: promtool rejects a counter without _total and a family
    without HELP."""
    rc, out = promtool_check("# TYPE wshub_bad counter\nwshub_bad 1\n")
    assert rc != 0 and out, out
