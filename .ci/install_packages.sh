#!/usr/bin/env bash
# The system packages the test suite needs (Debian names): Redis for the Channels tests, Chromium
# for the browser tests, npm to fetch phoenix.js once, openssl for the TLS tests, patchelf and a C
# compiler for the wheel tests and the extension, python3-venv for the Makefile's venv.
# With the argument `bench` it also wants what `make bench` needs: libuv1 (socketify's native
# library; its wheel does not bundle it) and linux-perf/valgrind for the profiles in bench/README.md.
# Run as root, it installs the missing ones with apt-get (as .ci/run does); otherwise, or when
# ZZZ_NO_INSTALL is set, it stops at once with one line naming what is missing (exit 1).
set -euo pipefail

# package:command that shows it is there ("-" for a Python module check)
WANTED=(
    "redis-server:redis-server"
    "chromium:${ZZZ_CHROMIUM:-/usr/bin/chromium}"
    "npm:npm"
    "openssl:openssl"
    "patchelf:patchelf"
    "build-essential:cc"
    "python3-venv:-"
)
WHO="the tests need"; TARGET="make test"
if [[ ${1:-} == bench ]]; then
    WHO="make bench needs"; TARGET="make bench"
    WANTED+=("libuv1:lib:libuv.so.1" "valgrind:valgrind")
fi

present() {
    local probe=$1
    if [[ $probe == lib:* ]]; then
        ldconfig -p 2>/dev/null | grep -q "${probe#lib:}"
    elif [[ $probe == "-" ]]; then
        "${PYTHON:-python3}" -c "import ensurepip, venv" 2>/dev/null
    elif [[ $probe == /* ]]; then
        [[ -x $probe ]]
    else
        command -v "$probe" > /dev/null 2>&1
    fi
}

missing=()
for entry in "${WANTED[@]}"; do
    present "${entry#*:}" || missing+=("${entry%%:*}")
done
((${#missing[@]})) || exit 0

if [[ $(id -u) -ne 0 || -n ${ZZZ_NO_INSTALL:-} ]] || ! command -v apt-get > /dev/null 2>&1; then
    echo "${WHO} ${missing[*]}: run ${TARGET} as root to install them, or apt-get install -y ${missing[*]}" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
