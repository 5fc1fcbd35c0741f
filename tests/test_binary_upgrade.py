"""Binary upgrade in place (SIGUSR2, hub/hub_upgrade.c, docs/upgrade.md): the hub execs the binary
at the path it was started as, which adopts the listening sockets and the segment, starts its own
workers and, once they serve, takes the instance over while the old hub's workers close their
clients with 1012 and the old hub exits.

The hub is started as <dir>/sbin/wshub, a symlink to the build's wshub; "installing" the new
version repoints the symlink to copies of wshub, wshub-worker and wshub-admin in another
directory (what a package upgrade does to /usr/sbin/wshub), so the test can tell old processes
from new ones by /proc/<pid>/exe.

- under traffic (wshub.v1 clients that resume, broadcasts every 20 ms, a connection attempt
  every 5 ms): no attempt refused, every client ends with every sequence exactly once (closed
  with 1012, resumed, never reset), same epoch, pid file rewritten, old processes gone, the new
  ones run the new binaries, and a clean stop leaves nothing behind;
- a new "binary" that exits 2 at once: the old hub serves on, untouched (clients not even
  closed), pid file back, and a later upgrade to a good binary works;
- the new hub killed (SIGKILL) while its workers start: the old hub serves on and frees the
  slots of the orphaned workers;
- the old hub killed (SIGKILL) before the hand-over: the new hub takes the instance over by
  itself, and resuming clients lose nothing;
- with the Redis bridge (two instances on one stream, both publishing while one is upgraded):
  the bridge is handed over too, every client of both instances gets every message once;
- systemd (Type=notify, NotifyAccess=main), seen through a $NOTIFY_SOCKET of our own: the old
  hub reports RELOADING=1, then names the new hub with MAINPID=; the new hub says nothing before
  that; a failed upgrade ends with READY=1 from the old hub;
- SIGTERM to the old hub while the new one starts: both stop, nothing is left;
- packaging/wshub.service under a real systemd (a private one in PID and mount namespaces, as
  test_install.py does; skipped where none can run): a failed upgrade leaves the service active
  with its main pid, a good one moves MainPID to the new hub, reload and stop then act on it.
"""
import asyncio
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import time

import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatusCode

from wsclients import connect, in_thread, until, v1_parse as parse
from wshub_stack import REPO, binary, children_of, free_port, make_base_dir, pid_alive, wait_for

V1 = "wshub.v1"
BINS = ("wshub", "wshub-worker", "wshub-admin")


# ---- the installation: <base>/sbin/wshub -> the binary "installed" now --------------------------

class Install:
    def __init__(self, hub):
        self.hub = hub
        self.base = hub.base
        self.sbin = os.path.join(self.base, "sbin", "wshub")
        os.makedirs(os.path.dirname(self.sbin))
        os.symlink(binary("wshub"), self.sbin)
        self.pid_file = os.path.join(hub.run_dir, "wshub.pid")
        self.env = None  # the hub's environment (None: ours)

    def version(self, name, worker_delay=0, hub_delay=0):
        """Copies of the build's binaries in <base>/<name>/ (the "new version"). With a delay,
        wshub-worker or wshub is a script that waits that long before exec'ing the real copy: a
        new generation that takes a while to serve, a new hub that takes a while to start."""
        d = os.path.join(self.base, name)
        os.makedirs(d)
        for b in BINS:
            shutil.copy2(binary(b), os.path.join(d, b))
        for b, delay in (("wshub-worker", worker_delay), ("wshub", hub_delay)):
            if delay:
                real = os.path.join(d, b + ".real")
                os.rename(os.path.join(d, b), real)
                self.script(os.path.join(d, b), 'sleep %s\nexec "%s" "$@"\n' % (delay, real))
        return d

    def broken(self, name, body):
        d = os.path.join(self.base, name)
        os.makedirs(d)
        self.script(os.path.join(d, "wshub"), body)
        return d

    @staticmethod
    def script(path, body):
        with open(path, "w") as f:
            f.write("#!/bin/sh\n" + body)
        os.chmod(path, 0o755)

    def install(self, d):
        """Atomically points <base>/sbin/wshub at <d>/wshub."""
        tmp = self.sbin + ".new"
        os.symlink(os.path.join(d, "wshub"), tmp)
        os.replace(tmp, self.sbin)

    def start(self):
        out = open(self.hub.out_file, "ab")
        self.hub.proc = subprocess.Popen([self.sbin, "-c", self.hub.conf_file], cwd=self.base,
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                         start_new_session=True, env=self.env)
        out.close()
        return self.hub

    def pid(self):
        with open(self.pid_file) as f:
            return int(f.read())


def make_upgradable(make_stack, env=None, **options):
    opts = {"restart_spread": "1s"}
    opts.update(options)
    stack = make_stack(workers=2, nginx=False, start=False, options=opts)
    hub = stack.hub
    inst = Install(hub)
    hub.options["pid_file"] = inst.pid_file
    hub.write_conf()
    hub.start = inst.start
    inst.env = env
    stack.start()
    return stack, inst


