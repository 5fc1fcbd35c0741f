#!/usr/bin/python3
"""render-nginx.py -- fill nginx-conf/*.in for one wshub instance.

Writes PREFIX/nginx.conf (from nginx-main.conf.in: a standalone nginx that keeps pid, logs and temp
files under PREFIX) and PREFIX/wshub.conf (from wshub.conf.in: the includable server block), and
creates PREFIX/tmp. The wshub side (its listen address, ws_path, admin socket, max_message) is read
from wshub's own config file with --wshub-conf, so nginx and wshub cannot disagree; each value can
also be given on the command line. `make run` and the integration tests both use this script.

    scripts/render-nginx.py --prefix run/nginx --listen 127.0.0.1:8080 --wshub-conf run/wshub.conf
    nginx -p run/nginx/ -c "$PWD/run/nginx/nginx.conf" -e "$PWD/run/nginx/error.log"

Only the Python standard library is used: it runs under Debian's /usr/bin/python3 as is.
"""
import argparse
import os
import re
import resource
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# wshub's defaults for the options nginx cares about (common/conf.c).
WSHUB_DEFAULTS = {
    "listen": "127.0.0.1:9001",
    "ws_path": "/ws",
    "run_dir": "/run/wshub",
    "admin_socket": "",
    "max_message": "1m",
}

SIZE_UNITS = {"": 1, "k": 1024, "K": 1024, "m": 1 << 20, "M": 1 << 20, "g": 1 << 30, "G": 1 << 30}


def parse_size(text):
    """'1m' -> 1048576, with wshub's 1024-based suffixes."""
    m = re.fullmatch(r"(\d+)([kKmMgG]?)", text.strip())
    if not m:
        raise ValueError("not a size: %r" % text)
    return int(m.group(1)) * SIZE_UNITS[m.group(2)]


def read_wshub_conf(path):
    """Reads the options of a wshub config file (same syntax as common/conf.c: `name value`,
    '#' comments, optional double quotes, '-' and '_' interchangeable in names)."""
    values = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split(None, 1)
            if len(parts) != 2:
                continue
            name, value = parts[0].replace("-", "_"), parts[1].strip()
            if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
                value = value[1:-1]
            values[name] = value
    return values


def upstream_for(listen):
    """The address nginx connects to for wshub's listen address: a wildcard bind is reached
    through loopback."""
    if listen.startswith("["):
        host, port = listen[1:].split("]:", 1)
        return "[%s]:%s" % ("::1" if host == "::" else host, port)
    host, port = listen.rsplit(":", 1)
    if host in ("0.0.0.0", "*"):
        host = "127.0.0.1"
    return "%s:%s" % (host, port)


def default_rlimit(worker_connections):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 2 * worker_connections + 64
    if hard != resource.RLIM_INFINITY:
        want = min(want, hard)
    return max(want, worker_connections)


