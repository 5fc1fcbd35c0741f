"""clients/c/wshub_tail.c (build/wshub-tail, the example C client on libwebsockets) against the
real stack.

- A worker killed with SIGKILL while broadcasts keep coming: wshub-tail sees the drop (1006),
  reconnects with backoff, is welcomed with `resumed` from the last sequence it printed, and prints
  every broadcast exactly once, in order, text and binary. SIGINT then closes it cleanly (exit 0).
- The resume point from the command line (-s/-e): `resumed` with the replay, `reset` for another
  epoch, `expired` past a 64 KiB ring (each printed as a gap line). -n exits after N messages.
- A rolling restart: the close is seen (as 1002: lws 4.1.6 rewrites 1012, clients/c/README.md),
  the client reconnects and resumes without loss.
  An administrator's close (1008), or an upgrade refused with 404 or 400: no retry, exit 2.

Ports come from 23000-23999 and instance names start with "jsc" (this suite's allocation).
"""
import os
import re
import signal
import subprocess
import tempfile
import threading
import time

import pytest

from wshub_stack import binary, pid_alive, sanitizer_reports, wait_for


@pytest.fixture
def tails():
    """Every wshub-tail a test starts; killed at the end if still running. Sanitizer reports in
    their stderr (the asan build) fail the test."""
    started = []
    yield started
    found = []
    for t in started:
        t.kill()
        found += sanitizer_reports(t.err_path)
        os.unlink(t.err_path)
    assert found == [], "sanitizer reports from wshub-tail: %r" % found[:5]


