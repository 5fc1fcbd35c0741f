#!/bin/bash
# run.sh -- `make run`: the whole stack on this machine, nginx in front, in the foreground.
#
# Installs missing Debian packages (scripts/deps.sh), builds (make), writes a config into ./run/
# (gitignored), starts wshub (hub, workers, wshub-admin) and a private nginx on 127.0.0.1:8080
# rendered from nginx-conf/ (the system's nginx and its config are never touched), waits until
# /healthz answers 200, prints the URLs, and stays until Ctrl-C, which stops nginx and the hub
# with one SIGTERM each (the hub closes every client with 1001) and exits 0. Tokens are required
# as in production: a development HS256 key is made in ./run/jwt-dev.secret, the printed URLs
# carry a token minted with it, and the output shows how to mint others (scripts/mint-token.py).
#
# The children run in their own sessions, so the terminal's Ctrl-C reaches only this script: a
# second signal would make the hub skip its graceful drain.
#
# Environment (all optional):
#   WSHUB_INSTANCE   instance name (default dev)        WSHUB_WS_PORT    direct port (9001)
#   WSHUB_HTTP_PORT  nginx port (8080)                  WSHUB_RUN_DIR    run directory (./run)
#   WSHUB_WORKERS    worker processes (0 = per core)    WSHUB_BUILD      binaries (./build)
#   WSHUB_SKIP_DEPS=1, WSHUB_SKIP_BUILD=1   skip deps.sh / make (used by the test of this script)
# shellcheck disable=SC2317  # functions below run from traps
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
INSTANCE=${WSHUB_INSTANCE:-dev}
WS_PORT=${WSHUB_WS_PORT:-9001}
HTTP_PORT=${WSHUB_HTTP_PORT:-8080}
RUN=${WSHUB_RUN_DIR:-$ROOT/run}
WORKERS=${WSHUB_WORKERS:-0}
BUILD=${WSHUB_BUILD:-$ROOT/build}
PY=/usr/bin/python3
HUB_PID=
NGINX_PID=

say() { printf '%s\n' "$*"; }
die() {
    printf 'run.sh: %s\n' "$*" >&2
    exit 1
}

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Sends SIGTERM to a child and waits up to $2 seconds before SIGKILL.
stop_child() {
    local pid=$1 limit=$2 name=$3 i
    [ -n "$pid" ] || return 0
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < limit * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "run.sh: $name did not stop within ${limit}s, killing it" >&2
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
    local rc=0
    wait "$pid" 2>/dev/null || rc=$?
    return "$rc"
}

STOPPING=0
shutdown() {
    [ "$STOPPING" = 1 ] && return
    STOPPING=1
    trap '' INT TERM
    [ -n "$HUB_PID$NGINX_PID" ] || return 0
    say ""
    say "stopping wshub, then nginx ..."
    # The hub first: its 1001 close frames reach proxied clients through the still running nginx.
    local rc=0
    stop_child "$HUB_PID" 20 wshub || rc=$?
    stop_child "$NGINX_PID" 10 nginx || true
    if [ "$rc" -ne 0 ]; then
        say "run.sh: wshub exited with status $rc; see $RUN/wshub.log" >&2
        STOP_RC=1
    else
        say "stopped."
    fi
}
STOP_RC=0
on_signal() {
    shutdown
    exit "$STOP_RC"
}
on_exit() {
    local rc=$?
    shutdown
    exit "$rc"
}

show_logs() {
    say "---- $RUN/wshub.log ----" >&2
    tail -n 30 "$RUN/wshub.log" >&2 2>/dev/null || true
    say "---- $RUN/hub.out ----" >&2
    tail -n 30 "$RUN/hub.out" >&2 2>/dev/null || true
    say "---- $RUN/nginx/error.log ----" >&2
    tail -n 30 "$RUN/nginx/error.log" >&2 2>/dev/null || true
}

# ---- packages and build ----
[ "${WSHUB_SKIP_DEPS:-0}" = 1 ] || scripts/deps.sh
[ "${WSHUB_SKIP_BUILD:-0}" = 1 ] || make
for b in wshub wshub-worker wshub-admin; do
    [ -x "$BUILD/$b" ] || die "$BUILD/$b is missing (did make fail?)"
done

# Open-files limit: every client is one fd in a worker.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# ---- run directory and config ----
mkdir -p "$RUN" "$RUN/nginx"
RUN=$(cd "$RUN" && pwd)
if [ -f "$RUN/wshub.pid" ] && kill -0 "$(cat "$RUN/wshub.pid")" 2>/dev/null; then
    die "wshub already runs from $RUN (pid $(cat "$RUN/wshub.pid")); stop it first"
fi
listening "$WS_PORT" && die "127.0.0.1:$WS_PORT is already in use (set WSHUB_WS_PORT)"
listening "$HTTP_PORT" && die "127.0.0.1:$HTTP_PORT is already in use (set WSHUB_HTTP_PORT)"

# nginx's workers run as www-data when we are root: they must reach the admin socket. If this
# checkout sits below a directory www-data cannot traverse (/root is 0700), the socket goes to
# /run/wshub-<instance>/ instead -- the checkout's permissions are not ours to change.
ADMIN_SOCKET=$RUN/admin.sock
GROUP_LINE=
if [ "$(id -u)" -eq 0 ] && getent group www-data >/dev/null; then
    GROUP_LINE="admin_socket_group www-data"
    chgrp www-data "$RUN" && chmod 0750 "$RUN"
    if ! runuser -u www-data -- test -x "$RUN"; then
        SOCK_DIR=/run/wshub-$INSTANCE
        mkdir -p "$SOCK_DIR"
        chgrp www-data "$SOCK_DIR" && chmod 0750 "$SOCK_DIR"
        ADMIN_SOCKET=$SOCK_DIR/admin.sock
    fi
