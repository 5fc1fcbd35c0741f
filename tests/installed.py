"""installed.py -- helpers for tests/test_install.py: an installed tree, its processes, the .deb.

Everything runs what `make install` put under a DESTDIR (or what the .deb put on the machine),
never the build tree: the hub must find its children beside itself, the installed config must
work with command-line overrides only, and the installed nginx site must work as shipped apart
from its ports and socket path, which the test rewrites (and checks that each rewrite matched).

The private systemd (PrivateSystemd) boots /lib/systemd/systemd as PID 1 of a new PID and mount
namespace with a private /run and a unit directory holding only stub targets and the installed
wshub.service (plus a drop-in with test ports), so the unit's sandboxing, Type=notify, User=,
RuntimeDirectory= and the admin socket's group are exercised by a real systemd on machines
where systemd is not PID 1 (containers, CI VMs). It starts nothing else: the stub targets want
nothing.
"""
import os
import re
import shutil
import signal
import subprocess
import time

import wshub_stack
from wshub_stack import REPO, BUILD, wait_for, Timeout

INSTALLED_FILES = {
    # path under DESTDIR (PREFIX=/usr): mode
    "usr/sbin/wshub": 0o755,
    "usr/sbin/wshub-worker": 0o755,
    "usr/sbin/wshub-admin": 0o755,
    "usr/sbin/wshubctl": 0o755,
    "etc/wshub/wshub.conf": 0o640,
    "etc/logrotate.d/wshub": 0o644,
    "etc/nginx/sites-available/wshub": 0o644,
    "usr/lib/systemd/system/wshub.service": 0o644,
    "usr/share/wshub/wshub.conf.example": 0o644,
    "usr/share/wshub/nginx-conf/wshub.conf.in": 0o644,
    "usr/share/wshub/nginx-conf/nginx-main.conf.in": 0o644,
    "usr/share/wshub/scripts/render-nginx.py": 0o755,
    "usr/share/man/man8/wshub.8": 0o644,
    "usr/share/man/man8/wshubctl.8": 0o644,
    "usr/share/man/man5/wshub.conf.5": 0o644,
    "usr/share/doc/wshub/README.md": 0o644,
}
APACHE_FILES = {
    "etc/apache2/conf-available/wshub.conf": 0o644,
    "usr/share/wshub/apache-conf/wshub.conf.in": 0o644,
    "usr/share/wshub/scripts/render-apache.py": 0o755,
}


def is_asan_build():
    out = subprocess.run(["ldd", os.path.join(BUILD, "wshub")], capture_output=True, text=True)
    return "libasan" in out.stdout


def make(*targets, timeout=300, **variables):
    """Runs make in the repository against the suite's build directory (WSHUB_BUILD), so the
    binaries under test are the ones installed. Returns the CompletedProcess (check it)."""
    cmd = ["make", "-C", REPO, "--no-print-directory", "BUILD=" + BUILD]
    if is_asan_build():
        cmd.append("SAN=1")
    cmd += ["%s=%s" % kv for kv in variables.items()] + list(targets)
    # Not the flags of the `make test` this suite may run under (jobserver fds, its BUILD).
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def have_apache_sources():
    return os.path.exists(os.path.join(REPO, "apache-conf", "wshub.conf.in")) and \
        os.path.exists(os.path.join(REPO, "scripts", "render-apache.py"))


def run(cmd, timeout=20, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          stdin=kw.pop("stdin", subprocess.DEVNULL), **kw)


def replace_once(text, old, new, what):
    """str.replace that insists on exactly one match, so a changed template fails loudly."""
    n = text.count(old)
    assert n == 1, "expected one %r in %s, found %d" % (old, what, n)
    return text.replace(old, new)


