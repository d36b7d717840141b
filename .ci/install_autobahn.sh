#!/usr/bin/env bash
# Install the Autobahn TestSuite (wstest) into a cached Python 2.7 virtualenv.
# Idempotent: every step is skipped when its result is already there, so a cached run takes seconds.
#
# Why this shape: autobahntestsuite runs on Python 2.7 only, Debian 12 no longer ships 2.7, and the
# machines have no Docker. Debian 11 (bullseye) still has python2.7, so its suite is added as an apt
# source just long enough to install it, then removed again. The newest virtualenv that can still
# create 2.7 environments is 20.21.x; everything inside the venv is pinned to a set verified to work.
#
# Environment:
#   ZZZ_CACHE          cache root (default /var/cache/zzz); the venv is $ZZZ_CACHE/autobahn-venv
#   ZZZ_AUTOBAHN_VENV  full path of the venv, overrides the above
#   PYTHON3            Python 3 used to run virtualenv (default python3)
#
# Prints the wstest path on the last line of stdout.
set -euo pipefail

start=$(date +%s)
export DEBIAN_FRONTEND=noninteractive

CACHE="${ZZZ_CACHE:-/var/cache/zzz}"
VENV="${ZZZ_AUTOBAHN_VENV:-$CACHE/autobahn-venv}"
PYTHON3="${PYTHON3:-python3}"
PY27=/usr/bin/python2.7
BULLSEYE_LIST=/etc/apt/sources.list.d/zzz-bullseye.list

# The last versions that still support Python 2.7 and work with autobahntestsuite 0.8.2.
# Unpinned, pip would pull e.g. a cryptography/pyOpenSSL pair that no longer agree.
PINS=(
    autobahntestsuite==0.8.2
    autobahn==0.10.9
    Twisted==20.3.0
    zope.interface==5.5.2
    pyOpenSSL==21.0.0
    cryptography==3.3.2
    service-identity==21.1.0
    pyasn1==0.5.1
    pyasn1-modules==0.3.0
    attrs==21.4.0
    six==1.16.0
    cffi==1.15.1
    pycparser==2.21
    klein==20.6.0
    Werkzeug==1.0.1
    Jinja2==2.11.3
    MarkupSafe==1.1.1
    incremental==21.3.0
    constantly==15.1.0
    Automat==20.2.0
    hyperlink==21.0.0
    idna==2.10
    typing==3.10.0.0
    PyHamcrest==1.10.1
    enum34==1.1.10
    ipaddress==1.0.23
    Tubes==0.2.1
    txaio==2.1.0
    unittest2==1.1.0
    argparse==1.4.0
    traceback2==1.4.0
    linecache2==1.0.0
    wsaccel==0.6.2  # 0.6.3 checks UTF-8 through Python objects (~2 MB/s): 12.x/13.x ran 4x longer
    ujson==2.0.3
    setuptools==44.1.1
)
VIRTUALENV_SPEC="virtualenv==20.21.1"  # the last release that still creates Python 2.7 envs

log() { printf '[install_autobahn] %s\n' "$*" >&2; }

# pip is chatty: drop its end-of-life banner and its complaints about find-links
# directories from a machine-wide pip.conf that do not exist; keep every other message.
quiet_pip() {
    "$@" 2> >(grep -v -e 'is ignored: it is neither a file nor a directory' -e '^DEPRECATION: Python 2.7' \
        -e "Running pip as the 'root' user" >&2)
}
export PYTHONWARNINGS=ignore  # cryptography's "Python 2 is no longer supported" on every import

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi
}

# The bullseye source must never outlive this script, whatever happens.
cleanup_bullseye() {
    if [ -e "$BULLSEYE_LIST" ]; then
        log "removing the temporary bullseye apt source"
        as_root rm -f "$BULLSEYE_LIST"
        as_root apt-get update -qq || log "warning: apt-get update after removing bullseye failed"
    fi
}
trap cleanup_bullseye EXIT
trap 'exit 130' INT TERM  # so that the EXIT trap runs on these too