fi

# A development signing key: tokens are required, as in production (docs/security.md), and
# scripts/mint-token.py mints them with this secret. Made once; delete the file for a new one.
DEV_SECRET=$RUN/jwt-dev.secret
if [ ! -s "$DEV_SECRET" ]; then
    (umask 077 && head -c 48 /dev/urandom | base64 -w0 >"$DEV_SECRET" && echo >>"$DEV_SECRET")
fi

cat >"$RUN/wshub.conf" <<EOF
# Generated by scripts/run.sh ($(date -u +%Y-%m-%dT%H:%M:%SZ)); edit scripts/run.sh, not this.
# Every option is documented in conf/wshub.conf and by \`build/wshub --help\`.
instance           $INSTANCE
listen             127.0.0.1:$WS_PORT
workers            $WORKERS
run_dir            "$RUN"
admin_socket       "$ADMIN_SOCKET"
admin_socket_mode  0660
${GROUP_LINE}
log_file           "$RUN/wshub.log"
log_level          info
pid_file           "$RUN/wshub.pid"
jwt_key            dev HS256 file:$DEV_SECRET
EOF
"$BUILD/wshub" -t -c "$RUN/wshub.conf" >/dev/null || die "wshub rejected $RUN/wshub.conf"

"$PY" scripts/render-nginx.py --prefix "$RUN/nginx" --listen "127.0.0.1:$HTTP_PORT" \
    --wshub-conf "$RUN/wshub.conf" --daemon off --worker-processes auto \
    --worker-connections 8192
NGINX_CMD=(nginx -p "$RUN/nginx/" -c "$RUN/nginx/nginx.conf" -e "$RUN/nginx/error.log")
"${NGINX_CMD[@]}" -t -q || die "nginx rejected $RUN/nginx/nginx.conf"

# ---- start ----
trap on_signal INT TERM
trap on_exit EXIT
setsid "$BUILD/wshub" -c "$RUN/wshub.conf" </dev/null >>"$RUN/hub.out" 2>&1 &
HUB_PID=$!
setsid "${NGINX_CMD[@]}" </dev/null >>"$RUN/nginx/nginx.out" 2>&1 &
NGINX_PID=$!

ready=0
for ((i = 0; i < 200; i++)); do # 20 s
    kill -0 "$HUB_PID" 2>/dev/null || { show_logs; die "wshub exited during start-up"; }
    kill -0 "$NGINX_PID" 2>/dev/null || { show_logs; die "nginx exited during start-up"; }
    code=$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$HTTP_PORT/healthz" ||
        true)
    if [ "$code" = 200 ]; then
        ready=1
        break
    fi
    sleep 0.1
done
if [ "$ready" != 1 ]; then
    show_logs
    die "no 200 from http://127.0.0.1:$HTTP_PORT/healthz within 20 s (last: $code)"
fi

# A token for the printed URLs (user "dev", valid 24 h).
MINT=(scripts/mint-token.py --secret-file "$DEV_SECRET")
TOKEN=$("$PY" "${MINT[@]}" --sub dev --ttl 24h) || die "scripts/mint-token.py failed"

# The stats page (GET /admin/) is listed once wshub-admin serves it.
PAGE_LINE=
if [ "$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$HTTP_PORT/admin/")" = 200 ]
then
    PAGE_LINE="  Stats page:                http://127.0.0.1:$HTTP_PORT/admin/"
fi

cat <<EOF

wshub is running (instance $INSTANCE, hub pid $HUB_PID, nginx pid $NGINX_PID).

  WebSocket, through nginx:  ws://127.0.0.1:$HTTP_PORT/ws?token=$TOKEN
  WebSocket, direct:         ws://127.0.0.1:$WS_PORT/ws?token=$TOKEN
  Stats (JSON):              http://127.0.0.1:$HTTP_PORT/admin/stats.json
${PAGE_LINE}
  Metrics (Prometheus):      http://127.0.0.1:$HTTP_PORT/metrics
  Health:                    http://127.0.0.1:$HTTP_PORT/healthz

  Broadcast:
    curl -sS -H 'Content-Type: text/plain' --data-binary 'hello, world' http://127.0.0.1:$HTTP_PORT/admin/broadcast
  Watch messages (interactive client):
    $PY -m websockets "ws://127.0.0.1:$HTTP_PORT/ws?token=$TOKEN"

  Tokens are required (jwt_key dev in $RUN/wshub.conf; without one: 401). Mint another:
    $PY ${MINT[*]} --sub alice --ttl 1h
  and send it as ?token=, or as Authorization: Bearer <token>.

  Logs: $RUN/wshub.log, $RUN/nginx/error.log.   Ctrl-C stops everything.
EOF

# Stay until a signal, or until one of the two dies by itself (an error: exit 1).
rc=0
wait -n "$HUB_PID" "$NGINX_PID" || rc=$?
if ! kill -0 "$HUB_PID" 2>/dev/null; then
    wait "$HUB_PID" 2>/dev/null || rc=$?
    HUB_PID=
    show_logs
    die "wshub exited by itself (status $rc)"
fi
NGINX_PID_DEAD=$NGINX_PID
NGINX_PID=
show_logs
die "nginx (pid $NGINX_PID_DEAD) exited by itself (status $rc)"
