"""wshub_stack.py -- start the real wshub stack (hub, workers, wshub-admin, nginx) for a test.

Everything here drives real processes and sockets: the binaries come from $WSHUB_BUILD (make sets
it; default build/), nginx is Debian's, started from a private directory with the templates in
nginx-conf/ rendered by scripts/render-nginx.py (the same path `make run` takes). Each stack gets
its own directory, instance name (so its own /dev/shm segment) and free ports, so stacks never
collide with each other, with `make run`, or with the system's services.

Waiting is always "poll a condition until a deadline" (wait_for); a fixed sleep would make the
suite slow on a fast machine and flaky on a slow one.

Small protocol helpers live here too: an HTTP client on http.client (status codes are data here,
not exceptions), a FastCGI client to talk to wshub-admin's socket without a web server, a raw
WebSocket handshake for cases the websockets library hides (status of a refused upgrade, a client
that never reads), and a parser for the Prometheus text format.
"""
import base64
import grp
import http.client
import itertools
import json
import os
import pwd
import random
import re
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("WSHUB_BUILD", os.path.join(REPO, "build"))
RENDER_NGINX = os.path.join(REPO, "scripts", "render-nginx.py")
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
RENDER_APACHE = os.path.join(REPO, "scripts", "render-apache.py")
APACHE = shutil.which("apache2") or "/usr/sbin/apache2"
IS_ROOT = os.geteuid() == 0


def binary(name):
    return os.path.join(BUILD, name)


def raise_nofile_limit():
    """Soft open-files limit up to the hard one: a thousand clients need a thousand fds, and the
    hub's children inherit the limit (worker_connections is derived from it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# ---------------------------------------------------------------------------------------------
# Waiting


class Timeout(AssertionError):
    pass


def wait_for(predicate, timeout, what, interval=0.02):
    """Calls predicate() until it returns a true value (returned) or `timeout` seconds pass
    (AssertionError naming `what` and the last value or exception seen). An exception from
    predicate() means "not yet" (the socket may not exist yet), except AssertionError, which
    stops the wait at once (the process being waited for has died)."""
    deadline = time.monotonic() + timeout
    last = None
    delay = interval
    while True:
        try:
            value = predicate()
            if value:
                return value
            last = value
        except AssertionError:
            raise
        except Exception as e:  # keep polling: the thing may not exist yet
            last = e
        if time.monotonic() >= deadline:
            raise Timeout("timed out after %.1fs waiting for %s (last: %r)" % (timeout, what, last))
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)


# ---------------------------------------------------------------------------------------------
# Ports


def _port_is_free(port, host="127.0.0.1"):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((host, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


_taken_ports = set()


def free_port():
    """A free TCP port on 127.0.0.1, preferably below the ephemeral range (so no client's source
    port can ever be it). Ports handed out once are not handed out again by this process."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except OSError:
        low = 32768
    if low > 20000 + 500:
        candidates = random.sample(range(20000, low), min(200, low - 20000))
    else:
        candidates = []
    for port in candidates:
        if port not in _taken_ports and _port_is_free(port):
            _taken_ports.add(port)
            return port
    for _ in range(100):  # fall back to a kernel-chosen ephemeral port
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        if port not in _taken_ports:
            _taken_ports.add(port)
            return port
    raise RuntimeError("no free port")


# ---------------------------------------------------------------------------------------------
# HTTP and FastCGI clients


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = {k.lower(): v for k, v in headers}
        self.body = body

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def is_json(self):
        try:
            self.json()
            return True
        except ValueError:
            return False

    def __repr__(self):
        return "<Response %d %r>" % (self.status, self.body[:300])


def http_request(host, port, method, path, body=None, headers=None, timeout=10):
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return Response(r.status, r.getheaders(), r.read())
    finally:
        conn.close()


FCGI_BEGIN_REQUEST, FCGI_END_REQUEST, FCGI_PARAMS, FCGI_STDIN, FCGI_STDOUT, FCGI_STDERR = \
    1, 3, 4, 5, 6, 7


def _fcgi_record(rtype, content, request_id=1):
    pad = (8 - len(content) % 8) % 8
    return struct.pack("!BBHHBx", 1, rtype, request_id, len(content), pad) + content + b"\0" * pad


