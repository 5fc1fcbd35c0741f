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
    W5  (permessage-deflate) is not run: wshub has no compression yet.

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
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

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
    ]


class Runner:
    """Runs workloads against one kind of server; knows ports, run dirs and the build."""

    def __init__(self, server, build, port_base, log):
        self.server = server
        self.build = build
        self.port_base = port_base
        self.log = log
        self.source_k = 0   # rotates wsbench's source addresses: 127.K.0.x per run

    def stack(self, wl):
        workers = workers_for(wl["n"])
        if self.server == "wshub":
            # The front nginx carries the POSTs; when it also proxies the subscribers, it gets
            # as many workers as wshub (each proxied client costs it two descriptors).
            nginx_workers = workers if wl.get("proxied") else 1
            # Directory and instance follow the ports, so runs on other --port-base values
            # can go side by side.
            return stacks.WshubStack(self.build, "/tmp/bench-wshub-%d" % self.port_base,
                                     "bench-w%d" % self.port_base, self.port_base,
                                     self.port_base + 1, workers, nginx_workers)
        return stacks.NchanStack("/tmp/bench-nchan-%d" % self.port_base, self.port_base + 10,
                                 workers)

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
        with st:
            rec["stack"] = st.describe()
            if wl["kind"] == "hold":
                rec["command"], rec["result"] = runner.hold(st, wl)
            elif wl["kind"] == "fanout":
                rec["command"], rec["result"] = runner.fanout(st, wl)
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
            "workloads": [w["name"] for w in wls],
            "not_run": {"w5-compression": "wshub has no permessage-deflate yet (issue 3, W5)"}}
    m = meta["machine"]
    log("%s, %d cores, %s GiB, kernel %s; wshub %s%s; load %s" % (
        m.get("cpu"), m["cores"], m.get("ram_gib"), m["kernel"], m["git_commit"],
        " (uncommitted changes)" if m["git_dirty"] else "", meta["load_at_start"]))
    runners = {s: Runner(s, args.build, args.port_base, log) for s in servers}
    # SIGTERM as Ctrl-C: the stack of the running workload is stopped on the way out.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    t0 = time.monotonic()
    try:
        for wl in wls:
            for s in servers:
                if s in wl.get("servers", servers):
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
    log("done in %.0f s: %s" % (meta["wall_s"], os.path.join(out, "SUMMARY.md")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