def exe(pid):
    return os.readlink("/proc/%d/exe" % pid)


def log_text(hub):
    with open(hub.log_file, errors="replace") as f:
        return f.read()


def wait_log(hub, pattern, timeout=20, after=0):
    return wait_for(lambda: re.search(pattern, log_text(hub)[after:], re.M), timeout,
                    "log line /%s/" % pattern)


def stats(hub):
    r = hub.fcgi("GET", "/admin/stats.json")
    assert r.status == 200, r
    return r.json()


def post(hub, text):
    r = hub.fcgi("POST", "/admin/broadcast", text.encode(),
                 {"Content-Type": "text/plain; charset=utf-8"})
    assert r.status == 202, r
    return r.json()["seq"]


def stop_new_hub(hub, pid):
    """SIGTERM to the hub that owns the instance now (not the test's child): everything must
    go, segment and sockets included."""
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not pid_alive(pid), 20, "hub pid %d to exit" % pid)
    wait_log(hub, r"hub\[%d\]: stopped; exit code 0" % pid, 5)
    wait_for(lambda: not hub.strays(), 10, "no wshub process left")
    assert not os.path.exists(hub.segment)
    assert not os.path.exists(hub.admin_socket)


# ---- a resuming wshub.v1 client -----------------------------------------------------------------


class V1Client:
    """Reconnects after any close with ?since=<last>&epoch=<epoch>; records every sequence,
    welcome, gap and close code."""

    def __init__(self, url, name):
        self.url, self.name = url, name
        self.epoch, self.last, self.first_last = None, None, None
        self.seqs, self.welcomes, self.gaps, self.closes, self.epochs = [], [], [], [], []
        self.bodies = []
        self.ws, self.task, self.stopping, self.errors = None, None, False, []

    async def start(self):
        await self._connect()
        self.first_last = self.last
        self.task = asyncio.ensure_future(self._run())
        return self

    async def _connect(self):
        url = self.url
        if self.last is not None:
            url += "?since=%d&epoch=%s" % (self.last, self.epoch)
        self.ws = await websockets.connect(url, subprotocols=[V1], ping_interval=None,
                                           max_queue=None, open_timeout=10, close_timeout=2)
        fields, _ = parse(await self.ws.recv())
        assert fields[0] == "w", fields
        self.welcomes.append(fields[3])
        self.epochs.append(fields[1])
        self.epoch, self.last = fields[1], int(fields[2])

    async def _run(self):
        while not self.stopping:
            try:
                msg = await self.ws.recv()
            except ConnectionClosed as e:
                if self.stopping:
                    return
                self.closes.append(e.rcvd.code if e.rcvd else None)
                while not self.stopping:
                    try:
                        await self._connect()
                        break
                    except (OSError, InvalidStatusCode, ConnectionClosed,
                            asyncio.TimeoutError) as e2:
                        self.errors.append(repr(e2))
                        await asyncio.sleep(0.05)
                continue
            fields, body = parse(msg)
            if fields[0] == "m":
                self.seqs.append(int(fields[1]))
                self.bodies.append(body.decode())
                self.last = int(fields[1])
            elif fields[0] == "g":
                self.gaps.append(tuple(fields[1:]))
                self.last = int(fields[2])

    async def stop(self):
        self.stopping = True
        await self.ws.close()
        await self.task


# ---- traffic: broadcasts, connection attempts ---------------------------------------------------

class Traffic:
    """A broadcast every ~20 ms (sequence numbers recorded) and a new connection attempt every
    ~5 ms (each closed once open; any failure recorded)."""

    def __init__(self, hub):
        self.hub = hub
        self.published, self.post_errors = [], []
        self.attempts, self.failures = [], []
        self.stop = asyncio.Event()
        self.tasks, self.probes = [], []

    def start(self):
        self.tasks = [asyncio.ensure_future(f()) for f in (self._publisher, self._prober)]
        return self

    async def _publisher(self):
        i = 0
        while not self.stop.is_set():
            try:
                self.published.append(await in_thread(post, self.hub, "m%d" % i))
            except AssertionError as e:
                self.post_errors.append(repr(e))
            i += 1
            await asyncio.sleep(0.02)

    async def _probe(self):
        t0 = time.monotonic()
        try:
            ws = await websockets.connect(self.hub.ws_url, ping_interval=None, open_timeout=10,
                                          close_timeout=2)
        except Exception as e:  # refused, reset, HTTP error: all count
            self.failures.append((t0, repr(e)))
            return
        self.attempts.append(t0)
        await ws.close()

    async def _prober(self):
        while not self.stop.is_set():
            self.probes.append(asyncio.ensure_future(self._probe()))
            await asyncio.sleep(0.005)

    async def finish(self):
        self.stop.set()
        await asyncio.gather(*self.tasks)
        await asyncio.gather(*self.probes)


