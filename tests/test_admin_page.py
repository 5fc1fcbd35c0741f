"""The stats page as HTTP sees it (the browser test is test_admin_browser.py): one HTML response
with a strict Content-Security-Policy, nothing loaded from elsewhere, its script and style from
wshub-admin itself, and the CSRF token the API checks embedded in it."""
import os
import re
import shutil
import signal
import socket
import subprocess
from html.parser import HTMLParser

import wshub_stack
from wshub_stack import REPO, Hub, fcgi_request, make_base_dir, wait_for


class Refs(HTMLParser):
    """Every URL the page would load or link to, and any inline script or style."""

    def __init__(self):
        super().__init__()
        self.urls = []
        self.inline_script = []
        self.style_attrs = []
        self.handlers = []
        self.meta = {}
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for name in ("src", "href", "action", "srcset", "poster", "data"):
            if a.get(name) is not None:
                self.urls.append((tag, name, a[name]))
        if "style" in a:
            self.style_attrs.append(tag)
        self.handlers += [(tag, k) for k in a if k.startswith("on")]
        if tag == "meta" and "name" in a:
            self.meta[a["name"]] = a.get("content")
        self._in_script = tag == "script" and "src" not in a
        if tag == "style":
            self.inline_script.append("<style>")

    def handle_data(self, data):
        if self._in_script and data.strip():
            self.inline_script.append(data.strip()[:80])

    def handle_endtag(self, tag):
        self._in_script = False


def csp_directives(header):
    out = {}
    for part in header.split(";"):
        words = part.split()
        if words:
            out[words[0]] = words[1:]
    return out


def test_page_csp_and_no_external_references(make_stack):
    stack = make_stack(workers=1)
    r = stack.admin("GET", "/admin/")
    assert r.status == 200, r
    assert r.headers["content-type"].startswith("text/html"), r.headers
    html = r.body.decode("utf-8")

    csp = csp_directives(r.headers["content-security-policy"])
    assert csp["default-src"] == ["'none'"], csp
    assert csp["script-src"] == ["'self'"], csp  # no 'unsafe-inline', no hosts
    assert csp["style-src"] == ["'self'"], csp
    assert csp["connect-src"] == ["'self'"], csp
    assert csp["img-src"] == ["data:"], csp
    assert csp["frame-ancestors"] == ["'none'"] and csp["base-uri"] == ["'none'"], csp
    assert not any("unsafe" in v for vs in csp.values() for v in vs), csp
    assert r.headers.get("x-content-type-options") == "nosniff"

    refs = Refs()
    refs.feed(html)
    assert refs.inline_script == [], refs.inline_script
    assert refs.style_attrs == [] and refs.handlers == [], (refs.style_attrs, refs.handlers)
    for tag, attr, url in refs.urls:
        # Only this server (relative URLs) or data: URIs; nothing with a scheme or host.
        assert url.startswith("data:") or not re.match(r"^([a-z][a-z0-9+.-]*:|//)", url, re.I), \
            (tag, attr, url)
    loaded = {url for tag, attr, url in refs.urls if (tag, attr) in (("script", "src"),
                                                                      ("link", "href"))}
    assert {"page.js", "page.css"} <= loaded, loaded

    # The CSRF token in the page is the one stats.json announces (and the API checks).
    token = refs.meta.get("csrf-token")
    assert re.fullmatch(r"[0-9a-f]{32}", token or ""), refs.meta
    st = stack.admin("GET", "/admin/stats.json")
    assert st.headers.get("x-csrf-token") == token, st.headers

    # Script and style come from wshub-admin, with types a browser will execute under nosniff,
    # and they too reference nothing outside this server.
    for path, ctype in (("/admin/page.js", "text/javascript"), ("/admin/page.css", "text/css")):
        a = stack.admin("GET", path)
        assert a.status == 200 and a.headers["content-type"].startswith(ctype), (path, a.headers)
        assert a.headers.get("x-content-type-options") == "nosniff"
        text = a.body.decode("utf-8")
        assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/|@import|url\(", text), path
        head = stack.admin("HEAD", path)
        assert head.status == 200 and head.body == b"", head

    # The page, its script and its style are served from the binary: same bytes as the sources.
    with open(os.path.join(REPO, "admin-cgi", "admin_page.js"), "rb") as f:
        assert stack.admin("GET", "/admin/page.js").body == f.read()

    # Wrong methods and unknown page files get the API's JSON errors.
    r = stack.admin("POST", "/admin/", b"x", {"Content-Type": "text/plain"})
    assert r.status == 405 and "GET" in r.headers.get("allow", "") and r.is_json(), r
    r = stack.admin("GET", "/admin/page.html")
    assert r.status == 404 and r.is_json(), r


def test_page_without_hub():
    """With no hub (wshub-admin started by someone else), the page still loads, with an empty
    token: its script shows "hub not running" from stats.json's 503 and picks the token up when
    the hub is back. Nothing else is served (stats.json 503)."""
    base = make_base_dir()
    hub = Hub(base, workers=1)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(hub.admin_socket)
    listener.listen(16)
    out = open(os.path.join(base, "admin.out"), "wb")
    admin = subprocess.Popen([wshub_stack.binary("wshub-admin"), "-c", hub.conf_file],
                             stdin=listener.fileno(), stdout=out, stderr=out)
    out.close()
    listener.close()
    try:
        r = wait_for(lambda: fcgi_request(hub.admin_socket, "GET", "/admin/", timeout=2), 10,
                     "the page")
        assert r.status == 200, r
        assert '<meta name="csrf-token" content="">' in r.body.decode(), r.body[:600]
        r = fcgi_request(hub.admin_socket, "GET", "/admin/stats.json")
        assert r.status == 503 and r.is_json(), r
    finally:
        admin.send_signal(signal.SIGTERM)
        assert admin.wait(10) == 0
    assert not wshub_stack.sanitizer_reports(os.path.join(base, "admin.out"))
    shutil.rmtree(base, ignore_errors=True)
