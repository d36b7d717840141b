"""The command line as users run it: every bad value is one line on stderr and exit 2 (nothing
served), an app loaded from the current directory by ``python -m zzz`` and by the ``zzz`` script,
``--factory``, ``--uds``, ``--proxy-headers``, ``--redis``, TLS and ``--log-level``."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server.helpers import self_signed_cert

from .procs import Zzz, children, get, tcp, unix, write_app

BAD_IMPORT = "import zzz\nraise RuntimeError('no database')\n"
BROKEN = "def f(:\n"
FACTORIES = """
import zzz
def not_an_app():
    return 42
def raises():
    raise ValueError("no config")
value = 3
"""


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    write_app(tmp_path)
    write_app(tmp_path, "badimport", BAD_IMPORT)
    write_app(tmp_path, "broken", BROKEN)
    write_app(tmp_path, "factories", FACTORIES)
    (tmp_path / "cert.pem").write_text("not a certificate\n")
    (tmp_path / "plain").write_text("")
    return tmp_path


@pytest.fixture
def procs() -> Iterator[list[Zzz]]:
    started: list[Zzz] = []
    yield started
    for proc in started:
        proc.close()


def _zzz(cwd: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "zzz", *args],
        cwd=cwd,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"zzz {' '.join(args)} did not exit: {out!r} {err!r}") from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


# (arguments, what the one line must contain)
BAD = [
    (["opsapp:app", "--port", "99999"], ["--port", "99999", "0-65535"]),
    (["opsapp:app", "--port", "-1"], ["--port", "-1", "0-65535"]),
    (["opsapp:app", "--port", "http"], ["--port", "'http'", "not an integer"]),
    (["opsapp:app", "--workers", "0"], ["--workers", "0", "at least 1"]),
    (["opsapp:app", "--workers", "-2"], ["--workers", "-2"]),
    (["opsapp:app", "--workers", "two"], ["--workers", "'two'", "not an integer"]),
    (["opsapp:app", "--loop", "tokio"], ["--loop", "'tokio'"]),
    (["opsapp:app", "--log-level", "loud"], ["--log-level", "'loud'"]),
    (["opsapp"], ["MODULE:ATTR", "'opsapp'", "not of the form"]),
    (["nosuchmodule:app"], ["MODULE:ATTR", "no module named 'nosuchmodule'"]),
    (["badimport:app"], ["MODULE:ATTR", "RuntimeError: no database", "badimport.py:2"]),
    (["broken:app"], ["MODULE:ATTR", "SyntaxError", "broken.py"]),
    (["opsapp:nothing"], ["MODULE:ATTR", "no attribute 'nothing'"]),
    (["factories:value"], ["MODULE:ATTR", "is an int, not a zzz.App"]),
    (["opsapp:make_app"], ["MODULE:ATTR", "is a function, not a zzz.App", "--factory"]),
    (["factories:value", "--factory"], ["--factory", "not a callable"]),
    (["factories:raises", "--factory"], ["--factory", "ValueError: no config"]),
    (["factories:not_an_app", "--factory"], ["--factory", "returned an int, not a zzz.App"]),
    (["--factory"], ["--factory", "needs MODULE:ATTR"]),
    (["opsapp:app", "--ssl-certfile", "missing.pem"], ["--ssl-certfile", "'missing.pem'", "no such file"]),
    (
        ["opsapp:app", "--ssl-certfile", "cert.pem", "--ssl-keyfile", "nokey.pem"],
        ["--ssl-keyfile", "'nokey.pem'", "no such file"],
    ),
    (["opsapp:app", "--ssl-keyfile", "cert.pem"], ["--ssl-keyfile", "needs --ssl-certfile"]),
    (["opsapp:app", "--ssl-certfile", "cert.pem"], ["--ssl-certfile", "'cert.pem'", "cannot load"]),
    (["opsapp:app", "--reload", "--workers", "2"], ["--reload", "--workers"]),
    (["opsapp:app", "--forwarded-allow-ips", "10.0.0.0/8,proxy"], ["--forwarded-allow-ips", "'proxy'"]),
    (["opsapp:app", "--forwarded-allow-ips", ","], ["--forwarded-allow-ips", "empty"]),
    (["opsapp:app", "--uds", "/no/such/dir/s.sock"], ["--uds", "'/no/such/dir'", "does not exist"]),
    (["opsapp:app", "--uds", "plain"], ["--uds", "'plain'", "not a socket"]),
    (["opsapp:app", "--uds", "s.sock", "--port", "1234"], ["--uds", "--port"]),
    (["opsapp:app", "--uds", "x" * 120], ["--uds", "107 bytes"]),
    (["opsapp:app", "--redis", "localhost:6379"], ["--redis", "'localhost:6379'", "redis://"]),
    (["opsapp:app", "--colour"], ["unrecognized arguments: --colour"]),
    (["--workers", "2"], ["--workers 2", "--redis URL"]),  # the demo's rule
    # Through the supervisor's path (the app is checked in a child before anything binds).
    (["badimport:app", "--workers", "2"], ["MODULE:ATTR", "RuntimeError: no database"]),
    (["opsapp:nothing", "--workers", "2"], ["MODULE:ATTR", "no attribute 'nothing'"]),
]


@pytest.mark.parametrize(("args", "words"), BAD, ids=[" ".join(a)[:60] for a, _ in BAD])
def test_a_bad_value_is_one_line_and_exit_2(app_dir: Path, args: list[str], words: list[str]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    extra = [] if "--port" in args or "--uds" in args or args == ["--factory"] else ["--port", str(port)]
    done = _zzz(app_dir, *args, *extra)
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("zzz: "), lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert done.stdout == ""  # nothing printed as serving
    with socket.socket() as again:  # and nothing was bound
        again.bind(("127.0.0.1", port))


@pytest.mark.parametrize("script", [False, True], ids=["python -m zzz", "zzz script"])
def test_module_attr_is_imported_from_the_current_directory(
    procs: list[Zzz], app_dir: Path, script: bool
) -> None:
    assert Path(sys.executable).with_name("zzz").exists(), "the console script: pip install -e ."
    z = Zzz(["opsapp:app", "--port", "0"], app_dir, script=script)
    procs.append(z)
    z.start()
    assert z.address == f"http://127.0.0.1:{z.port}/"
    status, body = get(tcp(z.port))
    assert status == 200 and int(body) == z.pid  # one process: it serves itself
    assert z.stop() == 0


def test_factory(procs: list[Zzz], app_dir: Path) -> None:
    z = Zzz(["opsapp:make_app", "--factory", "--port", "0"], app_dir)
    procs.append(z)
    z.start()
    assert get(tcp(z.port))[0] == 200
    assert z.stop() == 0


@pytest.mark.parametrize("workers", [None, "2"])
def test_uds(procs: list[Zzz], app_dir: Path, workers: str | None) -> None:
    path = str(app_dir / "zzz.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)  # a socket file left by a server that was killed: nobody listens on it
    stale.close()
    z = Zzz(["opsapp:app", "--uds", path, *([] if workers is None else ["--workers", workers])], app_dir)
    procs.append(z)
    z.start()
    assert z.address == f"unix:{path}"
    pids = {int(get(unix(path))[1]) for _ in range(40)}
    assert pids <= ({z.pid} if workers is None else children(z.pid))
    assert z.stop() == 0
    assert not os.path.exists(path)  # removed by who made it


def test_uds_in_use_is_exit_1(procs: list[Zzz], app_dir: Path) -> None:
    path = str(app_dir / "busy.sock")
    first = Zzz(["opsapp:app", "--uds", path], app_dir)
    procs.append(first)
    first.start()
    second = Zzz(["opsapp:app", "--uds", path], app_dir)
    procs.append(second)
    assert second.wait(30) == 1
    lines = second.stderr().splitlines()
    assert len(lines) == 1 and "cannot listen" in lines[0] and "busy.sock" in lines[0], lines
    assert get(unix(path))[0] == 200  # the first one is untouched
    assert first.stop() == 0


def test_proxy_options_reach_the_app_settings(procs: list[Zzz], app_dir: Path) -> None:
    z = Zzz(
        [
            "opsapp:app",
            "--port",
            "0",
            "--workers",
            "1",
            "--proxy-headers",
            "--forwarded-allow-ips",
            "10.0.0.0/8, 192.168.1.1",
        ],
        app_dir,
    )
    procs.append(z)
    z.start()
    assert get(tcp(z.port), "/settings") == (200, "True 10.0.0.0/8,192.168.1.1")
    assert z.stop() == 0
    plain = Zzz(["opsapp:app", "--port", "0"], app_dir)
    procs.append(plain)
    plain.start()
    assert get(tcp(plain.port), "/settings") == (200, "False 127.0.0.1")  # the defaults
    assert plain.stop() == 0


CHANNELS = """
import zzz
from zzz.channels import ChannelConfig, ChannelDef, RedisPubSub