def _fcgi_pair(name, value):
    out = b""
    for n in (len(name), len(value)):
        out += struct.pack("!B", n) if n < 128 else struct.pack("!I", n | 0x80000000)
    return out + name + value


def fcgi_request(sock_path, method, uri, body=b"", headers=None, timeout=10):
    """One FastCGI request straight to wshub-admin's socket, with the CGI variables nginx sends.
    The response's Status header becomes .status (200 when absent, as CGI says)."""
    path, _, query = uri.partition("?")
    params = {
        "GATEWAY_INTERFACE": "CGI/1.1", "REQUEST_METHOD": method, "REQUEST_URI": uri,
        "DOCUMENT_URI": path, "SCRIPT_NAME": path, "QUERY_STRING": query,
        # As nginx's $content_length: what the client sent (http.client sends 0 on a POST).
        "CONTENT_LENGTH": str(len(body)) if body or method in ("POST", "PUT") else "",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "40000", "SERVER_NAME": "localhost",
        "SERVER_PORT": "80", "SERVER_ADDR": "127.0.0.1", "REQUEST_SCHEME": "http",
    }
    for k, v in (headers or {}).items():
        if k.lower() == "content-type":
            params["CONTENT_TYPE"] = v
        else:
            params["HTTP_" + k.upper().replace("-", "_")] = v
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(sock_path)
        out = _fcgi_record(FCGI_BEGIN_REQUEST, struct.pack("!HB5x", 1, 0))
        pairs = b"".join(_fcgi_pair(k.encode(), v.encode()) for k, v in params.items())
        for i in range(0, len(pairs), 65535):
            out += _fcgi_record(FCGI_PARAMS, pairs[i:i + 65535])
        out += _fcgi_record(FCGI_PARAMS, b"")
        for i in range(0, len(body), 65535):
            out += _fcgi_record(FCGI_STDIN, body[i:i + 65535])
        out += _fcgi_record(FCGI_STDIN, b"")
        s.sendall(out)
        buf, stdout = b"", b""
        while True:
            while len(buf) < 8 or len(buf) < 8 + struct.unpack("!H", buf[4:6])[0] + buf[6]:
                chunk = s.recv(65536)
                if not chunk:
                    raise ConnectionError("FastCGI peer closed before END_REQUEST")
                buf += chunk
            _, rtype, _, clen, plen = struct.unpack("!BBHHB", buf[:7])
            content, buf = buf[8:8 + clen], buf[8 + clen + plen:]
            if rtype == FCGI_STDOUT:
                stdout += content
            elif rtype == FCGI_END_REQUEST:
                break
    finally:
        s.close()
    head, _, body_out = stdout.partition(b"\r\n\r\n")
    if not _:
        head, _, body_out = stdout.partition(b"\n\n")
    headers_out, status = [], 200
    for line in head.decode("latin-1").splitlines():
        name, _, value = line.partition(":")
        value = value.strip()
        if name.lower() == "status":
            status = int(value.split()[0])
        headers_out.append((name, value))
    return Response(status, headers_out, body_out)


# ---------------------------------------------------------------------------------------------
# Raw WebSocket pieces (handshake status, frames) for what the websockets library hides


def ws_handshake_request(host, port, path, key=None):
    key = key or base64.b64encode(os.urandom(16)).decode()
    return ("GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" %
            (path, host, port, key)).encode()


