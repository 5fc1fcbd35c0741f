"""clients/js/wshub.js in headless Chromium (cdp.py) against the real stack, with nginx in front.

A small HTTP server in the test serves the library and two pages. One page imports it as an ES
module (`import { WsHub } from "/wshub.mjs"`). The other loads it as a classic
`<script src="/wshub.js">`. The pages record every event the client raises (state, welcome,
message, gap, error) in `window.events`. The test reads that log and checks it against the
sequence numbers POST /admin/broadcast returned:

- a worker killed with SIGKILL while broadcasts keep coming: the page sees the drop (1006),
  reconnects, is welcomed with `resumed`, and has every message exactly once, in order, with no
  gap event (both loading modes);
- resume that cannot work: a reload resumes from sessionStorage; a position older than a tiny ring
  gives welcome `expired` and a gap event; a restarted hub (new epoch) gives `reset` and a gap
  event; the stream goes on live after each;
- close codes: a rolling restart (1012) reconnects after a short delay and resumes without loss;
  an administrator's close (1008) stops the client until the page calls connect() again.

Ports come from 23000-23999 and instance names start with "jsc" (this suite's allocation).
"""
import asyncio
import http.server
import json
import os
import signal
import threading
import time

import pytest

import cdp
import wshub_stack
from wsclients import in_thread
from wshub_stack import REPO, pid_alive, wait_for

CLIENT_DIR = os.path.join(REPO, "clients", "js")
# ---- the pages -------------------------------------------------------------------------------

# Shared by both pages: startHub() makes the client with the test's options and records every
# event it raises. The listeners are passed as options (onState, ...) so that the first
# 'connecting' state, raised inside the constructor, is recorded too.
HARNESS_JS = r"""
window.events = [];
window.startHub = function (url, opts) {
  opts = Object.assign({}, opts || {});
  if (opts.storage === "session") opts.storage = window.sessionStorage;
  const t0 = performance.now();
  const at = () => Math.round(performance.now() - t0);
  const hex = (buf) => Array.from(new Uint8Array(buf),
                                  (b) => b.toString(16).padStart(2, "0")).join("");
  const push = (e) => window.events.push(Object.assign({at: at()}, e));
  opts.onState = (e) => push({t: "state", state: e.state, previous: e.previous, code: e.code,
                              reason: e.reason, delay: e.delay, attempt: e.attempt});
  opts.onWelcome = (e) => push({t: "welcome", epoch: e.epoch, last: e.last, status: e.status,
                                since: e.since});
  opts.onMessage = (e) => push({t: "message", seq: e.seqText, num: e.seq, epoch: e.epoch,
                                binary: e.binary, data: e.binary ? hex(e.data) : e.data});
  opts.onGap = (e) => push({t: "gap", from: e.fromText, to: e.toText, reason: e.reason,
                            epoch: e.epoch, previousEpoch: e.previousEpoch});
  opts.onError = (e) => push({t: "error", message: e.message});
  window.hub = new window.WsHubUnderTest(url, opts);
  return window.hub.state;
};
"""

PAGES = {
    # ES module: named and default export of the facade must be the same class.
    "module.html": """<!doctype html><meta charset="utf-8"><title>wshub.js as a module</title>
<link rel="icon" href="data:,">
<script src="/harness.js"></script>
<script type="module">
import WsHubDefault, { WsHub } from "/wshub.mjs";
if (WsHubDefault !== WsHub || typeof WsHub !== "function") throw new Error("bad exports");
window.WsHubUnderTest = WsHub;
window.loadMode = "module";
</script>""",
    # Classic script: WsHub is a global as soon as the script tag has run.
    "script.html": """<!doctype html><meta charset="utf-8"><title>wshub.js as a script</title>
<link rel="icon" href="data:,">
<script src="/wshub.js"></script>
<script src="/harness.js"></script>
<script>
if (typeof WsHub !== "function") throw new Error("no global WsHub");
window.WsHubUnderTest = WsHub;
window.loadMode = "script";
</script>""",
}


