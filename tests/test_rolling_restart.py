"""Rolling restart (SIGHUP, POST /admin/workers/restart): a new generation of workers takes over
the listening socket while the old one closes its clients with 1012 spread over restart_spread.
Not one connection attempt may be refused meanwhile, broadcasts reach every client until its
1012, the old processes leave and their rows are freed; the configuration is re-read (an invalid
one changes nothing, options that shape the segment keep their value with a warning)."""
import asyncio
import os
import re
import shutil
import signal
import stat
import time
from datetime import datetime

from wsclients import connect, connect_many, in_thread, until
from wshub_stack import binary, parse_frames, pid_alive, raw_upgrade, wait_for


# ---- helpers ----------------------------------------------------------------------------------

def log_text(stack):
    with open(stack.hub.log_file, errors="replace") as f:
        return f.read()


def wait_log(stack, pattern, timeout=15, after=0):
    """Waits for a log line matching `pattern` (regex) past offset `after`; returns the match."""
    return wait_for(lambda: re.search(pattern, log_text(stack)[after:], re.M), timeout,
                    "log line /%s/" % pattern)


def log_time(line_start):
    """Seconds (epoch) of a log line's ISO timestamp."""
    stamp = line_start.split()[0].rstrip("Z")
    return datetime.fromisoformat(stamp).timestamp()


def line_of(text, pattern):
    m = re.search(r"^.*%s.*$" % pattern, text, re.M)
    assert m, "no log line /%s/" % pattern
    return m.group(0)


def workers_of(st, generation, state="running"):
    return [w for w in st["workers"] if w["generation"] == generation and w["state"] == state]


def stamp_closes(clients):
    """Records when each client saw its connection end (monotonic), in client.closed_at."""
    for c in clients:
        c.closed_at = None
        c.task.add_done_callback(lambda _t, c=c: setattr(c, "closed_at", time.monotonic()))


def generation_done(stack, generation, workers):
    """stats.json once `generation` is current with `workers` running workers and no older
    process left, else None."""
    st = stack.hub.stats()
    live_old = [w for w in st["workers"] if w["generation"] != generation and w["pid"]]
    ok = (st["hub"]["generation"] == generation and st["hub"]["workers_configured"] == workers
          and len(workers_of(st, generation)) == workers and not live_old)
    return st if ok else None


# ---- 1: SIGHUP under traffic: no refused connection, 1012 for the old clients ---------------

N_OLD = 100


def test_sighup_rolling_restart(make_stack):
    stack = make_stack(workers=2, nginx=False, options={"restart_spread": "1s"})
    asyncio.run(sighup_scenario(stack))