def raw_upgrade(host, port, path, timeout=5, rcvbuf=None):
    """Sends an upgrade request on a plain socket. Returns (status, header text, socket, bytes
    already read past the headers). The socket stays open for the caller."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(timeout)
    s.connect((host, port))
    s.sendall(ws_handshake_request(host, port, path))
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            break
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    m = re.match(rb"HTTP/1\.[01] (\d{3})", head)
    status = int(m.group(1)) if m else None
    return status, head.decode("latin-1"), s, rest


def parse_frames(data):
    """Splits server-to-client WebSocket frames (unmasked). Returns (frames, leftover) with
    frames as (opcode, fin, payload)."""
    frames, i = [], 0
    while len(data) - i >= 2:
        b0, b1 = data[i], data[i + 1]
        n, hl = b1 & 0x7F, 2
        if n == 126:
            if len(data) - i < 4:
                break
            n, hl = struct.unpack("!H", data[i + 2:i + 4])[0], 4
        elif n == 127:
            if len(data) - i < 10:
                break
            n, hl = struct.unpack("!Q", data[i + 2:i + 10])[0], 10
        if b1 & 0x80:
            hl += 4  # a masked frame would be a server bug; skip the key
        if len(data) - i < hl + n:
            break
        frames.append((b0 & 0x0F, bool(b0 & 0x80), data[i + hl:i + hl + n]))
        i += hl + n
    return frames, data[i:]


# ---------------------------------------------------------------------------------------------
# Prometheus text format


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\S+)?$')
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')


class Metrics:
    """Samples of one /metrics scrape: name -> list of (labels dict, value)."""

    def __init__(self, text):
        self.text = text
        self.samples = {}
        self.types = {}
        for line in text.splitlines():
            line = line.strip()
            if not line:
                continue
            if line.startswith("#"):
                parts = line.split(None, 3)
                if len(parts) >= 4 and parts[1] == "TYPE":
                    self.types[parts[2]] = parts[3]
                continue
            m = _SAMPLE.match(line)
            if not m:
                raise ValueError("not a Prometheus sample line: %r" % line)
            labels = {}
            if m.group(3):
                pos = 0
                body = m.group(3)
                while pos < len(body):
                    lm = _LABEL.match(body, pos)
                    if not lm:
                        raise ValueError("bad labels in %r" % line)
                    labels[lm.group(1)] = lm.group(2)
                    pos = lm.end()
            self.samples.setdefault(m.group(1), []).append((labels, float(m.group(4))))

    def names(self):
        return sorted(self.samples)

    def sum(self, name, **labels):
        """Sum of the samples of `name` whose labels include `labels`; KeyError if no such
        family (a missing metric is a failure, not a zero)."""
        if name not in self.samples:
            raise KeyError("no metric %s in /metrics (have: %s)" % (name, ", ".join(self.names())))
        return sum(v for lab, v in self.samples[name]
                   if all(lab.get(k) == str(want) for k, want in labels.items()))


# ---------------------------------------------------------------------------------------------
# Processes


def _proc_stat(pid):
    """(state, ppid, pgid) of a pid, or None when it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(")") + 2:].split()
    return fields[0], int(fields[1]), int(fields[2])


def pid_alive(pid):
    st = _proc_stat(pid)
    return st is not None and st[0] != "Z"


def pid_cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def children_of(pid):
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _proc_stat(int(name))
            if st and st[1] == pid and st[0] != "Z":
                out.append(int(name))
    return out


_SANITIZER = re.compile(r"ERROR: \w+Sanitizer|runtime error: |SUMMARY: \w+Sanitizer")


def sanitizer_reports(path):
    """Lines of AddressSanitizer / LeakSanitizer / UBSan reports in a process's stderr file: the
    asan build's findings must fail the test even when the behaviour looked right."""
    try:
        with open(path, errors="replace") as f:
            return [line.rstrip() for line in f if _SANITIZER.search(line)]
    except OSError:
        return []


def tail(path, lines=60):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode(errors="replace")
    except OSError as e:
        return "(%s: %s)" % (path, e)
    return "\n".join(text.splitlines()[-lines:])


_instance_counter = itertools.count()


def unique_instance():
    """Instance names fit conf.h's 31 characters and common/conf.c's [A-Za-z0-9._-]."""
    return "t%d-%d-%04x" % (os.getpid() % 100000, next(_instance_counter), random.getrandbits(16))


def make_base_dir(prefix="wshub-test-"):
    """A private directory under /tmp that the nginx workers' user (www-data when the tests run
    as root) can traverse: pytest's own tmp_path sits below a 0700 directory."""
    d = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    os.chmod(d, 0o711)
    return d


