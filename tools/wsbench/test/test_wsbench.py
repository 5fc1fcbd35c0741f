"""Tests of wsbench against wsserver.py: every counter wsbench reports is shown to move when
the server misbehaves in exactly that way, and to stay at zero when it does not.

Run with `make -C tools/wsbench test` (pytest under /usr/bin/python3). Each server listens on
ports the kernel picks, so tests never collide with other runs.
"""
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
WSBENCH = os.path.join(HERE, "..", "wsbench")
SERVER = os.path.join(HERE, "wsserver.py")
PYTHON = "/usr/bin/python3"


class Server:
    def __init__(self, *args):
        self.proc = subprocess.Popen([PYTHON, SERVER, *args], stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()   # EOF (and a failed parse) if the server died
        info = json.loads(line)
        self.ws_url = "ws://127.0.0.1:%d/ws" % info["ws_port"]
        self.pub_url = "http://127.0.0.1:%d/pub" % info["pub_port"]
        self.stats_url = "http://127.0.0.1:%d/stats" % info["pub_port"]
        self.pid = info["pid"]

    def stats(self):
        with urllib.request.urlopen(self.stats_url, timeout=5) as r:
            return json.loads(r.read())

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
def server():
    started = []

    def start(*args):
        s = Server(*args)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def wsbench(*args, expect_rc=0, timeout=60):
    r = subprocess.run([WSBENCH, *[str(a) for a in args]], capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == expect_rc, r.stderr
    return json.loads(r.stdout)


def hold(srv, n, *extra):
    return wsbench("hold", "--url", srv.ws_url, "-n", n, "--hold", "0.2s", *extra)


def fanout(srv, n, m, *extra, expect_rc=0):
    return wsbench("fanout", "--url", srv.ws_url, "--publish-url", srv.pub_url, "-n", n,
                   "-m", m, "-r", 200, "--settle", "0.1", "--drain-timeout", "3", *extra,
                   expect_rc=expect_rc)


def no_failures(out):
    assert out["connections"]["failed_total"] == 0
    assert all(v == 0 for v in out["connections"]["failed"].values())


# ---- command line ----

def test_help_documents_every_long_option():
    src = open(os.path.join(HERE, "..", "opts.c")).read()
    names = re.findall(r'\{"([a-z-]+)", (?:required|no)_argument', src)
    assert len(names) > 20
    text = subprocess.run([WSBENCH, "--help"], capture_output=True, text=True, check=True).stdout
    for name in names:
        assert "--" + name in text, name


@pytest.mark.parametrize("args", [[], ["sideways"], ["hold", "--nope"], ["hold", "-n", "0"],
                                  ["hold", "--url", "http://x/"], ["fanout", "-r", "0"],
                                  ["hold", "--hold", "3 days"]])
def test_bad_command_line_exits_2(args):
    r = subprocess.run([WSBENCH, *args], capture_output=True, text=True, timeout=10)
    assert r.returncode == 2
    assert r.stdout == ""
    assert "wsbench" in r.stderr


# ---- against an independent implementation (the websockets package) ----

def test_hold_against_websockets_library_with_its_pings(server):
    # The library pings every 0.3 s and drops a client whose pong is late or wrong.
    srv = server("--impl", "lib", "--lib-ping-interval", "0.3")
    out = wsbench("hold", "--url", srv.ws_url, "-n", 200, "--hold", "1.5s",
                  "--server-pids", srv.pid)
    no_failures(out)
    c = out["connections"]
    assert c["attempted"] == 200 and c["ok"] == 200 and c["survived"] == 200
    assert all(v == 0 for v in c["dropped"].values())
    assert c["pings_answered"] >= 200
    assert c["closed_clean_at_end"] == 200
    mem = out["server"]["memory"]
    assert out["server"]["pids"] == [srv.pid]
    assert mem["before"]["pss_kb"] > 0 and mem["after"]["rss_kb"] > mem["before"]["rss_kb"]
    assert mem["per_connection_bytes"] > 0


def test_fanout_against_websockets_library(server):
    srv = server("--impl", "lib")
    out = fanout(srv, 200, 30, "--server-pids", srv.pid)
    no_failures(out)
    d = out["deliveries"]
    assert out["publish"]["ok"] == 30
    assert d["expected"] == 6000 and d["received"] == 6000 and d["unique"] == 6000
    assert d["lost"] == d["duplicated"] == d["out_of_order"] == d["foreign"] == 0
    assert d["bad_size"] == 0
    lat = out["latency_ms"]
    assert lat["count"] == 6000
    assert 0 < lat["p50"] <= lat["p99"] <= lat["max"]
    assert out["post_to_last_delivery_ms"]["broadcasts"] == 30
    assert out["post_to_last_delivery_ms"]["max"] == lat["max"]
    assert out["last_delivery_ms"] >= lat["max"]
    assert out["server"]["cpu_s"]["phase"] >= 0
    assert out["client"]["client_limited"] in (True, False)


# ---- handshake failures, each counted under its own reason ----

def test_wrong_accept_is_counted(server):
    srv = server("--bad-accept")
    out = hold(srv, 50)
    c = out["connections"]
    assert c["ok"] == 0 and c["failed"]["bad_accept"] == 50 and c["failed_total"] == 50


def test_non_101_status_is_counted(server):
    srv = server("--status", "403")
    c = hold(srv, 50)["connections"]
    assert c["ok"] == 0 and c["failed"]["status"] == 50 and c["failed_total"] == 50


def test_refused_is_counted():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()   # nothing listens there now
    out = wsbench("hold", "--url", "ws://127.0.0.1:%d/" % port, "-n", 30, "--hold", "0")
    assert out["connections"]["failed"]["refused"] == 30


def test_silent_server_times_out(server):
    srv = server("--silent")
    out = wsbench("hold", "--url", srv.ws_url, "-n", 20, "--hold", "0",
                  "--connect-timeout", "500ms")
    assert out["connections"]["failed"]["timeout"] == 20
    assert out["connections"]["connect_s"] < 3


def test_whole_run_timeout_aborts_and_still_reports(server):
    srv = server("--silent")
    out = wsbench("hold", "--url", srv.ws_url, "-n", 10, "--connect-timeout", "30",
                  "--timeout", "1", expect_rc=1)
    assert out["aborted"] == "timeout"
    assert out["wall_s"] < 15


# ---- deliveries: loss, duplicates, reordering ----

def test_dropped_broadcast_is_lost_once(server):
    srv = server("--drop", "5")
    out = fanout(srv, 20, 10)
    d = out["deliveries"]
    assert d["lost"] == 1 and d["received"] == 199 and d["unique"] == 199
    assert d["duplicated"] == 0 and d["out_of_order"] == 0


def test_duplicated_broadcast_is_counted(server):
    srv = server("--dup", "5")
    d = fanout(srv, 20, 10)["deliveries"]
    assert d["duplicated"] == 1 and d["received"] == 201 and d["unique"] == 200
    assert d["lost"] == 0 and d["out_of_order"] == 0


def test_swapped_broadcasts_are_out_of_order(server):
    srv = server("--swap", "3")
    d = fanout(srv, 20, 10)["deliveries"]
    assert d["out_of_order"] == 1 and d["lost"] == 0 and d["duplicated"] == 0
    assert d["unique"] == 200


def test_clean_run_counts_nothing_wrong(server):
    srv = server()
    d = fanout(srv, 20, 10)["deliveries"]
    assert (d["lost"], d["duplicated"], d["out_of_order"], d["fragmented"]) == (0, 0, 0, 0)
    assert d["received"] == 200


# ---- control frames ----

def test_pings_get_masked_pongs_with_the_same_payload(server):
    srv = server("--ping")
    out = fanout(srv, 30, 10)
    assert out["connections"]["pings_answered"] == 300
    st = srv.stats()
    assert st["pings_sent"] == 300 and st["pongs_ok"] == 300
    assert st["pongs_bad"] == 0 and st["unmasked_frames"] == 0
    assert out["deliveries"]["received"] == 300


def test_fragmented_messages_with_a_ping_between_fragments(server):
    srv = server("--fragment", "3", "--ping")
    out = fanout(srv, 20, 10, "-s", 300)
    d = out["deliveries"]
    assert d["received"] == 200 and d["fragmented"] == 200 and d["lost"] == 0
    assert d["bad_size"] == 0
    st = srv.stats()
    assert st["pongs_ok"] == st["pings_sent"] == 400 and st["pongs_bad"] == 0


def test_server_close_is_echoed_and_counted(server):
    srv = server("--close-after", "0.2")
    out = wsbench("hold", "--url", srv.ws_url, "-n", 25, "--hold", "1s")
    c = out["connections"]
    assert c["ok"] == 25 and c["survived"] == 0
    assert c["dropped"]["close_frame"] == 25 and c["server_closes_echoed"] == 25
    st = srv.stats()
    assert st["close_echo_ok"] == 25 and st["close_echo_bad"] == 0


# ---- publisher ----

def test_failed_post_is_counted_and_not_expected(server):
    srv = server("--pub-fail", "2")
    out = fanout(srv, 10, 10)
    p, d = out["publish"], out["deliveries"]
    assert p["ok"] == 9 and p["failed"] == 1 and p["status"]["5xx"] == 1
    assert p["first_bad_status"] == 500
    assert d["expected"] == 90 and d["received"] == 90 and d["lost"] == 0


def test_chunked_answers_and_connection_rotation(server):
    srv = server("--chunked")
    out = fanout(srv, 10, 10, "--pub-max-requests", 3, "--pub-connections", 2)
    p = out["publish"]
    assert p["ok"] == 10 and p["unanswered"] == 0 and p["failed"] == 0
    # two lanes, each rotating after 3 requests: 5 requests per lane -> 2 connections per lane
    assert p["http_connections"] == 4
    assert out["deliveries"]["received"] == 100


# ---- processes and source addresses ----

def test_processes_and_source_addresses(server):
    srv = server()
    out = wsbench("hold", "--url", srv.ws_url, "-n", 300, "-p", 3, "--source-addrs", 3,
                  "--hold", "0.2s")
    no_failures(out)
    assert out["params"]["processes"] == 3
    assert out["connections"]["ok"] == 300
    assert srv.stats()["peers"] == ["127.0.0.1", "127.0.0.2", "127.0.0.3"]


# ---- randomized pattern: Poisson arrivals, sizes from a range ----

def test_poisson_gaps_are_exponential_and_repeat_with_the_seed(server):
    srv = server()
    runs = [fanout(srv, 5, 150, "-r", 150, "--arrivals", "poisson", "--seed", seed)
            for seed in (5, 5, 6)]
    for out in runs:
        p = out["publish"]
        assert out["params"]["arrivals"] == "poisson"
        assert p["ok"] == 150 and out["deliveries"]["lost"] == 0
        # exponential gaps: standard deviation equal to the mean (cv 1; +-0.3 covers 150
        # samples and the loop's millisecond ticks)
        assert 0.7 < p["interval_ms"]["cv"] < 1.3, p["interval_ms"]
        assert 3 < p["interval_ms"]["mean"] < 12
    assert runs[0]["publish"]["schedule_span_s"] == runs[1]["publish"]["schedule_span_s"]
    assert runs[0]["publish"]["schedule_span_s"] != runs[2]["publish"]["schedule_span_s"]
    fixed = fanout(srv, 5, 100, "-r", 100)["publish"]
    assert fixed["interval_ms"]["cv"] < 0.35 and abs(fixed["interval_ms"]["mean"] - 10) < 1
    assert abs(fixed["schedule_span_s"] - 0.99) < 0.001


def test_sizes_from_a_range_are_checked_per_broadcast(server):
    srv = server()
    out = fanout(srv, 10, 60, "-s", 100, "--size-max", 3000, "--seed", 3)
    d = out["deliveries"]
    assert d["received"] == 600 and d["bad_size"] == 0 and d["lost"] == 0
    st = srv.stats()
    assert 100 <= st["post_min"] and st["post_max"] <= 3000
    assert st["post_max"] - st["post_min"] > 1500    # 60 uniform draws spread out
    # one delivery a byte short of the size its sequence number implies is caught
    srv2 = server("--trim", "4")
    d = fanout(srv2, 10, 60, "-s", 100, "--size-max", 3000, "--seed", 3)["deliveries"]
    assert d["bad_size"] == 1 and d["received"] == 600 and d["lost"] == 0


def test_size_max_below_size_is_refused():
    r = subprocess.run([WSBENCH, "fanout", "-s", "500", "--size-max", "100"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and "size-max" in r.stderr


# ---- connection churn ----

def churn_fanout(srv, *extra):
    return wsbench("fanout", "--url", srv.ws_url, "--publish-url", srv.pub_url, "-n", 100,
                   "-m", 200, "-r", 100, "--settle", "0.1", "--drain-timeout", "3",
                   "--churn", 40, "--churn-pool", 0.3, "--churn-away", "100ms", *extra)


def test_churn_leaves_and_comes_back(server):
    srv = server()
    out = churn_fanout(srv)
    no_failures(out)
    c, d = out["churn"], out["deliveries"]
    assert c["pool"] == 30 and d["subscribers"] == 70
    # 40 leaves/s over the ~2 s of publishing
    assert 60 <= c["left"] <= 90, c
    assert c["rejoin_failed_total"] == 0 and c["closes_cut"] == 0
    assert c["closes_answered"] == c["left"]
    # comebacks still away at the end are the only ones missing
    assert c["left"] - 8 <= c["rejoined"] <= c["left"]
    assert c["rejoin_ms"]["count"] == c["rejoined"] and c["rejoin_ms"]["min"] > 0
    assert out["connections"]["survived"] == 100 - (c["left"] - c["rejoined"])
    st = srv.stats()
    assert st["handshakes"] == 100 + c["rejoined"]
    # pool sessions receive, with no gap; the steady 70 keep exact accounting
    assert c["unique"] > 1000 and c["session_gaps"] == 0
    assert d["expected"] == 70 * 200 and d["received"] == 14000 and d["lost"] == 0
    assert d["duplicated"] == 0 and d["out_of_order"] == 0


def test_churn_session_gap_is_counted(server):
    # Every connection after the first 100, i.e. every comeback, misses broadcast 150.
    srv = server("--drop-late", "100", "150")
    out = churn_fanout(srv)
    c, d = out["churn"], out["deliveries"]
    dropped = srv.stats()["late_dropped"]
    assert dropped > 0
    # A session that received both sides of the hole counts it once; one that left or came
    # back right at broadcast 150 cannot tell a hole from its edge.
    assert 0 < c["session_gaps"] <= dropped
    assert d["lost"] == 0 and d["received"] == 14000


def test_churn_during_hold(server):
    srv = server()
    out = wsbench("hold", "--url", srv.ws_url, "-n", 50, "--hold", "1.5s", "--churn", 20,
                  "--churn-pool", 0.5, "--churn-away", "200ms")
    c = out["churn"]
    assert c["pool"] == 25 and 20 <= c["left"] <= 32
    assert c["rejoin_failed_total"] == 0 and c["closes_answered"] == c["left"]
    assert c["left"] - 6 <= c["rejoined"] <= c["left"]
    assert out["connections"]["survived"] == 50 - (c["left"] - c["rejoined"])
    assert "session_gaps" not in c


def test_cdf_is_the_whole_distribution(server):
    srv = server()
    out = fanout(srv, 20, 30, "--cdf")
    lat = out["latency_ms"]
    cdf = lat["cdf"]
    assert len(cdf) >= 1 and cdf[-1][1] == 1.0
    assert all(a[0] < b[0] and a[1] < b[1] for a, b in zip(cdf, cdf[1:]))
    assert cdf[-1][0] >= lat["max"]
    # the median's bucket: first edge whose fraction reaches 0.5, within 1/64 of p50
    edge = next(x for x, f in cdf if f >= 0.5)
    assert lat["p50"] <= edge <= lat["p50"] * 1.04 + 0.002
    assert "cdf" not in fanout(srv, 5, 5)["latency_ms"]


# ---- --resume: wshub.v1, reconnect and resume (wsserver.py --v1) ----

def resume_fanout(srv, n, m, *extra, expect_rc=0):
    return fanout(srv, n, m, "--resume", "--reconnect-min", "20ms", "--reconnect-max", "200ms",
                  "--reconnect-quick", "20ms", *extra, expect_rc=expect_rc)


def resume_clean(r):
    """Nothing the client may hold against the server."""
    assert (r["bad_welcomes"], r["bad_envelopes"], r["mislabeled"], r["regressed"]) == \
        (0, 0, 0, 0), r
    assert r["waiting_at_stop"] == 0 and r["acked_without_seq"] == 0


def test_resume_through_a_rolling_restart_and_a_cut(server, tmp_path):
    # Every client gets 1012 after broadcast 10; every other one is cut after broadcast 25
    # (no close frame, as when a worker is killed). All resume without loss or duplicate, and
    # the seqs (1000, 1003, ...) come from the POST answers, not from the payloads.
    srv = server("--v1", "--close-1012-at", "10", "--cut-at", "25")
    events = tmp_path / "events.txt"
    out = resume_fanout(srv, 40, 40, "--events", events)
    no_failures(out)
    d, r = out["deliveries"], out["resume"]
    assert d["subscribers"] == 40 and d["expected"] == 1600
    assert d["unique"] == 1600 and d["lost"] == 0 and d["duplicated"] == 0
    assert d["out_of_order"] == 0
    resume_clean(r)
    assert r["clients"] == 40 and r["gapped"] == 0 and r["gap_messages"] == 0
    assert r["closes"]["1012"] == 40 and r["closes"]["1006"] == 20
    assert r["ended"] == {"restart": 40, "lost": 20, "other": 0}
    assert r["reconnects"] == 60 == r["welcome"]["resumed"] and r["attempts_failed_total"] == 0
    assert r["welcomes_total"] == 100
    assert r["recovery_by_cause_ms"]["restart"]["count"] == 40
    assert r["recovery_by_cause_ms"]["lost"]["count"] == 20
    assert r["recovery_ms"]["count"] == 60 and 0 < r["recovery_ms"]["p50"] <= r["recovery_ms"]["max"]
    # 1012: 0..20 ms jitter; lost: 10..20 ms (min 20 ms, halved) -- plus the handshake
    assert r["recovery_by_cause_ms"]["restart"]["max"] < 500
    assert 9 < r["recovery_by_cause_ms"]["lost"]["min"]
    st = srv.stats()
    assert st["v1_resumed"] == 60 and st["v1_cut"] == 20 and st["handshakes"] == 100
    lines = events.read_text().splitlines()
    welcomes = [l.split() for l in lines if l.startswith("welcome ")]
    assert len(welcomes) == 60 and all(w[2] == "resumed" for w in welcomes)
    assert sorted(w[3] for w in welcomes).count("lost") == 20
    for w in welcomes:     # t_lost <= t_attempt <= t_welcome
        assert int(w[5]) <= int(w[6]) <= int(w[7])


def test_resume_counts_loss_duplicate_and_gap_apart(server, tmp_path):
    srv = server("--v1", "--v1-skip", "5", "--v1-dup", "6", "--v1-gap", "7")
    events = tmp_path / "events.txt"
    out = resume_fanout(srv, 10, 12, "--events", events)
    d, r = out["deliveries"], out["resume"]
    assert d["lost"] == 1 and d["duplicated"] == 1 and d["unique"] == 118
    assert r["gapped"] == 1 and r["gap_messages"] == 1 and r["gap_reasons"]["skipped"] == 1
    assert r["gap_seqs"] == 1
    # the duplicate arrived under a seq not above the position: regressed, not out of order
    assert r["regressed"] == 1 and d["out_of_order"] == 0 and r["mislabeled"] == 0
    # One client (whichever reached the server first) saw it all: broadcast 5 had seq
    # 1000 + 3*5, and so on.
    text = events.read_text()
    victim = re.search(r"^missing (\d+) 1015 5$", text, re.M).group(1)
    assert re.search(r"^dup %s 1018 6 \d+$" % victim, text, re.M)
    assert re.search(r"^gap %s 1021 1021 skipped \d+$" % victim, text, re.M)
    assert re.search(r"^regress %s 1018 1018 \d+$" % victim, text, re.M)


def test_resume_after_expiry_is_a_gap_not_a_loss(server):
    # The server keeps 3 broadcasts and refuses upgrades for 0.6 s after the cut: the cut
    # clients back off, come back too late and are told `expired`; what they missed is gapped.
    srv = server("--v1", "--retain", "3", "--cut-at", "10", "--refuse-for", "0.6")
    out = fanout(srv, 10, 150, "--resume", "-r", 100, "--reconnect-min", "100ms",
                 "--reconnect-max", "400ms")
    d, r = out["deliveries"], out["resume"]
    assert r["ended"]["lost"] == 5
    assert r["attempts_failed"]["status"] >= 5 == srv.stats()["v1_expired"]
    assert r["welcome"]["expired"] == 5 and r["welcome"]["resumed"] == 0
    assert d["lost"] == 0 and d["duplicated"] == 0 and r["gapped"] > 5 * 20
    assert r["gapped"] + d["unique"] == 10 * 150
    assert r["gap_seqs"] >= r["gapped"] and r["bad_welcomes"] == 0
    assert r["recovery_by_cause_ms"]["lost"]["min"] > 500


def test_data_after_the_servers_close_is_ignored_and_counted(server):
    # The server closes every client with 1012 after broadcast 3 and, wrongly, keeps sending.
    srv = server("--v1", "--close-1012-at", "3", "--data-after-close")
    out = resume_fanout(srv, 10, 20)
    assert out["connections"]["data_after_server_close"] > 0
    d, r = out["deliveries"], out["resume"]
    assert d["lost"] == 0 and d["duplicated"] == 0 and r["bad_welcomes"] == 0
    assert d["unique"] == 200 and r["reconnects"] == 10


def test_resume_wrong_welcome_and_missing_subprotocol(server):
    srv = server("--v1", "--v1-bad-welcome", "--close-1012-at", "3")
    r = resume_fanout(srv, 5, 10)["resume"]
    assert r["bad_welcomes"] == 5 and r["welcome"]["resumed"] == 5
    srv = server("--v1", "--v1-no-protocol")
    out = wsbench("hold", "--url", srv.ws_url, "-n", 5, "--hold", "0", "--resume")
    assert out["connections"]["failed"]["subprotocol"] == 5


def test_stalled_readers_are_left_out_of_deliveries(server):
    srv = server()
    out = fanout(srv, 50, 20, "--stalled", 0.2, "-s", 2000)
    d = out["deliveries"]
    assert out["stalled"] == {"connections": 10, "ended_by_server": 0}
    assert d["subscribers"] == 40 and d["received"] == 800 and d["lost"] == 0
    assert out["connections"]["survived"] == 50


def test_end_hold_until_sigusr1(server):
    srv = server()
    p = subprocess.Popen([WSBENCH, "hold", "--url", srv.ws_url, "-n", "20", "--hold", "0",
                          "--end-hold", "60s", "-v"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        for line in p.stderr:
            if "end hold:" in line:
                break
        assert srv.stats()["open"] == 20
        t0 = time.monotonic()
        p.send_signal(signal.SIGUSR1)
        out = json.loads(p.stdout.read())
        assert p.wait(10) == 0 and time.monotonic() - t0 < 5
    finally:
        p.kill()
    assert out["connections"]["survived"] == 20