async def sighup_scenario(stack):
    hub = stack.hub
    st0 = await in_thread(hub.stats)
    assert st0["hub"]["generation"] == 1, st0["hub"]
    old_pids = {w["pid"] for w in workers_of(st0, 1)}
    assert len(old_pids) == 2, st0["workers"]

    olds = await connect_many([{"url": hub.ws_url}] * N_OLD, concurrency=50)
    stamp_closes(olds)
    await in_thread(wait_for, lambda: hub.stats()["connections"]["in_use"] == N_OLD, 10,
                    "%d rows" % N_OLD)

    published, probes, failures, health = [], [], [], []
    stop = asyncio.Event()
    probe_tasks = []

    async def publisher():  # one broadcast every ~20 ms, acknowledged in order
        i = 0
        while not stop.is_set():
            text = "m%d" % i
            r = await in_thread(stack.broadcast, text)
            assert r.status == 202, r
            published.append(text)
            i += 1
            await asyncio.sleep(0.02)

    async def probe_one():
        t0 = time.monotonic()
        try:
            c = await connect(hub.ws_url, name="probe")
        except Exception as e:  # refused, reset or an HTTP error: all count as failures
            failures.append((t0, repr(e)))
            return
        c.started = t0
        c.port = c.ws.local_address[1]
        stamp_closes([c])
        probes.append(c)

    async def prober():  # a new connection attempt every ~5 ms
        while not stop.is_set():
            probe_tasks.append(asyncio.ensure_future(probe_one()))
            await asyncio.sleep(0.005)

    async def healthz():
        while not stop.is_set():
            r = await in_thread(hub.fcgi, "GET", "/healthz")
            health.append(r.status)
            await asyncio.sleep(0.05)

    tasks = [asyncio.ensure_future(f()) for f in (publisher, prober, healthz)]
    try:
        await until(lambda: len(published) >= 5 and len(probes) >= 20, 10, "traffic")
        acked_before_hup = len(published)
        log_mark = len(log_text(stack))
        t_hup = time.monotonic()
        hub.signal(signal.SIGHUP)

        await until(lambda: all(c.closed.is_set() for c in olds), 15, "every old client closed")
        t_olds_closed = time.monotonic()
        await in_thread(wait_log, stack, r"rolling restart to generation 2 complete \(2 workers",
                        15, log_mark)
        t_done = time.monotonic()
        await asyncio.sleep(0.3)  # some more probes against the new generation alone
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        await asyncio.gather(*probe_tasks)

    # Not one attempt failed, before, during or after the restart.
    assert failures == [], "%d of %d connection attempts failed: %r" % (
        len(failures), len(failures) + len(probes), failures[:5])
    during = [p for p in probes if t_hup <= p.started <= t_done]
    assert len(during) >= 20, "too few attempts during the restart: %d" % len(during)

    # Every old client got 1012 after an in-order, gap-free prefix of the broadcasts, which
    # includes everything acknowledged before the SIGHUP; delivery went on during the drain.
    assert [c.close_code for c in olds] == [1012] * N_OLD, \
        sorted(set((c.close_code, c.lib_code, repr(c.error)) for c in olds))
    for c in olds:
        assert c.messages == published[:len(c.messages)], (c.name, c.messages[:10])
        assert len(c.messages) >= acked_before_hup, (len(c.messages), acked_before_hup)
    assert max(len(c.messages) for c in olds) >= acked_before_hup + 3, \
        "no broadcast reached an old client during the drain"

    # Probes: a contiguous slice of the broadcasts each (never a duplicate, never out of order).
    for p in probes:
        if p.messages:
            i = published.index(p.messages[0])
            assert p.messages == published[i:i + len(p.messages)], (p.port, p.messages[:10])

    # The new generation serves alone; the old processes are gone.
    st = await in_thread(wait_for, lambda: generation_done(stack, 2, 2), 10, "generation 2")
    new_pids = {w["pid"] for w in workers_of(st, 2)}
    assert not new_pids & old_pids, (new_pids, old_pids)
    assert not any(pid_alive(p) for p in old_pids), old_pids
    assert len([w for w in st["workers"] if w["generation"] == 1 and w["state"] == "exited"]) == 2

    # Connections opened after the last old client was closed are all on generation 2, open.
    late = [p for p in probes if p.started > t_olds_closed]
    assert late and not any(p.closed.is_set() for p in late), \
        [(p.close_code, p.lib_code) for p in late if p.closed.is_set()]
    live = [p for p in probes if not p.closed.is_set()]
    assert all(p.close_code == 1012 for p in probes if p.closed.is_set())
    rows = (await in_thread(hub.fcgi, "GET", "/admin/connections?limit=1000")).json()
    gen_of_port = {int(r["remote"].rsplit(":", 1)[1]): r["worker_generation"]
                   for r in rows["connections"]}
    assert {p.port for p in live} == set(gen_of_port), "rows are not the live clients"
    assert set(gen_of_port.values()) == {2}, rows["connections"][:3]

    # Rows reclaimed, closes counted as "restart", health never failed.
    restarted = sum(c.close_code == 1012 for c in olds + probes)
    assert st["connections"]["in_use"] == len(live) == st["totals"]["connections"], \
        (st["connections"], st["totals"]["connections"], len(live))
    assert st["totals"]["closed"]["restart"] == restarted, st["totals"]["closed"]
    assert health and set(health) == {200}, health

    text = log_text(stack)[log_mark:]
    t0 = log_time(line_of(text, r"rolling restart \(SIGHUP\): reading"))
    serving = log_time(line_of(text, r"worker#\d+\[\d+\]: serving .*generation 2"))
    handover = log_time(line_of(text, r"generation 2 serving"))
    done = log_time(line_of(text, r"rolling restart to generation 2 complete"))
    closes = sorted(c.closed_at for c in olds)
    print("\nrolling restart, %d old clients + %d attempts during it (%d in all, 0 failed): "
          "SIGHUP -> first new worker serving %.0f ms, -> hand-over %.0f ms, -> complete %.0f ms;"
          " 1012s from %.0f to %.0f ms after SIGHUP" %
          (N_OLD, len(during), len(probes), (serving - t0) * 1e3, (handover - t0) * 1e3,
           (done - t0) * 1e3, (closes[0] - t_hup) * 1e3, (closes[-1] - t_hup) * 1e3))
    for c in olds + probes:
        await c.close()


# ---- 2: the configuration is re-read; bad ones change nothing ---------------------------------

def test_reload_configuration(make_stack):
    stack = make_stack(workers=2, nginx=False, options={"restart_spread": "200ms"})
    asyncio.run(reload_scenario(stack))


def write_conf(hub, extra=""):
    hub.write_conf()
    if extra:
        with open(hub.conf_file, "a") as f:
            f.write(extra)


