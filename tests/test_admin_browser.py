"""The stats page in a real browser: Debian's headless Chromium loads /admin/ through nginx,
through Apache (mod_proxy_fcgi to the hub's wshub-admin) and through Apache's mod_fcgid (several
wshub-admin processes that must agree on the CSRF token), driven over the DevTools protocol
(tests/cdp.py says why that way). The page must render the numbers stats.json has (connections,
one row per worker with its pid and counts, the ring's next sequence), draw both charts, run
under its strict CSP without a single violation or script error, broadcast through its form to
connected WebSocket clients, run a rolling restart from its button, list connections and close one
with its button, and leave a screenshot in tests/artifacts/admin-page.png (admin-page-apache.png,
admin-page-fcgid.png for the other fronts)."""
import asyncio
import os

import pytest

import cdp
from wsclients import connect, in_thread, until
from wshub_stack import REPO, wait_for

ARTIFACTS = os.path.join(REPO, "tests", "artifacts")
FRONTS = {"nginx": dict(), "apache": dict(nginx=False, apache=True),
          "fcgid": dict(nginx=False, apache="fcgid")}


def page_numbers_js():
    """What the page shows, read back from its DOM (raw values are in data-value)."""
    return """(() => {
      const v = (id) => document.getElementById(id).dataset.value;
      const rows = [...document.querySelectorAll('#workers tbody tr')].map((tr) => {
        const c = (cls) => tr.querySelector('.' + cls);
        return {slot: +tr.dataset.slot, pid: +c('pid').dataset.value, gen: +c('gen').dataset.value,
                state: c('state').textContent, connections: +c('conns').dataset.value,
                restarts: +c('restarts').dataset.value,
                text: tr.textContent};
      });
      return {renders: +(document.body.dataset.renders || 0),
              connections: +v('v-connections'), connections_text:
                document.getElementById('v-connections').textContent,
              next_seq: +v('v-next-seq'), next_seq_text:
                document.getElementById('v-next-seq').textContent,
              oldest_seq: +v('ring-oldest'), published: +v('ring-published'),
              workers_running: +v('v-workers'), restarts: +v('hub-restarts'),
              instance: document.getElementById('instance').textContent,
              hub_state: document.getElementById('hub-state').textContent,
              redis: document.getElementById('redis-state').textContent,
              workers: rows};
    })()"""


def canvas_ink_js(canvas_id):
    """How many pixels of a canvas are drawn on (0 for a blank canvas)."""
    return """(() => {
      const c = document.getElementById('%s');
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      let n = 0;
      for (let i = 3; i < d.length; i += 4) if (d[i]) n++;
      return n;
    })()""" % canvas_id


def digits(text):
    return int("".join(ch for ch in text if ch.isdigit()))


