#!/bin/bash
# bench-stack.sh -- start or stop a private wshub stack for wsbench runs.
#
#   tools/wsbench/bench-stack.sh start   # hub + workers + wshub-admin, and an nginx in front
#   tools/wsbench/bench-stack.sh stop
#
# Everything lives in $DIR (default /tmp/wsb-btest): the wshub config, logs, pid file, admin
# socket and the nginx prefix rendered by scripts/render-nginx.py from nginx-conf/ (the path
# `make run` takes). Clients connect straight to the workers on $WS_PORT; broadcasts go to
# http://127.0.0.1:$HTTP_PORT/admin/broadcast, i.e. through nginx to the admin FastCGI program.
# Both processes run in their own sessions; `stop` sends one SIGTERM to each and waits.
#
# Environment: BUILD (binaries, default ./build), DIR, INSTANCE (btest), WS_PORT (19500),
# HTTP_PORT (19501), WORKERS (2), NGINX_WORKERS (1).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${BUILD:-$ROOT/build}
DIR=${DIR:-/tmp/wsb-btest}
INSTANCE=${INSTANCE:-btest}
WS_PORT=${WS_PORT:-19500}
HTTP_PORT=${HTTP_PORT:-19501}
WORKERS=${WORKERS:-2}
NGINX_WORKERS=${NGINX_WORKERS:-1}

die() {
    printf 'bench-stack.sh: %s\n' "$*" >&2
    exit 1
}

stop_pidfile() {
    local f=$1 pid i
    [ -f "$f" ] || return 0
    pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for ((i = 0; i < 150; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$pid" 2>/dev/null && { echo "pid $pid ignored SIGTERM for 15 s; SIGKILL" >&2; kill -KILL "$pid"; }
    fi
    rm -f "$f"
}

start() {
    for b in wshub wshub-worker wshub-admin; do
        [ -x "$BUILD/$b" ] || die "$BUILD/$b missing: run make (or set BUILD)"
    done
    [ -f "$DIR/hub.pid" ] && kill -0 "$(cat "$DIR/hub.pid")" 2>/dev/null && die "already running from $DIR"
    mkdir -p "$DIR/nginx"
    # nginx workers run as www-data under root and must reach the admin socket.
    local group_line=""
    if [ "$(id -u)" -eq 0 ] && getent group www-data >/dev/null; then
        chgrp www-data "$DIR" && chmod 0750 "$DIR"
        group_line="admin_socket_group www-data"
    fi
    cat >"$DIR/wshub.conf" <<CONF
# written by tools/wsbench/bench-stack.sh
instance           $INSTANCE
listen             127.0.0.1:$WS_PORT
workers            $WORKERS
run_dir            "$DIR"
admin_socket       "$DIR/admin.sock"
admin_socket_mode  0660
$group_line
log_file           "$DIR/wshub.log"
log_level          notice
CONF
    "$BUILD/wshub" -t -c "$DIR/wshub.conf" >/dev/null || die "wshub rejected $DIR/wshub.conf"
    /usr/bin/python3 "$ROOT/scripts/render-nginx.py" --prefix "$DIR/nginx" \
        --listen "127.0.0.1:$HTTP_PORT" --wshub-conf "$DIR/wshub.conf" --daemon off \
        --worker-processes "$NGINX_WORKERS" >/dev/null
    local ngx=(nginx -p "$DIR/nginx/" -c "$DIR/nginx/nginx.conf" -e "$DIR/nginx/error.log")
    "${ngx[@]}" -t -q || die "nginx rejected $DIR/nginx/nginx.conf"
    ulimit -n "$(ulimit -Hn)"
    setsid "$BUILD/wshub" -c "$DIR/wshub.conf" </dev/null >>"$DIR/hub.out" 2>&1 &
    echo $! >"$DIR/hub.pid"
    setsid "${ngx[@]}" </dev/null >>"$DIR/nginx/nginx.out" 2>&1 &
    echo $! >"$DIR/nginx.pid"
    local i code=
    for ((i = 0; i < 100; i++)); do
        code=$(curl -s -o /dev/null -m 1 -w '%{http_code}' "http://127.0.0.1:$HTTP_PORT/healthz" || true)
        [ "$code" = 200 ] && break
        sleep 0.1
    done
    [ "$code" = 200 ] || { stop; die "no 200 from /healthz within 10 s (last: $code); see $DIR/wshub.log"; }
    echo "hub pid $(cat "$DIR/hub.pid"), nginx pid $(cat "$DIR/nginx.pid")"
    echo "ws://127.0.0.1:$WS_PORT/ws   http://127.0.0.1:$HTTP_PORT/admin/broadcast"
}

stop() {
    stop_pidfile "$DIR/nginx.pid"
    stop_pidfile "$DIR/hub.pid"
}

case "${1:-}" in
start) start ;;
stop) stop ;;
*) die "usage: bench-stack.sh start|stop" ;;
esac
