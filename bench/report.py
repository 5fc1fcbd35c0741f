"""report.py -- SUMMARY.md and the charts from a results directory of bench.py.

Reads run.json (the machine and the run) and every <server>-<workload>.json, and writes:

  SUMMARY.md           the machine, issue 3's targets with what was measured and whether each is
                       met, one table per workload kind, the W4 search trial by trial, the
                       wshub/Nchan ratios when both ran, and which runs a busy machine disturbed
  latency-cdf.png      CDF of delivery latency for every fan-out run (gnuplot, log x)
  throughput.png       W4: delivered vs offered deliveries per second, and p99, per trial
  *.dat                the data behind the charts

Everything is derived from the JSON, so `bench.py --summarize DIR` rebuilds it without running
anything. Ratios are wshub / Nchan of the same figure from the same run: below 1 means wshub is
lower (better for latency, memory and CPU; worse for throughput).
"""
import glob
import json
import os
import shutil
import subprocess

SERVERS = ("wshub", "nchan")
LABEL = {"wshub": "wshub", "nchan": "nginx+Nchan"}


def result_file(server, name):
    return "%s-%s.json" % (server, name)


def load(out_dir):
    meta = {}
    try:
        with open(os.path.join(out_dir, "run.json")) as f:
            meta = json.load(f)
    except OSError:
        pass
    recs = {}
    for path in sorted(glob.glob(os.path.join(out_dir, "*-*.json"))):
        with open(path) as f:
            rec = json.load(f)
        if "server" in rec and "name" in rec:
            recs[(rec["server"], rec["name"])] = rec
    return meta, recs


# ---- figures out of one record ---------------------------------------------------------

def g(d, *path, default=None):
    for k in path:
        if not isinstance(d, dict) or k not in d or d[k] is None:
            return default
        d = d[k]
    return d


def fmt(v, unit="", digits=None):
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float) or digits is not None:
        if digits is None:
            digits = 0 if abs(v) >= 100 else 1 if abs(v) >= 10 else 2
        if digits == 0:
            return "{:,.0f}{}".format(v, unit)
        return "%.*f%s" % (digits, v, unit)
    return "{:,}{}".format(v, unit)


def kb(v):
    return None if v is None else v / 1000.0


def one_line(rec):
    if rec.get("error"):
        return "error: " + rec["error"]
    r = rec.get("result")
    if rec["workload"]["kind"] == "capacity":
        if not rec.get("best"):
            return "no rate passed"
        return "best %g broadcasts/s = %.0f deliveries/s, p99 %s ms, server %s us/delivery" % (
            rec["best"]["rate"], g(r, "delivered_per_sec", default=0),
            g(r, "latency_ms", "p99"), g(r, "server", "cpu_s", "us_per_delivery"))
    if rec["workload"]["kind"] == "deflate":  # W5 (bench/deflate_bench.py)
        return "CPU per broadcast %s -> %s ms (x%s), wire bytes per delivery %s -> %s" % (
            g(rec, "summary", "plain_cpu_ms_per_broadcast"),
            g(rec, "summary", "deflate_cpu_ms_per_broadcast"), g(rec, "summary", "cpu_ratio"),
            g(rec, "summary", "plain_wire_bytes_per_delivery"),
            g(rec, "summary", "deflate_wire_bytes_per_delivery"))
    if rec["workload"]["kind"] == "hold":
        c = r["connections"]
        return "%d/%d connected, %d survived, %s bytes PSS per connection" % (
            c["ok"], c["attempted"], c["survived"], g(r, "server", "memory",
                                                       "per_connection_bytes"))
    return "lost %s, p50 %s p99 %s max %s ms, %.0f delivered/s, server %s us/delivery%s" % (
        g(r, "deliveries", "lost"), g(r, "latency_ms", "p50"), g(r, "latency_ms", "p99"),
        g(r, "latency_ms", "max"), g(r, "delivered_per_sec", default=0),
        g(r, "server", "cpu_s", "us_per_delivery"),
        " (client-limited)" if g(r, "client", "client_limited") else "")


def dropped(r):
    return sum(g(r, "connections", "dropped", default={}).values())


# ---- targets -------------------------------------------------------------------------------

def _first(recs, server, prefix):
    for (s, name), rec in sorted(recs.items()):
        if s == server and name.startswith(prefix) and not rec.get("error"):
            return rec
    return None