class Hub:
    """One wshub instance: config file, process, segment, logs."""

    def __init__(self, base, workers=2, options=None):
        self.base = base
        self.instance = unique_instance()
        self.port = free_port()
        self.run_dir = os.path.join(base, "run")
        os.makedirs(self.run_dir, exist_ok=True)
        self.admin_socket = os.path.join(self.run_dir, "admin.sock")
        self.log_file = os.path.join(base, "wshub.log")
        self.out_file = os.path.join(base, "hub.out")
        self.conf_file = os.path.join(base, "wshub.conf")
        self.options = {
            "instance": self.instance,
            "listen": "127.0.0.1:%d" % self.port,
            "workers": str(workers),
            "run_dir": self.run_dir,
            "admin_socket": self.admin_socket,
            "log_file": self.log_file,
            "log_level": "info",
            "shutdown_timeout": "5s",
            "max_connections": "20000",
            "ring_size": "16m",
        }
        if IS_ROOT:
            # nginx's workers run as www-data and must reach the admin socket.
            gid = grp.getgrnam("www-data").gr_gid
            os.chown(self.run_dir, 0, gid)
            os.chmod(self.run_dir, 0o750)
            self.options["admin_socket_group"] = "www-data"
            self.options["admin_socket_mode"] = "0660"
        self.options.update({k: str(v) for k, v in (options or {}).items()})
        self.ws_path = self.options.get("ws_path", "/ws")
        self.proc = None
        self.known_pids = set()  # every hub child ever seen, for the stray check
        self.write_conf()

    @property
    def segment(self):
        return "/dev/shm/wshub-%s" % self.instance

    @property
    def ws_url(self):
        return "ws://127.0.0.1:%d%s" % (self.port, self.ws_path)

    def write_conf(self):
        with open(self.conf_file, "w") as f:
            f.write("# generated by tests/wshub_stack.py\n")
            for k, v in self.options.items():
                f.write('%s "%s"\n' % (k, v) if v == "" or " " in v else "%s %s\n" % (k, v))

    def start(self):
        out = open(self.out_file, "ab")
        self.proc = subprocess.Popen([binary("wshub"), "-c", self.conf_file], cwd=self.base,
                                     stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                     start_new_session=True)
        out.close()
        return self

    @property
    def pid(self):
        return self.proc.pid

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def note_children(self):
        if self.running():
            self.known_pids.update(children_of(self.proc.pid))

    def fcgi(self, method, uri, body=b"", headers=None, timeout=10):
        return fcgi_request(self.admin_socket, method, uri, body, headers, timeout)

    def wait_ready(self, timeout=20):
        """Up when the admin program answers /healthz with 200 (all workers serving)."""
        def ready():
            if not self.running():
                raise AssertionError("wshub exited with %s during start-up:\n%s" %
                                     (self.proc.returncode, self.logs()))
            return self.fcgi("GET", "/healthz", timeout=2).status == 200
        try:
            wait_for(ready, timeout, "wshub /healthz == 200")
        except Timeout as e:
            raise AssertionError("%s\n%s" % (e, self.logs())) from None
        self.note_children()
        return self

    def stats(self):
        r = self.fcgi("GET", "/admin/stats.json")
        assert r.status == 200, r
        st = r.json()
        self.note_children()
        self.known_pids.update(w["pid"] for w in st.get("workers", []) if w.get("pid"))
        return st

    def signal(self, sig):
        os.kill(self.proc.pid, sig)

    def wait_exit(self, timeout):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout=15):
        """SIGTERM, wait; SIGKILL the whole process group after `timeout`. Returns the exit
        status (negative: killed by that signal), None if it had to be killed."""
        if self.proc is None:
            return None
        if self.proc.poll() is not None:
            return self.proc.returncode
        self.note_children()
        self.signal(signal.SIGTERM)
        rc = self.wait_exit(timeout)
        if rc is None:
            self.kill_group()
            self.proc.wait(5)
        return rc

    def kill_group(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def strays(self):
        """Processes of this instance still alive (the hub itself excluded)."""
        left = []
        for pid in sorted(self.known_pids):
            if pid_alive(pid) and "wshub" in pid_cmdline(pid):
                left.append((pid, pid_cmdline(pid)))
        # Anything left in the hub's process group (it was started as a session leader).
        for name in os.listdir("/proc"):
            if name.isdigit() and int(name) != self.proc.pid:
                st = _proc_stat(int(name))
                if st and st[2] == self.proc.pid and st[0] != "Z" and \
                        int(name) not in [p for p, _ in left]:
                    left.append((int(name), pid_cmdline(int(name))))
        return left

    def logs(self, lines=60):
        return "---- %s (tail) ----\n%s\n---- %s (tail) ----\n%s" % (
            self.log_file, tail(self.log_file, lines), self.out_file, tail(self.out_file, lines))


def make_certificate(base):
    """A self-signed certificate for 127.0.0.1 and localhost, made at test time (once per
    directory: nginx and Apache in one stack share it)."""
    cert, key = os.path.join(base, "cert.pem"), os.path.join(base, "key.pem")
    if os.path.exists(cert) and os.path.exists(key):
        return cert, key
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj",
                    "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-keyout", key, "-out", cert], check=True, capture_output=True)
    return cert, key