async def reload_scenario(stack):
    hub = stack.hub
    st0 = await in_thread(hub.stats)
    pids0 = sorted(w["pid"] for w in workers_of(st0, 1))
    client = await connect(hub.ws_url)

    # An invalid file: the error names file:line, generation 1 keeps serving untouched.
    write_conf(hub, "wokers 3\n")
    bad_line = sum(1 for _ in open(hub.conf_file))
    mark = len(log_text(stack))
    hub.signal(signal.SIGHUP)
    await in_thread(wait_log, stack, r"reload failed: %s:%d: unknown option 'wokers'; "
                    r"generation 1 keeps running" % (re.escape(hub.conf_file), bad_line), 10, mark)
    st = await in_thread(hub.stats)
    assert st["hub"]["generation"] == 1 and sorted(w["pid"] for w in workers_of(st, 1)) == pids0
    assert (await in_thread(hub.fcgi, "GET", "/healthz")).status == 200
    assert not client.closed.is_set()

    # A new worker binary that cannot run (exit code 2): the restart is abandoned.
    broken = os.path.join(hub.base, "broken-worker")
    with open(broken, "w") as f:
        f.write("#!/bin/sh\nexit 2\n")
    os.chmod(broken, 0o755)
    hub.options["worker_binary"] = broken
    write_conf(hub)
    mark = len(log_text(stack))
    hub.signal(signal.SIGHUP)
    await in_thread(wait_log, stack, r"rolling restart to generation 2 abandoned: .*generation 1 "
                    r"keeps serving", 15, mark)
    st = await in_thread(hub.stats)
    assert st["hub"]["generation"] == 1 and sorted(w["pid"] for w in workers_of(st, 1)) == pids0
    assert not client.closed.is_set()
    r = await in_thread(stack.broadcast, "still here")
    assert r.status == 202
    await until(lambda: client.messages == ["still here"], 5, "a broadcast after the abandon")

    # A good file: 3 workers from an "upgraded" binary (a copy), another ws_path, a 1 s ping,
    # a ring_size the running segment cannot take and a Redis timeout the running bridge cannot
    # (both warned about, kept).
    upgraded = os.path.join(hub.base, "wshub-worker-upgraded")
    shutil.copy(binary("wshub-worker"), upgraded)
    os.chmod(upgraded, stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    hub.options.update({"worker_binary": upgraded, "workers": "3", "ws_path": "/ws2",
                        "ping_interval": "1s", "ring_size": "32m", "redis_timeout": "500ms"})
    write_conf(hub)
    mark = len(log_text(stack))
    hub.signal(signal.SIGHUP)
    # Generation 2 had been abandoned: this one is 3.
    await in_thread(wait_log, stack, r"rolling restart to generation 3 complete \(3 workers", 15,
                    mark)
    text = log_text(stack)[mark:]
    assert re.search(r'reload: ring_size cannot change without a full restart of wshub; keeping '
                     r'"16777216" \(the configuration now says "33554432"\)', text), text
    # The Redis bridge's options are the hub's alone: kept too, but not passed to the workers.
    assert re.search(r'reload: redis_timeout cannot change without a full restart of wshub; '
                     r'keeping "250ms"', text), text
    await until(lambda: client.closed.is_set(), 5, "the old client's close")
    assert client.close_code == 1012

    st = await in_thread(wait_for, lambda: generation_done(stack, 3, 3), 10, "generation 3")
    assert st["ring"]["capacity"] == 16 << 20, st["ring"]
    for w in workers_of(st, 3):
        assert os.readlink("/proc/%d/exe" % w["pid"]) == upgraded
        with open("/proc/%d/cmdline" % w["pid"], "rb") as f:
            args = f.read().split(b"\0")
        assert b"--ring_size=16777216" in args and not [a for a in args if b"redis" in a], args
    r = await in_thread(hub.fcgi, "GET", "/healthz")
    assert r.status == 200 and r.json()["workers"] == 3, r

    # ws_path: /ws2 now, /ws refused with 404.
    status, _, s, _ = await in_thread(raw_upgrade, "127.0.0.1", hub.port, "/ws")
    s.close()
    assert status == 404, status
    # ping_interval 1s: a silent client is pinged within a couple of seconds.
    status, _, s, rest = await in_thread(raw_upgrade, "127.0.0.1", hub.port, "/ws2")
    try:
        assert status == 101, status
        s.settimeout(5)
        t0 = time.monotonic()
        data, opcodes = rest, []
        while 9 not in opcodes and time.monotonic() - t0 < 5:
            data += await in_thread(s.recv, 4096)
            frames, data = parse_frames(data)
            opcodes += [op for op, _, _ in frames]
        assert 9 in opcodes, "no ping within 5 s (ping_interval 1s)"
    finally:
        s.close()


# ---- 3: POST /admin/workers/restart through nginx; requests during a restart queue ------------

def test_admin_restart_and_queueing(make_stack):
    stack = make_stack(workers=2, options={"restart_spread": "500ms"})
    r = stack.admin("POST", "/admin/workers/restart", b"")
    assert r.status == 202 and r.json()["generation"] == 1, r
    st = wait_for(lambda: generation_done(stack, 2, 2), 10, "generation 2 after the POST")
    assert st["hub"]["restart_requested"] == 1
    assert "rolling restart (admin request 1)" in log_text(stack)
    assert stack.admin("GET", "/healthz").status == 200

    # A second request while one runs (clients keep the old workers draining for a while) waits
    # for it: generations 3 then 4, never overlapping.
    async def run():
        clients = await connect_many([{"url": stack.nginx.ws_url}] * 20, concurrency=20)
        await in_thread(wait_for, lambda: stack.stats()["totals"]["connections"] == 20, 10,
                        "20 clients counted")
        mark = len(log_text(stack))
        stack.hub.signal(signal.SIGHUP)
        await in_thread(wait_log, stack, r"generation 3 \(2 workers, .*\) starting beside "
                        r"generation 2", 10, mark)
        stack.hub.signal(signal.SIGHUP)
        await in_thread(wait_log, stack, r"SIGHUP: a rolling restart to generation 3 is in "
                        r"progress; another one follows it", 10, mark)
        await in_thread(wait_for, lambda: generation_done(stack, 4, 2), 15, "generation 4")
        text = log_text(stack)[mark:]
        assert text.index("generation 3 complete") < text.index("generation 4 (2 workers")
        await until(lambda: all(c.closed.is_set() for c in clients), 5, "clients closed")
        assert [c.close_code for c in clients] == [1012] * 20  # through nginx too
        assert stack.admin("GET", "/healthz").status == 200

    asyncio.run(run())


# ---- 4: the closes are spread over restart_spread ----------------------------------------------

N_SPREAD = 300


def test_closes_are_spread(make_stack):
    stack = make_stack(workers=2, nginx=False, options={"restart_spread": "2s"})

    async def run():
        clients = await connect_many([{"url": stack.hub.ws_url}] * N_SPREAD, concurrency=50)
        stamp_closes(clients)
        await in_thread(wait_for, lambda: stack.hub.stats()["totals"]["connections"] ==
                        N_SPREAD, 10, "%d clients counted" % N_SPREAD)
        t0 = time.monotonic()
        stack.hub.signal(signal.SIGHUP)
        await until(lambda: all(c.closed.is_set() for c in clients), 15, "every client closed")
        assert [c.close_code for c in clients] == [1012] * N_SPREAD
        times = sorted(c.closed_at - t0 for c in clients)
        span = times[-1] - times[0]
        # Evenly spread: over at least half the window, and no burst of most clients at once.
        assert span >= 1.0, "1012s spread over %.3f s only" % span
        busiest = max(sum(1 for t in times if s <= t < s + 0.05) for s in times)
        assert busiest < N_SPREAD // 4, "%d closes within 50 ms" % busiest
        print("\n%d closes over %.0f ms (first %.0f ms after SIGHUP), at most %d in any 50 ms" %
              (N_SPREAD, span * 1e3, times[0] * 1e3, busiest))

    asyncio.run(run())
    wait_for(lambda: generation_done(stack, 2, 2), 10, "generation 2")


# ---- 5: SIGTERM in the middle of a restart stops both generations cleanly ---------------------

def test_sigterm_during_restart(make_stack):
    stack = make_stack(workers=2, nginx=False, options={"restart_spread": "5s"})

    async def run():
        clients = await connect_many([{"url": stack.hub.ws_url}] * 40, concurrency=40)
        await in_thread(wait_for, lambda: stack.hub.stats()["totals"]["connections"] == 40, 10,
                        "40 clients counted")
        mark = len(log_text(stack))
        stack.hub.signal(signal.SIGHUP)
        await in_thread(wait_log, stack, r"generation 2 serving", 10, mark)
        newer = await connect_many([{"url": stack.hub.ws_url}] * 10, concurrency=10)
        stack.hub.signal(signal.SIGTERM)
        rc = await in_thread(stack.hub.wait_exit, 15)
        assert rc == 0, "hub exit status %r" % rc
        everyone = clients + newer
        await until(lambda: all(c.closed.is_set() for c in everyone), 10, "every client closed")
        codes = [c.close_code for c in everyone]
        assert set(codes) <= {1012, 1001}, codes
        assert [c.close_code for c in newer] == [1001] * 10
        assert not os.path.exists(stack.hub.segment)

    asyncio.run(run())