def targets(recs):
    """Issue 3's targets: (label, {server: (value text, number)}, target text, test); test
    returns True (met), False (missed) or None (this run cannot tell)."""
    rows = []

    def per_server(fn):
        return {s: fn(s) for s in SERVERS}

    def w1_pss(s):
        vals = [g(rec["result"], "server", "memory", "per_connection_bytes")
                for (srv, name), rec in recs.items()
                if srv == s and name.startswith("w1-") and rec.get("result")]
        vals = [v for v in vals if v is not None]
        return max(vals) if vals else None

    def w1_text(s):
        v = w1_pss(s)
        return (None if v is None else fmt(kb(v), " KB", 2), v)

    rows.append(("W1 server memory per idle connection (PSS, worst W1 run)", per_server(w1_text),
                 "≤ 1.5 KB", lambda v: v is not None and v <= 1500))

    def w1_100k(s):
        rec = _first(recs, s, "w1-hold-100k")
        if rec is None or not rec.get("result"):
            return (None, None)
        r = rec["result"]
        c = r["connections"]
        held = c["ok"] == 100000 and c["survived"] == 100000 and dropped(r) == 0
        return ("%s of %s held %g s, %d dropped" % (
            fmt(c["survived"]), fmt(c["attempted"]), r["params"]["hold_s"], dropped(r)),
            (r["params"]["hold_s"], held))

    # make bench holds 60 s; the 10 minutes of the target take --w1-hold 600.
    rows.append(("W1 100,000 held with none dropped", per_server(w1_100k),
                 "100,000 held 10 min, none dropped",
                 lambda v: None if v is None else (v[1] if v[0] >= 600 or not v[1] else None)))

    def lat(prefix, key):
        def f(s):
            rec = _first(recs, s, prefix)
            v = g(rec, "result", "latency_ms", key) if rec else None
            return (None if v is None else fmt(v, " ms"), v)
        return f

    rows.append(("W2 p99 at 10k subscribers, 10/s", per_server(lat("w2-fanout-10k", "p99")),
                 "≤ 60 ms", lambda v: v is not None and v <= 60))
    rows.append(("W2 p99 at 1k subscribers, 10/s", per_server(lat("w2-fanout-1k", "p99")),
                 "≤ 8 ms", lambda v: v is not None and v <= 8))
    rows.append(("W2 p50 at 1k subscribers, 10/s", per_server(lat("w2-fanout-1k", "p50")),
                 "≤ 3 ms", lambda v: v is not None and v <= 3))

    def w3(s):
        rec = _first(recs, s, "w3-")
        if rec is None or not rec.get("result"):
            return (None, None)
        r = rec["result"]
        lost, p99 = g(r, "deliveries", "lost"), g(r, "latency_ms", "p99")
        subs = g(r, "deliveries", "subscribers", default=0)
        ok, sent = g(r, "publish", "ok"), g(r, "publish", "sent")
        unanswered = "" if ok == sent else ", only %s of %s POSTs answered" % (ok, sent)
        return ("%s subscribers: lost %s, p99 %s%s" % (fmt(subs), fmt(lost), fmt(p99, " ms"),
                                                      unanswered),
                (lost if ok == sent else None, p99, subs))
    # A reduced (QUICK) W3 says nothing about 50,000: no verdict.
    rows.append(("W3 fan-out at 50k subscribers (5/s)", per_server(w3),
                 "zero loss, p99 ≤ 400 ms",
                 lambda v: None if v is None or v[2] < 50000 else
                 (v[0] == 0 and v[1] is not None and v[1] <= 400)))

    def w4(key):
        def f(s):
            rec = _first(recs, s, "w4-")
            r = rec.get("result") if rec else None
            if r is None:
                return ("no rate passed" if rec else None, None)
            v = g(r, *key)
            if v is None:
                return (None, None)
            if key[0] == "delivered_per_sec":
                return ("%s/s (%g broadcasts/s)" % (fmt(v, digits=0), rec["best"]["rate"]), v)
            return (fmt(v, " µs"), v)
        return f
    rows.append(("W4 sustained deliveries/s (zero loss, p99 ≤ 250 ms)",
                 per_server(w4(("delivered_per_sec",))), "≥ 500,000/s",
                 lambda v: v is not None and v >= 500000))
    def w4_saturated(s):
        rec = _first(recs, s, "w4-")
        trials = rec.get("trials") if rec else None
        if not trials:
            return (None, None)
        top = max(trials, key=lambda t: t["rate"])
        v = g(top, "result", "server", "cpu_s", "us_per_delivery")
        if v is None:
            return (None, None)
        text = "%s at %g broadcasts/s (%s, p99 %s)" % (
            fmt(v, " µs"), top["rate"], "passed" if top["pass"] else "failed",
            fmt(g(top, "result", "latency_ms", "p99"), " ms"))
        best = rec.get("result")
        if best is not None and rec.get("best") and rec["best"]["rate"] != top["rate"]:
            text += "; %s at the best passing rate" % fmt(
                g(best, "server", "cpu_s", "us_per_delivery"), " µs")
        return (text, v)
    rows.append(("Server CPU per delivery at saturation (W4 highest-rate trial)",
                 per_server(w4_saturated), "≤ 3 µs", lambda v: v is not None and v <= 3))
    return rows