@pytest.mark.parametrize("front_name", sorted(FRONTS))
def test_stats_page_in_chromium(make_stack, front_name):
    assert cdp.available(), "chromium is not installed (scripts/deps.sh installs it)"
    stack = make_stack(workers=2, **FRONTS[front_name])
    front = stack.nginx or stack.apache
    artifact = os.path.join(ARTIFACTS, "admin-page.png" if front_name == "nginx" else
                            "admin-page-%s.png" % front_name)

    async def run():
        clients = [await connect(stack.hub.ws_url, name="direct%d" % i) for i in range(3)]
        clients.append(await connect(front.ws_url, name="via-" + front_name))
        await in_thread(wait_for, lambda: stack.stats()["totals"]["connections"] == 4, 10,
                        "4 clients counted")
        for i in range(3):  # something in the ring before the page opens
            assert (await in_thread(stack.broadcast, "warm-up %d" % i)).status == 202
        await until(lambda: all(len(c.messages) == 3 for c in clients), 10, "warm-up delivered")

        browser = await cdp.Browser(stack.base).start()
        try:
            await browser.navigate("http://127.0.0.1:%d/admin/" % front.port)
            # Two renders: the second one has rates (they need two samples).
            await browser.wait_for("+(document.body.dataset.renders || 0) >= 2", 15,
                                   "two renders from stats.json")
            await browser.wait_for(
                "document.getElementById('v-connections').dataset.value === '4'", 10,
                "4 connections shown")

            # ---- the numbers on the page are stats.json's ----
            shown = await browser.evaluate(page_numbers_js())
            st = await in_thread(stack.stats)
            assert shown["connections"] == st["totals"]["connections"] == 4, shown
            assert digits(shown["connections_text"]) == 4
            assert shown["next_seq"] == st["ring"]["next_seq"] == 4, (shown, st["ring"])
            assert digits(shown["next_seq_text"]) == st["ring"]["next_seq"]
            assert shown["oldest_seq"] == st["ring"]["oldest_seq"]
            assert shown["published"] == st["ring"]["published"] == 3
            assert shown["instance"] == st["instance"]
            assert shown["hub_state"] == "running", shown["hub_state"]
            assert shown["redis"] == "not configured"
            assert shown["workers_running"] == 2
            assert len(shown["workers"]) == len(st["workers"]) == 2, shown["workers"]
            for row, w in zip(sorted(shown["workers"], key=lambda r: r["slot"]),
                              sorted(st["workers"], key=lambda w: w["slot"])):
                assert (row["slot"], row["pid"], row["gen"], row["state"], row["connections"],
                        row["restarts"]) == (w["slot"], w["pid"], w["generation"], w["state"],
                                             w["connections"], w["restarts"]), (row, w)
                assert str(w["pid"]) in row["text"]
            assert sum(r["connections"] for r in shown["workers"]) == 4

            # ---- both charts are drawn (axes at least, plus the connections line) ----
            for canvas in ("chart-conn", "chart-rate"):
                assert await browser.evaluate(canvas_ink_js(canvas)) > 500, canvas

            # ---- broadcast through the form: every client gets it ----
            text = "hello from the stats page ✓"
            await browser.insert_text("#bcast-text", text)
            await browser.click("#bcast-send")
            result = await browser.wait_for(
                "document.getElementById('bcast-result').textContent", 10, "broadcast result")
            assert "Sent as sequence 4" in result, result
            await until(lambda: all(c.messages[-1:] == [text] for c in clients), 10,
                        "the form's broadcast at every client")
            await browser.wait_for(
                "document.getElementById('v-next-seq').dataset.value === '5'", 10,
                "next seq 5 on the page")

            # A little traffic so the rate chart has a shape in the screenshot.
            for i in range(20):
                assert (await in_thread(stack.broadcast, "tick %d" % i)).status == 202
                await asyncio.sleep(0.1)
            await until(lambda: all(len(c.messages) == 24 for c in clients), 10, "ticks")
            await browser.wait_for("+document.getElementById('v-next-seq').dataset.value === 25",
                                   10, "next seq 25")

            # ---- rolling restart: two clicks, one request recorded ----
            await browser.click("#restart-btn")
            await browser.click("#restart-btn")
            result = await browser.wait_for(
                "document.getElementById('restart-result').textContent", 10, "restart result")
            assert "Request #1 recorded at generation 1" in result, result
            st = await in_thread(stack.stats)
            assert st["hub"]["restart_requested"] == 1, st["hub"]
            await browser.wait_for(
                "document.getElementById('hub-restarts').dataset.value === '1'", 10,
                "restart request counted on the page")
            # The request is a real rolling restart: every client gets 1012 (service restart),
            # then reconnects, in the same order, to generation 2.
            await until(lambda: all(c.closed.is_set() for c in clients), 15, "1012 for all")
            assert [c.close_code for c in clients] == [1012] * 4
            await in_thread(wait_for, lambda: stack.stats()["hub"]["generation"] == 2, 10,
                            "generation 2")
            clients = [await connect(stack.hub.ws_url, name="direct%d" % i) for i in range(3)]
            clients.append(await connect(front.ws_url, name="via-" + front_name))
            await in_thread(wait_for, lambda: stack.stats()["totals"]["connections"] == 4, 10,
                            "4 clients counted after the restart")

            # ---- connections list ----
            await browser.click("#conns-form button")
            await browser.wait_for("document.querySelectorAll('#conns tbody tr').length === 4",
                                   10, "4 connections listed")
            total = await browser.evaluate("document.getElementById('conns-total').textContent")
            assert total.startswith("4 match"), total
            # Close the oldest connection (the first client) with its row's button: 1008.
            await browser.click("#conns tbody tr:first-child button")
            await until(lambda: clients[0].closed.is_set(), 10, "the first client closed")
            assert clients[0].close_code == 1008, clients[0].close_code
            result = await browser.wait_for(
                "document.getElementById('conns-result').textContent", 10, "close result")
            assert "being closed with 1008" in result, result
            await browser.wait_for(
                "document.getElementById('v-connections').dataset.value === '3'", 10,
                "3 connections shown")
            assert not any(c.closed.is_set() for c in clients[1:])

            # Steady traffic while the screenshot is taken, so the rates are not all zero.
            async def ticker():
                i = 0
                while True:
                    await in_thread(stack.broadcast, "steady %d" % i)
                    i += 1
                    await asyncio.sleep(0.05)

            steady = asyncio.ensure_future(ticker())
            try:
                renders = await browser.evaluate("+document.body.dataset.renders")
                await browser.wait_for("+document.body.dataset.renders >= %d" % (renders + 3), 15,
                                       "three more samples")
                png = await browser.screenshot(artifact)
            finally:
                steady.cancel()
            assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20000, len(png)
            assert browser.console_errors == [], browser.console_errors
        finally:
            await browser.close()
        for c in clients:
            await c.close()

    asyncio.run(run())