class InstalledHub:
    """The installed wshub started with the installed config plus overrides for a private run."""

    def __init__(self, root, base, workers=2, env=None, extra=()):
        self.root = root
        self.base = base
        self.instance = wshub_stack.unique_instance()
        self.port = wshub_stack.free_port()
        self.run_dir = os.path.join(base, "run")
        self.log_dir = os.path.join(base, "log")
        os.makedirs(self.log_dir, exist_ok=True)
        self.log_file = os.path.join(self.log_dir, "wshub.log")
        self.out_file = os.path.join(base, "hub.out")
        self.admin_socket = os.path.join(self.run_dir, "admin.sock")
        self.pid_file = os.path.join(self.run_dir, "wshub.pid")
        self.conf_file = os.path.join(root, "etc/wshub/wshub.conf")
        self.args = [self.sbin("wshub"), "-c", self.conf_file,
                     "--instance=" + self.instance, "--listen=127.0.0.1:%d" % self.port,
                     "--workers=%d" % workers, "--run-dir=" + self.run_dir,
                     "--pid-file=" + self.pid_file, "--log-file=" + self.log_file,
                     "--ring-size=16m", "--max-connections=2000", "--shutdown-timeout=5s"]
        if not wshub_stack.IS_ROOT:
            self.args.append("--admin-socket-group=")  # only root may give it to www-data
        self.args += list(extra)
        self.env = env
        self.proc = None
        self.known_pids = set()

    def sbin(self, name):
        return os.path.join(self.root, "usr/sbin", name)

    @property
    def segment(self):
        return "/dev/shm/wshub-%s" % self.instance

    def start(self):
        with open(self.out_file, "ab") as out:
            self.proc = subprocess.Popen(self.args, cwd=self.base, stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=out, start_new_session=True,
                                         env=self.env)
        return self

    def ctl(self, *args, stdin=None, user=None, timeout=20):
        """Runs the installed wshubctl against this hub's socket."""
        cmd = [self.sbin("wshubctl"), "-s", self.admin_socket] + list(args)
        if user:
            cmd = ["runuser", "-u", user, "--"] + cmd
        p = subprocess.run(cmd, input=stdin, capture_output=True, timeout=timeout,
                           stdin=None if stdin is not None else subprocess.DEVNULL)
        return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")

    def wait_ready(self, timeout=20):
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError("installed wshub exited with %s:\n%s" %
                                     (self.proc.returncode, self.logs()))
            return self.ctl("health", timeout=5)[0] == 0
        try:
            wait_for(ready, timeout, "wshubctl health == 0")
        except Timeout as e:
            raise AssertionError("%s\n%s" % (e, self.logs())) from None
        self.known_pids.update(wshub_stack.children_of(self.proc.pid))
        return self

    def stop(self, timeout=15):
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.known_pids.update(wshub_stack.children_of(self.proc.pid))
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
            return None

    def cleanup(self):
        """After stop(): kills anything left and removes a leftover segment. Returns what was
        found left behind (for the test to fail on)."""
        left = []
        if self.proc is not None and self.proc.poll() is None:
            self.stop(5)
            left.append("the hub")
        for pid in self.known_pids:
            if wshub_stack.pid_alive(pid) and "wshub" in wshub_stack.pid_cmdline(pid):
                left.append("pid %d %s" % (pid, wshub_stack.pid_cmdline(pid)))
                os.kill(pid, signal.SIGKILL)
        if os.path.exists(self.segment):
            left.append(self.segment)
            os.unlink(self.segment)
        return left

    def logs(self):
        return "---- %s ----\n%s\n---- %s ----\n%s" % (
            self.log_file, wshub_stack.tail(self.log_file), self.out_file,
            wshub_stack.tail(self.out_file))


class InstalledNginx:
    """nginx in front of an InstalledHub: the main config rendered by the INSTALLED render script
    from the INSTALLED templates, the server block being the INSTALLED site file with only its
    ports and socket path rewritten."""

    def __init__(self, root, hub):
        self.root = root
        self.hub = hub
        self.prefix = os.path.join(hub.base, "nginx")
        self.port = wshub_stack.free_port()
        self.proc = None
        site = open(os.path.join(root, "etc/nginx/sites-available/wshub")).read()
        site = replace_once(site, "    listen 80;\n", "    listen 127.0.0.1:%d;\n" % self.port,
                            "the nginx site")
        site = replace_once(site, "proxy_pass http://127.0.0.1:9001;",
                            "proxy_pass http://127.0.0.1:%d;" % hub.port, "the nginx site")
        site = site.replace("unix:/run/wshub/admin.sock;", "unix:%s;" % hub.admin_socket)
        assert "/run/wshub/" not in re.sub(r"(?m)^\s*#.*$", "", site), site
        render = os.path.join(root, "usr/share/wshub/scripts/render-nginx.py")
        p = run(["/usr/bin/python3", render, "--prefix", self.prefix, "--listen",
                 "127.0.0.1:%d" % self.port, "--daemon", "off", "--worker-processes", "1",
                 "--worker-connections", "1024", "--error-log-level", "notice"])
        assert p.returncode == 0, p.stderr
        # The rendered main config includes PREFIX/wshub.conf: put the installed site there.
        with open(os.path.join(self.prefix, "wshub.conf"), "w") as f:
            f.write(site)
        self.conf = os.path.join(self.prefix, "nginx.conf")
        self.error_log = os.path.join(self.prefix, "error.log")

    def cmd(self, *extra):
        return [wshub_stack.NGINX, "-p", self.prefix + "/", "-c", self.conf, "-e",
                self.error_log] + list(extra)

    def start(self):
        t = run(self.cmd("-t", "-q"))
        assert t.returncode == 0, "nginx -t on the installed site failed:\n%s" % t.stderr
        with open(os.path.join(self.prefix, "nginx.out"), "ab") as out:
            self.proc = subprocess.Popen(self.cmd(), stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=out, start_new_session=True)
        wait_for(lambda: self.request("GET", "/healthz", timeout=2).status == 200, 15,
                 "nginx /healthz == 200")
        return self

    def request(self, method, path, body=None, headers=None, timeout=10):
        return wshub_stack.http_request("127.0.0.1", self.port, method, path, body, headers,
                                        timeout)

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        kids = wshub_stack.children_of(self.proc.pid)
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        for pid in kids:
            if wshub_stack.pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


# ---------------------------------------------------------------------------------------------
# The Debian package


def deb_installed():
    p = run(["dpkg-query", "-W", "-f", "${Status}", "wshub"])
    return p.returncode == 0 and "installed" in p.stdout and "not-installed" not in p.stdout