class PageServer:
    """The library and the test pages over HTTP on 127.0.0.1 (a thread in the test process)."""

    def __init__(self):
        files = {"/" + name: (body.encode(), "text/html; charset=utf-8")
                 for name, body in PAGES.items()}
        files["/harness.js"] = (HARNESS_JS.encode(), "text/javascript")
        for name in ("wshub.js", "wshub.mjs"):
            with open(os.path.join(CLIENT_DIR, name), "rb") as f:
                files["/" + name] = (f.read(), "text/javascript")

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body, ctype = files.get(self.path.split("?")[0], (None, None))
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.port = wshub_stack.free_port()
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, page):
        return "http://127.0.0.1:%d/%s" % (self.port, page)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def pages():
    server = PageServer()
    yield server
    server.close()


class Page:
    """One browser page running the client: start it, read its event log, wait on it."""

    def __init__(self, browser):
        self.browser = browser

    async def open(self, url, ws_url, **opts):
        await self.browser.navigate(url)
        await self.browser.wait_for("!!window.WsHubUnderTest", 10, "the library loaded")
        return await self.browser.evaluate("startHub(%s, %s)" % (json.dumps(ws_url),
                                                                 json.dumps(opts)))

    async def events(self, kind=None):
        evs = await self.browser.evaluate("window.events")
        return [e for e in evs if kind is None or e["t"] == kind]

    async def wait_events(self, kind, count, timeout, what):
        return await self.browser.wait_for(
            "(() => { const e = window.events.filter((x) => x.t === %s);"
            " return e.length >= %d ? e : null; })()" % (json.dumps(kind), count), timeout, what)

    async def wait_seq(self, seq, timeout, what):
        """Until the page has a message with sequence number >= seq."""
        return await self.browser.wait_for(
            "window.events.some((x) => x.t === 'message' && +x.seq >= %d)" % seq, timeout, what)

    async def stats(self):
        return await self.browser.evaluate("Object.assign({}, window.hub.stats)")


def broadcast(stack, text=None, data=None):
    """POSTs one broadcast; returns (seq, what the page records: text, or hex for binary)."""
    if data is not None:
        r = stack.broadcast(data, content_type="application/octet-stream")
        payload = data.hex()
    else:
        r = stack.broadcast(text)
        payload = text
    assert r.status == 202, r
    return r.json()["seq"], payload


def connection_rows(stack):
    r = stack.admin("GET", "/admin/connections")
    assert r.status == 200, r
    return r.json()["connections"]


def worker_pid(stack, slot):
    return next(w["pid"] for w in stack.stats()["workers"] if w["slot"] == slot)


def real_console_errors(browser):
    """Console errors other than Chromium's own report of a refused or dropped WebSocket, which
    the client handles."""
    return [e for e in browser.console_errors if "WebSocket connection to" not in e]


class Publisher:
    """Broadcasts continuously (every `interval` s) from a thread until stopped, recording the
    (seq, payload) pairs in order."""

    def __init__(self, stack, prefix, interval=0.01):
        self.stack, self.prefix, self.interval = stack, prefix, interval
        self.sent = []
        self.error = None
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        i = 0
        try:
            while not self.stop_event.is_set():
                if i % 5 == 4:
                    self.sent.append(broadcast(self.stack, data=b"%s %d\n\x00\xff" %
                                               (self.prefix.encode(), i)))
                else:
                    self.sent.append(broadcast(self.stack, "%s %d" % (self.prefix, i)))
                i += 1
                self.stop_event.wait(self.interval)
        except Exception as e:  # reported by stop()
            self.error = e

    def stop(self):
        self.stop_event.set()
        self.thread.join(20)
        assert self.error is None, self.error
        return self.sent


def messages_of(events):
    return [(int(e["seq"]), e["data"]) for e in events if e["t"] == "message"]


