"""channels_bench.py -- W8 of bench/bench.py: channels (issue 10), wshub and nginx + Nchan.

10,000 subscribers on 1,000 channels, 10 per channel (wsbench --channels: subscriber i on
channel i mod 1,000), 64-byte messages POSTed each to one channel, round-robin over the
channels (every channel gets the same share; the seed is fixed, so both servers get the same
plan). wshub: subscribers on /ws/ch<k> straight to the workers, POSTs to nginx's
/admin/broadcast?channel=ch<k> (FastCGI to wshub-admin); Nchan: /sub/ch<k> and /pub/ch<k>, one
Nchan channel per id (bench/nchan.conf.in). Every subscriber checks that it receives exactly the
accepted messages of its channel: lost, duplicated, out of order, and wrong_channel (a message
of another channel).

Two measurements per server, on one stack:

  fixed     1,000 channel messages/s for 30 s (30,000 messages, 10,000 deliveries/s): the rate
            of a busy chat or ticker service, well inside what either server sustains here,
            so the figures are latency and cost at a realistic load, not saturation. This is
            the table's main row.
  capacity  the highest rate with zero loss, no wrong-channel or duplicate delivery, p99 <= 250
            ms and every POST accepted at >= 95% of the rate (W4's rule): doubling from 2,000/s
            (the fixed run is the 1,000/s point) until a trial fails, then two geometric
            bisections, 8 s per trial. QUICK: 5 s fixed, then 2,000 and 4,000/s for 3 s.

Why these: on this 2-core machine a channel message costs one HTTP POST and only 10
deliveries, so it is the publishing path (a POST per message) that bounds the rate, not the
fan-out; the fixed rate measures what a client sees under a steady load, the search where each
stack stops keeping up. Each trial offers messages at a fixed rate over 4 keep-alive HTTP
connections, 500 requests each before rotation (nginx's keepalive_requests is 1,000).

The summary is channels.md beside SUMMARY.md; a directory holding only W8 results (`bench.py
--only w8 --compare --out bench/results/channels`) gets it as its SUMMARY.md instead.
"""
import os

import report

SEED = 8          # the same channel plan and payload sizes for both servers
P99_BOUND_MS = 250.0


def workload(quick):
    base = dict(name="w8-channels-1k", kind="channels", n=10000, channels=1000, r=1000,
                search_start=2000)
    if quick:
        return dict(base, seconds=5, trial_s=3, max_trials=2, bisect=0)
    return dict(base, seconds=30, trial_s=8, max_trials=6, bisect=2)


def trial_pass(out, rate):
    """W4's rule plus the channel checks."""
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
        why.append("publisher reached %.0f/s" % (p.get("achieved_rate") or 0))
    d = out.get("deliveries", {})
    for key in ("lost", "duplicated", "wrong_channel"):
        if d.get(key, 1) != 0:
            why.append("%s %s" % (key.replace("_", " "), d.get(key)))
    p99 = (out.get("latency_ms") or {}).get("p99")
    if p99 is None or p99 > P99_BOUND_MS:
        why.append("p99 %s ms" % p99)
    return not why, why


def _one(runner, st, wl, label, rate, messages, cdf):
    args = ["fanout", "--url", st.ws_channel_url, "--publish-url", st.publish_channel_url,
            "-n", str(wl["n"]), "--channels", str(wl["channels"]),
            "--channel-pick", "round-robin", "--seed", str(SEED),
            "-m", str(messages), "-r", "%g" % rate, "-s", "64",
            "--connect-rate", "10000", "--connect-timeout", "20s", "--settle", "1s",
            "--drain-timeout", "10s", "--pub-connections", "4", "--pub-max-requests", "500"]
    if cdf:
        args.append("--cdf")
    t = {"label": label, "rate": rate, "messages": messages,
         "offered_per_sec": rate * wl["n"] / wl["channels"]}
    try:
        t["command"], out = runner.wsbench(st, args, int(wl["n"] / 10000 + messages / rate + 90))
    except (RuntimeError, OSError, ValueError) as e:  # one bad trial fails, not the workload
        t.update({"pass": False, "why": ["error: %s" % e], "result": None})
        runner.log("    %s %g/s: ERROR %s" % (label, rate, e))
        return t
    ok, why = trial_pass(out, rate)
    t.update({"pass": ok, "why": why, "result": out})
    d, lat = out.get("deliveries", {}), out.get("latency_ms") or {}
    runner.log("    %-8s %6g msgs/s: %s; %.0f delivered/s, p50 %s p99 %s max %s ms, lost %s "
               "dup %s wrong %s" % (label, rate, "pass" if ok else "FAIL " + "; ".join(why),
                                    out.get("delivered_per_sec") or 0, lat.get("p50"),
                                    lat.get("p99"), lat.get("max"), d.get("lost"),
                                    d.get("duplicated"), d.get("wrong_channel")))
    return t