def fill(template, values):
    """Replaces @NAME@ on directive lines; comment lines keep their placeholders, as the
    documentation of what was filled in."""
    def sub(m):
        key = m.group(1)
        if key not in values:
            raise KeyError("template placeholder @%s@ has no value" % key)
        return str(values[key])

    out = []
    for line in template.splitlines(keepends=True):
        if line.lstrip().startswith("#"):
            out.append(line)
        else:
            out.append(re.sub(r"@([A-Z_]+)@", sub, line))
    return "".join(out)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prefix", required=True, help="directory for nginx.conf, logs, pid, temp")
    p.add_argument("--listen", required=True, help="address:port nginx listens on (plain HTTP)")
    p.add_argument("--wshub-conf", help="wshub config file to take the wshub side from")
    p.add_argument("--ws-upstream", help="wshub's host:port (default: from its listen option)")
    p.add_argument("--ws-path", help="wshub's ws_path (default: from its config, else /ws)")
    p.add_argument("--admin-socket", help="wshub-admin's socket (default: from its config)")
    p.add_argument("--max-message", help="wshub's max_message (default: from its config, else 1m)")
    p.add_argument("--server-name", default="_")
    p.add_argument("--daemon", choices=("on", "off"), default="off")
    p.add_argument("--worker-processes", default="1")
    p.add_argument("--worker-connections", type=int, default=4096)
    p.add_argument("--rlimit-nofile", type=int, help="default: 2 x worker_connections + 64, "
                   "capped at this process's hard limit")
    p.add_argument("--user", default=None,
                   help="user of the nginx workers when started as root (default www-data; "
                   "'' for none)")
    p.add_argument("--allow", action="append",
                   help="address allowed on the admin locations (repeatable; default 127.0.0.1 "
                   "and ::1)")
    p.add_argument("--tls-listen", help="address:port for TLS (needs --tls-cert and --tls-key)")
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--error-log-level", default="warn")
    p.add_argument("--access-log", help="access log of the WebSocket location (default: "
                   "PREFIX/access.log); written without query strings, which may carry tokens")
    p.add_argument("--templates", default=os.path.join(REPO, "nginx-conf"))
    return p.parse_args(argv)


def wshub_side(args):
    conf = dict(WSHUB_DEFAULTS)
    if args.wshub_conf:
        conf.update(read_wshub_conf(args.wshub_conf))
    admin_socket = args.admin_socket or conf["admin_socket"] or \
        os.path.join(conf["run_dir"], "admin.sock")
    return {
        "WS_UPSTREAM": args.ws_upstream or upstream_for(conf["listen"]),
        "WS_PATH": args.ws_path or conf["ws_path"],
        "ADMIN_SOCKET": os.path.abspath(admin_socket),
        "MAX_BODY": parse_size(args.max_message or conf["max_message"]),
    }


def tls_lines(args):
    if not args.tls_listen:
        return ""
    if not (args.tls_cert and args.tls_key):
        sys.exit("render-nginx: --tls-listen needs --tls-cert and --tls-key")
    return ("    listen %s ssl;\n"
            "    ssl_certificate %s;\n"
            "    ssl_certificate_key %s;\n"
            "    ssl_protocols TLSv1.2 TLSv1.3;\n"
            "    ssl_session_cache shared:wshub_ssl:1m;" %
            (args.tls_listen, os.path.abspath(args.tls_cert), os.path.abspath(args.tls_key)))


def main(argv):
    args = parse_args(argv)
    prefix = os.path.abspath(args.prefix)
    os.makedirs(os.path.join(prefix, "tmp"), exist_ok=True)

    user = args.user
    if user is None:
        user = "www-data" if os.geteuid() == 0 else ""
    allow = args.allow or ["127.0.0.1", "::1"]
    values = {
        "PREFIX": prefix,
        "USER": "user %s;" % user if user and os.geteuid() == 0 else "",
        "DAEMON": args.daemon,
        "WORKER_PROCESSES": args.worker_processes,
        "WORKER_CONNECTIONS": args.worker_connections,
        "RLIMIT_NOFILE": args.rlimit_nofile or default_rlimit(args.worker_connections),
        "ERROR_LOG_LEVEL": args.error_log_level,
        "SERVER_CONF": os.path.join(prefix, "wshub.conf"),
        "LISTEN": args.listen,
        "TLS_LISTEN": tls_lines(args),
        "SERVER_NAME": args.server_name,
        "ADMIN_ALLOW": "\n".join("        allow %s;" % a for a in allow),
        "ACCESS_LOG": args.access_log or os.path.join(prefix, "access.log"),
    }
    values.update(wshub_side(args))

    for src, dst in (("nginx-main.conf.in", "nginx.conf"), ("wshub.conf.in", "wshub.conf")):
        with open(os.path.join(args.templates, src), encoding="utf-8") as f:
            text = fill(f.read(), values)
        tmp = os.path.join(prefix, dst + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, os.path.join(prefix, dst))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