# ---- tests -----------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["module", "script"])
def test_resume_across_worker_kill(make_stack, pages, mode):
    assert cdp.available(), "chromium is not installed (scripts/deps.sh installs it)"
    stack = make_stack(workers=2)

    async def run():
        browser = await cdp.Browser(stack.base).start()
        page = Page(browser)
        try:
            state = await page.open(pages.url(mode + ".html"), stack.nginx.ws_url,
                                    backoff={"base": 200, "cap": 2000})
            assert state == "connecting", state
            assert await browser.evaluate("window.loadMode") == mode
            (welcome,) = await page.wait_events("welcome", 1, 15, "the first welcome")
            assert welcome["status"] == "fresh" and welcome["since"] is None, welcome
            assert len(welcome["epoch"]) == 16, welcome

            sent = []
            for i in range(10):  # text and binary (with a newline and 0x00 in the body)
                if i % 3:
                    sent.append(await in_thread(broadcast, stack, "before %d" % i))
                else:
                    sent.append(await in_thread(broadcast, stack, None, b"\n\x00bin %d" % i))
            await page.wait_seq(sent[-1][0], 10, "the first 10 messages")

            # The worker holding the page's connection (the only one), through nginx.
            (row,) = await in_thread(connection_rows, stack)
            victim = await in_thread(worker_pid, stack, row["worker"])
            killed_at = time.monotonic()
            publisher = Publisher(stack, "during")
            try:
                await in_thread(wait_for, lambda: len(publisher.sent) >= 5, 10, "5 broadcasts")
                os.kill(victim, signal.SIGKILL)
                welcomes = await page.wait_events("welcome", 2, 20, "the welcome after the kill")
                resumed_after = time.monotonic() - killed_at
                n = len(publisher.sent)
                await in_thread(wait_for, lambda: len(publisher.sent) >= n + 20, 15,
                                "20 broadcasts after the resume")
            finally:
                sent += publisher.stop()
            await page.wait_seq(sent[-1][0], 15, "the last broadcast")

            events = await page.events()
            got = messages_of(events)
            assert got == sent, "lost, duplicated or reordered: want %d messages, got %d;" \
                " missing %r, extra %r" % (len(sent), len(got), sorted(set(sent) - set(got))[:5],
                                           sorted(set(got) - set(sent))[:5])
            assert welcomes[1]["status"] == "resumed", welcomes
            assert welcomes[1]["epoch"] == welcomes[0]["epoch"]
            # It resumed from the last message it had before the drop.
            second = [i for i, e in enumerate(events) if e["t"] == "welcome"][1]
            before = [e for e in events[:second] if e["t"] == "message"]
            assert welcomes[1]["since"] == welcomes[1]["last"] == before[-1]["seq"], \
                (welcomes[1], before[-1])
            states = [(e["state"], e.get("code")) for e in events if e["t"] == "state"]
            assert states == [("connecting", None), ("open", None), ("reconnecting", 1006),
                              ("connecting", None), ("open", None)], states
            assert await page.events("gap") == [] and await page.events("error") == []
            st = await page.stats()
            assert st["duplicates"] == 0 and st["gaps"] == 0 and st["messages"] == len(sent), st

            # It landed on a live worker: the other one, or the killed slot's new process.
            (row,) = await in_thread(connection_rows, stack)
            now = await in_thread(worker_pid, stack, row["worker"])
            assert now != victim and pid_alive(now), (row, now, victim)
            assert not pid_alive(victim)
            assert real_console_errors(browser) == [], browser.console_errors
            print("%s: %d messages, resumed %.0f ms after the kill, reconnect delay %d ms" % (
                mode, len(sent), resumed_after * 1000,
                next(e["delay"] for e in events if e["t"] == "state"
                     and e["state"] == "reconnecting")))
        finally:
            await browser.close()

    asyncio.run(run())