def run(runner, st, wl, search_rate):
    """The fixed-rate run, then the capacity search, on the stack st."""
    fixed = _one(runner, st, wl, "fixed", wl["r"], int(wl["r"] * wl["seconds"]), cdf=True)
    trials = []

    def trial(rate):
        t = _one(runner, st, wl, "search", rate, max(10, int(round(rate * wl["trial_s"]))),
                 cdf=False)
        trials.append(t)
        return t["pass"]

    search_rate(trial, float(wl["search_start"]), wl["max_trials"], wl["bisect"])
    if fixed.get("result") is None:
        raise RuntimeError("the fixed-rate run failed: %s" % "; ".join(fixed["why"]))
    runs = [fixed] + trials
    s = summarize(runs)
    return {"runs": runs, "trials": runs, "result": fixed["result"],
            "best": None if s["best_rate"] is None else {
                "rate": s["best_rate"], "offered_per_sec": s["best_rate"] * wl["n"] /
                wl["channels"]}, "summary": s}


def summarize(runs):
    """The figures of the summary, from the runs alone (so --summarize recomputes them): the
    fixed run, the best passing search trial, and the lowest failing rate above it."""
    fixed, trials = runs[0], runs[1:]
    best = max((t for t in trials if t["pass"]), key=lambda t: t["rate"], default=None)
    above = [t["rate"] for t in trials if not t["pass"] and (best is None or
                                                             t["rate"] > best["rate"])]
    first_fail = min(above) if above else None
    r = fixed.get("result") or {}
    g = report.g
    s = {"fixed_rate": fixed["rate"], "fixed_pass": fixed["pass"], "fixed_why": fixed["why"],
         "accepted_per_sec": g(r, "channels", "accepted_per_sec"),
         "delivered_per_sec": g(r, "delivered_per_sec"),
         "p50_ms": g(r, "latency_ms", "p50"), "p90_ms": g(r, "latency_ms", "p90"),
         "p99_ms": g(r, "latency_ms", "p99"), "p999_ms": g(r, "latency_ms", "p999"),
         "max_ms": g(r, "latency_ms", "max"),
         "post_answer_p50_ms": g(r, "publish", "answer_ms", "p50"),
         "post_answer_p99_ms": g(r, "publish", "answer_ms", "p99")}
    for k in ("expected", "unique", "lost", "duplicated", "out_of_order", "wrong_channel"):
        s[k] = g(r, "deliveries", k)
    s["pings_answered"] = g(r, "connections", "pings_answered")
    s["server_us_per_delivery"] = g(r, "server", "cpu_s", "us_per_delivery")
    s["server_cpu_s"] = g(r, "server", "cpu_s", "phase")
    s["server_pss_mb_end"] = (g(r, "server", "memory", "end", "pss_kb") or 0) / 1024.0
    s["best_rate"] = best["rate"] if best else None
    if best:
        b = best["result"]
        s["best_delivered_per_sec"] = g(b, "delivered_per_sec")
        s["best_p50_ms"] = g(b, "latency_ms", "p50")
        s["best_p99_ms"] = g(b, "latency_ms", "p99")
        s["best_server_us_per_delivery"] = g(b, "server", "cpu_s", "us_per_delivery")
    s["first_failing_rate"] = first_fail
    fails = [t for t in trials if not t["pass"] and t["rate"] == first_fail]
    s["first_failing_why"] = fails[0]["why"] if fails else None
    if fails and fails[0].get("result"):
        # Where the queue builds: in the POST answers (the publishing path) or only after them
        # (delivery).
        f = fails[0]["result"]
        s["fail_answer_p50_ms"] = g(f, "publish", "answer_ms", "p50")
        s["fail_delivery_p50_ms"] = g(f, "latency_ms", "p50")
    return s


# ---- the summary -----------------------------------------------------------------------------

def _recs(out_dir):
    meta, recs = report.load(out_dir)
    return meta, [recs[k] for k in sorted(recs, key=lambda k: report.SERVERS.index(k[0]))
                  if recs[k]["workload"]["kind"] == "channels"]


def _noise(rec):
    """CPU of other processes during the fixed run, in % of one core (bench.py's rule: above
    30% the run is noisy)."""
    r = rec.get("result") or {}
    others, phase = report.g(r, "host", "others_cpu_s"), r.get("phase_s")
    if others is None or not phase:
        return "–"
    f = others / phase
    return ("**%.0f%% (noisy)**" if f > 0.3 else "%.0f%%") % (100 * f)


