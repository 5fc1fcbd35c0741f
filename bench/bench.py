#!/usr/bin/python3
"""bench.py -- wshub's standard benchmark (`make bench`) and its comparison with nginx + Nchan
(`make bench-compare`).

Runs the workloads of issue 3 with tools/wsbench against a fresh stack each (bench/stacks.py),
writes one JSON file per workload and server, a Markdown summary with the machine described,
and the latency CDF and throughput charts (bench/report.py, gnuplot):

    W1  hold      50,000 idle connections for 60 s; and 100,000
    W2  fan-out   1,000 and 10,000 subscribers, 100 broadcasts at 10/s, 64-byte payloads;
                  1,000 also through nginx's /ws proxy (wshub only: direct vs proxied)
    W3  fan-out   50,000 subscribers, 50 broadcasts at 5/s
    W4  capacity  10,000 subscribers: the highest broadcast rate with zero loss and p99 <= 250 ms
                  (doubling, then bisection), reported as deliveries per second
    W5  permessage-deflate (issue 7): 10,000 subscribers of ~2 KiB JSON broadcasts, plain and
        compressing (wsbench --deflate --pad json) in turn: server CPU per broadcast and bytes on
        the wire per delivery, wshub and nginx + Nchan with its deflate on (Nchan runs in W5
        even without --compare when its module is installed); bench/deflate_bench.py
    W6  slow consumers (issue 6), wshub only: 1,000 subscribers of 2 KiB broadcasts at 50/s,
        with and without 10% of them reading nothing (wsbench --stalled 0.1), under
        `slow_consumer close` and `skip`; the readers' latency is compared, baseline run twice
        to show the noise
    W7  recovery (issue 6), wshub only: 2,000 resuming wshub.v1 clients (wsbench --resume) of
        broadcasts at 20/s while a random worker is killed with SIGKILL every 6 s; the time
        from each SIGKILL to each of its clients' resumed welcome, and whether any was lost
    W8  channels (issue 10): 10,000 subscribers on 1,000 channels (10 each, wsbench --channels),
        64-byte messages POSTed each to one channel: 1,000 channel messages/s for 30 s, then the
        highest rate with zero loss and p99 <= 250 ms (doubling, bisection), wshub and, with
        --compare, Nchan (one channel per id); bench/channels_bench.py, channels.md

Workers are one per core, or more when the connections need them: a process holds at most
~19,900 descriptors here, so WORKERS = max(cores, ceil(connections / 17,000)), and Nchan gets the
same number of nginx workers. With --compare the two servers run workload by workload, one right
after the other, so both see the same machine; ratios are wshub / Nchan from that one run.

    bench/bench.py                 # make bench: wshub -> bench/results/
    bench/bench.py --compare       # make bench-compare: wshub and Nchan -> bench/results/compare/
    QUICK=1 bench/bench.py ...     # reduced set in under 2 minutes -> bench/results/quick/...
    bench/bench.py --only w2 --compare     # workloads whose name starts with w2
    bench/bench.py --summarize bench/results/compare   # redo SUMMARY.md and charts from JSON

Every run is bounded (wsbench --timeout, subprocess timeouts). On a shared machine check the
`host.others_cpu_s` figure each result carries: runs where other processes used more than 30% of a
core are marked noisy in the summary. --wait-quiet waits (polling every 30 s) for the 1-minute load
average to fall below 0.7 before starting. Ports 19700-19799 and /tmp/bench-* are used.
"""
import argparse
import datetime
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import channels_bench  # noqa: E402
import deflate_bench  # noqa: E402
import report  # noqa: E402
import stacks  # noqa: E402

ROOT = os.path.dirname(HERE)
WSBENCH = os.path.join(ROOT, "tools", "wsbench", "wsbench")
CORES = os.cpu_count() or 1
PER_WORKER = 17000          # connections per server process, under the 20,000 fd limit
NOISY_OTHERS_FRAC = 0.3     # other processes' CPU / phase wall time above which a run is noisy
W4_P99_MS = 250.0


def workers_for(n):
    return max(CORES, math.ceil(n / PER_WORKER))


# ---- workloads -----------------------------------------------------------------------------

