#!/usr/bin/python3
"""measure_redis_bridge.py -- the Redis bridge's numbers (issue 8), measured by tools/wsbench.

Not part of `make test` (the outage run alone takes a minute). Run it on an otherwise idle
machine:

    make && make wsbench
    WSHUB_BUILD=$PWD/build /usr/bin/python3 tests/measure_redis_bridge.py [--outage 30] [--json F]

It starts a private redis-server (AOF, appendfsync always), a single-node wshub (no redis) as
the baseline, and a cluster of two wshub instances A and B on that Redis, each with nginx in
front for the POSTs (wsbench publishes over HTTP). Then, with wsbench fanout (latency = POST
write -> receipt by a subscriber, CLOCK_MONOTONIC, the same machine):

  1. latency, single node:   subscribers on the baseline, POSTs to the baseline
  2. latency, A -> A:        subscribers on A, POSTs to A (local delivery goes through Redis)
  3. latency, A -> B:        subscribers on B, POSTs to A (the cross-instance path)
  4. throughput, A -> B:     POSTs to A as fast as the rate allows, delivered/s on B
  5. outage, A -> B and A:   two wsbench runs at once, each POSTing 100 broadcasts/s to A for
                             outage + 20 s, one subscribed on B, one on A; Redis is SIGKILLed
                             5 s in and restarted `outage` seconds later; loss, duplicates and
                             order counted on both (each run checks only its own broadcasts).

Each line printed is one run's summary; --json writes all of wsbench's output.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import redis_server  # noqa: E402
from wshub_stack import REPO, Stack, make_base_dir, wait_for  # noqa: E402

WSBENCH = os.path.join(REPO, "tools", "wsbench", "wsbench")


PUB_CONNECTIONS = 1  # one pipelined keep-alive connection: nginx hands wshub-admin the POSTs in
# order, so any reordering a subscriber sees would be the server's (with several, two POSTs in
# flight at once may be appended in either order, which wsbench would count as out of order)


def wsbench(url, publish_url, messages, rate, clients=100, size=64, drain="20s", extra=()):
    cmd = [WSBENCH, "fanout", "--url", url, "--publish-url", publish_url, "-n", str(clients),
           "-m", str(messages), "-r", str(rate), "-s", str(size), "--settle", "500ms",
           "--drain-timeout", drain, "--pub-connections", str(PUB_CONNECTIONS),
           "--timeout", "600s"] + list(extra)
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0 and not out.stdout.strip():
        raise RuntimeError("wsbench failed: %s" % out.stderr[-2000:])
    return json.loads(out.stdout)


def find(d, key):
    """First value of `key` anywhere in a nested JSON object."""
    if isinstance(d, dict):
        if key in d:
            return d[key]
        for v in d.values():
            r = find(v, key)
            if r is not None:
                return r
    return None


def summary(name, r):
    lat = find(r, "latency_ms") or {}
    deliveries = find(r, "deliveries") or {}
    subs = deliveries.get("subscribers") or 1
    line = ("%-28s p50 %8.3f ms  p99 %8.3f ms  broadcasts/s %7.0f  lost %s  duplicated %s  "
            "out of order %s" % (
                name, lat.get("p50", float("nan")), lat.get("p99", float("nan")),
                (find(r, "delivered_per_sec") or 0) / subs, deliveries.get("lost"),
                deliveries.get("duplicated"), deliveries.get("out_of_order")))
    print(line, flush=True)
    return line


def cluster_stack(rs, prefix):
    return Stack(workers=1, nginx=True, options={
        "redis": rs.address, "redis_prefix": prefix, "redis_timeout": "250ms",
        "redis_backoff_max": "2s"}).start()


def bridge_state(stack):
    return stack.hub.stats()["redis_bridge"]


def outage(args, rs, a, b, pub_a, results):
    """Redis SIGKILLed during steady traffic, restarted args.outage seconds later."""
    n = int((args.outage + 20) * 100)
    out = {}

    def run(key, url):
        out[key] = wsbench(url, pub_a, n, 100, clients=20,
                           drain="%ds" % int(args.outage + 60))
    threads = [threading.Thread(target=run, args=("outage_b", b.hub.ws_url)),
               threading.Thread(target=run, args=("outage_a", a.hub.ws_url))]
    for t in threads:
        t.start()
    time.sleep(5 + 1.5)  # connect + settle, then 5 s of traffic
    rs.kill()
    killed = time.monotonic()
    time.sleep(args.outage)
    rs.start()
    print("redis down %.1f s; bridges: %s" % (
        time.monotonic() - killed, [bridge_state(s)["state"] for s in (a, b)]), flush=True)
    for t in threads:
        t.join()
    results.update(out)
    summary("outage %.0fs A -> B" % args.outage, results["outage_b"])
    summary("outage %.0fs A -> A" % args.outage, results["outage_a"])
    for name, s in (("A", a), ("B", b)):
        st = bridge_state(s)
        print("bridge %s: state %s trips %d sent %d delivered %d delivered_ahead %d "
              "skipped_own %d backlog_overflow %d lost_acked %d stream_gaps %d" % (
                  name, st["state"], st["trips"], st["sent"], st["delivered"],
                  st["delivered_ahead"], st["skipped_own"], st["backlog_overflow"],
                  st["lost_acked"], st["stream_gaps"]), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--outage", type=float, default=30.0, help="seconds Redis stays down")
    ap.add_argument("--json", help="write every wsbench result here")
    ap.add_argument("--no-outage", action="store_true", help="latency and throughput only")
    args = ap.parse_args()
    if not os.access(WSBENCH, os.X_OK):
        sys.exit("build tools/wsbench first: make wsbench")
    base = make_base_dir("wshub-measure-redis-")
    rs = redis_server.RedisServer(base).start()
    stacks, results = [], {}
    try:
        single = Stack(workers=1, nginx=True).start()
        stacks.append(single)
        a = cluster_stack(rs, "measure:")
        b = cluster_stack(rs, "measure:")
        stacks += [a, b]
        for s in (a, b):
            wait_for(lambda: bridge_state(s)["state"] == "closed", 15, "bridge closed")
        pub_a = "http://127.0.0.1:%d/admin/broadcast" % a.nginx.port
        pub_single = "http://127.0.0.1:%d/admin/broadcast" % single.nginx.port

        results["single"] = wsbench(single.hub.ws_url, pub_single, 3000, 500)
        summary("latency single node", results["single"])
        results["a_to_a"] = wsbench(a.hub.ws_url, pub_a, 3000, 500)
        summary("latency A -> A (via Redis)", results["a_to_a"])
        results["a_to_b"] = wsbench(b.hub.ws_url, pub_a, 3000, 500)
        summary("latency A -> B", results["a_to_b"])
        for rate in (2000, 5000, 10000):
            key = "throughput_%d" % rate
            results[key] = wsbench(b.hub.ws_url, pub_a, rate * 5, rate, clients=10)
            summary("throughput A -> B @%d/s" % rate, results[key])
            results["single_" + key] = wsbench(single.hub.ws_url, pub_single, rate * 5, rate,
                                               clients=10)
            summary("throughput single @%d/s" % rate, results["single_" + key])
        if not args.no_outage:
            outage(args, rs, a, b, pub_a, results)
    finally:
        for s in stacks:
            s.teardown()
        rs.kill()
        shutil.rmtree(base, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
