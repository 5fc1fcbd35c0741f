#!/usr/bin/python3
"""render-apache.py -- fill apache-conf/*.in for one wshub instance.

Writes into PREFIX:
  wshub.conf        from wshub.conf.in: the includable site (WebSocket proxy, admin over FastCGI
                    to the hub's wshub-admin, optional TLS virtual host)
  wshub-fcgid.conf  with --fcgid, from wshub-fcgid.conf.in: the variant in which Apache spawns
                    wshub-admin itself through mod_fcgid (it includes wshub.conf)
  httpd.conf        from httpd-main.conf.in: a standalone Apache that keeps pid, logs, mutexes
                    and runtime files under PREFIX and includes one of the two above
and creates PREFIX/run and PREFIX/htdocs (empty: unknown paths find nothing there). The wshub
side (listen address, ws_path, admin socket, max_message) is read from wshub's own config file
with --wshub-conf, exactly as scripts/render-nginx.py does (whose parsing this script shares),
so Apache and wshub cannot disagree.

    scripts/render-apache.py --prefix run/apache --listen 127.0.0.1:8081 --wshub-conf run/wshub.conf
    apache2 -d "$PWD/run/apache" -f "$PWD/run/apache/httpd.conf" -DFOREGROUND

Only the Python standard library is used: it runs under Debian's /usr/bin/python3 as is.
"""
import argparse
import importlib.util
import math
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_render_nginx():
    """render-nginx.py's config reader and template filler (its file name is not importable)."""
    path = os.path.join(REPO, "scripts", "render-nginx.py")
    spec = importlib.util.spec_from_file_location("render_nginx", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


rn = _load_render_nginx()


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prefix", required=True, help="directory for httpd.conf, logs, pid, runtime")
    p.add_argument("--listen", required=True, help="address:port Apache listens on (plain HTTP)")
    p.add_argument("--wshub-conf", help="wshub config file to take the wshub side from")
    p.add_argument("--ws-upstream", help="wshub's host:port (default: from its listen option)")
    p.add_argument("--ws-path", help="wshub's ws_path (default: from its config, else /ws)")
    p.add_argument("--ws-timeout", type=int, default=3600,
                   help="seconds a proxied WebSocket may stay silent (default 3600)")
    p.add_argument("--admin-socket", help="wshub-admin's socket (default: from its config)")
    p.add_argument("--max-message", help="wshub's max_message (default: from its config, else 1m)")
    p.add_argument("--server-name", default="localhost")
    p.add_argument("--allow", action="append",
                   help="address allowed on the admin locations (repeatable; default 127.0.0.1 "
                   "and ::1)")
    p.add_argument("--tls-listen", help="address:port for TLS (needs --tls-cert and --tls-key)")
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--fcgid", action="store_true",
                   help="the mod_fcgid variant: Apache spawns wshub-admin (needs --wshub-conf)")
    p.add_argument("--admin-binary", help="wshub-admin for --fcgid (default: build/wshub-admin)")
    p.add_argument("--fcgid-processes", type=int, default=4,
                   help="wshub-admin processes at most with --fcgid (default 4)")
    p.add_argument("--clients", type=int, default=1000,
                   help="proxied WebSocket clients to size the event MPM for (default 1000)")
    p.add_argument("--threads-per-child", type=int, default=0,
                   help="event MPM ThreadsPerChild (default: from --clients, at most 250)")
    p.add_argument("--modules", default="/usr/lib/apache2/modules")
    p.add_argument("--user", default=None,
                   help="User/Group of the children when started as root (default www-data; "
                   "'' for none)")
    p.add_argument("--log-level", default="warn")
    p.add_argument("--templates", default=os.path.join(REPO, "apache-conf"))
    return p.parse_args(argv)


