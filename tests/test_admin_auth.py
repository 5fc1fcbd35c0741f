"""Admin authentication and CSRF (admin-cgi/admin_auth.c): the bearer token from admin_token,
401 with WWW-Authenticate and a JSON body when it is missing or wrong, /metrics and /healthz
open or closed by config, the page shell open; and the CSRF rules for requests a browser sends.
(The constant-time comparison itself cannot be observed from here.)"""
import json

import pytest

from wshub_stack import wait_for

# Through each web server: Apache hides Authorization from FastCGI unless CGIPassAuth is on.
FRONTS = {"nginx": dict(), "apache": dict(nginx=False, apache=True)}

TOKEN = "wshub-test-token-0123456789abcdef"
BEARER = {"Authorization": "Bearer " + TOKEN}


def assert_401(r, wrong):
    assert r.status == 401, r
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers
    assert r.json()["error"] == "unauthorized", r.body
    www = r.headers.get("www-authenticate", "")
    assert www.startswith('Bearer realm="wshub"'), www
    assert ('error="invalid_token"' in www) == wrong, www


@pytest.mark.parametrize("front", sorted(FRONTS))
def test_bearer_token(make_stack, front):
    stack = make_stack(workers=1, options={"admin_token": TOKEN}, **FRONTS[front])
    text = {"Content-Type": "text/plain"}

    # Missing, wrong scheme, wrong token (longer, shorter, one character off): 401.
    assert_401(stack.admin("GET", "/admin/stats.json"), wrong=False)
    assert_401(stack.admin("GET", "/admin/stats.json", headers={"Authorization": "Basic eDp5"}),
               wrong=False)
    for bad in (TOKEN + "x", TOKEN[:-1], TOKEN[:-1] + "g", ""):
        r = stack.admin("GET", "/admin/stats.json", headers={"Authorization": "Bearer " + bad})
        assert_401(r, wrong=bad != "")
    assert_401(stack.admin("POST", "/admin/broadcast", b"no", text), wrong=False)
    assert_401(stack.admin("POST", "/admin/workers/restart", b""), wrong=False)
    assert_401(stack.admin("GET", "/admin/connections"), wrong=False)
    assert_401(stack.admin("DELETE", "/admin/connections/1"), wrong=False)

    # The right token, in any case of the scheme word: 200 / 202.
    r = stack.admin("GET", "/admin/stats.json", headers=BEARER)
    assert r.status == 200, r
    st = r.json()
    assert st["ring"]["published"] == 0 and st["ring"]["broadcasts_rejected"] == 0, st["ring"]
    r = stack.admin("GET", "/admin/stats.json", headers={"Authorization": "bearer " + TOKEN})
    assert r.status == 200, r
    r = stack.admin("POST", "/admin/broadcast", b"with token", dict(text, **BEARER))
    assert r.status == 202 and r.json()["seq"] == 1, r
    assert stack.admin("GET", "/admin/connections", headers=BEARER).status == 200

    # Refused requests never reached the handlers: exactly one broadcast, no restart request.
    st = stack.admin("GET", "/admin/stats.json", headers=BEARER).json()
    assert st["ring"]["published"] == 1 and st["hub"]["restart_requested"] == 0, st

    # Open by default: /metrics and /healthz (monitoring), and the page's static shell, which
    # holds no data (the page asks for the token and sends it to stats.json).
    assert stack.admin("GET", "/metrics").status == 200
    assert stack.admin("GET", "/healthz").status == 200
    for path in ("/admin/", "/admin/page.js", "/admin/page.css"):
        assert stack.admin("GET", path).status == 200, path

    # The log says what was refused, never the token.
    with open(stack.hub.log_file) as f:
        log = f.read()
    assert "wrong admin token" in log and TOKEN not in log
    assert "admin_token is not set" not in log


def test_private_metrics_and_healthz(make_stack):
    """metrics_public 0 / healthz_public 0: the token is needed there too. (No nginx here: the
    harness's readiness check polls /healthz, so it is started by hand with the token.)"""
    stack = make_stack(workers=1, nginx=False, start=False,
                       options={"admin_token": TOKEN, "metrics_public": 0, "healthz_public": 0})
    hub = stack.hub
    hub.start()
    wait_for(lambda: hub.running() and
             hub.fcgi("GET", "/healthz", headers=BEARER, timeout=2).status == 200, 20,
             "/healthz 200 with the token")
    hub.note_children()
    assert_401(hub.fcgi("GET", "/healthz"), wrong=False)
    assert_401(hub.fcgi("GET", "/metrics"), wrong=False)
    r = hub.fcgi("GET", "/metrics", headers=BEARER)
    assert r.status == 200 and b"wshub_ring_next_sequence" in r.body, r


def test_no_token_warns(make_stack):
    stack = make_stack(workers=1, nginx=False)
    with open(stack.hub.log_file) as f:
        log = f.read()
    assert "admin_token is not set" in log and " warn " in log, log[-2000:]


@pytest.mark.parametrize("front", sorted(FRONTS))
def test_csrf_rules_for_browsers(make_stack, front):
    """State-changing requests that carry browser headers must come from our own origin and
    carry the CSRF token; API clients without such headers are not affected."""
    stack = make_stack(workers=1, **FRONTS[front])
    port = (stack.nginx or stack.apache).port
    host = "127.0.0.1:%d" % port
    token = stack.admin("GET", "/admin/stats.json").headers["x-csrf-token"]
    text = {"Content-Type": "text/plain"}

    def post(path, **headers):
        return stack.admin("POST", path, b"csrf test", dict(text, **headers))

    def refused(r, why):
        assert r.status == 403 and r.json()["error"] == "csrf check failed", r
        assert why in r.json()["detail"], r.body

    # A foreign page's form or fetch: its Origin, or Sec-Fetch-Site cross-site / same-site.
    refused(post("/admin/broadcast", Origin="http://evil.example"), "Origin")
    refused(post("/admin/broadcast", Origin="http://evil.example", **{"X-CSRF-Token": token}),
            "Origin")
    refused(post("/admin/broadcast", **{"Sec-Fetch-Site": "cross-site"}), "cross-site")
    refused(post("/admin/broadcast", **{"Sec-Fetch-Site": "same-site"}), "cross-site")
    refused(post("/admin/workers/restart", Origin="null"), "Origin")
    r = stack.admin("DELETE", "/admin/connections/1",
                    headers={"Origin": "http://evil.example"})
    refused(r, "Origin")
    # Our own origin but no token (or a wrong one): still refused.
    refused(post("/admin/broadcast", Origin="http://" + host,
                 **{"Sec-Fetch-Site": "same-origin"}), "X-CSRF-Token")
    refused(post("/admin/broadcast", Origin="http://" + host,
                 **{"Sec-Fetch-Site": "same-origin", "X-CSRF-Token": "0" * 32}), "X-CSRF-Token")

    # Our page's request: same origin and the token.
    r = post("/admin/broadcast", Origin="http://" + host,
             **{"Sec-Fetch-Site": "same-origin", "X-CSRF-Token": token})
    assert r.status == 202, r
    # An API client (curl, a script): no browser headers, no CSRF token needed.
    assert post("/admin/broadcast").status == 202
    # GET is never checked (it changes nothing).
    r = stack.admin("GET", "/admin/stats.json", headers={"Origin": "http://evil.example"})
    assert r.status == 200
    st = r.json()
    assert st["ring"]["published"] == 2 and st["hub"]["restart_requested"] == 0, \
        json.dumps(st["ring"])