def workloads(quick):
    """The standard set. Each: name, kind (hold | fanout | capacity), connections and the
    wsbench parameters; `servers` limits a workload to some servers."""
    if quick:
        return [
            dict(name="w1-hold-10k", kind="hold", n=10000, hold=10),
            dict(name="w2-fanout-1k", kind="fanout", n=1000, m=30, r=10),
            dict(name="w2-fanout-10k", kind="fanout", n=10000, m=30, r=10),
            dict(name="w2-fanout-1k-proxied", kind="fanout", n=1000, m=30, r=10, proxied=True,
                 servers=("wshub",)),
            dict(name="w3-fanout-20k", kind="fanout", n=20000, m=15, r=5),
            dict(name="w4-capacity", kind="capacity", n=10000, trial_s=3, max_trials=3,
                 bisect=0),
            deflate_bench.workload(quick),
            dict(name="w6-slow-consumers", kind="slow", n=500, seconds=12, r=50, size=2048,
                 stalled=0.1, baseline_twice=False, servers=("wshub",)),
            dict(name="w7-recovery", kind="recovery", n=1000, r=20, kills=3, every=6,
                 servers=("wshub",)),
            channels_bench.workload(quick),
        ]
    return [
        dict(name="w1-hold-50k", kind="hold", n=50000, hold=60),
        dict(name="w1-hold-100k", kind="hold", n=100000, hold=60),
        dict(name="w2-fanout-1k", kind="fanout", n=1000, m=100, r=10),
        dict(name="w2-fanout-10k", kind="fanout", n=10000, m=100, r=10),
        dict(name="w2-fanout-1k-proxied", kind="fanout", n=1000, m=100, r=10, proxied=True,
             servers=("wshub",)),
        dict(name="w3-fanout-50k", kind="fanout", n=50000, m=50, r=5),
        dict(name="w4-capacity", kind="capacity", n=10000, trial_s=8, max_trials=8, bisect=3),
        deflate_bench.workload(quick),
        dict(name="w6-slow-consumers", kind="slow", n=1000, seconds=30, r=50, size=2048,
             stalled=0.1, baseline_twice=True, servers=("wshub",)),
        dict(name="w7-recovery", kind="recovery", n=2000, r=20, kills=5, every=6,
             servers=("wshub",)),
        channels_bench.workload(quick),
    ]


class Runner:
    """Runs workloads against one kind of server; knows ports, run dirs and the build."""

    def __init__(self, server, build, port_base, log):
        self.server = server
        self.build = build
        self.port_base = port_base
        self.log = log
        self.source_k = 0   # rotates wsbench's source addresses: 127.K.0.x per run
        self.instance_prefix = "bench-w"   # --instance-prefix

    def stack(self, wl):
        workers = workers_for(wl["n"])
        if self.server == "wshub":
            # The front nginx carries the POSTs; when it also proxies the subscribers, it gets
            # as many workers as wshub (each proxied client costs it two descriptors).
            nginx_workers = workers if wl.get("proxied") else 1
            # Directory and instance follow the ports, so runs on other --port-base values
            # can go side by side.
            return stacks.WshubStack(self.build, "/tmp/bench-wshub-%d" % self.port_base,
                                     "%s%d" % (self.instance_prefix, self.port_base),
                                     self.port_base,
                                     self.port_base + 1, workers, nginx_workers)
        return stacks.NchanStack("/tmp/bench-nchan-%d" % self.port_base, self.port_base + 10,
                                 workers, deflate=wl["kind"] == "deflate")

    def next_source(self):
        self.source_k = self.source_k % 250 + 1
        return "127.%d.0.1" % self.source_k

    def wsbench(self, st, args, budget_s):
        """One bounded wsbench run. Returns (argv, parsed JSON)."""
        argv = [WSBENCH] + args + ["--source-base", self.next_source(),
                                   "--timeout", "%ds" % budget_s] + st.server_args()
        self.log("    $ " + " ".join(a if " " not in a else repr(a) for a in argv))
        r = subprocess.run(argv, capture_output=True, text=True, timeout=budget_s + 60)
        if not r.stdout.strip():
            raise RuntimeError("wsbench printed nothing (rc %d): %s" % (r.returncode,
                                                                      r.stderr[-2000:]))
        return argv, json.loads(r.stdout)

    def url(self, st, wl):
        return st.ws_url_proxied if wl.get("proxied") else st.ws_url

    def hold(self, st, wl):
        n = wl["n"]
        rate = 10000
        args = ["hold", "--url", self.url(st, wl), "-n", str(n), "--hold", "%ds" % wl["hold"],
                "--connect-rate", str(rate), "--connect-timeout", "20s"]
        return self.wsbench(st, args, int(n / rate + wl["hold"] + 90))

    def fanout(self, st, wl, rate=None, messages=None, cdf=True, pub_conns=1, capacity=False):
        n, r = wl["n"], rate or wl["r"]
        m = messages or wl["m"]
        crate = 20000 if n <= 10000 else 10000
        # A saturated server answers POSTs and delivers seconds late (Nchan at 50,000: ~15 s);
        # W3 waits long enough to measure that rather than cut it off.
        drain = 10 if n <= 10000 or capacity else 30
        args = ["fanout", "--url", self.url(st, wl), "--publish-url", st.publish_url,
                "-n", str(n), "-m", str(m), "-r", "%g" % r, "-s", "64",
                "--connect-rate", str(crate), "--connect-timeout", "20s",
                "--settle", "2s" if n > 10000 else "1s", "--drain-timeout", "%ds" % drain,
                "--pub-connections", str(pub_conns)]
        if cdf:
            args.append("--cdf")
        return self.wsbench(st, args, int(n / crate + m / r + 2 * drain + 80))

    def capacity(self, st, wl):
        """W4: doubling from 10 broadcasts/s until a trial fails, then bisection (geometric)
        between the best pass and the first failure."""
        trials = []

        def trial(rate):
            m = max(10, int(round(rate * wl["trial_s"])))
            argv, out = self.fanout(st, wl, rate=rate, messages=m, cdf=False, pub_conns=4,
                                    capacity=True)
            ok, why = capacity_pass(out, rate)
            t = {"rate": rate, "messages": m, "offered_per_sec": rate * wl["n"], "pass": ok,
                 "why": why, "command": argv, "result": out}
            self.log("    rate %g/s (%d deliveries/s offered): %s; delivered %.0f/s, p99 %s ms" %
                     (rate, rate * wl["n"], "pass" if ok else "FAIL " + ", ".join(why),
                      out.get("delivered_per_sec") or 0,
                      (out.get("latency_ms") or {}).get("p99")))
            trials.append(t)
            return ok

        search_rate(trial, 10.0, wl["max_trials"], wl["bisect"])
        best = max((t for t in trials if t["pass"]), key=lambda t: t["rate"], default=None)
        return trials, best


