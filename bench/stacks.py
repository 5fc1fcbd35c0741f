"""stacks.py -- start and stop the servers under test: wshub behind nginx, and nginx + Nchan.

Each stack lives in one directory under /tmp, listens only on 127.0.0.1 ports from the range the
caller gives, and runs in its own session (so a Ctrl-C in the terminal reaches only bench.py,
which then stops the stack cleanly). Nothing outside that directory is touched: the system's
nginx configuration is never read (nginx gets -p, -c and -e), wshub gets its own instance name.

    wshub:  hub + `workers` wshub-workers + wshub-admin, and an nginx in front rendered by
            scripts/render-nginx.py from nginx-conf/ (the path `make run` takes). Subscribers
            connect straight to the workers (direct) or through nginx's /ws (proxied);
            broadcasts are POSTed to nginx's /admin/broadcast (FastCGI to wshub-admin).
    nchan:  one nginx with the Nchan module from bench/nchan.conf.in, `workers` worker
            processes; subscribers on /sub (WebSocket), broadcasts POSTed to /pub.

The processes measured ("the server") are the whole stack in both cases: for wshub the hub's
tree plus the front nginx (which carries every POST), for Nchan the nginx master and workers.
"""
import grp
import os
import resource
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
NCHAN_MODULE = "/usr/lib/nginx/modules/ngx_nchan_module.so"


def _raise_nofile():
    """preexec_fn: children inherit the open-files soft limit raised to the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def fd_hard_limit():
    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def _children(pid):
    """Direct children of pid, from /proc (no psutil on a fresh Debian)."""
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def _alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _wait_for(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise RuntimeError("timed out after %.0f s waiting for %s" % (timeout, what))


def _port_answers(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _port_free(port):
    return not _port_answers(port)


def _stop_proc(proc, name, grace=20):
    """SIGTERM, wait `grace` seconds, then SIGKILL the whole session."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        print("bench: %s ignored SIGTERM for %d s; killing it" % (name, grace), flush=True)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(10)


class Stack:
    """Common part: a run directory, ports, and the processes to stop."""
    kind = "?"

    def __init__(self, run_dir, workers):
        self.dir = run_dir
        self.workers = workers
        self.procs = []   # (name, Popen), stopped in reverse order

    def _spawn(self, name, argv, log):
        out = open(os.path.join(self.dir, log), "ab")
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                             start_new_session=True, preexec_fn=_raise_nofile, cwd=self.dir)
        out.close()
        self.procs.append((name, p))
        return p

    def stop(self):
        while self.procs:
            name, p = self.procs.pop()
            _stop_proc(p, name)

    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.stop()   # whatever did start (nginx when the hub died) must not linger
            raise
        return self

    def __exit__(self, *exc):
        self.stop()