room = ChannelDef("room:*")
first = ChannelConfig(channels=[room])
second = ChannelConfig(channels=[room])
own = ChannelConfig(channels=[room], pubsub=RedisPubSub("redis://127.0.0.1:1/0", prefix="own"))

def backends(request):
    return " ".join(f"{type(c.pubsub).__name__}:{getattr(c.pubsub, 'prefix', '-')}" for c in (first, second, own))

app = zzz.App([*first.routes("/a"), *second.routes("/b"), *own.routes("/c"), zzz.Router.get("/backends", backends)])
"""


def test_redis_replaces_only_the_in_memory_backends(procs: list[Zzz], tmp_path: Path) -> None:
    write_app(tmp_path, "chan", CHANNELS)
    z = Zzz(["chan:app", "--port", "0", "--redis", "redis://127.0.0.1:6390/0"], tmp_path)
    procs.append(z)
    z.start()
    # Separate endpoints stay separate (their own prefix); the one with its own backend keeps it.
    assert get(tcp(z.port), "/backends") == (200, "RedisPubSub:zzz RedisPubSub:zzz:/b RedisPubSub:own")
    assert z.stop() == 0
    warned = Zzz(
        ["opsapp:app", "--port", "0", "--redis", "redis://127.0.0.1:6390/0"], tmp_path.parent / tmp_path.name
    )
    write_app(tmp_path)
    procs.append(warned)
    warned.start()
    assert "--redis: no Channels endpoint" in warned.stderr()
    assert warned.stop() == 0


def test_tls_from_cert_and_key_files(procs: list[Zzz], tmp_path: Path) -> None:
    write_app(tmp_path)
    cert, key = self_signed_cert(tmp_path, "c.pem", "k.pem")
    z = Zzz(["opsapp:app", "--port", "0", "--ssl-certfile", str(cert), "--ssl-keyfile", str(key)], tmp_path)
    procs.append(z)
    z.start()
    context = ssl.create_default_context(cafile=str(cert))
    with urllib.request.urlopen(f"https://127.0.0.1:{z.port}/pid", context=context, timeout=10) as answer:
        assert int(answer.read()) == z.pid
    assert z.stop() == 0


def test_log_level(procs: list[Zzz], app_dir: Path) -> None:
    quiet = Zzz(["opsapp:app", "--port", "0", "--workers", "1", "--log-level", "WARNING"], app_dir)
    procs.append(quiet)
    quiet.start()
    assert quiet.stop() == 0
    assert " INFO " not in quiet.stderr()
    loud = Zzz(["opsapp:app", "--port", "0", "--workers", "1"], app_dir)
    procs.append(loud)
    loud.start()
    assert loud.stop() == 0
    assert "worker 1 started" in loud.stderr()
