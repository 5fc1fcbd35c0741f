"""Installed like a real server (issue 9): make install into a DESTDIR, the installed tree, the
installed binaries run with the installed config and the installed nginx site, wshubctl, reload,
log reopen, sd_notify, stop; `wshub -t` names file:line; make uninstall; the .deb built,
installed with dpkg, run (under a real systemd when one can run), and purged.

The .deb test changes the machine (dpkg -i, a `wshub` system user) and so runs only as root,
only when no wshub package or /usr/sbin/wshub is present already, and purges what it installed
whatever happens. Without systemd as PID 1 it boots a private systemd in PID and mount
namespaces (installed.PrivateSystemd) to run the unit for real; it skips that part, saying
why, only if this machine cannot run one at all.
"""
import asyncio
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import warnings

import pytest

import wshub_stack
from installed import (APACHE_FILES, INSTALLED_FILES, InstalledHub, InstalledNginx,
                       PrivateSystemd, deb_field, deb_installed, have_apache_sources,
                       is_asan_build, make, run, systemd_is_pid1)
from wsclients import connect, in_thread, until
from wshub_stack import BUILD, IS_ROOT, make_base_dir, wait_for


@pytest.fixture(scope="module")
def installed():
    """`make install DESTDIR=<tmp> PREFIX=/usr` once for the module."""
    base = make_base_dir("wshub-install-")
    root = os.path.join(base, "root")
    p = make("install", DESTDIR=root, PREFIX="/usr")
    assert p.returncode == 0, "make install failed:\n%s\n%s" % (p.stdout[-3000:], p.stderr)
    yield root
    shutil.rmtree(base, ignore_errors=True)


def text_files(root):
    for d, _, files in os.walk(root):
        for name in files:
            path = os.path.join(d, name)
            with open(path, "rb") as f:
                head = f.read(4096)
            if b"\0" not in head:
                yield path


def test_installed_tree(installed):
    root = installed
    want = dict(INSTALLED_FILES)
    if have_apache_sources():
        want.update(APACHE_FILES)
    for rel, mode in want.items():
        path = os.path.join(root, rel)
        assert os.path.isfile(path), "make install did not install /%s" % rel
        assert stat.S_IMODE(os.stat(path).st_mode) == mode, \
            "/%s has mode %o, want %o" % (rel, stat.S_IMODE(os.stat(path).st_mode), mode)
    # No installed text names the staging directory or the build tree.
    for path in text_files(root):
        text = open(path, errors="replace").read()
        for bad in (root, BUILD, "@SBINDIR@", "@SYSCONFDIR@", "@DATADIR@"):
            assert bad not in text, "%s mentions %s" % (path, bad)

    # The installed config is the example with the service's values, and it parses.
    conf = os.path.join(root, "etc/wshub/wshub.conf")
    p = run([os.path.join(root, "usr/sbin/wshub"), "-T", "-c", conf])
    assert p.returncode == 0, p.stderr
    assert re.search(r"^admin_socket_group\s+\"?www-data\"?$", p.stdout, re.M), p.stdout
    assert re.search(r"^admin_socket_mode\s+0?660$", p.stdout, re.M), p.stdout
    assert re.search(r"^pid_file\s+\"?/run/wshub/wshub.pid\"?$", p.stdout, re.M), p.stdout
    assert re.search(r"^run_dir\s+\"?/run/wshub\"?$", p.stdout, re.M), p.stdout

    # The unit: the directives the issue asks for, with the installed paths.
    unit = open(os.path.join(root, "usr/lib/systemd/system/wshub.service")).read()
    for line in ("Type=notify", "ExecStart=/usr/sbin/wshub -c /etc/wshub/wshub.conf",
                 "ExecReload=/bin/kill -HUP $MAINPID", "RuntimeDirectory=wshub", "User=wshub",
                 "ProtectSystem=strict", "NoNewPrivileges=yes", "PrivateTmp=yes",
                 "ProtectHome=yes", "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
                 "KillMode=mixed", "RestartPreventExitStatus=2"):
        assert re.search(r"^%s$" % re.escape(line), unit, re.M), "unit lacks %s" % line
    assert int(re.search(r"^LimitNOFILE=(\d+)$", unit, re.M).group(1)) >= 65536
    assert "kill -USR1" in open(os.path.join(root, "etc/logrotate.d/wshub")).read()

    # Man pages: groff finds no problem, and wshub.conf(5) documents every option --help lists.
    for page in ("man8/wshub.8", "man8/wshubctl.8", "man5/wshub.conf.5"):
        p = run(["groff", "-man", "-Tutf8", "-ww", "-z",
                 os.path.join(root, "usr/share/man", page)])
        assert p.returncode == 0 and not p.stderr.strip(), "%s: %s" % (page, p.stderr)
    help_out = run([os.path.join(root, "usr/sbin/wshub"), "--help"]).stdout
    options = set(re.findall(r"^  --([a-z][a-z0-9-]*) {2,}\S", help_out, re.M))
    assert len(options) > 20, help_out
    manconf = open(os.path.join(root, "usr/share/man/man5/wshub.conf.5")).read()
    for opt in options:
        assert "\\fB%s\\fR" % opt.replace("-", "_") in manconf, "wshub.conf(5) lacks " + opt

    # -v reports the children's library versions, found beside the installed hub.
    p = run([os.path.join(root, "usr/sbin/wshub"), "-v"])
    assert p.returncode == 0, p.stderr
    assert re.search(r"^wshub \d+\.\d+", p.stdout, re.M), p.stdout
    assert re.search(r"^wshub-worker .*libwebsockets \d+\.\d+\.\d+.*libev \d+\.\d+", p.stdout,
                     re.M), p.stdout
    assert re.search(r"^wshub-admin \d+\.\d+", p.stdout, re.M), p.stdout


