"""wshub's command line: --help, -v, -t (test the config), -T (dump it), and config errors that
name the file and line, with the documented exit codes (0 fine, 2 bad configuration)."""
import os
import re
import shutil
import subprocess

import wshub_stack
from wshub_stack import REPO, Hub, make_base_dir


def run(*args, timeout=10):
    p = subprocess.run([wshub_stack.binary("wshub")] + list(args), capture_output=True,
                       text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    return p.returncode, p.stdout + p.stderr


def option_names():
    rc, out = run("--help")
    return set(re.findall(r"^  --([a-z][a-z0-9-]*) {2,}\S", out, re.M))


def test_help_lists_every_option():
    rc, out = run("--help")
    assert rc == 0, out
    names = option_names()
    for opt in ("instance", "listen", "workers", "run-dir", "admin-socket", "admin-socket-mode",
                "admin-socket-group", "log-file", "log-level", "max-message", "ring-size",
                "shutdown-timeout", "ping-interval", "idle-timeout"):
        assert opt in names, "--help does not list --%s:\n%s" % (opt, out)
    assert "default" in out


def test_version():
    rc, out = run("-v")
    assert rc == 0, out
    assert re.search(r"wshub\S*\s+\S*\d+\.\d+", out), out


def test_config_check():
    base = make_base_dir()
    try:
        hub = Hub(base, workers=2)
        rc, out = run("-t", "-c", hub.conf_file)
        assert rc == 0, out
        # -t only checks: nothing is started, no segment is created.
        assert not os.path.exists(hub.segment)

        # -T prints the effective configuration, command-line overrides applied.
        rc, out = run("-T", "-c", hub.conf_file, "--workers=3", "--max-message", "2k")
        assert rc == 0, out
        assert re.search(r"^workers\s+3$", out, re.M), out
        assert re.search(r"^max_message\s+2048$", out, re.M), out
        assert re.search(r'^instance\s+"?%s"?$' % re.escape(hub.instance), out, re.M), out

        bad = os.path.join(base, "bad.conf")
        with open(bad, "w") as f:
            f.write("# a typo on line 3\ninstance x\nwokers 2\n")
        rc, out = run("-t", "-c", bad)
        assert rc == 2, (rc, out)
        assert "%s:3" % bad in out and "wokers" in out, out

        with open(bad, "w") as f:
            f.write("instance x\n\nmax_message banana\n")
        rc, out = run("-t", "-c", bad)
        assert rc == 2, (rc, out)
        assert "%s:3" % bad in out and "max_message" in out, out

        rc, out = run("-t", "-c", hub.conf_file, "--no-such-option=1")
        assert rc == 2, (rc, out)
        assert "no-such-option" in out, out

        rc, out = run("-t", "-c", os.path.join(base, "missing.conf"))
        assert rc == 2, (rc, out)
        assert "missing.conf" in out, out
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_example_config_documents_every_option():
    """conf/wshub.conf is the documented example: it parses, and names every option --help
    lists (conf.c says a test checks this, so the two cannot drift apart)."""
    example = os.path.join(REPO, "conf", "wshub.conf")
    assert os.path.exists(example), "conf/wshub.conf (the documented example) is missing"
    rc, out = run("-t", "-c", example)
    assert rc == 0, out
    with open(example) as f:
        text = f.read()
    documented = set(m.replace("_", "-") for m in
                     re.findall(r"^#?\s*([a-z][a-z0-9_]*)\s", text, re.M))
    names = option_names()
    assert len(names) >= 20, "--help lists too few options: %r" % names
    missing = names - documented
    assert not missing, "options missing from conf/wshub.conf: %s" % sorted(missing)