# ---- W6 and W7: slow consumers and recovery (issue 6) ----------------------------------------

# W6's server: a 512 KiB frame buffer per worker, so that a client that reads nothing falls out
# of it within seconds (2 KiB x 50/s: ~5 s) and the slow-consumer policy acts during the run
# (the buffer must hold two of the largest messages: max_message comes down to 16 KiB).
W6_CONF = {"max_message": "16k", "worker_buffer": "512k"}


class TunedWshubStack(stacks.WshubStack):
    """The standard wshub stack with extra wshub.conf lines."""

    def __init__(self, *args, extra=None, **kw):
        super().__init__(*args, **kw)
        self.extra = dict(extra or {})

    def _write_conf(self):
        conf = super()._write_conf()
        with open(conf, "a") as f:
            f.write("# bench.py: this workload's settings\n")
            for k, v in self.extra.items():
                f.write("%-18s %s\n" % (k, v))
        return conf

    def admin_stats(self):
        with urllib.request.urlopen("http://127.0.0.1:%d/admin/stats.json" % self.http_port,
                                    timeout=5) as r:
            return json.loads(r.read())

    def describe(self):
        d = super().describe()
        d["conf_extra"] = self.extra
        return d


def _pct(values, q):
    v = sorted(values)
    if not v:
        return None
    return round(v[min(len(v) - 1, max(0, math.ceil(q * len(v)) - 1))], 3)