def test_resume_impossible_raises_gap(make_stack, pages):
    """sessionStorage across a reload; `expired` past a 64 KiB ring; `reset` after a hub restart
    (new epoch). Each is reported once with the welcome's numbers, and the stream goes on."""
    assert cdp.available(), "chromium is not installed (scripts/deps.sh installs it)"
    stack = make_stack(workers=1, options={"ring_size": "64k", "worker_buffer": "64k",
                                           "max_message": "4k"})
    opts = dict(storage="session", backoff={"base": 100, "cap": 1000})

    async def run():
        browser = await cdp.Browser(stack.base).start()
        page = Page(browser)
        try:
            # ---- a reload resumes from sessionStorage ----
            await page.open(pages.url("module.html"), stack.nginx.ws_url, **opts)
            (w1,) = await page.wait_events("welcome", 1, 15, "welcome")
            assert w1["status"] == "fresh", w1
            sent = [await in_thread(broadcast, stack, "first %d" % i) for i in range(3)]
            await page.wait_seq(sent[-1][0], 10, "3 messages")
            stored = json.loads(await browser.evaluate(
                "sessionStorage.getItem('wshub:' + %s)" % json.dumps(stack.nginx.ws_url)))
            assert stored == {"epoch": w1["epoch"], "last": str(sent[-1][0])}, stored

            await page.open(pages.url("module.html"), stack.nginx.ws_url, **opts)  # a reload
            (w2,) = await page.wait_events("welcome", 1, 15, "welcome after the reload")
            assert (w2["status"], w2["since"], w2["last"]) == \
                ("resumed", str(sent[-1][0]), str(sent[-1][0])), w2
            more = await in_thread(broadcast, stack, "after reload")
            await page.wait_seq(more[0], 10, "the message after the reload")
            assert messages_of(await page.events()) == [more]

            # ---- expired: the page is away while 200 x 1 KiB go through a 64 KiB ring ----
            await browser.evaluate("window.hub.close()")
            since = more[0]
            for i in range(200):
                await in_thread(broadcast, stack, "%04d " % i + "x" * 1019)
            ring = (await in_thread(stack.stats))["ring"]
            assert ring["oldest_seq"] > since + 1, ring  # the ring really lost the next ones
            await browser.evaluate("window.hub.connect()")
            w3 = (await page.wait_events("welcome", 2, 15, "welcome after expiry"))[1]
            assert (w3["status"], w3["since"]) == ("expired", str(since)), w3
            (gap,) = await page.wait_events("gap", 1, 5, "the expired gap")
            assert gap == {"t": "gap", "from": str(since + 1), "to": w3["last"],
                           "reason": "expired", "epoch": w1["epoch"],
                           "previousEpoch": w1["epoch"], "at": gap["at"]}, gap
            assert int(w3["last"]) >= since + 200, w3
            live = await in_thread(broadcast, stack, "live after expiry")
            await page.wait_seq(live[0], 10, "live after expiry")
            after = messages_of(await page.events())[1:]
            assert after == [live], after  # nothing replayed from before `last`

            # ---- reset: the hub restarts (new segment, new epoch) behind the same nginx ----
            assert stack.hub.stop() == 0
            await browser.wait_for(
                "window.events.some((e) => e.t === 'state' && e.code === 1001)", 15,
                "the 1001 of the hub's shutdown")
            stack.hub.start().wait_ready()
            stack.hub.note_children()
            w4 = (await page.wait_events("welcome", 3, 20, "welcome from the new hub"))[2]
            assert w4["status"] == "reset" and w4["epoch"] != w1["epoch"], w4
            gaps = await page.wait_events("gap", 2, 5, "the reset gap")
            assert gaps[1]["reason"] == "reset" and gaps[1]["from"] is None and \
                gaps[1]["to"] == w4["last"] and gaps[1]["epoch"] == w4["epoch"] and \
                gaps[1]["previousEpoch"] == w1["epoch"], gaps[1]
            fresh = await in_thread(broadcast, stack, "new epoch")
            await page.wait_seq(fresh[0], 10, "the first message of the new epoch")
            last_msg = (await page.events("message"))[-1]
            assert (int(last_msg["seq"]), last_msg["data"], last_msg["epoch"]) == \
                (fresh[0], fresh[1], w4["epoch"]), last_msg
            stored = json.loads(await browser.evaluate(
                "sessionStorage.getItem('wshub:' + %s)" % json.dumps(stack.nginx.ws_url)))
            assert stored == {"epoch": w4["epoch"], "last": str(fresh[0])}, stored
            assert await page.events("error") == []
            assert (await page.stats())["duplicates"] == 0
            assert real_console_errors(browser) == [], browser.console_errors
        finally:
            await browser.close()

    asyncio.run(run())