def test_config_error_names_file_and_line(installed):
    base = make_base_dir()
    try:
        lines = open(os.path.join(installed, "etc/wshub/wshub.conf")).read().splitlines()
        n = next(i for i, line in enumerate(lines) if line.startswith("workers ")) + 1
        lines[n - 1] = "wokers 2"
        bad = os.path.join(base, "broken.conf")
        with open(bad, "w") as f:
            f.write("\n".join(lines) + "\n")
        p = run([os.path.join(installed, "usr/sbin/wshub"), "-t", "-c", bad])
        assert p.returncode == 2, (p.returncode, p.stderr)
        assert "%s:%d:" % (bad, n) in p.stderr and "wokers" in p.stderr, p.stderr
        assert "test failed" in p.stderr, p.stderr
    finally:
        shutil.rmtree(base, ignore_errors=True)


class NotifySocket:
    """The systemd side of sd_notify: a datagram socket the hub reports to."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(15)

    def next(self):
        return self.sock.recv(4096).decode()

    def until(self, key):
        """Reads notifications until one has the line `key` (STATUS updates come in between);
        returns it. socket.timeout after 15 s without any."""
        while True:
            msg = self.next()
            if key in msg.split("\n"):
                return msg

    def close(self):
        self.sock.close()


def test_installed_stack(installed):
    """The installed hub, workers and admin with the installed config, behind nginx running the
    installed site; wshubctl and HTTP broadcasts; SIGHUP; SIGUSR1 after a rotation; SIGTERM."""
    base = make_base_dir()
    notify = NotifySocket(os.path.join(base, "notify.sock"))
    env = dict(os.environ, NOTIFY_SOCKET=notify.path)
    hub = InstalledHub(installed, base, workers=2, env=env)
    nginx = None
    ok = False
    try:
        hub.start()
        ready = notify.next()  # the first message: nothing before READY=1
        assert "READY=1" in ready.split("\n") and "2 of 2 workers serving" in ready, ready
        hub.wait_ready()
        nginx = InstalledNginx(installed, hub).start()
        if IS_ROOT:  # the installed config hands the socket to www-data, mode 0660
            st = os.stat(hub.admin_socket)
            assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == \
                __import__("grp").getgrnam("www-data").gr_gid, st
        asyncio.run(installed_scenario(hub, nginx, notify))
        rc = hub.stop()
        assert rc == 0, "hub exit status %r\n%s" % (rc, hub.logs())
        assert not os.path.exists(hub.segment) and not os.path.exists(hub.admin_socket)
        assert not os.path.exists(hub.pid_file)
        ok = True
    finally:
        notify.close()
        hub.stop()
        if nginx:
            nginx.stop()
        left = hub.cleanup()
        assert not left, "left behind: %r" % left
        if ok:
            shutil.rmtree(base, ignore_errors=True)
        else:
            print("installed-stack test directory kept: %s" % base)


async def installed_scenario(hub, nginx, notify):
    via_nginx = await connect("ws://127.0.0.1:%d/ws" % nginx.port)
    direct = await connect("ws://127.0.0.1:%d/ws" % hub.port)
    clients = (via_nginx, direct)

    # status: the summary, and --json
    rc, out, err = await in_thread(hub.ctl, "status")
    assert rc == 0, err
    assert hub.instance in out and "2 of 2 running" in out, out
    await until(lambda: '"in_use":2' in hub.ctl("status", "--json")[1], 10, "2 clients counted")
    assert json.loads(hub.ctl("status", "--json")[1])["instance"] == hub.instance

    # broadcasts: wshubctl argument, wshubctl stdin (binary), HTTP through the installed site
    rc, out, err = await in_thread(hub.ctl, "broadcast", "from wshubctl")
    assert rc == 0 and json.loads(out)["seq"] == 1, (rc, out, err)
    rc, out, err = await in_thread(lambda: hub.ctl("broadcast", "--binary",
                                                   stdin=b"\x00\x01binary\xff"))
    assert rc == 0 and json.loads(out)["seq"] == 2, (rc, out, err)
    r = await in_thread(lambda: nginx.request("POST", "/admin/broadcast", b"from http",
                                              {"Content-Type": "text/plain"}))
    assert r.status == 202 and r.json()["seq"] == 3, r
    want = ["from wshubctl", b"\x00\x01binary\xff", "from http"]
    await until(lambda: all(len(c.messages) >= 3 for c in clients), 10, "three broadcasts")
    assert via_nginx.messages == direct.messages == want

    # wshubctl's errors and exit codes
    rc, out, err = await in_thread(lambda: hub.ctl("broadcast", stdin=b"\xff\xfe not utf-8"))
    assert rc == 1 and "invalid UTF-8" in err, (rc, err)
    p = await in_thread(lambda: run([hub.sbin("wshubctl"), "-s",
                                     os.path.join(hub.base, "nope.sock"), "status"]))
    assert p.returncode == 3 and "cannot connect" in p.stderr, p
    p = await in_thread(lambda: run([hub.sbin("wshubctl"), "frobnicate"]))
    assert p.returncode == 2 and "unknown command" in p.stderr, p
    # -c: the socket comes from a config file's run_dir
    conf = os.path.join(hub.base, "ctl.conf")
    with open(conf, "w") as f:
        f.write("run_dir %s\n" % hub.run_dir)
    p = await in_thread(lambda: run([hub.sbin("wshubctl"), "-c", conf, "health"]))
    assert p.returncode == 0 and '"ok"' in p.stdout.replace(" ", ""), p
    for verb in ("restart", "connections"):  # being added to wshub-admin (other issues)
        rc, out, err = await in_thread(hub.ctl, verb)
        assert rc == 0 or (rc == 4 and "does not support" in err), (verb, rc, out, err)
        if rc == 0:
            json.loads(out)
        if rc == 0 and verb == "restart":  # a real rolling restart: to generation 2
            clients = await restarted(hub, notify, nginx, clients, 2)
    if IS_ROOT:  # the admin socket's group and mode: www-data may, others may not
        rc, out, err = await in_thread(lambda: hub.ctl("broadcast", "from www-data",
                                                       user="www-data"))
        assert rc == 0, (rc, out, err)
        rc, out, err = await in_thread(lambda: hub.ctl("status", user="nobody"))
        assert rc == 3 and "Permission denied" in err, (rc, out, err)
        await until(lambda: all(c.messages[-1:] == ["from www-data"] for c in clients), 10,
                    "www-data's")

    # reload: SIGHUP is a rolling restart (RELOADING=1 ... READY=1, the clients get 1012)
    generation = json.loads(hub.ctl("status", "--json")[1])["hub"]["generation"]
    os.kill(hub.proc.pid, signal.SIGHUP)
    clients = await restarted(hub, notify, nginx, clients, generation + 1)
    rc, out, err = await in_thread(hub.ctl, "broadcast", "after reload")
    assert rc == 0, err
    await until(lambda: all(c.messages and c.messages[-1] == "after reload" for c in clients),
                10, "the broadcast after SIGHUP")

    # logrotate: rename the file, SIGUSR1; every process writes to the new file
    rotated = hub.log_file + ".1"
    os.rename(hub.log_file, rotated)
    os.kill(hub.proc.pid, signal.SIGUSR1)
    await until(lambda: os.path.exists(hub.log_file) and
                len(re.findall(r"(?:hub|worker#\d|admin)\[\d+\]: .*reopened",
                               open(hub.log_file).read())) >= 4, 10,
                "hub, 2 workers and admin to reopen the log")

    # stop: clients get 1001, READY/STOPPING reported
    os.kill(hub.proc.pid, signal.SIGTERM)
    await in_thread(notify.until, "STOPPING=1")
    await until(lambda: all(c.closed.is_set() for c in clients), 15, "clients closed")
    assert [c.close_code for c in clients] == [1001, 1001]
    assert await in_thread(hub.proc.wait, 15) == 0


async def restarted(hub, notify, nginx, clients, generation):
    """A rolling restart just asked for: RELOADING=1, then READY=1 once it is complete; the old
    clients got 1012 (service restart). Returns two new clients (through nginx, direct)."""
    assert "READY=1" not in await in_thread(notify.until, "RELOADING=1")
    await in_thread(notify.until, "READY=1")
    line = "rolling restart to generation %d complete" % generation
    await until(lambda: line in open(hub.log_file).read(), 5, line)
    await until(lambda: all(c.closed.is_set() for c in clients), 10, "the old clients' closes")
    assert [c.close_code for c in clients] == [1012] * len(clients)
    return (await connect("ws://127.0.0.1:%d/ws" % nginx.port),
            await connect("ws://127.0.0.1:%d/ws" % hub.port))


def test_wshubctl_sends_the_configured_token(installed):
    """With admin_token in the configuration it reads (-c), wshubctl authenticates by itself."""
    help_out = run([os.path.join(installed, "usr/sbin/wshub"), "--help"]).stdout
    if "--admin-token" not in help_out:
        pytest.skip("this wshub has no admin_token option yet")
    base = make_base_dir()
    token = "t0k3n-" + os.urandom(12).hex()
    hub = InstalledHub(installed, base, workers=1, extra=["--admin-token=" + token])
    try:
        hub.start().wait_ready()  # /healthz is public by default
        conf = os.path.join(base, "ctl.conf")
        with open(conf, "w") as f:
            f.write("run_dir %s\nadmin_token %s\n" % (hub.run_dir, token))
        p = run([hub.sbin("wshubctl"), "-c", conf, "status"])
        assert p.returncode == 0 and hub.instance in p.stdout, p
        rc, out, err = hub.ctl("status")  # -s alone: no configuration, no token
        assert rc == 1 and "401" in err, (rc, out, err)
        p = run([hub.sbin("wshubctl"), "-c", conf, "-H", "Authorization: Bearer wrong",
                 "status"])  # an explicit header wins over the configured token
        assert p.returncode == 1 and "401" in p.stderr, p
        assert hub.stop() == 0
    finally:
        hub.stop()
        left = hub.cleanup()
        assert not left, left
        shutil.rmtree(base, ignore_errors=True)


def test_uninstall_keeps_a_changed_config():
    base = make_base_dir("wshub-uninstall-")
    root = os.path.join(base, "root")
    try:
        p = make("install", DESTDIR=root, PREFIX="/usr")
        assert p.returncode == 0, p.stderr
        with open(os.path.join(root, "etc/wshub/wshub.conf"), "a") as f:
            f.write("workers 3\n")
        p = make("install", DESTDIR=root, PREFIX="/usr")  # a second install keeps it too
        assert p.returncode == 0 and "keeping the existing" in p.stdout, p.stdout
        p = make("uninstall", DESTDIR=root, PREFIX="/usr")
        assert p.returncode == 0, p.stderr
        left = sorted(os.path.relpath(os.path.join(d, f), root)
                      for d, _, files in os.walk(root) for f in files)
        assert left == ["etc/wshub/wshub.conf"], left
    finally:
        shutil.rmtree(base, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# The Debian package


@pytest.fixture(scope="module")
def deb():
    p = make("deb")
    assert p.returncode == 0, "make deb failed:\n%s\n%s" % (p.stdout[-3000:], p.stderr)
    built = [line for line in p.stdout.splitlines() if line.endswith(".deb")]
    assert built and os.path.isfile(built[-1]), p.stdout
    path = built[-1]
    return path


def test_deb_contents(deb):
    depends = deb_field(deb, "Depends")
    for pkg in ("libwebsockets17", "libwebsockets-evlib-ev", "libev4", "libfcgi0ldbl", "libc6",
                "adduser"):
        assert re.search(r"(^|, )%s\b" % re.escape(pkg), depends), depends
    assert deb_field(deb, "Package") == "wshub"
    info = run(["dpkg-deb", "-I", deb, "conffiles"]).stdout.split()
    for f in ("/etc/wshub/wshub.conf", "/etc/logrotate.d/wshub",
              "/etc/nginx/sites-available/wshub"):
        assert f in info, info
    listing = run(["dpkg-deb", "-c", deb]).stdout
    for f in ("./usr/sbin/wshub", "./usr/sbin/wshub-worker", "./usr/sbin/wshub-admin",
              "./usr/sbin/wshubctl", "./lib/systemd/system/wshub.service",
              "./usr/share/man/man8/wshub.8.gz", "./usr/share/man/man5/wshub.conf.5.gz"):
        assert re.search(r" %s$" % re.escape(f), listing, re.M), "%s not in the package" % f


# LeakSanitizer stops the process's threads with ptrace from a helper; the unit's sandbox
# (NoNewPrivileges, the @system-service filter) refuses ptrace, so an ASan build's leak check
# dies with "LeakSanitizer has encountered a fatal error" at every exit. The rest of the suite
# checks leaks; under the unit, a sanitizer build runs with the leak check off.
ASAN_UNDER_SYSTEMD = "[Service]\nEnvironment=ASAN_OPTIONS=detect_leaks=0\n"


def deb_gate():
    if not IS_ROOT:
        return "dpkg -i needs root"
    if not shutil.which("dpkg"):
        return "no dpkg"
    if deb_installed() or os.path.exists("/usr/sbin/wshub"):
        return "a wshub package or /usr/sbin/wshub is already on this machine: not touching it"
    return None


def test_deb_install_run_purge(deb):
    why = deb_gate()
    if why:
        pytest.skip(why)
    lock = open("/tmp/wshub-test-deb.lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)  # one dpkg test at a time on this machine
    base = make_base_dir()
    asan_dropin = None
    if systemd_is_pid1() and is_asan_build():
        # before dpkg -i, whose postinst starts the unit (see ASAN_UNDER_SYSTEMD)
        asan_dropin = "/run/systemd/system/wshub.service.d/asan.conf"
        os.makedirs(os.path.dirname(asan_dropin), exist_ok=True)
        with open(asan_dropin, "w") as f:
            f.write(ASAN_UNDER_SYSTEMD)
    ok = False
    try:
        p = run(["dpkg", "-i", deb], timeout=120)
        assert p.returncode == 0, "dpkg -i failed:\n%s%s" % (p.stdout, p.stderr)
        check_deb_installed()
        run_installed_package(base)
        if systemd_is_pid1():
            check_service_under_host_systemd()
        else:
            check_service_under_private_systemd(base)
        ok = True
    finally:
        if not ok:
            print(".deb test directory kept: %s" % base)
        purge = run(["dpkg", "--purge", "wshub"], timeout=120)
        if asan_dropin:
            shutil.rmtree(os.path.dirname(asan_dropin), ignore_errors=True)
            run(["systemctl", "daemon-reload"])
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()
    assert purge.returncode == 0, "dpkg --purge failed:\n%s%s" % (purge.stdout, purge.stderr)
    check_deb_purged()
    if ok:
        shutil.rmtree(base, ignore_errors=True)


def check_deb_installed():
    files = run(["dpkg", "-L", "wshub"]).stdout.split()
    for f in ("/usr/sbin/wshub", "/usr/sbin/wshubctl", "/etc/wshub/wshub.conf",
              "/lib/systemd/system/wshub.service"):
        assert f in files, files
    import grp
    import pwd
    user = pwd.getpwnam("wshub")
    assert user.pw_shell.endswith("nologin") and user.pw_uid < 1000, user
    st = os.stat("/etc/wshub/wshub.conf")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == \
        (0o640, 0, grp.getgrnam("wshub").gr_gid), st
    if shutil.which("systemd-analyze"):
        p = run(["systemd-analyze", "verify", "/lib/systemd/system/wshub.service"])
        assert p.returncode == 0 and "wshub.service" not in p.stderr, p.stderr
    if not systemd_is_pid1() and shutil.which("deb-systemd-helper"):
        assert os.path.islink("/etc/systemd/system/multi-user.target.wants/wshub.service")


def run_installed_package(base):
    """/usr/sbin/wshub as the package's user, the way the unit runs it (user wshub, group
    www-data as a supplementary group), on a private port and run directory."""
    run_dir = os.path.join(base, "run")
    os.makedirs(run_dir)
    os.chown(run_dir, __import__("pwd").getpwnam("wshub").pw_uid, -1)
    port = wshub_stack.free_port()
    instance = wshub_stack.unique_instance()
    proc = subprocess.Popen(
        ["setpriv", "--reuid=wshub", "--regid=wshub", "--groups=www-data", "--",
         "/usr/sbin/wshub", "-c", "/etc/wshub/wshub.conf", "--instance=" + instance,
         "--listen=127.0.0.1:%d" % port, "--run-dir=" + run_dir, "--workers=1",
         "--pid-file=" + os.path.join(run_dir, "wshub.pid"), "--ring-size=16m",
         "--max-connections=1000"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True)
    sock = os.path.join(run_dir, "admin.sock")
    try:
        wait_for(lambda: proc.poll() is None and
                 run(["/usr/sbin/wshubctl", "-s", sock, "health"]).returncode == 0, 20,
                 "the packaged wshub to serve")
        p = run(["/usr/sbin/wshubctl", "-s", sock, "broadcast", "packaged"])
        assert p.returncode == 0 and '"seq":1' in p.stdout, p
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            out = proc.communicate(timeout=15)[0].decode(errors="replace")
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out = proc.communicate()[0].decode(errors="replace")
    assert proc.returncode == 0, out
    assert not os.path.exists("/dev/shm/wshub-" + instance), out


def check_service_under_host_systemd():
    """systemd is PID 1: the postinst started the service with the packaged config."""
    p = run(["systemctl", "is-active", "wshub"])
    if p.stdout.strip() != "active":
        status = run(["systemctl", "status", "--no-pager", "wshub"]).stdout
        raise AssertionError("wshub.service is not active after dpkg -i:\n" + status)
    p = run(["/usr/sbin/wshubctl", "status"])
    assert p.returncode == 0 and "running" in p.stdout, p


def check_service_under_private_systemd(base):
    port = wshub_stack.free_port()
    instance = wshub_stack.unique_instance()
    args = "--listen=127.0.0.1:%d --instance=%s --workers=2" % (port, instance)
    dropin = ("[Service]\nExecStartPre=\nExecStartPre=/usr/sbin/wshub -t -c "
              "/etc/wshub/wshub.conf %s\nExecStart=\nExecStart=/usr/sbin/wshub -c "
              "/etc/wshub/wshub.conf %s\n" % (args, args))
    if is_asan_build():
        dropin += ASAN_UNDER_SYSTEMD.replace("[Service]\n", "")
    sd = PrivateSystemd(os.path.join(base, "systemd"), "/lib/systemd/system/wshub.service",
                        dropin)
    os.makedirs(sd.base)
    if not sd.start():  # shown in pytest's warnings summary: the unit was not run here
        warnings.warn("wshub.service not run: no systemd can run on this machine: %s" % sd.why)
        return
    try:
        p = sd.systemctl("start", "wshub")  # Type=notify: returns once READY=1 came
        status = sd.systemctl("status", "wshub").stdout
        assert p.returncode == 0, "systemctl start wshub failed:\n%s%s" % (p.stderr, status)
        assert "active (running)" in status and "2 of 2 workers serving" in status, status
        ls = sd.enter("stat", "-c", "%U %G %a", "/run/wshub/admin.sock").stdout.split()
        assert ls == ["wshub", "www-data", "660"], ls
        p = sd.enter("/usr/sbin/wshubctl", "broadcast", "under systemd", user="www-data")
        assert p.returncode == 0 and '"seq":1' in p.stdout, p
        p = sd.enter("/usr/sbin/wshubctl", "status", user="nobody")
        assert p.returncode == 3 and "Permission denied" in p.stderr, p
        p = sd.systemctl("reload", "wshub")
        assert p.returncode == 0, p.stderr
        assert sd.systemctl("is-active", "wshub").stdout.strip() == "active"
        p = sd.systemctl("stop", "wshub")
        assert p.returncode == 0, p.stderr
        show = sd.systemctl("show", "-p", "Result", "-p", "ExecMainStatus", "wshub").stdout
        assert "Result=success" in show and "ExecMainStatus=0" in show, show
        assert not os.path.exists("/dev/shm/wshub-" + instance)
    finally:
        sd.stop()


def check_deb_purged():
    import pwd
    left = [p for p in ("/usr/sbin/wshub", "/usr/sbin/wshub-worker", "/usr/sbin/wshub-admin",
                        "/usr/sbin/wshubctl", "/etc/wshub", "/lib/systemd/system/wshub.service",
                        "/usr/share/wshub", "/usr/share/doc/wshub", "/var/log/wshub",
                        "/etc/logrotate.d/wshub", "/etc/nginx/sites-available/wshub",
                        "/etc/apache2/conf-available/wshub.conf",
                        "/etc/systemd/system/multi-user.target.wants/wshub.service",
                        "/etc/systemd/system/wshub.service")
            if os.path.lexists(p)]
    assert not left, "left after dpkg --purge: %r" % left
    assert not deb_installed()
    try:
        pwd.getpwnam("wshub")
        raise AssertionError("user wshub left after dpkg --purge")
    except KeyError:
        pass