def check_clients_lost_nothing(clients, published, epoch):
    """Every client has every sequence published after its first welcome, once, in order, with
    no gap and no reset: its resumes were all accepted."""
    for c in clients:
        want = [s for s in published if s > c.first_last]
        assert c.seqs == want, (c.name, len(c.seqs), len(want), c.seqs[:5], want[:5])
        assert c.gaps == [], (c.name, c.gaps)
        assert set(c.welcomes[1:]) <= {"resumed"}, (c.name, c.welcomes)
        assert set(c.epochs) == {epoch}, (c.name, c.epochs)


# ---- 1: under traffic ---------------------------------------------------------------------------

N_CLIENTS = 60


def test_binary_upgrade_under_traffic(make_stack):
    stack, inst = make_upgradable(make_stack)
    asyncio.run(upgrade_scenario(stack, inst))


async def upgrade_scenario(stack, inst):
    hub = stack.hub
    st0 = await in_thread(stats, hub)
    epoch, old_hub = st0["hub"]["epoch"], hub.proc.pid
    old_workers = {w["pid"] for w in st0["workers"] if w["pid"]}
    old_admin = [p for p in children_of(old_hub) if p not in old_workers]
    assert inst.pid() == old_hub and exe(old_hub) == os.path.realpath(binary("wshub"))
    new_dir = inst.version("v2")

    clients = [await V1Client(hub.ws_url, "c%d" % i).start() for i in range(N_CLIENTS)]
    traffic = Traffic(hub).start()
    try:
        await until(lambda: len(traffic.published) >= 5 and len(traffic.attempts) >= 20, 10,
                    "traffic")
        mark = len(log_text(hub))
        inst.install(new_dir)
        t0 = time.monotonic()
        hub.signal(signal.SIGUSR2)
        rc = await in_thread(hub.wait_exit, 20)
        t_old_exit = time.monotonic()
        assert rc == 0, "old hub exit status %r\n%s" % (rc, hub.logs())
        await in_thread(wait_log, hub, r"binary upgrade complete: the old hub \(pid %d\)" %
                        old_hub, 10, mark)
        await asyncio.sleep(0.3)  # more attempts against the new hub alone
    finally:
        await traffic.finish()

    # Not one attempt refused, not one broadcast refused.
    during = [t for t in traffic.attempts if t0 <= t <= t_old_exit]
    assert traffic.failures == [], "%d of %d attempts failed: %r" % (
        len(traffic.failures), len(traffic.failures) + len(traffic.attempts), traffic.failures[:5])
    assert len(during) >= 20, "too few attempts during the upgrade: %d" % len(during)
    assert traffic.post_errors == [], traffic.post_errors[:5]

    # Every client: closed once with 1012 by its old worker, resumed on the same epoch, nothing
    # lost, nothing twice.
    last = traffic.published[-1]
    await until(lambda: all(c.last == last for c in clients), 15, "every client at seq %d" % last)
    for c in clients:
        await c.stop()
    check_clients_lost_nothing(clients, traffic.published, epoch)
    assert all(c.closes == [1012] and c.welcomes == ["fresh", "resumed"] for c in clients), \
        sorted(set((tuple(c.closes), tuple(c.welcomes)) for c in clients))

    # The new hub owns the instance: same segment (epoch), pid file rewritten, new binaries.
    new_hub = inst.pid()
    assert new_hub != old_hub and pid_alive(new_hub)
    assert not os.path.exists(inst.pid_file + ".oldbin")
    assert exe(new_hub) == os.path.join(new_dir, "wshub")
    st = await in_thread(stats, hub)
    assert st["hub"]["epoch"] == epoch and st["hub"]["pid"] == new_hub, st["hub"]
    assert st["hub"]["generation"] == 2 and st["hub"]["workers_configured"] == 2, st["hub"]
    new_workers = [w for w in st["workers"] if w["pid"]]
    assert len(new_workers) == 2 and all(w["generation"] == 2 for w in new_workers), new_workers
    kids = children_of(new_hub)
    assert sorted(exe(p) for p in kids) == sorted(
        [os.path.join(new_dir, "wshub-admin")] + [os.path.join(new_dir, "wshub-worker")] * 2), kids
    assert not any(pid_alive(p) for p in old_workers | set(old_admin) | {old_hub})
    assert (await in_thread(hub.fcgi, "GET", "/healthz")).status == 200
    assert st["connections"]["in_use"] == 0, st["connections"]  # every client and probe left

    text = log_text(hub)[mark:]
    assert "exited with code" not in re.sub(r"(worker #\d+|admin) \(pid \d+\) exited with "
                                            r"code 0", "", text), text
    took = re.search(r"serves generation 2 \(2 workers, (\d+) ms after SIGUSR2\)", text)
    print("\nbinary upgrade: hand-over %s ms after SIGUSR2, old hub gone after %.0f ms; %d "
          "connection attempts during it (%d in all, 0 failed), %d broadcasts, %d resuming "
          "clients, 0 lost" % (took.group(1) if took else "?", (t_old_exit - t0) * 1e3,
                               len(during), len(traffic.attempts), len(traffic.published),
                               N_CLIENTS))

    await in_thread(stop_new_hub, hub, new_hub)
    assert not os.path.exists(inst.pid_file)