def test_close_codes(make_stack, pages):
    """1012 (rolling restart): back within restartDelay, resumed, nothing lost. 1008 (closed by
    the administrator): no retry until connect(), which resumes."""
    assert cdp.available(), "chromium is not installed (scripts/deps.sh installs it)"
    stack = make_stack(workers=2, options={"restart_spread": "200ms"})

    async def run():
        browser = await cdp.Browser(stack.base).start()
        page = Page(browser)
        try:
            # A long backoff: were 1012 treated like a drop, the check on the delay would fail.
            await page.open(pages.url("script.html"), stack.nginx.ws_url,
                            backoff={"base": 5000, "cap": 30000}, restartDelay=500)
            await page.wait_events("welcome", 1, 15, "welcome")
            sent = [await in_thread(broadcast, stack, "a %d" % i) for i in range(5)]
            await page.wait_seq(sent[-1][0], 10, "5 messages")

            publisher = Publisher(stack, "restart", interval=0.02)
            try:
                r = await in_thread(stack.admin, "POST", "/admin/workers/restart")
                assert r.status == 202, r
                await page.wait_events("welcome", 2, 20, "welcome after the restart")
                n = len(publisher.sent)
                await in_thread(wait_for, lambda: len(publisher.sent) >= n + 10, 10,
                                "10 broadcasts after the resume")
            finally:
                sent += publisher.stop()
            await page.wait_seq(sent[-1][0], 15, "every broadcast")
            events = await page.events()
            assert messages_of(events) == sent
            rec = [e for e in events if e["t"] == "state" and e["state"] == "reconnecting"]
            assert len(rec) == 1 and rec[0]["code"] == 1012 and 0 <= rec[0]["delay"] < 500, rec
            welcome = (await page.events("welcome"))[1]
            assert welcome["status"] == "resumed", welcome
            assert await page.events("gap") == []

            # ---- 1008: an administrator closes the page's connection ----
            await in_thread(wait_for, lambda: len(connection_rows(stack)) == 1, 10,
                            "one connection after the restart")
            (row,) = await in_thread(connection_rows, stack)
            r = await in_thread(stack.admin, "DELETE", "/admin/connections/%d" % row["id"])
            assert r.status == 202, r
            closed = await browser.wait_for(
                "window.events.filter((e) => e.t === 'state' && e.state === 'closed')[0]", 10,
                "state closed")
            assert closed["code"] == 1008, closed
            missed = await in_thread(broadcast, stack, "while stopped")
            # Stopped for good: no timer, no connection, until the page asks.
            assert await browser.evaluate("window.hub.state === 'closed' &&"
                                          " window.hub._timer === null")
            await in_thread(wait_for, lambda: connection_rows(stack) == [], 10, "no connection")
            connects = (await page.stats())["connects"]
            await browser.evaluate("window.hub.connect()")
            w = (await page.wait_events("welcome", 3, 15, "welcome after connect()"))[2]
            assert w["status"] == "resumed" and w["since"] == str(sent[-1][0]), w
            await page.wait_seq(missed[0], 10, "the message sent while stopped")
            assert messages_of(await page.events()) == sent + [missed]
            assert (await page.stats())["connects"] == connects + 1
            assert real_console_errors(browser) == [], browser.console_errors
        finally:
            await browser.close()

    asyncio.run(run())