def _main_table(recs):
    for rec in recs:
        if rec.get("runs"):
            rec["summary"] = summarize(rec["runs"])
    fmt = report.fmt
    by = {r["server"]: r for r in recs}
    cols = [s for s in report.SERVERS if s in by]
    both = len(cols) == 2
    head = "| | " + " | ".join(report.LABEL[s] for s in cols) + (" | wshub / Nchan |"
                                                                   if both else " |")
    lines = [head, "|---|" + "---|" * (len(cols) + (1 if both else 0))]

    def row(label, key, unit="", digits=None, ratio=True):
        vals = [(by[s].get("summary") or {}).get(key) for s in cols]
        cells = [fmt(v, unit, digits) if not isinstance(v, str) else v for v in vals]
        if both:
            a, b = vals
            cells.append(fmt(a / b, "×", 2) if ratio and isinstance(a, (int, float)) and
                         isinstance(b, (int, float)) and b else "")
        lines.append("| %s | %s |" % (label, " | ".join(cells)))

    row("channel messages/s published (2xx), fixed run", "accepted_per_sec", digits=0)
    row("deliveries/s", "delivered_per_sec", digits=0)
    row("latency p50", "p50_ms", " ms")
    row("latency p90", "p90_ms", " ms")
    row("latency p99", "p99_ms", " ms")
    row("latency p99.9", "p999_ms", " ms")
    row("latency max", "max_ms", " ms")
    row("POST answer p50", "post_answer_p50_ms", " ms")
    row("deliveries expected", "expected", ratio=False)
    row("lost", "lost", ratio=False)
    row("duplicated", "duplicated", ratio=False)
    row("out of order (within a channel)", "out_of_order", ratio=False)
    row("wrong channel", "wrong_channel", ratio=False)
    row("keepalive pings the server sent (answered)", "pings_answered", ratio=False)
    row("server CPU per delivery (whole stack)", "server_us_per_delivery", " µs")
    row("server CPU during the run", "server_cpu_s", " s")
    row("highest passing rate, channel messages/s", "best_rate")
    row("deliveries/s at that rate", "best_delivered_per_sec", digits=0)
    row("p99 at that rate", "best_p99_ms", " ms")
    row("first failing rate, messages/s", "first_failing_rate")
    row("… its POST answer p50", "fail_answer_p50_ms", " ms", ratio=False)
    row("… its delivery latency p50", "fail_delivery_p50_ms", " ms", ratio=False)
    lines.append("| CPU used by other processes, fixed run (%% of one core) | %s |%s" % (
        " | ".join(_noise(by[s]) for s in cols), " |" if both else ""))
    return lines