# ---- 2: a new binary that fails at once ---------------------------------------------------------

def test_failed_binary_leaves_old_hub_serving(make_stack):
    stack, inst = make_upgradable(make_stack)
    asyncio.run(failure_scenario(stack, inst))


async def failure_scenario(stack, inst):
    hub = stack.hub
    old_hub = hub.proc.pid
    st0 = await in_thread(stats, hub)
    old_workers = sorted(w["pid"] for w in st0["workers"] if w["pid"])
    bad = inst.broken("bad", 'echo "wshub (broken build): cannot start" >&2\nexit 2\n')

    clients = [await V1Client(hub.ws_url, "c%d" % i).start() for i in range(10)]
    traffic = Traffic(hub).start()
    try:
        await until(lambda: len(traffic.published) >= 5, 10, "traffic")
        mark = len(log_text(hub))
        inst.install(bad)
        hub.signal(signal.SIGUSR2)
        # The new hub is not the old one's child; its exit status is known while its zombie
        # waits for its parent (init), "has exited" once that has reaped it.
        await in_thread(wait_log, hub, r"binary upgrade failed: the new hub \(pid \d+, .*\) "
                        r"(exited with code 2|has exited) before it served; this hub \(pid %d\) "
                        r"keeps serving" % old_hub, 10, mark)
        n = len(traffic.published)
        await until(lambda: len(traffic.published) >= n + 10, 10, "broadcasts after the failure")
    finally:
        await traffic.finish()

    assert traffic.failures == [] and traffic.post_errors == [], (traffic.failures[:3],
                                                                  traffic.post_errors[:3])
    last = traffic.published[-1]
    await until(lambda: all(c.last == last for c in clients), 10, "every client at seq %d" % last)
    # Untouched: no client was even closed, the old hub and its workers serve on.
    assert all(c.closes == [] for c in clients), [c.closes for c in clients]
    check_clients_lost_nothing(clients, traffic.published, st0["hub"]["epoch"])
    assert hub.running() and inst.pid() == old_hub
    assert not os.path.exists(inst.pid_file + ".oldbin")
    st = await in_thread(stats, hub)
    assert st["hub"]["pid"] == old_hub and st["hub"]["generation"] == 1, st["hub"]
    assert sorted(w["pid"] for w in st["workers"] if w["pid"]) == old_workers
    assert (await in_thread(hub.fcgi, "GET", "/healthz")).status == 200

    # A new binary built for another segment layout (simulated: a wrapper makes the running
    # instance's layout, as the old hub announces it, 999): refused before it touches anything.
    other = inst.version("other-layout")
    os.rename(os.path.join(other, "wshub"), os.path.join(other, "wshub.real"))
    inst.script(os.path.join(other, "wshub"),
                'WSHUB_UPGRADE=$(echo "$WSHUB_UPGRADE" | sed "s/layout=[0-9]*/layout=999/")\n'
                'export WSHUB_UPGRADE\nexec "%s" "$@"\n' % os.path.join(other, "wshub.real"))
    inst.install(other)
    mark = len(log_text(hub))
    hub.signal(signal.SIGUSR2)
    await in_thread(wait_log, hub, r"binary upgrade failed: the new hub \(pid \d+, .*\) "
                    r"(exited with code 2|has exited) before it served", 10, mark)
    with open(hub.out_file, errors="replace") as f:
        assert re.search(r"refused: the running instance uses shared-memory layout 999 and this "
                         r"wshub uses layout \d+; an in-place upgrade needs the same layout",
                         f.read()), hub.logs()
    assert hub.running() and inst.pid() == old_hub and all(c.closes == [] for c in clients)

    # A good binary afterwards: the upgrade works (slots and doorbells were given back).
    good = inst.version("v2")
    inst.install(good)
    hub.signal(signal.SIGUSR2)
    assert await in_thread(hub.wait_exit, 20) == 0, hub.logs()
    await until(lambda: all(len(c.closes) == 1 for c in clients), 10, "1012 to every client")
    seq = await in_thread(post, hub, "after")
    await until(lambda: all(c.last == seq for c in clients), 10, "resumed clients get seq %d" % seq)
    for c in clients:
        await c.stop()
    assert all(c.closes == [1012] and c.welcomes == ["fresh", "resumed"] and not c.gaps
               for c in clients), [(c.closes, c.welcomes, c.gaps) for c in clients]
    new_hub = inst.pid()
    assert exe(new_hub) == os.path.join(good, "wshub")
    await in_thread(stop_new_hub, hub, new_hub)