# ---- Markdown ------------------------------------------------------------------------------

def _machine_md(meta):
    m = meta.get("machine", {})
    lines = ["## Machine", ""]
    lines.append("- CPU: %s, %s cores; RAM %s GiB; kernel %s; Debian %s" % (
        m.get("cpu"), m.get("cores"), m.get("ram_gib"), m.get("kernel"), m.get("debian")))
    dirs = sorted({f.split("/")[0] + ("/" if "/" in f else "")
                   for f in m.get("git_dirty_files", [])})
    dirty = " plus uncommitted changes to %d files in %s (list in run.json)" % (
        len(m.get("git_dirty_files", [])), ", ".join(dirs)) if m.get("git_dirty") \
        else " (clean tree)"
    lines.append("- wshub: git %s%s; %s" % (m.get("git_commit"), dirty,
                                             "; ".join(m.get("wshub") or [])))
    if m.get("build_note"):
        lines.append("- Build: %s (%s)" % (m["build_note"], m.get("build_dir")))
    lines.append("- libwebsockets %s; nginx %s; Nchan (libnginx-mod-nchan) %s" % (
        m.get("libwebsockets"), m.get("nginx"), m.get("nchan") or "not installed"))
    lines.append("- open-files limit %s per process; ip_local_port_range %s; somaxconn %s" % (
        m.get("fd_limit"), m.get("net.ipv4.ip_local_port_range"),
        m.get("net.core.somaxconn")))
    lines.append("- Client (tools/wsbench) on the same machine, over loopback.")
    lines.append("- Load average (1/5/15 min) at start %s, at end %s; busiest processes at "
                 "start: %s" % (meta.get("load_at_start"), meta.get("load_at_end"),
                                "; ".join(meta.get("busiest_at_start", []))))
    return lines


def _targets_md(recs, servers):
    both = "nchan" in servers
    head = "| target (issue 3) | wshub | met |" + (" nginx+Nchan |" if both else "")
    lines = ["## Targets", "", head,
             "|---|---|---|" + ("---|" if both else "")]
    for label, vals, target, test in targets(recs):
        wtext, wnum = vals["wshub"]
        verdict = None if wtext is None else test(wnum)
        met = "–" if verdict is None else ("**yes**" if verdict else "no")
        row = "| %s — target %s | %s | %s |" % (label, target, wtext or "not run", met)
        if both:
            row += " %s |" % (vals["nchan"][0] or "not run")
        lines.append(row)
    return lines


def _noise(rec):
    if rec.get("others_cpu_frac") is None:
        return "–"
    t = "%.0f%%" % (100 * rec["others_cpu_frac"])
    return "**%s noisy**" % t if rec.get("noisy") else t


def _ordered(recs, kind):
    """Records of one kind, workload by workload, wshub first."""
    return sorted(((k, v) for k, v in recs.items() if v["workload"]["kind"] == kind),
                  key=lambda kv: (kv[0][1], SERVERS.index(kv[0][0])))


