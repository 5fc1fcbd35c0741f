"""`make run` (scripts/run.sh): starts the stack behind nginx, prints working URLs and a working
curl line, and Ctrl-C stops everything cleanly (clients get 1001, exit status 0, no process or
segment left). Run here on private ports and a private run directory, without deps.sh and make
(the suite runs after make; deps are checked by .ci/run)."""
import asyncio
import os
import re
import select
import shutil
import signal
import subprocess
import time

import wshub_stack
from wsclients import connect, in_thread, until
from wshub_stack import REPO, free_port, make_base_dir, pid_alive, unique_instance


def read_until(proc, pattern, timeout):
    """Reads proc's stdout until `pattern` matches the text so far; returns the text."""
    text, deadline = "", time.monotonic() + timeout
    fd = proc.stdout.fileno()
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            text += chunk.decode(errors="replace")
            if re.search(pattern, text):
                return text
    raise AssertionError("run.sh did not print %r within %ss; output so far:\n%s" %
                         (pattern, timeout, text))


def test_make_run():
    base = make_base_dir()
    instance = unique_instance()
    ws_port, http_port = free_port(), free_port()
    env = dict(os.environ, WSHUB_SKIP_DEPS="1", WSHUB_SKIP_BUILD="1",
               WSHUB_BUILD=wshub_stack.BUILD, WSHUB_INSTANCE=instance,
               WSHUB_WS_PORT=str(ws_port), WSHUB_HTTP_PORT=str(http_port),
               WSHUB_RUN_DIR=os.path.join(base, "run"), WSHUB_WORKERS="2")
    proc = subprocess.Popen(["bash", os.path.join(REPO, "scripts", "run.sh")], cwd=REPO, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    hub_pid = nginx_pid = None
    ok = False
    try:
        out = read_until(proc, r"Ctrl-C stops everything", 60)
        hub_pid = int(re.search(r"hub pid (\d+)", out).group(1))
        nginx_pid = int(re.search(r"nginx pid (\d+)", out).group(1))
        for url in ("ws://127.0.0.1:%d/ws" % http_port, "ws://127.0.0.1:%d/ws" % ws_port,
                    "http://127.0.0.1:%d/admin/stats.json" % http_port,
                    "http://127.0.0.1:%d/metrics" % http_port):
            assert url in out, "run.sh should print %s:\n%s" % (url, out)
        curl = re.search(r"^\s*(curl .*/admin/broadcast)\s*$", out, re.M).group(1)
        assert '-m websockets "ws://127.0.0.1:%d/ws?token=' % http_port in out, out
        token = re.search(r"/ws\?token=([A-Za-z0-9_.-]+)", out).group(1)  # tokens are required
        assert wshub_stack.raw_upgrade("127.0.0.1", ws_port, "/ws")[0] == 401

        async def scenario():
            via_nginx = await connect("ws://127.0.0.1:%d/ws?token=%s" % (http_port, token))
            direct = await connect("ws://127.0.0.1:%d/ws?token=%s" % (ws_port, token))
            r = await in_thread(lambda: wshub_stack.http_request(
                "127.0.0.1", http_port, "GET", "/admin/stats.json"))
            assert r.status == 200 and r.json()["instance"] == instance, r
            await until(lambda: wshub_stack.http_request(
                "127.0.0.1", http_port, "GET", "/admin/stats.json").json()
                ["connections"]["in_use"] == 2, 10, "2 clients counted")
            # The printed curl line, run as printed.
            done = await in_thread(lambda: subprocess.run(curl, shell=True, capture_output=True,
                                                          text=True, timeout=10))
            assert done.returncode == 0 and '"seq"' in done.stdout, (done.stdout, done.stderr)
            await until(lambda: via_nginx.messages and direct.messages, 10, "the broadcast")
            assert via_nginx.messages == direct.messages == ["hello, world"]
            # Ctrl-C.
            proc.send_signal(signal.SIGINT)
            rc = await in_thread(proc.wait, 40)
            assert rc == 0, "run.sh exit status after Ctrl-C: %r" % rc
            await until(lambda: via_nginx.closed.is_set() and direct.closed.is_set(), 5,
                        "clients closed")
            assert (via_nginx.close_code, direct.close_code) == (1001, 1001)

        asyncio.run(scenario())
        rest = proc.stdout.read().decode(errors="replace")
        assert "stopped." in rest, rest
        assert not pid_alive(hub_pid) and not pid_alive(nginx_pid)
        assert not os.path.exists("/dev/shm/wshub-%s" % instance)
        found = wshub_stack.sanitizer_reports(os.path.join(base, "run", "hub.out"))
        assert not found, found
        ok = True
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in (hub_pid, nginx_pid):
            if pid and pid_alive(pid):  # run.sh started both as session leaders
                os.killpg(pid, signal.SIGKILL)
        if os.path.exists("/dev/shm/wshub-%s" % instance):
            os.unlink("/dev/shm/wshub-%s" % instance)
        if ok:
            shutil.rmtree(base, ignore_errors=True)
        else:
            print("run.sh test directory kept: %s" % base)