# ---- 3: the new hub dies while its workers start ------------------------------------------------

def test_new_hub_killed_while_starting(make_stack):
    stack, inst = make_upgradable(make_stack)
    hub = stack.hub
    old_hub = hub.proc.pid
    slow = inst.version("slow", worker_delay=3)  # its workers take 3 s to serve
    client = asyncio.run(_one_client_then(hub, None))
    mark = len(log_text(hub))
    inst.install(slow)
    hub.signal(signal.SIGUSR2)
    m = wait_log(hub, r"started .* as pid (\d+) \(generation 2", 10, mark)
    new_hub = int(m.group(1))
    wait_for(lambda: len(children_of(new_hub)) >= 2, 5, "the new hub's children")
    orphans = children_of(new_hub)
    os.kill(new_hub, signal.SIGKILL)
    wait_log(hub, r"binary upgrade failed: the new hub \(pid %d, .*\) (was killed by signal 9 "
             r"\(SIGKILL\)|has exited) before it served; this hub \(pid %d\) keeps serving" %
             (new_hub, old_hub), 10, mark)
    # Its workers die with it (PDEATHSIG) and their slots are freed by the old hub.
    wait_for(lambda: not any(pid_alive(p) for p in orphans), 10, "the orphaned workers to exit")
    wait_for(lambda: all(w["state"] in ("exited", "empty") for w in stats(hub)["workers"]
                         if w["slot"] >= 2), 10, "the new hub's slots freed")
    assert hub.running() and inst.pid() == old_hub
    assert not os.path.exists(inst.pid_file + ".oldbin")
    st = stats(hub)
    assert st["hub"]["pid"] == old_hub and st["hub"]["generation"] == 1, st["hub"]
    assert hub.fcgi("GET", "/healthz").status == 200
    # The client connected before is still served.
    asyncio.run(_one_client_then(hub, client))


async def _one_client_then(hub, state):
    """First call: a client connects and reads one broadcast; returns its epoch and seq. Second
    call: a client resuming from there gets exactly the next broadcast."""
    if state is None:
        c = await V1Client(hub.ws_url, "c").start()
        seq = await in_thread(post, hub, "one")
        await until(lambda: c.last == seq, 10, "seq %d" % seq)
        await c.stop()
        return c.epoch, c.last
    epoch, last = state
    c = V1Client(hub.ws_url, "c2")
    c.epoch, c.last = epoch, last
    await c.start()
    seq = await in_thread(post, hub, "two")
    await until(lambda: c.last == seq, 10, "seq %d" % seq)
    await c.stop()
    assert c.welcomes == ["resumed"] and c.seqs == [seq] and seq == last + 1, (c.welcomes, c.seqs)


# ---- 4: the old hub dies before the hand-over ---------------------------------------------------

def test_old_hub_killed_before_handover(make_stack):
    stack, inst = make_upgradable(make_stack)
    asyncio.run(old_hub_killed_scenario(stack, inst))


async def old_hub_killed_scenario(stack, inst):
    hub = stack.hub
    old_hub = hub.proc.pid
    epoch = (await in_thread(stats, hub))["hub"]["epoch"]
    # The new hub starts only 0.5 s after its exec (a script sleeps first), so the old hub is
    # certainly dead before the new one has even read its environment.
    slow = inst.version("slow", hub_delay=0.5)
    clients = [await V1Client(hub.ws_url, "c%d" % i).start() for i in range(10)]
    seqs = [await in_thread(post, hub, "before %d" % i) for i in range(5)]
    mark = len(log_text(hub))
    inst.install(slow)
    hub.signal(signal.SIGUSR2)
    m = await in_thread(wait_log, hub, r"started .* as pid (\d+) \(generation 2", 10, mark)
    new_hub = int(m.group(1))
    hub.proc.kill()  # SIGKILL to the old hub: its workers get SIGTERM (PDEATHSIG)
    await in_thread(hub.wait_exit, 5)
    await in_thread(wait_log, hub, r"hub\[%d\]: binary upgrade: the old hub \(pid %d\) is gone "
                    r"before handing over; this hub takes the instance over" % (new_hub, old_hub),
                    10, mark)
    # Broadcasts go on (the admin process of the new hub answers); once its workers serve, the
    # clients (closed by the dying old workers) resume there without loss.
    assert exe(new_hub) == os.path.join(slow, "wshub.real")
    for i in range(5):
        seqs.append(await in_thread(post, hub, "after %d" % i))
    await until(lambda: all(c.last == seqs[-1] for c in clients), 20, "every client resumed")
    for c in clients:
        await c.stop()
    check_clients_lost_nothing(clients, seqs, epoch)
    assert all(c.closes and set(c.closes) <= {1001} for c in clients), [c.closes for c in clients]
    assert inst.pid() == new_hub
    await in_thread(wait_for, lambda: not os.path.exists(inst.pid_file + ".oldbin"), 5,
                    "the dead old hub's .oldbin pid file removed")
    st = await in_thread(stats, hub)
    assert st["hub"]["pid"] == new_hub and st["hub"]["epoch"] == epoch, st["hub"]
    assert st["hub"]["generation"] == 2 and st["hub"]["heartbeat_age_ms"] < 2000, st["hub"]
    await in_thread(wait_for, lambda: stats(hub)["connections"]["in_use"] == 0, 10,
                    "rows of the old workers freed")
    assert (await in_thread(hub.fcgi, "GET", "/healthz")).status == 200
    await in_thread(stop_new_hub, hub, new_hub)