class ResilienceRunner:
    """W6 and W7 on top of a Runner (its build, ports, source addresses and logging)."""

    def __init__(self, runner):
        self.r = runner

    def stack(self, wl, extra):
        r = self.r
        return TunedWshubStack(r.build, "/tmp/bench-wshub-%d" % r.port_base,
                               "bench-w%d" % r.port_base, r.port_base, r.port_base + 1,
                               workers_for(wl["n"]), 1, extra=extra)

    # -- W6 --

    def slow_run(self, wl, label, policy, stalled):
        m = int(wl["r"] * wl["seconds"])
        extra = dict(W6_CONF, slow_consumer=policy)
        st = self.stack(wl, extra)
        with st:
            args = ["fanout", "--url", st.ws_url, "--publish-url", st.publish_url,
                    "-n", str(wl["n"]), "-m", str(m), "-r", "%g" % wl["r"],
                    "-s", str(wl["size"]), "--connect-rate", "5000", "--settle", "1s",
                    "--drain-timeout", "15s", "--stalled", "%g" % stalled, "--cdf"]
            argv, out = self.r.wsbench(st, args, int(wl["seconds"] + 120))
            server = st.admin_stats()
        totals = server.get("totals", {})
        lat = out.get("latency_ms") or {}
        run = {"label": label, "policy": policy, "stalled": stalled, "command": argv,
               "stack": st.describe(), "result": out,
               "server_slow_consumers": totals.get("slow_consumers"),
               "server_closed": totals.get("closed"),
               "readers": g_(out, "deliveries", "subscribers"),
               "readers_lost": g_(out, "deliveries", "lost"),
               "p50": lat.get("p50"), "p99": lat.get("p99"), "p999": lat.get("p999"),
               "max": lat.get("max")}
        self.r.log("    %-22s readers %s lost %s  p50 %s p99 %s p99.9 %s max %s ms; server "
                   "slow_consumers %s" % (label, run["readers"], run["readers_lost"], run["p50"],
                                          run["p99"], run["p999"], run["max"],
                                          run["server_slow_consumers"]))
        return run

    def slow(self, wl):
        plan = [("baseline", "close", 0.0), ("stalled, close", "close", wl["stalled"]),
                ("stalled, skip", "skip", wl["stalled"])]
        if wl.get("baseline_twice"):
            plan.append(("baseline again", "close", 0.0))
        runs = []
        for label, policy, stalled in plan:
            try:
                runs.append(self.slow_run(wl, label, policy, stalled))
            except (RuntimeError, subprocess.SubprocessError, OSError, ValueError) as e:
                self.r.log("    %s: ERROR %s" % (label, e))
                runs.append({"label": label, "policy": policy, "stalled": stalled,
                             "error": str(e)})
        base = [x["p99"] for x in runs if x.get("stalled") == 0 and x.get("p99") is not None]
        summary = {"baseline_p99_ms": base,
                   "noise_p99_ms": round(max(base) - min(base), 3) if len(base) > 1 else None}
        for x in runs:
            if x.get("stalled") and x.get("p99") is not None and base:
                x["p99_vs_baseline"] = round(x["p99"] / (sum(base) / len(base)), 3)
        return runs, summary

    # -- W7 --

    def recovery(self, wl):
        """Kills a random worker every `every` s under 2,000 resuming clients; from wsbench's
        events, each killed worker's client's time from the SIGKILL to its resumed welcome."""
        kills_n, every, rate = wl["kills"], wl["every"], wl["r"]
        seconds = every * (kills_n + 1)
        m = int(rate * seconds)
        st = self.stack(wl, {})
        events = st.dir + "-w7-events.txt"
        kills = []
        with st:
            if os.path.exists(events):
                os.unlink(events)
            argv = [WSBENCH, "fanout", "--resume", "--url", st.ws_url, "--publish-url",
                    st.publish_url, "-n", str(wl["n"]), "-m", str(m), "-r", "%g" % rate,
                    "-s", "64", "--connect-rate", "5000", "--settle", "1s",
                    "--drain-timeout", "30s", "--events", events, "-v",
                    "--source-base", self.r.next_source(), "--timeout",
                    "%ds" % (seconds + 120)] + st.server_args()
            self.r.log("    $ " + " ".join(argv))
            errf = open(os.path.join(st.dir, "wsbench.err"), "w+")
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=errf, text=True)
            try:
                t0 = self._wait_stderr(errf, "publishing", proc, 120)
                rng = random.Random()
                for k in range(kills_n):
                    time.sleep(max(0.0, t0 + every * (k + 1) - time.monotonic()))
                    kills.append(self._kill_worker(st, rng))
                out, _ = proc.communicate(timeout=seconds + 180)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(10)
                errf.close()
        if not out.strip():
            raise RuntimeError("wsbench printed nothing (rc %s); see %s" % (
                proc.returncode, os.path.join(st.dir, "wsbench.err")))
        res = json.loads(out)
        per_kill, k2r, backoff, server_part = recovery_from_events(events, kills)
        rec = res.get("resume", {})
        summary = {
            "events_file": events,  # the raw record, left under /tmp (a few hundred KiB)
            "kills": len(kills), "clients_resumed_after_kill": len(k2r),
            "kill_to_resumed_ms": {"p50": _pct(k2r, 0.5), "p90": _pct(k2r, 0.9),
                                   "p99": _pct(k2r, 0.99), "max": _pct(k2r, 1.0)},
            "client_backoff_ms": {"p50": _pct(backoff, 0.5), "p99": _pct(backoff, 0.99)},
            "attempt_to_welcome_ms": {"p50": _pct(server_part, 0.5),
                                      "p99": _pct(server_part, 0.99),
                                      "max": _pct(server_part, 1.0)},
            "respawn_ms": [k["respawn_ms"] for k in kills],
            "per_kill": per_kill,
            "lost": g_(res, "deliveries", "lost"), "duplicated": g_(res, "deliveries",
                                                                     "duplicated"),
            "gapped": rec.get("gapped"), "attempts_failed": rec.get("attempts_failed_total"),
            "refused": g_(rec, "attempts_failed", "refused"),
        }
        self.r.log("    %d kills, %d clients resumed: SIGKILL -> resumed welcome p50 %s p99 %s "
                   "max %s ms (client backoff p50 %s ms; attempt -> welcome p99 %s ms); lost %s,"
                   " duplicated %s, failed attempts %s" % (
                       len(kills), len(k2r), summary["kill_to_resumed_ms"]["p50"],
                       summary["kill_to_resumed_ms"]["p99"], summary["kill_to_resumed_ms"]["max"],
                       summary["client_backoff_ms"]["p50"],
                       summary["attempt_to_welcome_ms"]["p99"], summary["lost"],
                       summary["duplicated"], summary["attempts_failed"]))
        return argv, res, summary, st.describe()

    def _wait_stderr(self, errf, text, proc, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            errf.seek(0)
            if text in errf.read():
                return time.monotonic()
            if proc.poll() is not None:
                raise RuntimeError("wsbench exited (rc %s) before '%s'" % (proc.returncode, text))
            time.sleep(0.05)
        raise RuntimeError("wsbench did not log '%s' within %d s" % (text, timeout))

    def _kill_worker(self, st, rng):
        pids = st.worker_pids()
        victim = rng.choice(pids)
        t_ns = time.monotonic_ns()
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            now = st.worker_pids()
            if victim not in now and len(now) >= st.workers:
                break
            time.sleep(0.005)
        respawn = round((time.monotonic_ns() - t_ns) / 1e6, 1)
        self.r.log("    SIGKILL worker %d; replaced after %.0f ms" % (victim, respawn))
        return {"pid": victim, "t_ns": t_ns, "respawn_ms": respawn}


def g_(d, *path):
    for k in path:
        if not isinstance(d, dict) or d.get(k) is None:
            return None
        d = d[k]
    return d


def recovery_from_events(path, kills):
    """From wsbench --events welcome lines (CLOCK_MONOTONIC ns, as time.monotonic_ns): for each
    client whose connection was lost without a close frame within 2 s after a SIGKILL, the time
    from that SIGKILL to its resumed welcome; also its backoff (loss -> attempt) and the
    server's part (attempt -> welcome). Returns (per kill summaries, all, backoff, server)."""
    k2r, backoff, server_part = [], [], []
    by_kill = {i: [] for i in range(len(kills))}
    with open(path) as f:
        for line in f:
            w = line.split()
            if w[0] != "welcome" or w[3] != "lost":
                continue
            t_lost, t_attempt, t_welcome = int(w[5]), int(w[6]), int(w[7])
            cands = [i for i, k in enumerate(kills) if 0 <= t_lost - k["t_ns"] < 2e9]
            if not cands:
                continue
            i = max(cands, key=lambda i: kills[i]["t_ns"])
            ms = (t_welcome - kills[i]["t_ns"]) / 1e6
            k2r.append(ms)
            by_kill[i].append(ms)
            backoff.append((t_attempt - t_lost) / 1e6)
            server_part.append((t_welcome - t_attempt) / 1e6)
    per_kill = [{"clients": len(v), "p50": _pct(v, 0.5), "p99": _pct(v, 0.99),
                 "max": _pct(v, 1.0), "respawn_ms": kills[i]["respawn_ms"]}
                for i, v in sorted(by_kill.items())]
    return per_kill, k2r, backoff, server_part


def write_resilience(out_dir, log):
    """resilience.md: W6 and W7 from their JSON (the standard SUMMARY.md covers W1-W4)."""
    recs = {}
    for name in ("w6-slow-consumers", "w7-recovery"):
        path = os.path.join(out_dir, report.result_file("wshub", name))
        if os.path.exists(path):
            with open(path) as f:
                recs[name] = json.load(f)
    if not recs:
        return None
    lines = ["# wshub: slow consumers and recovery (issue 6)", "",
             "Written by `bench/bench.py` from `wshub-w6-slow-consumers.json` and "
             "`wshub-w7-recovery.json` beside this file (each has the exact wsbench commands and "
             "their whole output). Client and server share the machine's cores; check the "
             "others' CPU figure of each run.", ""]
    w6 = recs.get("w6-slow-consumers")
    if w6:
        wl = w6["workload"]
        lines += ["## W6: readers' latency with and without 10% stalled clients", "",
                  "%d subscribers, %d-byte broadcasts at %g/s for %d s, `worker_buffer %s`; "
                  "stalled clients (wsbench `--stalled %g`) read nothing after the handshake, "
                  "with a 4 KiB receive buffer. Latency is over the readers only (POST to "
                  "receipt, through nginx, FastCGI and the worker)." % (
                      wl["n"], wl["size"], wl["r"], wl["seconds"], W6_CONF["worker_buffer"],
                      wl["stalled"]), "",
                  "| run | policy | readers | lost | p50 ms | p99 ms | p99.9 ms | max ms | "
                  "p99 / baseline | server slow_consumers | others' CPU |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for x in w6.get("runs", []):
            if x.get("error"):
                lines.append("| %s | %s | error: %s |" % (x["label"], x["policy"], x["error"]))
                continue
            r = x["result"]
            others = g_(r, "host", "others_cpu_s")
            phase = r.get("phase_s") or 0
            lines.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                x["label"], x["policy"], x["readers"], x["readers_lost"], x["p50"], x["p99"],
                x["p999"], x["max"], x.get("p99_vs_baseline", "–"),
                x.get("server_slow_consumers"),
                "%.0f%%" % (100 * others / phase) if others is not None and phase else "–"))
        sm = w6.get("summary", {})
        lines += ["", "Baseline p99 over its runs: %s ms (spread %s ms: the noise)." % (
            sm.get("baseline_p99_ms"), sm.get("noise_p99_ms")), ""]
    w7 = recs.get("w7-recovery")
    if w7 and w7.get("summary"):
        sm, wl = w7["summary"], w7["workload"]
        k = sm["kill_to_resumed_ms"]
        min_s = g_(w7, "result", "params", "reconnect_min_s") or 0.25
        lines += ["## W7: from a worker's SIGKILL to its clients resumed", "",
                  "%d resuming wshub.v1 clients (wsbench `--resume`: the first attempt after a "
                  "lost connection waits %g..%g ms, uniformly), broadcasts at %g/s, %d workers; "
                  "a random worker killed with SIGKILL every %d s, %d times. Per client of a "
                  "killed worker: SIGKILL to the welcome of its resumed connection (wsbench "
                  "`--events`), which includes that wait." % (
                      wl["n"], 500 * min_s, 1000 * min_s, wl["r"], w7["stack"]["workers"],
                      wl["every"], sm["kills"]), "",
                  "| clients resumed | p50 ms | p90 ms | p99 ms | max ms | client backoff p50 ms "
                  "| attempt to welcome p99 ms | respawn ms | lost | duplicated | gapped | "
                  "failed attempts (refused) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|",
                  "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s (%s) |" % (
                      sm["clients_resumed_after_kill"], k["p50"], k["p90"], k["p99"], k["max"],
                      sm["client_backoff_ms"]["p50"], sm["attempt_to_welcome_ms"]["p99"],
                      sm["respawn_ms"], sm["lost"], sm["duplicated"], sm["gapped"],
                      sm["attempts_failed"], sm["refused"]), "",
                  "Per kill: " + "; ".join("%d clients, p99 %s ms" % (p["clients"], p["p99"])
                                           for p in sm["per_kill"]) + ".", ""]
    path = os.path.join(out_dir, "resilience.md")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    log("wrote %s" % path)
    return path