def descendants_of(pid):
    """Every live process below pid (children, their children, ...)."""
    kids = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _proc_stat(int(name))
            if st and st[0] != "Z":
                kids.setdefault(st[1], []).append(int(name))
    out, todo = [], [pid]
    while todo:
        for child in kids.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def pid_user(pid):
    """Name of the real user of a process, or None when it is gone."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("Uid:"):
                    return pwd.getpwuid(int(line.split()[1])).pw_name
    except (OSError, KeyError):
        return None
    return None


class WebFront:
    """What the nginx and Apache fronts share: rendering their config (with an optional TLS
    listener), starting after a config test, waiting for /healthz, requests, stopping, and the
    stray-process check. Subclasses set the names and timeouts below and build the render
    command."""

    NAME = ""             # "nginx", "apache2": in messages and the stray check
    STRAY_NAMES = ()      # command-line words of this front's own processes
    CONF_NAME = OUT_NAME = ""
    TEST_ARGS = RUN_ARGS = ()
    READY_TIMEOUT = HEALTH_TIMEOUT = STOP_TIMEOUT = LOG_LINES = 0

    def __init__(self, prefix, hub):
        self.prefix = prefix
        self.hub = hub
        self.port = free_port()
        self.tls_port = None
        self.proc = None
        self.known_pids = set()

    def _render(self, cmd, base, tls):
        if tls:
            self.tls_port = free_port()
            self.cert, key = make_certificate(base)
            cmd += ["--tls-listen", "127.0.0.1:%d" % self.tls_port, "--tls-cert", self.cert,
                    "--tls-key", key]
        subprocess.run(cmd, check=True)
        self.conf = os.path.join(self.prefix, self.CONF_NAME)
        self.error_log = os.path.join(self.prefix, "error.log")
        self.out_file = os.path.join(self.prefix, self.OUT_NAME)

    def cmd(self, *extra):
        raise NotImplementedError

    def start(self):
        test = subprocess.run(self.cmd(*self.TEST_ARGS), capture_output=True, text=True)
        assert test.returncode == 0, "%s -t failed:\n%s%s" % (self.NAME, test.stdout, test.stderr)
        out = open(self.out_file, "ab")
        self.proc = subprocess.Popen(self.cmd(*self.RUN_ARGS), stdin=subprocess.DEVNULL,
                                     stdout=out, stderr=out, start_new_session=True)
        out.close()
        return self

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def note_children(self):
        if self.running():
            self.known_pids.update(descendants_of(self.proc.pid))

    def wait_ready(self, timeout=None):
        def ready():
            if not self.running():
                raise AssertionError("%s exited with %s:\n%s" %
                                     (self.NAME, self.proc.returncode, self.logs()))
            return self.get("/healthz", timeout=self.HEALTH_TIMEOUT).status == 200
        try:
            wait_for(ready, timeout or self.READY_TIMEOUT, "%s /healthz == 200" % self.NAME)
        except Timeout as e:
            raise AssertionError("%s\n%s" % (e, self.logs())) from None
        self.note_children()
        return self

    def request(self, method, path, body=None, headers=None, timeout=10):
        return http_request("127.0.0.1", self.port, method, path, body, headers, timeout)

    def get(self, path, timeout=10):
        return self.request("GET", path, timeout=timeout)

    @property
    def ws_url(self):
        return "ws://127.0.0.1:%d%s" % (self.port, self.hub.ws_path)

    def stop(self, timeout=None):
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.note_children()
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout or self.STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
            return None

    def strays(self):
        return [(p, pid_cmdline(p)) for p in sorted(self.known_pids)
                if pid_alive(p) and any(n in pid_cmdline(p) for n in self.STRAY_NAMES)]

    def logs(self, lines=None):
        lines = lines or self.LOG_LINES
        return "---- %s (tail) ----\n%s\n---- %s (tail) ----\n%s" % (
            self.error_log, tail(self.error_log, lines), self.out_file, tail(self.out_file, lines))


class Nginx(WebFront):
    """A private nginx in front of one Hub, from nginx-conf/ rendered by scripts/render-nginx.py."""

    NAME, STRAY_NAMES = "nginx", ("nginx",)
    CONF_NAME, OUT_NAME = "nginx.conf", "nginx.out"
    TEST_ARGS, RUN_ARGS = ("-t", "-q"), ()
    READY_TIMEOUT, HEALTH_TIMEOUT, STOP_TIMEOUT, LOG_LINES = 15, 2, 10, 40

    def __init__(self, base, hub, worker_processes=1, worker_connections=4096, tls=False):
        super().__init__(os.path.join(base, "nginx"), hub)
        self._render([sys.executable, RENDER_NGINX, "--prefix", self.prefix,
                      "--listen", "127.0.0.1:%d" % self.port, "--wshub-conf", hub.conf_file,
                      "--worker-processes", str(worker_processes),
                      "--worker-connections", str(worker_connections), "--daemon", "off",
                      "--error-log-level", "notice"], base, tls)

    def cmd(self, *extra):
        return [NGINX, "-p", self.prefix + "/", "-c", self.conf, "-e", self.error_log] + \
            list(extra)


class Apache(WebFront):
    """A private Apache 2.4 (event MPM) in front of one Hub, from apache-conf/ rendered by
    scripts/render-apache.py: mod_proxy_http with upgrade=websocket for the WebSocket path, and
    for the admin locations either mod_proxy_fcgi to the hub's wshub-admin or, with
    fcgid=True, wshub-admin processes that Apache spawns itself through mod_fcgid. Started as
    `apache2 -d PREFIX -f PREFIX/httpd.conf -DFOREGROUND`; /etc/apache2 is never read."""

    NAME, STRAY_NAMES = "apache2", ("apache2", "wshub-admin")
    CONF_NAME, OUT_NAME = "httpd.conf", "apache.out"
    TEST_ARGS, RUN_ARGS = ("-t",), ("-DFOREGROUND",)
    READY_TIMEOUT, HEALTH_TIMEOUT, STOP_TIMEOUT, LOG_LINES = 20, 5, 15, 60

    def __init__(self, base, hub, clients=1000, threads_per_child=0, tls=False, fcgid=False):
        super().__init__(os.path.join(base, "apache"), hub)
        self.fcgid = fcgid
        cmd = [sys.executable, RENDER_APACHE, "--prefix", self.prefix,
               "--listen", "127.0.0.1:%d" % self.port, "--wshub-conf", hub.conf_file,
               "--clients", str(clients), "--threads-per-child", str(threads_per_child),
               "--log-level", "info"]
        if fcgid:
            cmd += ["--fcgid", "--admin-binary", binary("wshub-admin")]
        self._render(cmd, base, tls)

    def cmd(self, *extra):
        return [APACHE, "-d", self.prefix, "-f", self.conf] + list(extra)

    def admin_processes(self):
        """The wshub-admin processes mod_fcgid started below this Apache."""
        if not self.running():
            return []
        return [p for p in descendants_of(self.proc.pid) if "wshub-admin" in pid_cmdline(p)]


class Stack:
    """Hub (+ workers + admin) and, optionally, nginx and/or Apache in front, in one private
    directory. apache=True puts Apache in front with mod_proxy_fcgi to the hub's wshub-admin;
    apache="fcgid" lets Apache spawn wshub-admin itself (the hub then starts none, and as root
    gives its segment to www-data's group so the fcgid processes can map it)."""

    def __init__(self, workers=2, options=None, nginx=True, nginx_workers=1, tls=False,
                 apache=None, apache_clients=1000, apache_threads=0):
        self.base = make_base_dir()
        if apache == "fcgid":
            options = dict(options or {})
            options.setdefault("admin_threads", "0")
            if IS_ROOT:
                options.setdefault("shm_group", "www-data")
                options.setdefault("shm_mode", "0660")
        self.hub = Hub(self.base, workers=workers, options=options)
        self.nginx = Nginx(self.base, self.hub, worker_processes=nginx_workers,
                           tls=tls) if nginx else None
        self.apache = Apache(self.base, self.hub, clients=apache_clients,
                             threads_per_child=apache_threads, tls=tls,
                             fcgid=apache == "fcgid") if apache else None
        self.problems = []  # teardown findings (stray processes, leftover segment)

    def start(self):
        if self.hub.options.get("admin_threads") == "0":
            # No wshub-admin of the hub's own to ask: a front (mod_fcgid) answers /healthz.
            self.hub.start()
            wait_for(lambda: os.path.exists(self.hub.segment) or not self.hub.running(), 10,
                     "the hub's segment")
            assert self.hub.running(), "wshub exited during start-up:\n" + self.hub.logs()
        else:
            self.hub.start().wait_ready()
        if self.nginx:
            self.nginx.start().wait_ready()
        if self.apache:
            self.apache.start().wait_ready()
        self.hub.note_children()
        return self

    # Admin API through the web server when there is one (the deployment path; nginx first),
    # else straight to the FastCGI socket.
    def admin(self, method, path, body=None, headers=None, timeout=10):
        front = self.nginx or self.apache
        if front:
            return front.request(method, path, body, headers, timeout)
        return self.hub.fcgi(method, path, body or b"", headers, timeout)

    def broadcast(self, body, content_type="text/plain; charset=utf-8", channel=None):
        path = "/admin/broadcast" + ("?channel=%s" % channel if channel else "")
        if isinstance(body, str):
            body = body.encode("utf-8")
        return self.admin("POST", path, body, {"Content-Type": content_type})

    def stats(self):
        r = self.admin("GET", "/admin/stats.json")
        assert r.status == 200, r
        st = r.json()
        self.hub.known_pids.update(w["pid"] for w in st.get("workers", []) if w.get("pid"))
        self.hub.note_children()
        return st

    def metrics(self):
        r = self.admin("GET", "/metrics")
        assert r.status == 200, r
        return Metrics(r.body.decode("utf-8"))

    def logs(self):
        out = self.hub.logs()
        if self.nginx:
            out += "\n" + self.nginx.logs()
        if self.apache:
            out += "\n" + self.apache.logs()
        return out

    def teardown(self, keep=False):
        """Stops everything; records (does not raise) what was left behind. The directory (logs,
        configs) is removed unless `keep` or something was left behind. The hub stops first, so
        its close frames still reach the clients behind nginx."""
        clean = self.hub.proc is not None and self.hub.proc.poll() is None
        rc = self.hub.stop()
        if clean and rc != 0:
            self.problems.append("wshub exited with %r on SIGTERM at teardown" % rc)
        try:
            wait_for(lambda: not self.hub.strays(), 5, "the hub's children to exit")
            left = []
        except Timeout:
            left = self.hub.strays()
        if left:
            self.problems.append("wshub processes left running after the hub exited: %r" % left)
            for pid, _ in left:
                _kill(pid)
        for path in (self.hub.out_file, self.hub.log_file):
            found = sanitizer_reports(path)
            if found:
                self.problems.append("sanitizer reports in %s: %s" % (path, found[:5]))
        if os.path.exists(self.hub.segment):
            if clean and rc == 0:
                self.problems.append("segment %s left after a clean stop" % self.hub.segment)
            os.unlink(self.hub.segment)
        if self.nginx:
            self.nginx.stop()
            left = self.nginx.strays()
            if left:
                self.problems.append("nginx processes left running: %r" % left)
                for pid, _ in left:
                    _kill(pid)
        if self.apache:
            self._teardown_apache()
        if not keep and not self.problems:
            shutil.rmtree(self.base, ignore_errors=True)


    def _teardown_apache(self):
        """Stops Apache (and with it mod_fcgid's wshub-admin processes, whose stderr is in
        Apache's error log: sanitizer reports there count too)."""
        clean = self.apache.running()
        rc = self.apache.stop()
        if clean and rc != 0:
            self.problems.append("apache2 exited with %r on SIGTERM at teardown" % rc)
        try:
            wait_for(lambda: not self.apache.strays(), 10, "Apache's processes to exit")
        except Timeout:
            left = self.apache.strays()
            self.problems.append("Apache processes left running: %r" % left)
            for pid, _ in left:
                _kill(pid)
        found = sanitizer_reports(self.apache.error_log)
        if found:
            self.problems.append("sanitizer reports in %s: %s" % (self.apache.error_log,
                                                                 found[:5]))


def _kill(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