# ---- 5: with the Redis bridge -------------------------------------------------------------------

@pytest.fixture
def rs():
    pytest.importorskip("redis")
    import redis_server
    if not redis_server.available():
        pytest.skip("redis-server is not installed")
    base = make_base_dir("wshub-upg-redis-")
    server = redis_server.RedisServer(base).start()
    yield server
    server.kill()
    shutil.rmtree(base, ignore_errors=True)


def test_binary_upgrade_with_redis_bridge(make_stack, rs):
    opts = {"redis": rs.address, "redis_prefix": "upg%06x:" % (os.getpid() & 0xffffff),
            "redis_timeout": "500ms", "redis_backoff_max": "1s"}
    stack_a, inst = make_upgradable(make_stack, **opts)
    stack_b = make_stack(workers=1, nginx=False, options=opts)
    for hub in (stack_a.hub, stack_b.hub):
        wait_for(lambda: stats(hub)["redis_bridge"]["state"] == "closed", 15, "bridge closed")
    asyncio.run(redis_scenario(stack_a.hub, stack_b.hub, inst))


async def redis_scenario(a, b, inst):
    old_hub = a.proc.pid
    epoch = (await in_thread(stats, a))["hub"]["epoch"]
    new_dir = inst.version("v2")
    v1 = [await V1Client(a.ws_url, "a%d" % i).start() for i in range(10)]
    plain = [await connect(b.ws_url, name="b%d" % i) for i in range(5)]
    published = {"a": [], "b": []}
    stop = asyncio.Event()

    async def publisher(hub, name):
        i = 0
        while not stop.is_set():
            body = "%s%d" % (name, i)
            await in_thread(post, hub, body)
            published[name].append(body)
            i += 1
            await asyncio.sleep(0.02)

    tasks = [asyncio.ensure_future(publisher(h, n)) for h, n in ((a, "a"), (b, "b"))]
    try:
        await until(lambda: len(published["a"]) >= 10 and len(published["b"]) >= 10, 10,
                    "traffic")
        mark = len(log_text(a))
        inst.install(new_dir)
        a.signal(signal.SIGUSR2)
        assert await in_thread(a.wait_exit, 20) == 0, a.logs()
        await in_thread(wait_log, a, r"binary upgrade complete", 10, mark)
        await in_thread(wait_for, lambda: stats(a)["redis_bridge"]["state"] == "closed", 15,
                        "the new hub's bridge closed")
        n = len(published["a"])
        await until(lambda: len(published["a"]) >= n + 10, 10, "traffic after the upgrade")
    finally:
        stop.set()
        await asyncio.gather(*tasks)

    everything = published["a"] + published["b"]

    def complete(msgs):
        return set(msgs) >= set(everything)

    await until(lambda: all(complete(c.bodies) for c in v1) and
                all(complete(c.messages) for c in plain), 20, "every message everywhere")
    await asyncio.sleep(0.3)  # a duplicate would arrive now
    assert not any(c.closed.is_set() for c in plain), [(c.close_code, c.error) for c in plain]
    for c in v1:
        await c.stop()
    for c in plain:
        await c.close()
    for c in v1 + plain:
        got = c.bodies if isinstance(c, V1Client) else c.messages
        assert len(got) == len(set(got)), "%s: %d duplicates" % (c.name, len(got) - len(set(got)))
        assert set(got) == set(everything), (c.name, sorted(set(everything) - set(got))[:5],
                                             sorted(set(got) - set(everything))[:5])
        for name, msgs in published.items():
            assert [m for m in got if m[0] == name] == msgs, "%s: %s out of order" % (c.name, name)
    for c in v1:
        assert c.gaps == [] and set(c.welcomes[1:]) <= {"resumed"} and set(c.epochs) == {epoch}, \
            (c.name, c.gaps, c.welcomes)
        assert c.closes == [1012], (c.name, c.closes)
    text = log_text(a)[mark:]
    assert "reading the stream from" in text and "where the previous hub stopped" in text, text
    br = (await in_thread(stats, a))["redis_bridge"]
    assert br["backlog"] == 0 and br["dropped"] == 0, br
    new_hub = inst.pid()
    assert new_hub != old_hub
    await in_thread(stop_new_hub, a, new_hub)


