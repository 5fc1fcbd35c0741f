#!/bin/bash
# deps.sh -- install the Debian 12 packages wshub needs to build, run and test, if any are missing.
#
#   scripts/deps.sh [extra-package ...]
#
# Checks with dpkg-query first and touches nothing when everything is there (so `make run` costs
# nothing the second time and works offline). Otherwise runs apt-get update once and installs
# only the missing packages, non-interactively, as root (or through sudo).
#
# The system's services are never started: installing nginx would normally start it on port 80,
# so a policy-rc.d that refuses every start is put in place for the duration of the install (the
# Debian mechanism invoke-rc.d and deb-systemd-invoke both obey), and removed again -- unless one
# already existed, which is then left exactly as it was. wshub runs its own nginx from its own
# directory and never needs the system one.
set -euo pipefail

PACKAGES=(
    build-essential pkg-config
    libwebsockets-dev libwebsockets-evlib-ev libev-dev libfcgi-dev zlib1g-dev libssl-dev
    libhiredis-dev libjwt-dev libjansson-dev
    nginx
    apache2 libapache2-mod-fcgid
    python3 python3-pytest python3-websockets python3-redis
    curl procps iproute2 openssl util-linux
    # for the tests: the stats page in headless Chromium, `promtool check metrics`
    chromium prometheus
    # for the security tests (tests/test_security.py): RS256/ES256 tokens and keys
    python3-jwt python3-cryptography
    # for the tests of the Redis bridge (tests/test_redis_bridge.py starts its own redis-server)
    redis-server
    # make fuzz (fuzz/README.md): clang with libFuzzer and the sanitizer runtimes
    clang libclang-rt-14-dev
    # make check-format (.ci/run): the code follows .clang-format
    clang-format
    # make deb (dpkg-shlibdeps) and tests/test_install.py (groff, systemd-analyze, a systemd)
    dpkg-dev groff-base systemd adduser
)
PACKAGES+=("$@")

installed() {
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = "installed" ]
}

# Any nginx flavour will do (Debian 12: nginx, or nginx-light/-core/-full/-extras).
nginx_present() {
    local p
    for p in nginx nginx-light nginx-core nginx-full nginx-extras; do
        installed "$p" && return 0
    done
    return 1
}

missing=()
for p in "${PACKAGES[@]}"; do
    if [ "$p" = nginx ]; then
        nginx_present || missing+=(nginx)
    elif ! installed "$p"; then
        missing+=("$p")
    fi
done

if [ ${#missing[@]} -eq 0 ]; then
    echo "deps.sh: all packages present"
    exit 0
fi
echo "deps.sh: installing ${missing[*]}"

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        echo "deps.sh: need root (or sudo) to install: ${missing[*]}" >&2
        exit 1
    fi
fi

POLICY=/usr/sbin/policy-rc.d
ours=0
cleanup() {
    if [ "$ours" = 1 ]; then
        "${SUDO[@]}" rm -f "$POLICY"
    fi
}
trap cleanup EXIT
if [ ! -e "$POLICY" ]; then
    # Exit status 101: "action forbidden by policy" -- no service starts during the install.
    printf '#!/bin/sh\n# temporary, from wshub scripts/deps.sh\nexit 101\n' |
        "${SUDO[@]}" tee "$POLICY" >/dev/null
    "${SUDO[@]}" chmod 0755 "$POLICY"
    ours=1
fi

export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}"
echo "deps.sh: done"
