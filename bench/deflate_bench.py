"""deflate_bench.py -- W5 of bench/bench.py: permessage-deflate (issue 7), wshub and nginx + Nchan.

The same stack serves two kinds of subscribers in turn: 10,000 clients that offer nothing
(plain frames), then 10,000 that offer permessage-deflate (wsbench --deflate: both
no_context_takeover parameters, so every message inflates on its own), each receiving
broadcasts of ~2 KiB of JSON (wsbench --pad json: trade records that compress ~3x at level 1,
not 'xxx' padding). The pair runs twice, alternating, so a burst of load from other processes
does not land on one kind only. Per phase:

  - server CPU per broadcast: utime + stime of the processes that deliver (wshub's workers;
    Nchan's nginx workers, which also answer the POSTs) from the end of the connect phase to
    the last delivery (handshakes are left out), / broadcasts accepted.
    wsbench's own figure for the whole stack (hub, wshub-admin and the front nginx included) is
    kept beside it.
  - bytes on the wire per delivery: the growth of bytes_sent (tcp_info, `ss -ti`) summed over
    the subscribers' server-side sockets, / deliveries: WebSocket frames as TCP carries them
    (headers of TCP and IP not included). /proc/PID/io's wchar would not do: lws writes with
    send(), which that counter does not see.
  - latency and loss, from wsbench.

The summary gives, per server, the mean of the two runs of each kind, the CPU ratio
compressed / plain (issue 7's target for wshub: at most 1.3) and the bytes saved per delivery.
Nchan runs with nchan_deflate_message_for_websocket on at wshub's level (1; Nchan's default is
6), in this workload only (bench/nchan.conf.in).
"""
import json
import os
import re
import signal
import subprocess
import time

import report

WSBENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools",
                       "wsbench", "wsbench")

TARGET_CPU_RATIO = 1.3


def workload(quick):
    if quick:
        return dict(name="w5-deflate-10k", kind="deflate", n=10000, m=20, r=5, size=2048,
                    repeats=1)
    return dict(name="w5-deflate-10k", kind="deflate", n=10000, m=60, r=5, size=2048, repeats=2)


def delivery_pids(st):
    """The processes that write frames to subscribers."""
    if st.kind == "wshub":
        return st.worker_pids()
    import stacks
    return stacks._children(st.nginx.pid)


def _cpu_s(pids):
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
        except (OSError, IndexError, ValueError):
            pass
    return total / tick


def _sent_bytes(port):
    """bytes_sent (TCP payload: the frames and, before them, the 101) per established socket
    whose local port is `port`, keyed by peer, from ss -ti (tcp_info)."""
    r = subprocess.run(["ss", "-Htin", "state", "established", "( sport = :%d )" % port],
                       capture_output=True, text=True, timeout=60)
    out, peer = {}, None
    for line in r.stdout.splitlines():
        if not line.startswith((" ", "\t")):
            peer = line.split()[-1]
            continue
        m = re.search(r"\bbytes_sent:(\d+)", line) or re.search(r"\bbytes_acked:(\d+)", line)
        if peer and m:
            out[peer] = int(m.group(1))
    return out


