"""redis_server.py -- a private redis-server for the Redis bridge tests (tests/test_redis_bridge.py).

A real redis-server on a free port on 127.0.0.1, its data in a directory of its own, started in
its own session so a test can SIGKILL and restart it. Persistence is the one the bridge's
"no loss across a Redis restart" needs: an append-only file fsynced on every write
(`appendonly yes`, `appendfsync always`), so a restart (even after SIGKILL) keeps every entry
Redis acknowledged. DEBUG is enabled for local connections (`DEBUG SLEEP` makes a slow Redis).

Needs redis-server (scripts/deps.sh installs it) and python3-redis.
"""
import os
import shutil
import signal
import subprocess

import redis

from wshub_stack import free_port, tail, wait_for

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def available():
    return os.access(REDIS_SERVER, os.X_OK)


class RedisServer:
    def __init__(self, base, port=None):
        self.dir = os.path.join(base, "redis")
        os.makedirs(self.dir, exist_ok=True)
        self.port = port or free_port()
        self.log_file = os.path.join(self.dir, "redis.log")
        self.proc = None

    @property
    def address(self):
        return "127.0.0.1:%d" % self.port

    def start(self, timeout=10):
        cmd = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
               "--dir", self.dir, "--save", "", "--appendonly", "yes",
               "--appendfsync", "always", "--enable-debug-command", "local",
               "--daemonize", "no", "--logfile", self.log_file]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)

        def up():
            if self.proc.poll() is not None:
                raise AssertionError("redis-server exited with %s:\n%s" %
                                     (self.proc.returncode, tail(self.log_file)))
            return self.client(timeout=1).ping()
        wait_for(up, timeout, "redis-server on port %d" % self.port)
        return self

    def client(self, timeout=5):
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=timeout,
                           socket_connect_timeout=timeout)

    def kill(self):
        """SIGKILL: no shutdown, no final AOF rewrite; what was fsynced is all there is."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def logs(self, lines=30):
        return "---- %s (tail) ----\n%s" % (self.log_file, tail(self.log_file, lines))