class WshubStack(Stack):
    kind = "wshub"

    def __init__(self, build, run_dir, instance, ws_port, http_port, workers, nginx_workers=1,
                 max_connections=110000):
        super().__init__(run_dir, workers)
        self.build = build
        self.instance = instance
        self.ws_port, self.http_port = ws_port, http_port
        self.nginx_workers = nginx_workers
        self.max_connections = max_connections
        self.hub = self.nginx = None

    @property
    def ws_url(self):
        return "ws://127.0.0.1:%d/ws" % self.ws_port

    @property
    def ws_url_proxied(self):
        return "ws://127.0.0.1:%d/ws" % self.http_port

    @property
    def publish_url(self):
        return "http://127.0.0.1:%d/admin/broadcast" % self.http_port

    # W8 (bench/channels_bench.py): wsbench --channels URL templates, {c} = the channel number.
    @property
    def ws_channel_url(self):
        return "ws://127.0.0.1:%d/ws/ch{c}" % self.ws_port

    @property
    def publish_channel_url(self):
        return "http://127.0.0.1:%d/admin/broadcast?channel=ch{c}" % self.http_port

    def _write_conf(self):
        group_line = ""
        if os.geteuid() == 0:
            try:
                grp.getgrnam("www-data")
                shutil.chown(self.dir, group="www-data")
                os.chmod(self.dir, 0o750)
                group_line = "admin_socket_group www-data"
            except KeyError:
                pass
        conf = os.path.join(self.dir, "wshub.conf")
        with open(conf, "w") as f:
            f.write("# written by bench/stacks.py\n"
                    "instance           %s\n"
                    "listen             127.0.0.1:%d\n"
                    "workers            %d\n"
                    "max_connections    %d\n"
                    "run_dir            \"%s\"\n"
                    "admin_socket       \"%s/admin.sock\"\n"
                    "admin_socket_mode  0660\n"
                    "%s\n"
                    "log_file           \"%s/wshub.log\"\n"
                    "log_level          notice\n" %
                    (self.instance, self.ws_port, self.workers, self.max_connections, self.dir,
                     self.dir, group_line, self.dir))
        return conf

    def start(self):
        for b in ("wshub", "wshub-worker", "wshub-admin"):
            if not os.access(os.path.join(self.build, b), os.X_OK):
                raise RuntimeError("%s/%s missing: run make" % (self.build, b))
        for port in (self.ws_port, self.http_port):
            if not _port_free(port):
                raise RuntimeError("port %d is in use" % port)
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(os.path.join(self.dir, "nginx"))
        conf = self._write_conf()
        r = subprocess.run([os.path.join(self.build, "wshub"), "-t", "-c", conf],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError("wshub -t rejected %s: %s" % (conf, r.stderr.strip()))
        # A proxied WebSocket holds two nginx connections; leave room for every client.
        wc = max(4096, min(fd_hard_limit() - 100, 2 * 20000 // self.nginx_workers + 512))
        ngx = os.path.join(self.dir, "nginx")
        subprocess.run(["/usr/bin/python3", os.path.join(ROOT, "scripts", "render-nginx.py"),
                        "--prefix", ngx, "--listen", "127.0.0.1:%d" % self.http_port,
                        "--wshub-conf", conf, "--daemon", "off",
                        "--worker-processes", str(self.nginx_workers),
                        "--worker-connections", str(wc), "--rlimit-nofile",
                        str(fd_hard_limit())], check=True, stdout=subprocess.DEVNULL)
        ngx_argv = ["nginx", "-p", ngx + "/", "-c", os.path.join(ngx, "nginx.conf"), "-e",
                    os.path.join(ngx, "error.log")]
        subprocess.run(ngx_argv + ["-t", "-q"], check=True)
        self.hub = self._spawn("wshub", [os.path.join(self.build, "wshub"), "-c", conf],
                               "hub.out")
        self.nginx = self._spawn("nginx", ngx_argv, "nginx.out")
        _wait_for(self._healthy, 15, "wshub /healthz through nginx (see %s)" % self.dir)
        _wait_for(lambda: len(self.worker_pids()) >= self.workers, 10, "wshub workers")

    def _healthy(self):
        if self.hub.poll() is not None:
            raise RuntimeError("wshub exited with %s; see %s/wshub.log" %
                               (self.hub.returncode, self.dir))
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/healthz" % self.http_port,
                                        timeout=1) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def worker_pids(self):
        out = []
        for c in _children(self.hub.pid):
            try:
                with open("/proc/%d/cmdline" % c, "rb") as f:
                    if b"wshub-worker" in f.read():
                        out.append(c)
            except OSError:
                pass
        return out

    def server_args(self):
        """wsbench options selecting the whole stack: the hub's tree and the front nginx."""
        nginx = [self.nginx.pid] + _children(self.nginx.pid)
        return ["--server-tree", str(self.hub.pid),
                "--server-pids", ",".join(str(p) for p in nginx)]

    def describe(self):
        return {"kind": self.kind, "workers": self.workers, "front_nginx_workers":
                self.nginx_workers, "ws_url": self.ws_url, "publish_url": self.publish_url,
                "max_connections": self.max_connections, "run_dir": self.dir}


class NchanStack(Stack):
    kind = "nchan"

    def __init__(self, run_dir, port, workers, buffer_length=100000, shm_size="512m",
                 deflate=False, deflate_level=1):
        super().__init__(run_dir, workers)
        self.port = port
        self.deflate, self.deflate_level = deflate, deflate_level  # W5 (bench/deflate_bench.py)
        self.buffer_length = buffer_length
        self.shm_size = shm_size
        self.nginx = None

    @property
    def ws_url(self):
        return "ws://127.0.0.1:%d/sub" % self.port

    @property
    def publish_url(self):
        return "http://127.0.0.1:%d/pub" % self.port

    # W8: one Nchan channel per id (the /sub/<id> and /pub/<id> locations of nchan.conf.in).
    @property
    def ws_channel_url(self):
        return "ws://127.0.0.1:%d/sub/ch{c}" % self.port

    @property
    def publish_channel_url(self):
        return "http://127.0.0.1:%d/pub/ch{c}" % self.port

    def render(self):
        with open(os.path.join(HERE, "nchan.conf.in")) as f:
            text = f.read()
        values = {
            "PREFIX": self.dir, "WORKERS": self.workers, "RLIMIT_NOFILE": fd_hard_limit(),
            "WORKER_CONNECTIONS": fd_hard_limit() - 100, "SHM_SIZE": self.shm_size,
            "LISTEN": "127.0.0.1:%d" % self.port, "BUFFER_LENGTH": self.buffer_length,
            "DEFLATE": "on" if self.deflate else "off", "DEFLATE_LEVEL": self.deflate_level,
        }
        out = []
        for line in text.splitlines(keepends=True):
            if not line.lstrip().startswith("#"):
                for k, v in values.items():
                    line = line.replace("@%s@" % k, str(v))
            out.append(line)
        with open(os.path.join(self.dir, "nginx.conf"), "w") as f:
            f.write("".join(out))

    def start(self):
        if not os.path.exists(NCHAN_MODULE):
            raise RuntimeError("%s missing: apt-get install libnginx-mod-nchan" % NCHAN_MODULE)
        if not _port_free(self.port):
            raise RuntimeError("port %d is in use" % self.port)
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(os.path.join(self.dir, "tmp"))
        self.render()
        argv = ["nginx", "-p", self.dir + "/", "-c", os.path.join(self.dir, "nginx.conf"), "-e",
                os.path.join(self.dir, "error.log")]
        subprocess.run(argv + ["-t", "-q"], check=True)
        self.nginx = self._spawn("nginx+nchan", argv, "nginx.out")
        _wait_for(self._healthy, 15, "nginx+nchan on port %d (see %s)" % (self.port, self.dir))
        _wait_for(lambda: len(_children(self.nginx.pid)) >= self.workers, 10, "nginx workers")

    def _healthy(self):
        if self.nginx.poll() is not None:
            raise RuntimeError("nginx exited with %s; see %s/error.log" %
                               (self.nginx.returncode, self.dir))
        return _port_answers(self.port)

    def server_args(self):
        return ["--server-tree", str(self.nginx.pid)]

    def describe(self):
        return {"kind": self.kind, "workers": self.workers, "ws_url": self.ws_url,
                "publish_url": self.publish_url, "message_buffer_length": self.buffer_length,
                "shared_memory": self.shm_size, "run_dir": self.dir,
                "deflate": self.deflate, "deflate_level": self.deflate_level}