# The Debian mirror this machine already uses (first active deb line or deb822 URIs that is not the
# security archive); deb.debian.org when none is found.
debian_mirror() {
    local f uri
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        [ "$f" = "$BULLSEYE_LIST" ] && continue
        uri=$(awk '
            /^[[:space:]]*#/ { next }
            /^deb[[:space:]]/ {
                for (i = 2; i <= NF; i++) if ($i ~ /^[a-z+]+:\/\//) { print $i; break }
            }
            /^URIs:/ { for (i = 2; i <= NF; i++) print $i }
        ' "$f" | grep -E '/debian/?$' | head -n1 || true)
        if [ -n "$uri" ]; then echo "${uri%/}"; return; fi
    done
    echo "http://deb.debian.org/debian"
}

py27_ok() {
    [ -x "$PY27" ] && [ -f /usr/include/python2.7/Python.h ] \
        && "$PY27" -c 'import sys, ssl, zlib; assert sys.version_info[:2] == (2, 7)' 2>/dev/null
}

install_python27() {
    local mirror keyring pkgs
    mirror=$(debian_mirror)
    keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    log "adding temporary apt source: $mirror bullseye main"
    if [ -f "$keyring" ]; then
        echo "deb [signed-by=$keyring] $mirror bullseye main" | as_root tee "$BULLSEYE_LIST" >/dev/null
    else
        echo "deb $mirror bullseye main" | as_root tee "$BULLSEYE_LIST" >/dev/null
    fi
    as_root apt-get update -qq
    as_root apt-get install -y -qq --no-install-recommends python2.7 python2.7-dev >/dev/null
    cleanup_bullseye
}

venv_ok() {
    [ -x "$VENV/bin/wstest" ] \
        && [ "$(cat "$VENV/.zzz-pins" 2>/dev/null)" = "${PINS[*]}" ] \
        && "$VENV/bin/python" -c 'import autobahntestsuite, autobahn, twisted, OpenSSL' 2>/dev/null
}

build_venv() {
    local vtool="$CACHE/virtualenv-tool"
    mkdir -p "$CACHE"
    # virtualenv goes into its own --target dir: no change to the system Python (and no PEP 668
    # refusal on an externally managed interpreter).
    if ! PYTHONPATH="$vtool" "$PYTHON3" -c 'import virtualenv' 2>/dev/null; then
        if ! "$PYTHON3" -m pip --version >/dev/null 2>&1; then
            as_root apt-get update -qq
            as_root apt-get install -y -qq --no-install-recommends python3-pip >/dev/null
        fi
        log "installing $VIRTUALENV_SPEC into $vtool"
        rm -rf "$vtool"
        quiet_pip "$PYTHON3" -m pip install -q --disable-pip-version-check --target "$vtool" "$VIRTUALENV_SPEC"
    fi
    # wsaccel and zope.interface have no 2.7 wheels on PyPI for these versions: pip compiles them.
    if ! command -v cc >/dev/null 2>&1; then
        log "installing a C compiler"
        as_root apt-get update -qq
        as_root apt-get install -y -qq --no-install-recommends gcc libc6-dev >/dev/null
    fi
    log "creating the Python 2.7 venv at $VENV"
    rm -rf "$VENV"
    PYTHONPATH="$vtool" "$PYTHON3" -m virtualenv -q -p "$PY27" "$VENV"
    log "installing autobahntestsuite and its pinned dependencies"
    quiet_pip "$VENV/bin/pip" install -q --disable-pip-version-check --no-python-version-warning \
        --no-deps "${PINS[@]}"
    # The pin list is the whole dependency closure and is installed as it is (--no-deps); a missing
    # or conflicting dependency fails here rather than in the middle of a test run.
    quiet_pip "$VENV/bin/pip" check --disable-pip-version-check >/dev/null
    echo "${PINS[*]}" >"$VENV/.zzz-pins"
}

# Two installs at once (parallel jobs on one machine) would build the same venv over each other.
mkdir -p "$CACHE"
exec 9>"$CACHE/.install_autobahn.lock"
flock 9

if py27_ok; then
    log "python2.7 already installed: $("$PY27" --version 2>&1)"
else
    install_python27
    py27_ok || { log "python2.7 is still missing after apt-get install"; exit 1; }
fi

if venv_ok; then
    log "cached venv is up to date: $VENV"
else
    build_venv
    venv_ok || { log "the venv at $VENV does not work after installing"; exit 1; }
fi

log "autobahntestsuite $("$VENV/bin/python" -c 'import autobahntestsuite; print(autobahntestsuite.__version__)') ready in $(( $(date +%s) - start ))s"
echo "$VENV/bin/wstest"
