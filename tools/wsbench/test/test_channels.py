"""Tests of wsbench --channels against chanserver.py: subscribers land on the channel their index
picks, each broadcast is POSTed to its channel, and every counter (lost, duplicated,
wrong_channel, expected after a failed POST) moves exactly as far as the server misbehaves.

Run with `make -C tools/wsbench test`. Servers listen on ports the kernel picks.
"""
import json
import os
import subprocess
import urllib.request

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
WSBENCH = os.path.join(HERE, "..", "wsbench")
SERVER = os.path.join(HERE, "chanserver.py")
PYTHON = "/usr/bin/python3"

N, C, M = 40, 8, 80     # 5 subscribers per channel; round-robin: 10 broadcasts per channel


class ChanServer:
    def __init__(self, *args):
        self.proc = subprocess.Popen([PYTHON, SERVER, *[str(a) for a in args]],
                                     stdout=subprocess.PIPE, text=True)
        info = json.loads(self.proc.stdout.readline())
        self.ws = "ws://127.0.0.1:%d" % info["ws_port"]
        self.http = "http://127.0.0.1:%d" % info["pub_port"]

    def stats(self):
        with urllib.request.urlopen(self.http + "/stats", timeout=5) as r:
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
        s = ChanServer(*args)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def run(*args, expect_rc=0):
    r = subprocess.run([WSBENCH, *[str(a) for a in args]], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == expect_rc, r.stderr
    return json.loads(r.stdout) if expect_rc == 0 else r


def channels(srv, *extra, url="/ws/ch{c}", pub="/pub/ch{c}", n=N, m=M):
    return run("fanout", "--url", srv.ws + url, "--publish-url", srv.http + pub, "-n", n,
               "-m", m, "-r", 400, "--channels", C, "--settle", "0.2", "--drain-timeout", "3",
               *extra)


def test_clean_run_delivers_each_channel_to_its_own(server):
    srv = server()
    out = channels(srv)
    d = out["deliveries"]
    assert out["connections"]["ok"] == N
    assert d["subscribers"] == N
    assert d["expected"] == M // C * N == d["unique"] == d["received"]
    assert d["lost"] == d["duplicated"] == d["out_of_order"] == d["wrong_channel"] == 0
    assert d["foreign"] == 0
    st = srv.stats()
    assert st["subscribers"] == {"ch%d" % k: N // C for k in range(C)}
    assert st["posts"] == {"ch%d" % k: M // C for k in range(C)}
    ch = out["channels"]
    assert ch["count"] == C and ch["pick"] == "round-robin"
    assert ch["subscribers_per_channel"] == {"min": 5, "max": 5}
    assert ch["accepted_per_channel"] == {"min": 10, "max": 10}
    assert ch["accepted_per_sec"] > 0
    assert out["latency_ms"]["count"] == d["unique"]
    assert out["params"]["channels"] == C


def test_query_form_and_uneven_spread(server):
    # 43 subscribers on 8 channels: channels 0-2 have 6, the others 5.
    srv = server()
    out = channels(srv, url="/ws?channel=ch{c}", pub="/pub?channel=ch{c}", n=43)
    d = out["deliveries"]
    assert d["expected"] == 10 * 43 == d["unique"] and d["lost"] == 0
    assert out["channels"]["subscribers_per_channel"] == {"min": 5, "max": 6}
    assert srv.stats()["subscribers"]["ch2"] == 6


def test_random_pick_matches_what_the_server_saw(server):
    srv = server()
    out = channels(srv, "--channel-pick", "random", "--seed", 11, m=200)
    st = srv.stats()
    assert sum(st["posts"].values()) == 200
    # Expected is what the server's own per-channel counts say each subscriber should get.
    assert out["deliveries"]["expected"] == sum(v * N // C for v in st["posts"].values())
    assert out["deliveries"]["unique"] == out["deliveries"]["expected"]
    assert out["deliveries"]["lost"] == out["deliveries"]["wrong_channel"] == 0
    ch = out["channels"]
    assert ch["pick"] == "random"
    assert ch["accepted_per_channel"]["min"] == min(st["posts"].values())
    assert ch["accepted_per_channel"]["max"] == max(st["posts"].values())
    assert ch["accepted_per_channel"]["min"] < ch["accepted_per_channel"]["max"]
    again = channels(server(), "--channel-pick", "random", "--seed", 11, m=200)
    assert again["channels"]["accepted_per_channel"] == ch["accepted_per_channel"]


def test_drop_and_duplicate_count_within_the_channel(server):
    # Broadcast 21 and 43: channel 5 and 3 of round-robin; their windows are per channel.
    out = channels(server("--drop", 21, "--dup", 43))
    d = out["deliveries"]
    assert d["lost"] == 1
    assert d["duplicated"] == 1
    assert d["out_of_order"] == 0 and d["wrong_channel"] == 0
    assert d["unique"] == d["expected"] - 1


def test_leak_to_another_channel_is_wrong_channel(server):
    srv = server("--leak", 30)
    out = channels(srv)
    d = out["deliveries"]
    assert srv.stats()["leaked"] == N // C
    assert d["wrong_channel"] == N // C
    assert d["lost"] == d["duplicated"] == 0
    assert d["unique"] == d["expected"]


def test_failed_post_is_not_expected_of_its_channel(server):
    out = channels(server("--pub-fail", 9))
    d = out["deliveries"]
    assert out["publish"]["failed"] == 1
    assert d["expected"] == (M // C) * N - N // C
    assert d["unique"] == d["expected"] and d["lost"] == 0
    assert out["channels"]["accepted_per_channel"] == {"min": 9, "max": 10}


def test_a_server_without_channels_is_caught(server):
    out = channels(server("--ignore-channels"))
    d = out["deliveries"]
    assert d["unique"] == d["expected"] == M // C * N
    assert d["wrong_channel"] == M * N - d["expected"]


def test_hold_spreads_the_subscribers(server):
    srv = server()
    out = run("hold", "--url", srv.ws + "/sub/room.{c}", "-n", 30, "--channels", 7,
              "--hold", "0.2s")
    assert out["connections"]["ok"] == 30
    subs = srv.stats()["subscribers"]
    assert sorted(subs) == sorted("room.%d" % k for k in range(7))
    assert sum(subs.values()) == 30 and max(subs.values()) == 5 and min(subs.values()) == 4


@pytest.mark.parametrize("args", [
    ["--channels", 4, "--url", "ws://127.0.0.1:9/ws"],                       # no {c} in --url
    ["--channels", 4, "--url", "ws://127.0.0.1:9/ws/{c}",
     "--publish-url", "http://127.0.0.1:9/pub"],                             # nor in --publish-url
    ["--url", "ws://127.0.0.1:9/ws/{c}", "--publish-url", "http://127.0.0.1:9/pub/{c}"],
    ["--channels", 4, "--url", "ws://127.0.0.1:9/ws/{c}",
     "--publish-url", "http://127.0.0.1:9/pub/{c}", "--resume"],
    ["--channels", 4, "--channel-pick", "sideways", "--url", "ws://127.0.0.1:9/ws/{c}",
     "--publish-url", "http://127.0.0.1:9/pub/{c}"],
])
def test_inconsistent_channel_options_exit_2(args):
    r = run("fanout", *args, expect_rc=2)
    assert r.stdout == "" and "wsbench" in r.stderr