def mpm_sizing(clients, threads_per_child):
    """One thread per proxied WebSocket, plus 10% (at least 16) for admin and other requests.
    Returns (ThreadsPerChild, StartServers, ServerLimit, MaxRequestWorkers)."""
    workers = clients + max(16, clients // 10)
    tpc = threads_per_child or min(250, workers)
    children = math.ceil(workers / tpc)
    return tpc, children, children + 1, tpc * children  # +1: a spare for graceful restarts


def listen_lines(args):
    lines = ["Listen %s" % args.listen]
    if args.tls_listen:
        lines.append("Listen %s https" % args.tls_listen)
    return "\n".join(lines)


def tls_values(args):
    if not args.tls_listen:
        # The TLS virtual host stays inside an undefined <IfDefine>; these are never read.
        return {"TLS_DEFINE": "", "TLS_LISTEN": "127.0.0.1:443", "TLS_CERT": "/nonexistent",
                "TLS_KEY": "/nonexistent"}
    if not (args.tls_cert and args.tls_key):
        sys.exit("render-apache: --tls-listen needs --tls-cert and --tls-key")
    return {"TLS_DEFINE": "Define WSHUB_TLS", "TLS_LISTEN": args.tls_listen,
            "TLS_CERT": os.path.abspath(args.tls_cert), "TLS_KEY": os.path.abspath(args.tls_key)}


def user_lines(args):
    user = args.user
    if user is None:
        user = "www-data" if os.geteuid() == 0 else ""
    if not user or os.geteuid() != 0:
        return ""
    return "User %s\nGroup %s" % (user, user)


def render(template_dir, name, values, dst):
    with open(os.path.join(template_dir, name), encoding="utf-8") as f:
        text = rn.fill(f.read(), values)
    tmp = dst + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, dst)


def main(argv):
    args = parse_args(argv)
    if args.fcgid and not args.wshub_conf:
        sys.exit("render-apache: --fcgid needs --wshub-conf (wshub-admin reads it)")
    prefix = os.path.abspath(args.prefix)
    for d in ("run", "htdocs"):
        os.makedirs(os.path.join(prefix, d), exist_ok=True)
    # PREFIX/fcgid is left to mod_fcgid: it creates the directory for (and, as root, chowns
    # it to) the user its process manager runs as; one created here would be root's.

    tpc, start_servers, server_limit, max_workers = mpm_sizing(args.clients,
                                                               args.threads_per_child)
    site = os.path.join(prefix, "wshub-fcgid.conf" if args.fcgid else "wshub.conf")
    allow = args.allow or ["127.0.0.1", "::1"]
    admin_binary = args.admin_binary or os.path.join(REPO, "build", "wshub-admin")
    values = {
        "PREFIX": prefix,
        "MODULES": args.modules,
        "LOAD_FCGID": "LoadModule fcgid_module %s/mod_fcgid.so" % args.modules
                      if args.fcgid else "",
        "USER": user_lines(args),
        "LISTEN": args.listen,
        "LISTEN_LINES": listen_lines(args),
        "THREADS_PER_CHILD": tpc,
        "START_SERVERS": start_servers,
        "SERVER_LIMIT": server_limit,
        "MAX_REQUEST_WORKERS": max_workers,
        "LOG_LEVEL": args.log_level,
        "SITE_CONF": site,
        "SERVER_NAME": args.server_name,
        "WS_TIMEOUT": args.ws_timeout,
        "DOCROOT": os.path.join(prefix, "htdocs"),
        "ADMIN_REQUIRE": "    Require ip %s" % " ".join(allow),
        "ADMIN_BINARY": os.path.abspath(admin_binary),
        "WSHUB_CONF": os.path.abspath(args.wshub_conf) if args.wshub_conf else "",
        "FCGID_PROCESSES": args.fcgid_processes,
    }
    values.update(tls_values(args))
    values.update(rn.wshub_side(args))

    render(args.templates, "wshub.conf.in", values, os.path.join(prefix, "wshub.conf"))
    if args.fcgid:
        values["SITE_CONF"] = os.path.join(prefix, "wshub.conf")
        render(args.templates, "wshub-fcgid.conf.in", values, site)
        values["SITE_CONF"] = site
    render(args.templates, "httpd-main.conf.in", values, os.path.join(prefix, "httpd.conf"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