def search_rate(trial, start, max_trials, bisect):
    """Doubles the rate from `start` while trial(rate) passes (halves it while it fails) until
    the two sides are found or max_trials ran, then bisects geometrically between the best
    pass and the lowest failure `bisect` more times. Returns (best passing rate or None,
    lowest failing rate or None, rates tried)."""
    tried = []

    def run(rate):
        tried.append(rate)
        return trial(rate)

    lo = hi = None
    rate = start
    while len(tried) < max_trials:
        if run(rate):
            lo = rate
            if hi is not None:
                break
            rate *= 2
        else:
            hi = rate
            if lo is not None:
                break
            rate /= 2
            if rate < start / 64:
                break
    for _ in range(bisect):
        if lo is None or hi is None:
            break
        rate = round(math.sqrt(lo * hi), 1)
        if rate <= lo or rate >= hi:
            break
        if run(rate):
            lo = rate
        else:
            hi = rate
    return lo, hi, tried


def capacity_pass(out, rate):
    """Did a W4 trial sustain its rate? Zero loss, p99 within bound, every POST accepted at
    (close to) the offered rate, every subscriber connected and still there."""
    why = []
    if out.get("aborted"):
        why.append("aborted: %s" % out["aborted"])
    c = out.get("connections", {})
    if c.get("ok") != c.get("attempted") or c.get("survived") != c.get("ok"):
        why.append("connections %s/%s ok, %s survived" % (c.get("ok"), c.get("attempted"),
                                                          c.get("survived")))
    p = out.get("publish", {})
    if p.get("ok") != p.get("sent"):
        why.append("%s of %s POSTs accepted" % (p.get("ok"), p.get("sent")))
    if (p.get("achieved_rate") or 0) < 0.95 * rate:
        why.append("publisher reached %.1f/s" % (p.get("achieved_rate") or 0))
    d = out.get("deliveries", {})
    if d.get("lost", 1) != 0:
        why.append("lost %s" % d.get("lost"))
    p99 = (out.get("latency_ms") or {}).get("p99")
    if p99 is None or p99 > W4_P99_MS:
        why.append("p99 %s ms" % p99)
    return not why, why