class Tail:
    """One wshub-tail process; a thread collects its stdout lines."""

    def __init__(self, url, *args):
        exe = binary("wshub-tail")
        assert os.access(exe, os.X_OK), "%s missing: run make" % exe
        fd, self.err_path = tempfile.mkstemp(prefix="wshub-tail-", suffix=".err")
        with os.fdopen(fd, "wb") as err:
            self.proc = subprocess.Popen([exe] + list(args) + [url], stdout=subprocess.PIPE,
                                         stderr=err, stdin=subprocess.DEVNULL)
        self.lines = []
        self.cond = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for raw in self.proc.stdout:
            with self.cond:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self.cond.notify_all()

    def wait_line(self, pattern, timeout, count=1):
        """Waits until `count` lines match the regex; returns the matches."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                found = [m for m in (re.match(pattern, line) for line in self.lines) if m]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None and not self.reader.is_alive():
                    raise AssertionError("no %d lines /%s/ within %ss; exit %r; output:\n%s\n%s"
                                         % (count, pattern, timeout, self.proc.poll(),
                                            "\n".join(self.lines[-30:]), self.stderr_text()))
                self.cond.wait(min(left, 0.2))

    def messages(self):
        """(seq, printed payload) of every message line."""
        with self.cond:
            return [(int(m.group(1)), m.group(2)) for m in
                    (re.match(r"^(\d+) (text .*|binary [0-9a-f]*)$", line) for line in self.lines)
                    if m]

    def events(self):
        with self.cond:
            return [line for line in self.lines if line.startswith("# ")]

    def wait_exit(self, timeout):
        try:
            rc = self.proc.wait(timeout)
            self.reader.join(5)  # every line read before the caller looks
            return rc
        except subprocess.TimeoutExpired:
            raise AssertionError("wshub-tail still running after %ss:\n%s" %
                                 (timeout, "\n".join(self.lines[-20:])))

    def stderr_text(self):
        with open(self.err_path, errors="replace") as f:
            return f.read()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.reader.join(5)


def printed(payload):
    """How wshub-tail prints a payload: text with control bytes and '\\' as \\xNN; binary as
    hex."""
    if isinstance(payload, bytes):
        return "binary " + payload.hex()
    out = []
    for ch in payload:
        b = ch.encode("utf-8")
        out.append("\\x%02x" % b[0] if len(b) == 1 and (b[0] < 0x20 or b[0] in (0x7f, 0x5c))
                   else ch)
    return "text " + "".join(out)


def broadcast(stack, payload):
    if isinstance(payload, bytes):
        r = stack.broadcast(payload, content_type="application/octet-stream")
    else:
        r = stack.broadcast(payload)
    assert r.status == 202, r
    return r.json()["seq"], printed(payload)


def payload_for(prefix, i):
    if i % 4 == 3:
        return b"%s %d\n\x00\xff" % (prefix.encode(), i)
    return "%s %d \\ tab\there" % (prefix, i) if i % 4 == 1 else "%s %d" % (prefix, i)


class Publisher:
    """Broadcasts every `interval` s from a thread until stopped; records (seq, printed)."""

    def __init__(self, stack, prefix, interval=0.01):
        self.sent, self.error = [], None
        self.stop_event = threading.Event()

        def run():
            i = 0
            try:
                while not self.stop_event.is_set():
                    self.sent.append(broadcast(stack, payload_for(prefix, i)))
                    i += 1
                    self.stop_event.wait(interval)
            except Exception as e:  # reported by stop()
                self.error = e

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def stop(self):
        self.stop_event.set()
        self.thread.join(20)
        assert self.error is None, self.error
        return self.sent


def connection_rows(stack):
    r = stack.admin("GET", "/admin/connections")
    assert r.status == 200, r
    return r.json()["connections"]


WELCOME = r"^# welcome ([0-9a-f]{16}) (\d+) (\w+)$"


def test_tail_resumes_across_worker_kill(make_stack, tails):
    stack = make_stack(workers=2)
    tail = Tail(stack.nginx.ws_url)
    tails.append(tail)
    (w1,) = tail.wait_line(WELCOME, 15)
    assert w1.group(3) == "fresh", w1.group(0)
    sent = [broadcast(stack, payload_for("before", i)) for i in range(8)]
    tail.wait_line(r"^%d " % sent[-1][0], 10)

    (row,) = connection_rows(stack)
    victim = next(w["pid"] for w in stack.stats()["workers"] if w["slot"] == row["worker"])
    publisher = Publisher(stack, "during")
    try:
        wait_for(lambda: len(publisher.sent) >= 5, 10, "5 broadcasts")
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        w2 = tail.wait_line(WELCOME, 20, count=2)[1]
        resumed_after = time.monotonic() - killed_at
        n = len(publisher.sent)
        wait_for(lambda: len(publisher.sent) >= n + 20, 15, "20 broadcasts after the resume")
    finally:
        sent += publisher.stop()
    tail.wait_line(r"^%d " % sent[-1][0], 15)

    got = tail.messages()
    assert got == sent, "lost, duplicated or reordered: want %d, got %d; missing %r extra %r" % (
        len(sent), len(got), sorted(set(sent) - set(got))[:5], sorted(set(got) - set(sent))[:5])
    lines = tail.lines[:]
    second = [i for i, line in enumerate(lines) if re.match(WELCOME, line)][1]
    before = [line for line in lines[:second] if re.match(r"^\d+ ", line)]
    assert w2.group(3) == "resumed" and w2.group(1) == w1.group(1), w2.group(0)
    assert w2.group(2) == before[-1].split()[0], (w2.group(0), before[-1])
    closes = [e for e in tail.events() if e.startswith("# closed")]
    assert len(closes) == 1 and re.match(r"^# closed 1006 .*; reconnecting in \d+ ms$",
                                         closes[0]), closes
    assert not any(e.startswith("# gap") for e in tail.events()), tail.events()

    (row,) = connection_rows(stack)
    now = next(w["pid"] for w in stack.stats()["workers"] if w["slot"] == row["worker"])
    assert now != victim and pid_alive(now) and not pid_alive(victim)

    # SIGINT: a close frame, exit 0, the connection gone from the table.
    tail.proc.send_signal(signal.SIGINT)
    assert tail.wait_exit(10) == 0, tail.stderr_text()
    wait_for(lambda: connection_rows(stack) == [], 10, "the connection gone")
    print("wshub-tail: %d messages, resumed %.0f ms after the kill (%s)" % (
        len(sent), resumed_after * 1000, closes[0]))


def test_tail_resume_point_gaps_and_close_codes(make_stack, tails):
    stack = make_stack(workers=2, options={"ring_size": "64k", "worker_buffer": "64k",
                                           "max_message": "4k", "restart_spread": "200ms"})
    url = stack.nginx.ws_url
    sent = [broadcast(stack, payload_for("seed", i)) for i in range(6)]
    epoch = stack.stats()["ring"].get("epoch")

    # -s/-e: the replay after `since`, then -n ends it with exit 0.
    first = Tail(url, "-n", "3")
    tails.append(first)
    (w,) = first.wait_line(WELCOME, 15)
    assert w.group(3) == "fresh"
    epoch = epoch or w.group(1)
    assert w.group(1) == epoch, (w.group(0), epoch)
    since = sent[1][0]
    t = Tail(url, "-s", str(since), "-e", epoch, "-n", "4")
    tails.append(t)
    assert t.wait_exit(15) == 0, t.stderr_text()
    assert t.events()[0] == "# welcome %s %d resumed" % (epoch, since), t.events()
    assert t.messages() == sent[2:6]
    more = [broadcast(stack, "for the first %d" % i) for i in range(3)]
    assert first.wait_exit(15) == 0, first.stderr_text()
    assert first.messages() == more

    # Another epoch: reset, reported as a gap line, then live.
    t = Tail(url, "-s", str(since), "-e", "0123456789abcdef", "-n", "1")
    tails.append(t)
    (w,) = t.wait_line(WELCOME, 15)
    assert w.group(3) == "reset" and w.group(1) == epoch, w.group(0)
    (gap,) = t.wait_line(r"^# gap ", 5)
    assert gap.string == "# gap - %s reset" % w.group(2), t.events()
    live = broadcast(stack, "after reset")
    assert t.wait_exit(15) == 0
    assert t.messages() == [live]

    # Past the ring: 200 x 1 KiB through 64 KiB; since is long gone.
    since = live[0]
    for i in range(200):
        broadcast(stack, "%04d " % i + "y" * 1019)
    t = Tail(url, "-s", str(since), "-e", epoch, "-n", "1")
    tails.append(t)
    (w,) = t.wait_line(WELCOME, 15)
    assert w.group(3) == "expired" and int(w.group(2)) >= since + 200, w.group(0)
    (gap,) = t.wait_line(r"^# gap ", 5)
    assert gap.string == "# gap %d %s expired" % (since + 1, w.group(2)), t.events()
    live = broadcast(stack, "after expiry")
    assert t.wait_exit(15) == 0
    assert t.messages() == [live]

    # Rolling restart: closed, reconnected, resumed, nothing lost.
    t = Tail(url)
    tails.append(t)
    t.wait_line(WELCOME, 15)
    publisher = Publisher(stack, "restart", interval=0.02)
    try:
        wait_for(lambda: len(publisher.sent) >= 5, 10, "5 broadcasts")
        r = stack.admin("POST", "/admin/workers/restart")
        assert r.status == 202, r
        w2 = t.wait_line(WELCOME, 20, count=2)[1]
        n = len(publisher.sent)
        wait_for(lambda: len(publisher.sent) >= n + 10, 10, "10 broadcasts after the resume")
    finally:
        sent = publisher.stop()
    t.wait_line(r"^%d " % sent[-1][0], 15)
    assert w2.group(3) == "resumed", w2.group(0)
    assert t.messages() == sent
    closes = [e for e in t.events() if e.startswith("# closed")]
    # lws 4.1.6's client parser turns 1012 into 1002 before the callback sees it
    # (clients/c/README.md); the reason text still says what happened.
    assert len(closes) == 1 and re.match(r"^# closed (1012|1002) service restart; reconnecting"
                                         r" in \d+ ms$", closes[0]), closes
    print("rolling restart: %s" % closes[0])

    # 1008 from the administrator: no retry, exit status 2.
    wait_for(lambda: len(connection_rows(stack)) == 1, 10, "one connection")
    (row,) = connection_rows(stack)
    r = stack.admin("DELETE", "/admin/connections/%d" % row["id"])
    assert r.status == 202, r
    assert t.wait_exit(10) == 2, t.stderr_text()
    assert t.events()[-1].startswith("# closed 1008 "), t.events()
    assert "not retrying" in t.events()[-1]

    # Refusals no retry can fix: 404 (wrong path), 400 (malformed since). Exit 2 at once.
    for path, status in (("/nowhere", 404), (stack.hub.ws_path + "?since=abc", 400)):
        t = Tail("ws://127.0.0.1:%d%s" % (stack.nginx.port, path))
        tails.append(t)
        assert t.wait_exit(10) == 2, t.stderr_text()
        assert len(t.events()) == 1 and t.events()[0].startswith(
            "# refused: HTTP %d " % status) and t.events()[0].endswith("not retrying"), t.events()