def _trials_table(recs):
    fmt, g = report.fmt, report.g
    lines = ["| server | run | messages/s | deliveries/s offered | delivered/s | p50 ms | "
             "p99 ms | max ms | lost | dup | wrong ch. | out of order | server µs/delivery | "
             "client-limited | others' CPU s | verdict |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for rec in recs:
        for t in rec.get("runs", []):
            r = t.get("result") or {}
            lines.append("| %s | %s | %g | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s "
                         "| %s | %s |" % (
                             report.LABEL[rec["server"]], t["label"], t["rate"],
                             fmt(t["offered_per_sec"], digits=0),
                             fmt(r.get("delivered_per_sec"), digits=0),
                             fmt(g(r, "latency_ms", "p50")), fmt(g(r, "latency_ms", "p99")),
                             fmt(g(r, "latency_ms", "max")), fmt(g(r, "deliveries", "lost")),
                             fmt(g(r, "deliveries", "duplicated")),
                             fmt(g(r, "deliveries", "wrong_channel")),
                             fmt(g(r, "deliveries", "out_of_order")),
                             fmt(g(r, "server", "cpu_s", "us_per_delivery")),
                             fmt(g(r, "client", "client_limited")),
                             fmt(g(r, "host", "others_cpu_s")),
                             "pass" if t["pass"] else "fail: " + "; ".join(t["why"])))
    return lines


def _notes(recs):
    """What the figures above need to be read right, from the runs themselves."""
    notes = []
    for rec in recs:
        s, name = rec.get("summary") or {}, report.LABEL[rec["server"]]
        if s.get("pings_answered"):
            notes.append("%s's fixed run includes a keepalive sweep: %s pings answered. wshub "
                         "pings every connection silent (nothing received from the client) for "
                         "`ping_interval` (30 s by default, each connection up to a quarter "
                         "earlier so that clients that connected together are not pinged in one "
                         "burst); the subscribers all connected within about a second, so their "
                         "pings fell in the last quarter of the run. Nchan sends no pings unless "
                         "`nchan_websocket_ping_interval` is set." % (
                             name, report.fmt(s["pings_answered"])))
        if s.get("fail_answer_p50_ms") is not None and s.get("fail_delivery_p50_ms"):
            where = ("after the POST was answered: the delivery side (for wshub, the workers "
                     "reading the ring) fell behind while the publishing path kept up"
                     if s["fail_answer_p50_ms"] < 0.1 * s["fail_delivery_p50_ms"] else
                     "in the POST answers as much as in the deliveries: the processes that answer "
                     "them (for Nchan, the same nginx workers that deliver) were behind")
            notes.append("%s at %g messages/s: the queue built %s (POST answer p50 %s ms, "
                         "delivery p50 %s ms)." % (name, s["first_failing_rate"], where,
                                                    report.fmt(s["fail_answer_p50_ms"]),
                                                    report.fmt(s["fail_delivery_p50_ms"])))
    return (["## Reading the table", ""] + ["- " + n for n in notes] + [""]) if notes else []


def summary_md(meta, recs):
    wl = recs[0]["workload"]
    lines = ["# W8: channels — %s channels × %s subscribers (issue 10)" % (
        report.fmt(wl["channels"]), wl["n"] // wl["channels"]), "",
             "Written by `bench/bench.py` (bench/channels_bench.py defines the workload) from "
             "the `*-w8-channels-1k.json` beside this file, which hold each run's stack, exact "
             "wsbench command and whole output.%s" % (
                 " QUICK: reduced." if meta.get("quick") else ""), "",
             "%s subscribers, subscriber i on channel `ch<i mod %d>`; 64-byte messages, each "
             "POSTed to one channel, round-robin; every subscriber must receive exactly the "
             "accepted messages of its channel. Latency: from the publisher's write of the POST "
             "to the subscriber's read, through the whole stack. The fixed run offers %s "
             "channel messages/s for %g s; the capacity search doubles from %s/s (%g s per "
             "trial) and keeps a rate with zero loss, no duplicate or wrong-channel delivery, "
             "p99 ≤ %g ms and every POST accepted at ≥ 95%% of the rate. Out of order counts "
             "messages of one channel that arrived before an earlier one: the publisher "
             "spreads POSTs over 4 HTTP connections (a channel's messages share one, except "
             "across a connection's rotation), and POSTs in flight on different connections have "
             "no order the server must keep." % (
                 report.fmt(wl["n"]), wl["channels"], report.fmt(wl["r"]), wl["seconds"],
                 report.fmt(wl["search_start"]), wl["trial_s"], P99_BOUND_MS), ""]
    lines += _main_table(recs) + [""]
    errors = ["- %s: %s" % (report.LABEL[r["server"]], r["error"]) for r in recs
              if r.get("error")]
    if errors:
        lines += ["Errors:", ""] + errors + [""]
    lines += _notes(recs)
    lines += ["## Every run", ""] + _trials_table(recs) + [""]
    lines += ["## Why this rate", "",
              "A channel message is one POST and, here, 10 deliveries: the work per message is "
              "on the publishing path (HTTP parsing, for wshub also FastCGI and wshub-admin's "
              "append to the ring), not on the fan-out. 1,000 messages/s (10,000 deliveries/s) "
              "is a steady load both stacks carry on 2 shared cores with room to spare, so the "
              "fixed run compares latency and CPU per delivery at a realistic rate; the "
              "capacity search then shows where each stack stops keeping up (its limit is the "
              "first failing rate's reason).", ""]
    lines += ["## Machine", ""] + report._machine_md(meta)[2:] + [
        "- 2 cores shared with other engineers' builds and tests while this ran: the numbers "
        "are noisy; each run's `host.others_cpu_s` (CPU used by neither the server nor "
        "wsbench) is in the tables.", ""]
    lines += ["## Commands", "", "```sh",
              "make bench-compare    # all workloads, W8 included -> bench/results/compare/",
              "bench/bench.py --compare --only w8 --out bench/results/channels",
              "```", "", "wsbench, exactly as run (fixed-rate run, then one capacity trial):",
              "", "```"]
    for rec in recs:
        for t in (rec.get("runs") or [])[:2]:
            if t.get("command"):
                lines.append(" ".join(a if "?" not in a and "{" not in a else "'%s'" % a
                                      for a in t["command"]))
    lines += ["```", ""]
    return "\n".join(lines)


def write_md(out_dir, log):
    """channels.md beside SUMMARY.md; a directory of W8 alone gets it as SUMMARY.md instead."""
    meta, recs = _recs(out_dir)
    if not recs:
        return None
    only = meta.get("workloads") and all(w.startswith("w8-") for w in meta["workloads"])
    path = os.path.join(out_dir, "SUMMARY.md" if only else "channels.md")
    with open(path, "w") as f:
        f.write(summary_md(meta, recs))
    log("wrote %s" % path)
    return path