# ---- the machine ---------------------------------------------------------------------------

def _cmd(argv):
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return (r.stdout + r.stderr).strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def machine(build, commit=None):
    info = {"cores": CORES, "build_dir": os.path.abspath(build)}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            info["ram_gib"] = round(int(f.readline().split()[1]) / 1048576, 1)
        with open("/etc/debian_version") as f:
            info["debian"] = f.read().strip()
    except OSError:
        pass
    info["kernel"] = os.uname().release
    info["wshub"] = _cmd([os.path.join(build, "wshub"), "--version"]).splitlines()[:2]
    info["libwebsockets"] = _cmd(["dpkg-query", "-W", "-f", "${Version}",
                                  "libwebsockets17"]) or _cmd(["pkg-config", "--modversion",
                                                               "libwebsockets"])
    info["nginx"] = _cmd(["nginx", "-v"]).replace("nginx version: nginx/", "")
    info["nchan"] = _cmd(["dpkg-query", "-W", "-f", "${Version}", "libnginx-mod-nchan"]) or None
    info["git_commit"] = _cmd(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"])
    # Untracked files count too: a new source file the build compiled is part of what ran.
    r = subprocess.run(["git", "-C", ROOT, "status", "--porcelain"], capture_output=True,
                       text=True)
    files = [l[3:] for l in r.stdout.splitlines() if len(l) > 3]
    info["git_dirty"] = bool(files)
    info["git_dirty_files"] = files
    if commit:
        info["checkout_commit"] = info["git_commit"]
        info["git_commit"] = _cmd(["git", "-C", ROOT, "rev-parse", "--short", commit])
        info["git_dirty"], info["git_dirty_files"] = False, []
        info["build_note"] = ("built from a clean export of %s (git archive), not from the "
                              "checkout at %s" % (info["git_commit"], info["checkout_commit"]))
    info["fd_limit"] = stacks.fd_hard_limit()
    for k in ("net.ipv4.ip_local_port_range", "net.core.somaxconn", "net.ipv4.tcp_tw_reuse"):
        info[k] = _cmd(["sysctl", "-n", k]).replace("\t", " ")
    return info


def loadavg():
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def busiest_others(limit=5):
    """The processes using the most CPU right now (ps), for the record of a noisy machine."""
    out = _cmd(["ps", "-eo", "pcpu,comm", "--sort=-pcpu", "--no-headers"])
    return [l.strip() for l in out.splitlines()[:limit]]


def wait_quiet(limit_s, threshold, log):
    deadline = time.monotonic() + limit_s
    while True:
        la = loadavg()
        if la[0] < threshold:
            log("machine quiet: load %.2f %.2f %.2f" % tuple(la))
            return True
        if time.monotonic() >= deadline:
            log("machine still busy after %d s (load %.2f); running anyway" % (limit_s, la[0]))
            return False
        log("waiting for a quiet machine: load %.2f %.2f %.2f; busiest: %s" %
            (la[0], la[1], la[2], "; ".join(busiest_others(3))))
        time.sleep(30)


# ---- dependencies --------------------------------------------------------------------------

def ensure_packages(pkgs, log):
    """apt-get installs what is missing (never starts services: Debian's policy-rc.d and
    invoke-rc.d decide that; the packages here ship no service of their own)."""
    missing = [p for p in pkgs if subprocess.run(
        ["dpkg-query", "-W", "-f", "${Status}", p], capture_output=True,
        text=True).stdout.strip() != "install ok installed"]
    if not missing:
        return True
    if os.geteuid() != 0:
        log("missing packages %s: run  sudo apt-get install --no-install-recommends %s" %
            (" ".join(missing), " ".join(missing)))
        return False
    log("installing %s" % " ".join(missing))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    r = subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends"] + missing,
                       env=env, capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        log("apt-get install failed:\n" + r.stdout[-1500:] + r.stderr[-1500:])
        return False
    return True


# ---- main ----------------------------------------------------------------------------------

def run_one(runner, wl, out_dir, log):
    """Runs workload wl on a fresh stack; writes <server>-<name>.json and returns the record."""
    rec = {"name": wl["name"], "server": runner.server, "workload": {
        k: v for k, v in wl.items() if k != "servers"}, "load_before": loadavg(),
        "started_at": datetime.datetime.now().isoformat(timespec="seconds")}
    st = runner.stack(wl)
    log("  %s %s: %d workers" % (runner.server, wl["name"], st.workers))
    t0 = time.monotonic()
    try:
        if wl["kind"] == "slow":  # W6 and W7 start stacks of their own settings, run by run
            rec["stack"] = st.describe()
            rec["stack"]["conf_extra"] = dict(W6_CONF, slow_consumer="close and skip")
            rec["runs"], rec["summary"] = ResilienceRunner(runner).slow(wl)
            rec["trials"] = [x for x in rec["runs"] if x.get("result")]
            rec["result"] = next((x["result"] for x in rec["runs"]
                                  if x.get("stalled") and x.get("result")), None)
        elif wl["kind"] == "recovery":
            (rec["command"], rec["result"], rec["summary"],
             rec["stack"]) = ResilienceRunner(runner).recovery(wl)
        else:
            with st:
                rec["stack"] = st.describe()
                if wl["kind"] == "hold":
                    rec["command"], rec["result"] = runner.hold(st, wl)
                elif wl["kind"] == "fanout":
                    rec["command"], rec["result"] = runner.fanout(st, wl)
                elif wl["kind"] == "deflate":  # W5: plain and compressing subscribers in turn
                    rec["runs"], rec["summary"] = deflate_bench.run(runner, st, wl)
                    rec["trials"] = rec["runs"]
                    rec["result"] = rec["runs"][-1]["result"]
                elif wl["kind"] == "channels":  # W8: fixed rate, then the capacity search
                    rec.update(channels_bench.run(runner, st, wl, search_rate))
                else:
                    rec["trials"], best = runner.capacity(st, wl)
                    rec["best"] = None if best is None else {k: best[k] for k in (
                        "rate", "offered_per_sec")}
                    rec["result"] = best["result"] if best else None
    except (RuntimeError, subprocess.SubprocessError, OSError, ValueError) as e:
        rec["error"] = str(e)
        log("    ERROR: %s" % e)
    rec["wall_s"] = round(time.monotonic() - t0, 1)
    rec["load_after"] = loadavg()
    mark_noise(rec)
    if rec.get("noisy"):
        rec["busiest_processes"] = busiest_others()
    path = os.path.join(out_dir, report.result_file(runner.server, wl["name"]))
    with open(path, "w") as f:
        json.dump(rec, f, indent=1)
        f.write("\n")
    log("    %s" % report.one_line(rec))
    return rec


def mark_noise(rec):
    """Noisy when other processes used more than 30% of a core during a measured phase."""
    results = [t["result"] for t in rec.get("trials", [])] or [rec.get("result")]
    fracs = []
    for r in results:
        if r and r.get("phase_s"):
            fracs.append(r["host"]["others_cpu_s"] / r["phase_s"])
    rec["others_cpu_frac"] = round(max(fracs), 3) if fracs else None
    rec["noisy"] = bool(fracs) and max(fracs) > NOISY_OTHERS_FRAC


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--compare", action="store_true", help="also run nginx + Nchan")
    ap.add_argument("--quick", action="store_true", default=os.environ.get("QUICK", "") not in
                    ("", "0", "no"), help="reduced set (also QUICK=1)")
    ap.add_argument("--only", help="comma-separated workload name prefixes")
    ap.add_argument("--out", help="results directory (default bench/results[/quick][/compare])")
    ap.add_argument("--build", default=os.environ.get("WSHUB_BUILD", os.path.join(ROOT, "build")))
    ap.add_argument("--commit", metavar="REV",
                    help="the build was made from this clean commit elsewhere (git archive REV), "
                    "not from this checkout: record REV instead of this tree's state")
    ap.add_argument("--port-base", type=int, default=19700)
    ap.add_argument("--instance-prefix", default="bench-w",
                    help="wshub instance name: PREFIX + the port base (default bench-w)")
    ap.add_argument("--wait-quiet", type=int, default=0, metavar="SECONDS",
                    help="wait up to SECONDS for the 1-minute load average to drop below 0.7")
    ap.add_argument("--w1-hold", type=int, metavar="SECONDS",
                    help="hold W1's connections this long instead (600: issue 3's 10 minutes)")
    ap.add_argument("--summarize", metavar="DIR", help="only rebuild SUMMARY.md and the charts")
    args = ap.parse_args()

    def log(msg):
        print("bench: " + msg, flush=True)

    if args.summarize:
        report.write_summary(args.summarize, log)
        write_resilience(args.summarize, log)
        deflate_bench.write_md(args.summarize, log)
        channels_bench.write_md(args.summarize, log)
        return 0
    out = args.out or os.path.join(HERE, "results", *(["quick"] if args.quick else []),
                                   *(["compare"] if args.compare else []))
    os.makedirs(out, exist_ok=True)
    if not os.access(WSBENCH, os.X_OK):
        log("%s missing: make wsbench" % WSBENCH)
        return 2
    servers = ["wshub"] + (["nchan"] if args.compare else [])
    ensure_packages(["gnuplot-nox"] + (["libnginx-mod-nchan"] if args.compare else []), log)
    if args.compare and not os.path.exists(stacks.NCHAN_MODULE):
        log("no Nchan module at %s; cannot compare" % stacks.NCHAN_MODULE)
        return 2
    if args.wait_quiet:
        wait_quiet(args.wait_quiet, 0.7, log)
    wls = workloads(args.quick)
    for w in wls:
        if w["kind"] == "hold" and args.w1_hold:
            w["hold"] = args.w1_hold
    if args.only:
        prefixes = args.only.split(",")
        wls = [w for w in wls if any(w["name"].startswith(p) for p in prefixes)]
    meta = {"machine": machine(args.build, args.commit), "quick": args.quick,
            "servers": servers,
            "started_at": datetime.datetime.now().isoformat(timespec="seconds"),
            "load_at_start": loadavg(), "busiest_at_start": busiest_others(),
            "workloads": [w["name"] for w in wls], "not_run": {}}
    m = meta["machine"]
    log("%s, %d cores, %s GiB, kernel %s; wshub %s%s; load %s" % (
        m.get("cpu"), m["cores"], m.get("ram_gib"), m["kernel"], m["git_commit"],
        " (uncommitted changes)" if m["git_dirty"] else "", meta["load_at_start"]))
    runners = {s: Runner(s, args.build, args.port_base, log) for s in servers}
    for r in runners.values():
        r.instance_prefix = args.instance_prefix
    if "nchan" not in runners and any(w["kind"] == "deflate" for w in wls):
        if os.path.exists(stacks.NCHAN_MODULE):  # W5 is defined against Nchan's deflate
            runners["nchan"] = Runner("nchan", args.build, args.port_base, log)
        else:
            meta["not_run"]["w5-deflate-10k nchan"] = "no Nchan module at %s" % (
                stacks.NCHAN_MODULE)
    # SIGTERM as Ctrl-C: the stack of the running workload is stopped on the way out.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    t0 = time.monotonic()
    try:
        for wl in wls:
            for s in (runners if wl["kind"] == "deflate" else servers):
                if s in wl.get("servers", servers) or wl["kind"] == "deflate":
                    run_one(runners[s], wl, out, log)
    except KeyboardInterrupt:
        log("interrupted; the summary covers what ran")
    meta["finished_at"] = datetime.datetime.now().isoformat(timespec="seconds")
    meta["wall_s"] = round(time.monotonic() - t0, 1)
    meta["load_at_end"] = loadavg()
    with open(os.path.join(out, "run.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    report.write_summary(out, log)
    write_resilience(out, log)
    deflate_bench.write_md(out, log)
    channels_bench.write_md(out, log)
    log("done in %.0f s: %s" % (meta["wall_s"], os.path.join(out, "SUMMARY.md")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