# ---- 6: what systemd sees -----------------------------------------------------------------------

class NotifySocket:
    """A $NOTIFY_SOCKET: records (sender pid, {key: value}) for every datagram, the sender from
    SCM_CREDENTIALS as systemd reads it."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.settimeout(0.05)
        self.messages = []

    def poll(self):
        while True:
            try:
                data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except socket.timeout:
                return self.messages
            pid = None
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("iII", payload[:12])[0]
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append((pid, fields))

    def wait(self, what, predicate, timeout=15):
        return wait_for(lambda: [m for m in self.poll() if predicate(m)], timeout, what)

    def close(self):
        self.sock.close()


def test_systemd_notifications(make_stack):
    path = os.path.join(make_base_dir("wshub-upg-notify-"), "notify.sock")
    ns = NotifySocket(path)
    try:
        env = dict(os.environ, NOTIFY_SOCKET=path)
        stack, inst = make_upgradable(make_stack, env=env)
        hub = stack.hub
        old_hub = hub.proc.pid
        ns.wait("READY=1 from the hub", lambda m: m[0] == old_hub and m[1].get("READY") == "1")

        # A failed upgrade: RELOADING=1, then READY=1, both from the (still main) old hub.
        inst.install(inst.broken("bad", "exit 2\n"))
        n = len(ns.poll())
        hub.signal(signal.SIGUSR2)
        ns.wait("READY=1 after the failed upgrade",
                lambda m: m in ns.messages[n:] and m[1].get("READY") == "1")
        assert "RELOADING" in ns.messages[n][1], ns.messages[n:]
        assert all(m[0] == old_hub for m in ns.messages[n:]), ns.messages[n:]

        # A good one: RELOADING=1; MAINPID=<new> with READY=1 from the old hub; nothing from the
        # new hub before that, READY=1 from it after; STOPPING=1 from it when it stops.
        good = inst.version("v2")
        inst.install(good)
        n = len(ns.poll())
        hub.signal(signal.SIGUSR2)
        assert hub.wait_exit(20) == 0, hub.logs()
        new_hub = inst.pid()
        ns.wait("READY=1 from the new hub", lambda m: m[0] == new_hub and m[1].get("READY"))
        msgs = ns.messages[n:]
        print("\nsd_notify during the upgrade (sender: fields):\n" + "\n".join(
            "  %s: %s" % ("old" if p == old_hub else "new" if p == new_hub else p, f)
            for p, f in msgs))
        handover = [i for i, m in enumerate(msgs) if m[1].get("MAINPID") == str(new_hub)]
        assert handover and msgs[handover[0]][0] == old_hub, msgs
        assert msgs[handover[0]][1].get("READY") == "1", msgs
        assert "RELOADING" in msgs[0][1] and msgs[0][0] == old_hub, msgs
        assert not any(m[0] == new_hub for m in msgs[:handover[0]]), msgs
        assert not any(m[0] == old_hub for m in msgs[handover[0] + 1:]), msgs
        os.kill(new_hub, signal.SIGTERM)
        ns.wait("STOPPING=1 from the new hub",
                lambda m: m[0] == new_hub and m[1].get("STOPPING") == "1")
        wait_for(lambda: not pid_alive(new_hub), 20, "the new hub to exit")
        wait_for(lambda: not hub.strays(), 10, "no wshub process left")
    finally:
        ns.close()
        shutil.rmtree(os.path.dirname(path), ignore_errors=True)


# ---- 7: the old hub is stopped while the new one starts ------------------------------------------

def test_stop_during_upgrade(make_stack):
    stack, inst = make_upgradable(make_stack)
    hub = stack.hub
    old_hub = hub.proc.pid
    slow = inst.version("slow", hub_delay=1)  # the new hub is still a sleeping script
    inst.install(slow)
    mark = len(log_text(hub))
    hub.signal(signal.SIGUSR2)
    m = wait_log(hub, r"started .* as pid (\d+) \(generation 2", 10, mark)
    new_hub = int(m.group(1))
    hub.signal(signal.SIGTERM)
    assert hub.wait_exit(20) == 0, hub.logs()
    text = log_text(hub)[mark:]
    assert "binary upgrade abandoned: sending SIGTERM to the new hub (pid %d)" % new_hub in text
    assert "hub[%d]: stopped; exit code 0" % old_hub in text, text
    assert not pid_alive(new_hub)
    wait_for(lambda: not hub.strays(), 10, "no wshub process left")
    assert not os.path.exists(hub.segment)
    assert not os.path.exists(inst.pid_file) and not os.path.exists(inst.pid_file + ".oldbin")


# ---- 8: the packaged unit under a real systemd ---------------------------------------------------

def test_upgrade_under_systemd():
    if os.geteuid() != 0:
        pytest.skip("a private systemd needs root")
    base = make_base_dir("wshub-upg-systemd-")
    try:
        systemd_scenario(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def systemd_scenario(base):
    from installed import PrivateSystemd  # test_install.py's helper
    for d in ("sbin", "v2", "bad", "etc"):
        os.makedirs(os.path.join(base, d))
    for b in BINS:
        shutil.copy2(binary(b), os.path.join(base, "v2", b))
    Install.script(os.path.join(base, "bad", "wshub"), "exit 2\n")
    sbin = os.path.join(base, "sbin", "wshub")
    os.symlink(binary("wshub"), sbin)
    conf = os.path.join(base, "etc", "wshub.conf")
    instance = "upgsd%d" % (os.getpid() % 100000)
    log_file = os.path.join(base, "wshub.log")
    with open(conf, "w") as f:
        f.write("instance %s\nlisten 127.0.0.1:%d\nworkers 2\nrestart_spread 1s\n"
                "shutdown_timeout 3s\nmax_connections 2000\nring_size 16m\n"
                "pid_file /run/wshub/wshub.pid\nlog_file %s\n" % (instance, free_port(), log_file))

    def logged(pattern):
        with open(log_file, errors="replace") as f:
            return re.search(pattern, f.read(), re.M)
    with open(os.path.join(REPO, "packaging", "wshub.service.in")) as f:
        unit = f.read().replace("@SBINDIR@", os.path.dirname(sbin)).replace(
            "@SYSCONFDIR@/wshub/wshub.conf", conf)
    unit_file = os.path.join(base, "wshub.service")
    with open(unit_file, "w") as f:
        f.write(unit)
    # The packaged unit, but as root and with our files in /tmp visible to it.
    dropin = ("[Service]\nUser=root\nGroup=root\nSupplementaryGroups=\nPrivateTmp=no\n"
              "ProtectSystem=no\nProtectHome=no\n")
    if "asan" in binary("wshub"):
        dropin += "MemoryDenyWriteExecute=no\nSystemCallFilter=\n"
    sd = PrivateSystemd(os.path.join(base, "systemd"), unit_file, dropin)
    os.makedirs(sd.base)
    if not sd.start():
        pytest.skip("no systemd can run here: %s" % sd.why)

    def show():
        out = sd.systemctl("show", "-p", "MainPID", "-p", "ActiveState", "-p", "SubState",
                           "wshub").stdout
        return dict(line.split("=", 1) for line in out.split())

    def install(d):
        os.symlink(os.path.join(d, "wshub"), sbin + ".new")
        os.replace(sbin + ".new", sbin)

    try:
        p = sd.systemctl("start", "wshub")
        assert p.returncode == 0, p.stderr + sd.systemctl("status", "wshub").stdout
        old = int(show()["MainPID"])

        install(os.path.join(base, "bad"))
        assert sd.systemctl("kill", "-s", "USR2", "--kill-whom=main", "wshub").returncode == 0
        wait_for(lambda: logged(r"binary upgrade failed"), 10, "the failed upgrade logged")
        assert show() == {"MainPID": str(old), "ActiveState": "active", "SubState": "running"}

        install(os.path.join(base, "v2"))
        assert sd.systemctl("kill", "-s", "USR2", "--kill-whom=main", "wshub").returncode == 0
        st = wait_for(lambda: (lambda s: s if s["MainPID"] not in ("0", str(old)) else None)(
            show()), 15, "a new MainPID")
        assert st["ActiveState"] == "active" and st["SubState"] == "running", st
        new = int(st["MainPID"])
        assert sd.enter("readlink", "/proc/%d/exe" % new).stdout.strip() == \
            os.path.join(base, "v2", "wshub")
        wait_for(lambda: "/v2/wshub-worker" in sd.systemctl("status", "wshub").stdout and
                 "%d " % old not in sd.enter("cat", "/sys/fs/cgroup/system.slice/wshub.service/"
                                             "cgroup.procs").stdout + " ", 10,
                 "the old hub out of the unit's cgroup")
        p = sd.systemctl("reload", "wshub")  # SIGHUP to $MAINPID: the new hub
        assert p.returncode == 0, p.stderr
        assert show()["MainPID"] == str(new)
        p = sd.systemctl("stop", "wshub")
        assert p.returncode == 0, p.stderr
        res = sd.systemctl("show", "-p", "Result", "-p", "ExecMainStatus", "wshub").stdout
        assert "Result=success" in res and "ExecMainStatus=0" in res, res
        # A graceful stop by the new hub, not systemd's SIGKILL (which it would send at once to
        # a main process that is not its child).
        assert logged(r"hub\[%d\]: stopping \(SIGTERM\)" % new), open(log_file).read()[-2000:]
        assert logged(r"hub\[%d\]: stopped; exit code 0" % new)
        assert not os.path.exists("/dev/shm/wshub-" + instance)
    finally:
        sd.stop()  # kills whatever is left in the namespace
        if os.path.exists("/dev/shm/wshub-" + instance):  # only after a failure above
            os.unlink("/dev/shm/wshub-" + instance)