def _hold_md(recs, servers):
    rows = _ordered(recs, "hold")
    if not rows:
        return []
    lines = ["## W1 hold", "",
             "| run | server | workers | connected | survived | dropped | connect s | "
             "server PSS after | PSS per connection | RSS per connection | others' CPU |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for (s, name), rec in rows:
        r = rec.get("result")
        if not r:
            lines.append("| %s | %s | | error: %s |" % (name, LABEL[s], rec.get("error")))
            continue
        c = r["connections"]
        mem = r["server"]["memory"]
        lines.append("| %s | %s | %s | %s/%s | %s | %s | %s | %s MB | %s bytes | %s bytes | %s |"
                     % (name, LABEL[s], rec["stack"]["workers"], fmt(c["ok"]),
                        fmt(c["attempted"]), fmt(c["survived"]), dropped(r),
                        fmt(c["connect_s"]), fmt(mem["after"]["pss_kb"] / 1024.0, digits=1),
                        fmt(mem["per_connection_bytes"], digits=0),
                        fmt(mem["per_connection_rss_bytes"], digits=0), _noise(rec)))
    return lines


def _fanout_md(recs, servers):
    rows = _ordered(recs, "fanout")
    if not rows:
        return []
    lines = ["## W2, W3 fan-out (64-byte payloads)", "",
             "Latency: POST written by the publisher to the subscriber's read, through the whole "
             "stack (wshub: nginx, FastCGI, wshub-admin, ring, worker).", "",
             "| run | server | workers | subscribers | POSTs answered 2xx | POST answer p50 ms "
             "| lost | dup | p50 ms | p90 | p99 | p99.9 | max | delivered/s | server µs/delivery "
             "| client µs/delivery | client-limited | others' CPU |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (s, name), rec in rows:
        r = rec.get("result")
        if not r:
            lines.append("| %s | %s | | error: %s |" % (name, LABEL[s], rec.get("error")))
            continue
        lat, d = r["latency_ms"], r["deliveries"]
        lines.append("| %s | %s | %s | %s | %s/%s | %s | %s | %s | %s | %s | %s | %s | %s | %s | "
                     "%s | %s | %s | %s |"
                     % (name, LABEL[s], rec["stack"]["workers"], fmt(d["subscribers"]),
                        g(r, "publish", "ok"), g(r, "publish", "sent"),
                        fmt(g(r, "publish", "answer_ms", "p50")),
                        fmt(d["lost"]), fmt(d["duplicated"]), fmt(lat["p50"]), fmt(lat["p90"]),
                        fmt(lat["p99"]), fmt(lat["p999"]), fmt(lat["max"]),
                        fmt(r["delivered_per_sec"], digits=0),
                        fmt(g(r, "server", "cpu_s", "us_per_delivery")),
                        fmt(g(r, "client", "us_per_delivery")),
                        fmt(r["client"]["client_limited"]), _noise(rec)))
    return lines


def _capacity_md(recs, servers):
    rows = _ordered(recs, "capacity")
    if not rows:
        return []
    lines = ["## W4 capacity search (10,000 subscribers)", "",
             "Doubling from 10 broadcasts/s until a trial fails, then bisection. A trial passes "
             "with zero loss, p99 ≤ 250 ms, every POST accepted at ≥ 95% of the rate and every "
             "subscriber connected throughout.", "",
             "| server | broadcasts/s | offered deliveries/s | delivered/s | p50 ms | p99 ms | "
             "server µs/delivery | client µs/delivery | client-limited | others' CPU s | "
             "verdict |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for (s, name), rec in rows:
        r = rec.get("result")
        us, cus = g(r, "server", "cpu_s", "us_per_delivery"), g(r, "client", "us_per_delivery")
        cores = g(r, "host", "cores")
        if us and cus and cores:
            notes.append("%s at its best rate: %.1f µs of server CPU and %.1f µs of client CPU "
                         "per delivery. With the client on the same %d cores, the machine "
                         "tops out near %s deliveries/s; the server alone, with every core, "
                         "near %s/s." % (LABEL[s], us, cus, cores,
                                         fmt(cores * 1e6 / (us + cus), digits=0),
                                         fmt(cores * 1e6 / us, digits=0)))
    for (s, name), rec in rows:
        if rec.get("error"):
            lines.append("| %s | error: %s |" % (LABEL[s], rec["error"]))
        for t in rec.get("trials", []):
            r = t["result"]
            lines.append("| %s | %g | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                LABEL[s], t["rate"], fmt(t["offered_per_sec"], digits=0),
                fmt(r.get("delivered_per_sec"), digits=0), fmt(g(r, "latency_ms", "p50")),
                fmt(g(r, "latency_ms", "p99")), fmt(g(r, "server", "cpu_s", "us_per_delivery")),
                fmt(g(r, "client", "us_per_delivery")), fmt(g(r, "client", "client_limited")),
                fmt(g(r, "host", "others_cpu_s")),
                "pass" if t["pass"] else "fail: " + "; ".join(t["why"])))
    for n in notes:
        lines += ["", n]
    return lines


def ratio_rows(recs):
    """(figure, wshub, nchan, ratio) for every workload both servers ran."""
    out = []
    figures = {
        "hold": [("PSS per connection (bytes)", ("server", "memory", "per_connection_bytes"))],
        "fanout": [("p50 ms", ("latency_ms", "p50")), ("p99 ms", ("latency_ms", "p99")),
                   ("max ms", ("latency_ms", "max")),
                   ("server µs/delivery", ("server", "cpu_s", "us_per_delivery"))],
        "capacity": [("sustained deliveries/s", ("delivered_per_sec",)),
                     ("server µs/delivery at that rate", ("server", "cpu_s",
                                                         "us_per_delivery"))],
    }
    names = sorted({n for (s, n) in recs})
    for name in names:
        w, n = recs.get(("wshub", name)), recs.get(("nchan", name))
        if not w or not n:
            continue
        for label, path in figures.get(w["workload"]["kind"], []):  # W5: deflate.md
            a, b = g(w, "result", *path), g(n, "result", *path)
            ratio = a / b if a is not None and b else None
            out.append((name, label, a, b, ratio))
    return out


def _ratios_md(recs):
    rows = ratio_rows(recs)
    if not rows:
        return []
    lines = ["## wshub / Nchan, same run", "",
             "| workload | figure | wshub | nginx+Nchan | wshub / Nchan |", "|---|---|---|---|---|"]
    for name, label, a, b, ratio in rows:
        lines.append("| %s | %s | %s | %s | %s |" % (name, label, fmt(a), fmt(b),
                                                      fmt(ratio, "×", 2)))
    return lines


def summary_md(meta, recs, charts):
    servers = meta.get("servers") or sorted({s for s, _ in recs})
    title = "wshub and nginx + Nchan" if "nchan" in servers else "wshub"
    lines = ["# Benchmark: %s%s" % (title, " (QUICK, reduced set)" if meta.get("quick") else ""),
             "",
             "Written by `bench/bench.py` (%s) from %s to %s, %s s. One JSON per run beside "
             "this file (`<server>-<workload>.json`: the stack, the exact wsbench command and "
             "its whole output)." % (
                 "`make bench-compare`" if "nchan" in servers else "`make bench`",
                 meta.get("started_at"), meta.get("finished_at"), meta.get("wall_s")), ""]
    lines += _machine_md(meta) + [""]
    lines += _targets_md(recs, servers) + [""]
    noisy = [("%s %s (%.0f%%)" % (LABEL[s], n, 100 * r["others_cpu_frac"]))
             for (s, n), r in sorted(recs.items()) if r.get("noisy")]
    lines.append("Runs disturbed by other processes (they used more than 30% of a core during "
                 "the measured phase): " + (", ".join(noisy) if noisy else "none") + ".")
    lines.append("")
    for part in (_ratios_md(recs), _hold_md(recs, servers), _fanout_md(recs, servers),
                 _capacity_md(recs, servers)):
        if part:
            lines += part + [""]
    if any(r["workload"]["kind"] == "deflate" for r in recs.values()):
        lines += ["## W5 permessage-deflate", "", "Compressed vs plain, wshub and nginx + Nchan: "
                  "[deflate.md](deflate.md).", ""]
    lines += ["## Not run", ""]
    for k, v in (meta.get("not_run") or {}).items():
        lines.append("- %s: %s" % (k, v))
    lines.append("")
    if charts:
        lines += ["## Charts", ""] + ["![%s](%s)" % (c, c) for c in charts] + [""]
    lines += ["## Reproduce", "", "```sh",
              "make bench            # wshub only  -> bench/results/",
              "make bench-compare    # wshub and nginx + Nchan, workload by workload "
              "-> bench/results/compare/",
              "QUICK=1 make bench    # reduced set, under 2 minutes -> bench/results/quick/",
              "```", ""]
    return "\n".join(lines)


# ---- charts --------------------------------------------------------------------------------

def _gnuplot(script, out_dir, log):
    if shutil.which("gnuplot") is None:
        log("gnuplot missing (apt-get install gnuplot-nox): no charts")
        return False
    r = subprocess.run(["gnuplot"], input=script, text=True, capture_output=True, cwd=out_dir,
                       timeout=60)
    if r.returncode != 0:
        log("gnuplot failed: " + r.stderr[-800:])
        return False
    return True


def _cdf_chart(recs, out_dir, log):
    series = []
    for (s, name), rec in sorted(recs.items()):
        cdf = g(rec, "result", "latency_ms", "cdf")
        if rec["workload"]["kind"] != "fanout" or not cdf:
            continue
        dat = "%s-%s.cdf.dat" % (s, name)
        with open(os.path.join(out_dir, dat), "w") as f:
            f.write("# latency_ms fraction_at_or_below (%s %s)\n" % (s, name))
            for x, y in cdf:
                f.write("%g %g\n" % (x, y))
        series.append((s, name, dat))
    if not series:
        return None
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
    names = sorted({n for _, n, _ in series})
    plots = []
    for s, name, dat in series:
        plots.append("'%s' using 1:2 with lines lw 2 dt %d lc rgb '%s' title '%s %s'" % (
            dat, 1 if s == "wshub" else 2, colors[names.index(name) % len(colors)], LABEL[s],
            name))
    script = "\n".join([
        "set terminal pngcairo size 1000,620 font 'sans,10'",
        "set output 'latency-cdf.png'",
        "set title 'Delivery latency (POST to subscriber), CDF; solid = wshub, dashed = nginx+Nchan'",
        "set logscale x", "set xlabel 'latency (ms, log scale)'",
        "set ylabel 'fraction of deliveries'", "set yrange [0:1.01]", "set grid",
        "set key bottom right",
        "plot " + ", \\\n     ".join(plots), ""])
    return "latency-cdf.png" if _gnuplot(script, out_dir, log) else None


def _throughput_chart(recs, out_dir, log):
    plots, files = [], []
    colors = {"wshub": "#1f77b4", "nchan": "#d62728"}
    for s in SERVERS:
        rec = recs.get((s, next((n for (srv, n) in recs if srv == s and n.startswith("w4-")),
                                "")))
        if not rec or not rec.get("trials"):
            continue
        dat = "%s-w4-capacity.dat" % s
        with open(os.path.join(out_dir, dat), "w") as f:
            f.write("# offered_per_sec delivered_per_sec p99_ms pass (%s)\n" % s)
            for t in sorted(rec["trials"], key=lambda t: t["rate"]):
                r = t["result"]
                f.write("%g %g %g %d\n" % (t["offered_per_sec"], r.get("delivered_per_sec") or 0,
                                           g(r, "latency_ms", "p99", default=0) or 0,
                                           1 if t["pass"] else 0))
        files.append(dat)
        plots.append("'%s' using 1:2 with linespoints lw 2 pt 7 lc rgb '%s' title '%s delivered/s'"
                     % (dat, colors[s], LABEL[s]))
        plots.append("'%s' using 1:($4==0?$2:1/0) with points pt 6 ps 2.5 lc rgb '%s' "
                     "title '%s failed trial'" % (dat, colors[s], LABEL[s]))
        plots.append("'%s' using 1:3 axes x1y2 with linespoints dt 3 pt 4 lc rgb '%s' "
                     "title '%s p99 (ms, right)'" % (dat, colors[s], LABEL[s]))
    if not plots:
        return None
    script = "\n".join([
        "set terminal pngcairo size 1000,620 font 'sans,10'",
        "set output 'throughput.png'",
        "set title 'W4: 10,000 subscribers, 64-byte broadcasts; a trial passes with zero loss "
        "and p99 <= 250 ms'",
        "set xlabel 'offered deliveries/s (broadcast rate x subscribers)'",
        "set ylabel 'delivered/s'", "set y2label 'p99 latency (ms, log)'",
        "set logscale y2", "set ytics nomirror", "set y2tics", "set grid",
        "set key top left", "set format x '%.0s%c'", "set format y '%.0s%c'",
        "set arrow from graph 0, second 250 to graph 1, second 250 nohead dt 4 lc rgb '#444444'",
        "set label 'p99 bound 250 ms' at graph 0.02, second 270 tc rgb '#444444'",
        "plot x with lines lc rgb '#999999' dt 2 title 'delivered = offered', \\\n     " +
        ", \\\n     ".join(plots), ""])
    return "throughput.png" if _gnuplot(script, out_dir, log) else None


def write_summary(out_dir, log=print):
    meta, recs = load(out_dir)
    charts = [c for c in (_cdf_chart(recs, out_dir, log), _throughput_chart(recs, out_dir, log))
              if c]
    with open(os.path.join(out_dir, "SUMMARY.md"), "w") as f:
        f.write(summary_md(meta, recs, charts))
    rows = ratio_rows(recs)
    if rows:
        log("wshub / Nchan, same run:")
        for name, label, a, b, ratio in rows:
            log("  %-22s %-32s wshub %-10s nchan %-10s ratio %s" % (
                name, label, fmt(a), fmt(b), fmt(ratio, "x", 2)))