def _wait_stderr(errf, text, proc, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        errf.seek(0)
        if text in errf.read():
            return
        if proc.poll() is not None:
            raise RuntimeError("wsbench exited (rc %s) before '%s'" % (proc.returncode, text))
        time.sleep(0.02)
    raise RuntimeError("wsbench did not log '%s' within %d s" % (text, timeout))


def _phase(runner, st, wl, label, deflate):
    """One wsbench fanout run; CPU and wire bytes from the end of its connect phase (then 2 s
    of quiet before the first POST) to the end of delivery ("end hold": wsbench keeps the
    connections open, so their counters are still there, until SIGUSR1)."""
    budget = int(wl["n"] / 20000 + wl["m"] / wl["r"] + 120)
    argv = [WSBENCH, "fanout", "--url", st.ws_url, "--publish-url", st.publish_url,
            "-n", str(wl["n"]), "-m", str(wl["m"]), "-r", "%g" % wl["r"], "-s", str(wl["size"]),
            "--pad", "json", "--connect-rate", "20000", "--connect-timeout", "20s",
            "--settle", "2s", "--drain-timeout", "15s", "--end-hold", "%ds" % budget, "-v",
            "--source-base", runner.next_source(), "--timeout", "%ds" % (2 * budget)] + \
        (["--deflate"] if deflate else []) + st.server_args()
    runner.log("    $ " + " ".join(a if " " not in a else repr(a) for a in argv))
    port = int(st.ws_url.rsplit(":", 1)[1].split("/")[0])
    pids = delivery_pids(st)
    errf = open(os.path.join(st.dir, "wsbench-w5.err"), "w+")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=errf, text=True)
    try:
        _wait_stderr(errf, "connect phase over", proc, budget)  # then 2 s before the POSTs
        cpu0, sent0 = _cpu_s(pids), _sent_bytes(port)
        _wait_stderr(errf, "end hold", proc, budget)
        cpu1, sent1 = _cpu_s(pids), _sent_bytes(port)
        proc.send_signal(signal.SIGUSR1)
        stdout, _ = proc.communicate(timeout=budget)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        errf.close()
    if not stdout.strip():
        raise RuntimeError("wsbench printed nothing (rc %s)" % proc.returncode)
    out = json.loads(stdout)
    if sorted(delivery_pids(st)) != sorted(pids):
        raise RuntimeError("the delivering processes changed during the phase")
    wire = sum(v - sent0[k] for k, v in sent1.items() if k in sent0)
    d = out.get("deliveries", {})
    received = d.get("received") or 0
    broadcasts = report.g(out, "publish", "ok") or 0
    run = {"label": label, "deflate": deflate, "command": argv, "result": out,
           "delivery_pids": pids, "delivery_cpu_s": round(cpu1 - cpu0, 3),
           "sockets_measured": len([k for k in sent1 if k in sent0]),
           "wire_bytes": wire, "broadcasts": broadcasts, "deliveries": received,
           "lost": d.get("lost"), "foreign": d.get("foreign"),
           "cpu_ms_per_broadcast": round(1000 * (cpu1 - cpu0) / broadcasts, 3)
           if broadcasts else None,
           "wire_bytes_per_delivery": round(wire / received, 1) if received else None,
           "stack_us_per_delivery": report.g(out, "server", "cpu_s", "us_per_delivery"),
           "p50_ms": report.g(out, "latency_ms", "p50"),
           "p99_ms": report.g(out, "latency_ms", "p99")}
    runner.log("    %-8s %s broadcasts x %s: %s ms CPU per broadcast, %s bytes per delivery on "
               "the wire; p50 %s p99 %s ms, lost %s" % (
                   label, broadcasts, wl["n"], run["cpu_ms_per_broadcast"],
                   run["wire_bytes_per_delivery"], run["p50_ms"], run["p99_ms"], run["lost"]))
    return run


def _mean(runs, key):
    v = [r[key] for r in runs if r.get(key) is not None]
    return round(sum(v) / len(v), 3) if v else None


