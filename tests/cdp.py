"""cdp.py -- drive Debian's headless Chromium over the DevTools protocol, with no npm and no driver.

Why this way: the suite already depends on python3-websockets, and the DevTools protocol is JSON
over one WebSocket, so a client is some sixty lines. Selenium would add python3-selenium and
chromium-driver (which must match the browser's exact version), and `--dump-dom
--virtual-time-budget` can neither wait for a condition nor click a button. Here the test waits
on real conditions in the live page (Runtime.evaluate), drives the forms, records console errors
and CSP violations, and takes a full-page screenshot.

Chromium is started with --remote-debugging-port=0 and a fresh --user-data-dir; it writes the
port it chose to <user-data-dir>/DevToolsActivePort, and the page target's WebSocket URL comes
from http://127.0.0.1:<port>/json/list. It runs in its own session (process group) so that
close() can end the browser and every helper process it forked.
"""
import asyncio
import base64
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request

import websockets

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--disable-default-apps", "--mute-audio",
         "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0"]


def available():
    return os.access(CHROMIUM, os.X_OK)


class Browser:
    """One headless Chromium with one page, driven over CDP."""

    def __init__(self, base_dir, width=1280, height=900):
        self.profile = tempfile.mkdtemp(prefix="chromium-profile-", dir=base_dir)
        self.log_path = os.path.join(base_dir, "chromium.log")
        self.width, self.height = width, height
        self.proc = None
        self.ws = None
        self.reader = None
        self.next_id = 0
        self.pending = {}
        self.console_errors = []  # console.error, uncaught exceptions, CSP and network errors
        self.events = []

    async def start(self, timeout=30):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [CHROMIUM] + FLAGS + ["--user-data-dir=" + self.profile,
                                  "--window-size=%d,%d" % (self.width, self.height),
                                  "about:blank"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        log.close()
        port_file = os.path.join(self.profile, "DevToolsActivePort")
        deadline = time.monotonic() + timeout
        port = None
        while port is None:
            if self.proc.poll() is not None:
                raise AssertionError("chromium exited with %s; see %s" %
                                     (self.proc.returncode, self.log_path))
            try:
                with open(port_file) as f:
                    port = int(f.readline().strip() or "0") or None
            except (OSError, ValueError):
                pass
            if port is None:
                if time.monotonic() > deadline:
                    raise AssertionError("chromium did not open its DevTools port in %ds" %
                                         timeout)
                await asyncio.sleep(0.05)
        url = await self._page_ws_url(port, deadline)
        self.ws = await websockets.connect(url, max_size=None, ping_interval=None,
                                           open_timeout=timeout)
        self.reader = asyncio.ensure_future(self._read())
        for domain in ("Page", "Runtime", "Log", "Network"):
            await self.send(domain + ".enable")
        return self

    async def _page_ws_url(self, port, deadline):
        while True:
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d/json/list" % port,
                                            timeout=5) as r:
                    targets = json.loads(r.read().decode())
                for t in targets:
                    if t.get("type") == "page" and "webSocketDebuggerUrl" in t:
                        return t["webSocketDebuggerUrl"]
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("chromium has no page target")
            await asyncio.sleep(0.05)

    async def _read(self):
        try:
            async for raw in self.ws:
                msg = json.loads(raw)
                if "id" in msg:
                    fut = self.pending.pop(msg["id"], None)
                    if fut is not None and not fut.done():
                        fut.set_result(msg)
                else:
                    self._event(msg.get("method"), msg.get("params", {}))
        except websockets.exceptions.ConnectionClosed:
            pass
        finally:
            for fut in self.pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("DevTools connection closed"))

    def _event(self, method, params):
        self.events.append(method)
        if method == "Runtime.exceptionThrown":
            d = params.get("exceptionDetails", {})
            self.console_errors.append("exception: %s %s" % (
                d.get("text"), d.get("exception", {}).get("description", "")))
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            self.console_errors.append("console.error: %r" % [
                a.get("value", a.get("description")) for a in params.get("args", [])])
        elif method == "Log.entryAdded":
            e = params.get("entry", {})
            if e.get("level") == "error" or "Content Security Policy" in e.get("text", ""):
                self.console_errors.append("log %s/%s: %s %s" % (
                    e.get("source"), e.get("level"), e.get("text"), e.get("url", "")))

    async def send(self, method, timeout=30, **params):
        self.next_id += 1
        fut = asyncio.get_running_loop().create_future()
        self.pending[self.next_id] = fut
        await self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        msg = await asyncio.wait_for(fut, timeout)
        if "error" in msg:
            raise AssertionError("CDP %s failed: %s" % (method, msg["error"]))
        return msg.get("result", {})

    async def evaluate(self, expression, timeout=30):
        """The value of a JavaScript expression in the page (promises are awaited)."""
        r = await self.send("Runtime.evaluate", timeout=timeout, expression=expression,
                            returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise AssertionError("page script failed: %s (%s)" % (
                r["exceptionDetails"].get("text"),
                r["exceptionDetails"].get("exception", {}).get("description")))
        return r.get("result", {}).get("value")

    async def navigate(self, url, timeout=30):
        r = await self.send("Page.navigate", url=url)
        if r.get("errorText"):
            raise AssertionError("navigation to %s failed: %s" % (url, r["errorText"]))
        await self.wait_for("document.readyState === 'complete'", timeout, "page load")

    async def wait_for(self, expression, timeout, what, interval=0.05):
        """Polls a JavaScript expression until it is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            last = await self.evaluate(expression)
            if last:
                return last
            if time.monotonic() > deadline:
                raise AssertionError("timed out after %.1fs waiting for %s in the page (last: %r;"
                                     " console: %r)" % (timeout, what, last,
                                                        self.console_errors))
            await asyncio.sleep(interval)

    async def insert_text(self, selector, text):
        """Focuses an element and types text into it, as a keyboard would."""
        await self.evaluate("document.querySelector(%s).focus()" % json.dumps(selector))
        await self.send("Input.insertText", text=text)

    async def click(self, selector):
        """A real mouse click at the centre of the element."""
        box = await self.evaluate(
            "(() => { const e = document.querySelector(%s); e.scrollIntoView({block: 'center'});"
            " const r = e.getBoundingClientRect();"
            " return [r.left + r.width / 2, r.top + r.height / 2]; })()" % json.dumps(selector))
        for kind in ("mousePressed", "mouseReleased"):
            await self.send("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1],
                            button="left", clickCount=1)

    async def screenshot(self, path):
        """A PNG of the whole page (the viewport stretched to the document's height)."""
        height = await self.evaluate("Math.ceil(document.documentElement.scrollHeight)")
        await self.send("Emulation.setDeviceMetricsOverride", width=self.width,
                        height=int(height), deviceScaleFactor=1, mobile=False)
        await self.evaluate("window.scrollTo(0, 0); new Promise(r => requestAnimationFrame(r))")
        r = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        data = base64.b64decode(r["data"])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        return data

    async def close(self):
        if self.ws is not None:
            await self.ws.close()
        if self.reader is not None:
            await asyncio.wait([self.reader], timeout=5)
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        # Helpers (zygote, renderer) share the process group; make sure none is left.
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.profile, ignore_errors=True)