def deb_field(deb, field):
    p = run(["dpkg-deb", "-f", deb, field])
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


def systemd_is_pid1():
    return os.path.isdir("/run/systemd/system")


class PrivateSystemd:
    """systemd as PID 1 of new PID and mount namespaces (see the module comment). start()
    returns False, with .why set, when this machine cannot run one (no unshare, no cgroup
    hierarchy systemd accepts): that is an environment limit, not a wshub failure."""

    CGROUP_NAMES = ("system.slice", "init.scope")

    def __init__(self, base, unit_file, dropin):
        self.base = base
        self.unit_dir = os.path.join(base, "units")
        self.empty_dir = os.path.join(base, "empty")
        self.console = os.path.join(base, "systemd.console")
        self.unit_file = unit_file
        self.dropin = dropin
        self.proc = None
        self.pid1 = None
        self.why = None
        self.cgroups_before = self._cgroups()

    def _cgroups(self):
        found = set()
        for name in self.CGROUP_NAMES:
            for d in (os.path.join("/sys/fs/cgroup", name),) + tuple(
                    os.path.join("/sys/fs/cgroup", c, name) for c in
                    (os.listdir("/sys/fs/cgroup") if os.path.isdir("/sys/fs/cgroup") else [])):
                if os.path.isdir(d):
                    found.add(d)
        return found

    def _write_units(self):
        os.makedirs(os.path.join(self.unit_dir, "wshub.service.d"))
        os.makedirs(self.empty_dir)
        for t in ("sysinit", "basic", "shutdown", "network", "local-fs", "sockets", "paths",
                  "timers", "multi-user"):
            with open(os.path.join(self.unit_dir, t + ".target"), "w") as f:
                f.write("[Unit]\nDescription=%s (test stub)\n" % t)
        with open(os.path.join(self.unit_dir, "wshub-test.target"), "w") as f:
            f.write("[Unit]\nDescription=wshub test\n")
        shutil.copy(self.unit_file, os.path.join(self.unit_dir, "wshub.service"))
        with open(os.path.join(self.unit_dir, "wshub.service.d", "test.conf"), "w") as f:
            f.write(self.dropin)
        script = os.path.join(self.base, "pid1.sh")
        with open(script, "w") as f:
            f.write("#!/bin/sh\nset -e\nmount --make-rprivate /\nmount -t tmpfs tmpfs /run\n"
                    "mkdir -p /run/lock\nmount --bind %s /lib/systemd/system\n"
                    "mount --bind %s /etc/systemd/system\n"
                    "exec /lib/systemd/systemd --system --unit=wshub-test.target "
                    "--log-target=console --default-standard-output=inherit "
                    "--default-standard-error=inherit\n" % (self.unit_dir, self.empty_dir))
        os.chmod(script, 0o755)
        return script

    def start(self, timeout=20):
        if not shutil.which("unshare") or not os.access("/lib/systemd/systemd", os.X_OK):
            self.why = "no unshare or no /lib/systemd/systemd"
            return False
        script = self._write_units()
        with open(self.console, "ab") as out:
            self.proc = subprocess.Popen(["unshare", "--pid", "--fork", "--mount",
                                          "--mount-proc", script], stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=out, start_new_session=True)
        try:
            self.pid1 = wait_for(lambda: self._find_pid1(), 10, "systemd in the namespace")
            wait_for(lambda: self.systemctl("is-system-running").stdout.strip() in
                     ("running", "degraded"), timeout, "the private systemd to come up")
        except (Timeout, AssertionError) as e:
            self.why = "systemd did not come up in a namespace here: %s\n%s" % (
                e, wshub_stack.tail(self.console))
            self.stop()
            return False
        return True

    def _find_pid1(self):
        if self.proc.poll() is not None:
            raise AssertionError("unshare exited with %s" % self.proc.returncode)
        kids = wshub_stack.children_of(self.proc.pid)
        return kids[0] if kids and "systemd" in wshub_stack.pid_cmdline(kids[0]) else None

    def enter(self, *cmd, timeout=30, user=None):
        """Runs cmd inside the namespaces (where /run is the private one)."""
        if user:
            cmd = ("runuser", "-u", user, "--") + cmd
        return run(["nsenter", "-t", str(self.pid1), "-m", "-p", "--"] + list(cmd),
                   timeout=timeout)

    def systemctl(self, *args, timeout=30):
        return self.enter("systemctl", "--no-pager", *args, timeout=timeout)

    def stop(self):
        """Kills the namespace's PID 1 (the kernel then kills everything in it) and removes the
        empty cgroups it created at the root of each hierarchy."""
        if self.pid1 and wshub_stack.pid_alive(self.pid1):
            os.kill(self.pid1, signal.SIGKILL)
        if self.proc is not None:
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        for _ in range(50):
            left = [d for d in self._cgroups() - self.cgroups_before]
            for d in sorted(left, key=len, reverse=True):
                try:
                    os.rmdir(d)
                except OSError:
                    pass
            if not (self._cgroups() - self.cgroups_before):
                break
            time.sleep(0.1)
