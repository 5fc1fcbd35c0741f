"""Tests of the benchmark driver's own logic (no servers): the W4 rate search finds the edge, a
trial passes only when every condition holds, and the summary judges targets from the figures.

    /usr/bin/python3 -m pytest -q bench/test_bench.py
"""
import copy
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench  # noqa: E402
import report  # noqa: E402


def test_search_doubles_then_bisects_to_the_edge():
    for edge in (13.0, 37.0, 150.0, 600.0):
        lo, hi, tried = bench.search_rate(lambda r, e=edge: r <= e, 10.0, 8, 3)
        assert lo <= edge < hi
        assert hi / lo < 1.2, (edge, lo, hi, tried)   # 3 bisections of one doubling
        assert len(tried) <= 11


def test_search_goes_down_when_the_first_rate_fails():
    lo, hi, tried = bench.search_rate(lambda r: r <= 3, 10.0, 8, 2)
    assert tried[:3] == [10.0, 5.0, 2.5]
    assert lo <= 3 < hi and hi <= 5.0


def test_search_gives_up_when_nothing_passes():
    lo, hi, tried = bench.search_rate(lambda r: False, 10.0, 20, 3)
    assert lo is None and hi == tried[-1] and tried[-1] >= 10.0 / 64 and len(tried) == 7


def test_search_respects_the_trial_budget():
    lo, hi, tried = bench.search_rate(lambda r: True, 10.0, 4, 3)
    assert tried == [10.0, 20.0, 40.0, 80.0] and hi is None and lo == 80.0


GOOD = {
    "aborted": None,
    "connections": {"attempted": 10000, "ok": 10000, "survived": 10000},
    "publish": {"sent": 400, "ok": 400, "achieved_rate": 49.9},
    "deliveries": {"lost": 0},
    "latency_ms": {"p99": 120.0},
}


def test_capacity_trial_passes_only_when_everything_holds():
    assert bench.capacity_pass(GOOD, 50) == (True, [])
    breakages = [
        (("deliveries", "lost"), 1, "lost"),
        (("latency_ms", "p99"), 251.0, "p99"),
        (("publish", "ok"), 399, "POSTs"),
        (("publish", "achieved_rate"), 40.0, "publisher"),
        (("connections", "survived"), 9999, "connections"),
    ]
    for (part, key), value, word in breakages:
        bad = copy.deepcopy(GOOD)
        bad[part][key] = value
        ok, why = bench.capacity_pass(bad, 50)
        assert not ok and any(word in w for w in why), (part, key, why)
    bad = dict(GOOD, aborted="timeout")
    assert not bench.capacity_pass(bad, 50)[0]


def test_workers_cover_the_fd_limit():
    assert bench.workers_for(100000) >= 6       # 19,900 descriptors per process
    assert bench.workers_for(50000) >= 3
    assert bench.workers_for(1000) == bench.CORES


def _fanout(p50, p99):
    return {"latency_ms": {"p50": p50, "p90": p99, "p99": p99, "p999": p99, "max": p99},
            "deliveries": {"subscribers": 1000, "lost": 0, "duplicated": 0},
            "delivered_per_sec": 10000.0, "server": {"cpu_s": {"us_per_delivery": 5.0}},
            "client": {"client_limited": False}}


def _rec(server, name, kind, result):
    return {"server": server, "name": name, "workload": {"kind": kind}, "result": result,
            "stack": {"workers": 2}}


def test_targets_are_judged_from_the_figures():
    recs = {
        ("wshub", "w2-fanout-1k"): _rec("wshub", "w2-fanout-1k", "fanout",
                                        _fanout(2.5, 9.0)),
        ("nchan", "w2-fanout-1k"): _rec("nchan", "w2-fanout-1k", "fanout",
                                        _fanout(6.0, 20.0)),
    }
    rows = {label: (vals, test) for label, vals, target, test in report.targets(recs)}
    vals, test = rows["W2 p50 at 1k subscribers, 10/s"]
    assert vals["wshub"][1] == 2.5 and test(vals["wshub"][1])
    vals, test = rows["W2 p99 at 1k subscribers, 10/s"]
    assert vals["wshub"][1] == 9.0 and not test(vals["wshub"][1])
    assert vals["nchan"][1] == 20.0
    vals, test = rows["W2 p99 at 10k subscribers, 10/s"]
    assert vals["wshub"] == (None, None)      # not run: neither met nor missed
    md = report.summary_md({"servers": ["wshub", "nchan"]}, recs, [])
    assert "| 2.50 ms | **yes** | 6.00 ms |" in md
    assert "| 9.00 ms | no | 20.0 ms |" in md
    ratios = {(n, label): r for n, label, a, b, r in report.ratio_rows(recs)}
    assert abs(ratios[("w2-fanout-1k", "p99 ms")] - 0.45) < 1e-9