def run(runner, st, wl):
    """Both kinds of subscribers, alternating, `repeats` times. Returns (runs, summary)."""
    runs = []
    for _ in range(wl.get("repeats", 1)):
        runs.append(_phase(runner, st, wl, "plain", False))
        runs.append(_phase(runner, st, wl, "deflate", True))
    plain = [r for r in runs if not r["deflate"]]
    comp = [r for r in runs if r["deflate"]]
    s = {"plain_cpu_ms_per_broadcast": _mean(plain, "cpu_ms_per_broadcast"),
         "deflate_cpu_ms_per_broadcast": _mean(comp, "cpu_ms_per_broadcast"),
         "plain_wire_bytes_per_delivery": _mean(plain, "wire_bytes_per_delivery"),
         "deflate_wire_bytes_per_delivery": _mean(comp, "wire_bytes_per_delivery"),
         "plain_stack_us_per_delivery": _mean(plain, "stack_us_per_delivery"),
         "deflate_stack_us_per_delivery": _mean(comp, "stack_us_per_delivery"),
         "lost": sum(r["lost"] or 0 for r in runs),
         "foreign": sum(r["foreign"] or 0 for r in runs)}
    a, b = s["deflate_cpu_ms_per_broadcast"], s["plain_cpu_ms_per_broadcast"]
    s["cpu_ratio"] = round(a / b, 3) if a is not None and b else None
    a, b = s["deflate_wire_bytes_per_delivery"], s["plain_wire_bytes_per_delivery"]
    s["wire_bytes_saved_per_delivery"] = round(b - a, 1) if a is not None and b else None
    s["wire_ratio"] = round(a / b, 3) if a is not None and b else None
    s["target_cpu_ratio"] = TARGET_CPU_RATIO
    runner.log("    CPU per broadcast compressed / plain: %s; bytes per delivery %s -> %s (%s "
               "saved)" % (s["cpu_ratio"], s["plain_wire_bytes_per_delivery"],
                           s["deflate_wire_bytes_per_delivery"],
                           s["wire_bytes_saved_per_delivery"]))
    return runs, s


def write_md(out_dir, log):
    """deflate.md beside SUMMARY.md, from <server>-w5-*.json."""
    recs = []
    for server in ("wshub", "nchan"):
        path = os.path.join(out_dir, report.result_file(server, workload(False)["name"]))
        if os.path.exists(path):
            with open(path) as f:
                recs.append(json.load(f))
    if not recs:
        return None
    wl = recs[0]["workload"]
    lines = ["# W5: permessage-deflate, compressed vs plain (issue 7)", "",
             "Written by `bench/bench.py` (bench/deflate_bench.py says how each figure is "
             "measured) from the `*-w5-deflate-10k.json` beside this file. %s subscribers, "
             "broadcasts of %s bytes of JSON (wsbench `--pad json`) at %g/s, %d per run; "
             "plain subscribers offer nothing, compressing ones offer permessage-deflate "
             "(`--deflate`). CPU: the delivering processes (wshub's workers, Nchan's nginx "
             "workers), after the handshakes until the last delivery. Wire: TCP bytes sent to the subscribers per "
             "delivery." % (
                 report.fmt(wl["n"]), wl["size"], wl["r"], wl["m"]), "",
             "| server | CPU ms / broadcast, plain | compressed | compressed / plain "
             "(target ≤ %.1f for wshub) | wire bytes / delivery, plain | compressed | saved | "
             "stack µs / delivery, plain | compressed | lost | others' CPU |" % TARGET_CPU_RATIO,
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for rec in recs:
        if rec.get("error"):
            lines.append("| %s | error: %s |" % (report.LABEL.get(rec["server"], rec["server"]),
                                                rec["error"]))
            continue
        s = rec.get("summary", {})
        lines.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            report.LABEL.get(rec["server"], rec["server"]), s.get("plain_cpu_ms_per_broadcast"),
            s.get("deflate_cpu_ms_per_broadcast"), s.get("cpu_ratio"),
            s.get("plain_wire_bytes_per_delivery"), s.get("deflate_wire_bytes_per_delivery"),
            s.get("wire_bytes_saved_per_delivery"), s.get("plain_stack_us_per_delivery"),
            s.get("deflate_stack_us_per_delivery"), s.get("lost"),
            "%.0f%%" % (100 * rec["others_cpu_frac"]) if rec.get("others_cpu_frac") is not None
            else "–"))
    lines += ["", "Runs, in order:", "",
              "| server | kind | CPU ms / broadcast | wire bytes / delivery | p50 ms | p99 ms | "
              "lost |", "|---|---|---|---|---|---|---|"]
    for rec in recs:
        for r in rec.get("runs", []):
            lines.append("| %s | %s | %s | %s | %s | %s | %s |" % (
                report.LABEL.get(rec["server"], rec["server"]), r["label"],
                r["cpu_ms_per_broadcast"], r["wire_bytes_per_delivery"], r["p50_ms"],
                r["p99_ms"], r["lost"]))
    lines.append("")
    path = os.path.join(out_dir, "deflate.md")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    log("wrote %s" % path)
    return path
