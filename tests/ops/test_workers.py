"""Supervised workers over real processes and sockets: a dead worker replaced, a crash loop stopped,
a rolling restart (SIGHUP) under a client that keeps connecting, the drain in rounds, SIGTTIN/SIGTTOU,
the health path while draining, SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .procs import ConnectLoop, RawWebSocket, Zzz, children, get, groups, tcp, wait_for, write_app


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    write_app(tmp_path)
    return tmp_path


@pytest.fixture
def procs() -> Iterator[list[Zzz]]:
    started: list[Zzz] = []
    yield started
    for proc in started:
        proc.close()


def _serve(procs: list[Zzz], app_dir: Path, *args: str, env: dict[str, str] | None = None) -> Zzz:
    proc = Zzz(["opsapp:app", "--port", "0", *args], app_dir, env=env)
    procs.append(proc)
    return proc.start()


def test_workers_share_port_0_and_sigterm_exits_0(procs: list[Zzz], app_dir: Path) -> None:
    z = _serve(procs, app_dir, "--workers", "2")
    workers = children(z.pid)
    assert len(workers) == 2
    seen = {int(get(tcp(z.port))[1]) for _ in range(60)}
    assert seen <= workers and len(seen) == 2, (seen, workers)  # both accept from the one socket
    assert z.pid not in seen  # the supervisor only supervises
    assert z.stop() == 0
    assert not children(z.pid)


def test_a_killed_worker_is_replaced_within_a_second(procs: list[Zzz], app_dir: Path) -> None:
    z = _serve(procs, app_dir, "--workers", "2")
    before = children(z.pid)
    loop = ConnectLoop(tcp(z.port))
    loop.start()
    time.sleep(0.3)
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    took = wait_for(
        lambda: len(children(z.pid) - before) == 1 and victim not in children(z.pid), 5, "a new worker"
    )
    assert took < 1.0, took
    (new,) = children(z.pid) - before
    count = loop.count
    wait_for(lambda: new in loop.pids[count:], 10, "the new worker answering the client loop")
    loop.stop()
    # Only a connection the killed worker held may have failed; the loop went on.
    assert len(loop.failures) <= 2, loop.failures
    assert "worker 1" in z.stderr() or "worker 2" in z.stderr()
    assert "died (signal SIGKILL); replacing it" in z.stderr()
    assert z.stop() == 0


CRASHY = """
import os, threading, zzz
app = zzz.App([zzz.Router.get("/", lambda r: "ok")])
if os.environ.get("ZZZ_WORKER"):  # a worker, not the check of the app: die soon after serving
    threading.Timer(0.2, os._exit, (3,)).start()
"""


def test_five_deaths_within_ten_seconds_stop_the_server_with_exit_1(procs: list[Zzz], tmp_path: Path) -> None:
    write_app(tmp_path, "crashy", CRASHY)
    z = Zzz(["crashy:app", "--port", "0", "--workers", "2"], tmp_path)
    procs.append(z)
    assert z.wait(30) == 1
    errors = [line for line in z.stderr().splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "5 workers died within 10 s" in errors[0], z.stderr()
    assert not children(z.pid)


def test_a_port_taken_is_exit_1_and_one_line(procs: list[Zzz], app_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        z = Zzz(["opsapp:app", "--port", str(port), "--workers", "2"], app_dir)
        procs.append(z)
        assert z.wait(30) == 1
    lines = z.stderr().splitlines()
    assert len(lines) == 1 and "cannot listen on" in lines[0] and str(port) in lines[0], lines
    assert "serving" not in z.stdout()


def test_sighup_restarts_every_worker_without_a_refused_connection(procs: list[Zzz], app_dir: Path) -> None:
    z = _serve(procs, app_dir, "--workers", "2", env={"DRAIN_BATCH": "10", "DRAIN_INTERVAL": "0.2"})
    before = children(z.pid)
    sockets = [RawWebSocket(tcp(z.port)) for _ in range(30)]
    assert {ws.wait_pid() for ws in sockets} <= before
    # Several clients at once, so that connections are in flight whenever an old worker stops accepting.
    loops = [ConnectLoop(tcp(z.port)) for _ in range(6)]
    for loop in loops:
        loop.start()
    time.sleep(0.3)
    z.signal(signal.SIGHUP)
    wait_for(lambda: len(children(z.pid)) == 2 and not children(z.pid) & before, 30, "two new workers")
    after = children(z.pid)
    counts = [loop.count for loop in loops]
    wait_for(
        lambda: set().union(*(lp.pids[c:] for lp, c in zip(loops, counts))) == after,
        10,
        "both new workers answering",
    )
    for loop in loops:
        loop.stop()
        assert loop.failures == [], loop.failures[:5]
        assert loop.slowest < 1.0, loop.slowest
        assert loop.count > 20
    for ws in sockets:
        assert ws.done.wait(10)
    assert [ws.close_code for ws in sockets] == [1012] * 30
    assert z.stop() == 0


def test_the_drain_closes_in_rounds_of_drain_batch(procs: list[Zzz], app_dir: Path) -> None:
    z = _serve(procs, app_dir, "--workers", "1", env={"DRAIN_BATCH": "10", "DRAIN_INTERVAL": "0.2"})
    sockets = [RawWebSocket(tcp(z.port)) for _ in range(30)]
    for ws in sockets:
        ws.wait_pid()
    z.signal(signal.SIGHUP)
    for ws in sockets:
        assert ws.done.wait(15)
    assert {ws.close_code for ws in sockets} == {1012}
    rounds = groups([ws.closed_at for ws in sockets if ws.closed_at is not None], gap=0.1)
    assert len(rounds) >= 3 and all(len(r) <= 10 for r in rounds), [len(r) for r in rounds]
    assert rounds[-1][0] - rounds[0][0] >= 0.3  # at least two intervals of 0.2 s, with slack
    assert z.stop() == 0


def test_sigttin_adds_and_sigttou_removes_a_worker(procs: list[Zzz], app_dir: Path) -> None:
    z = _serve(procs, app_dir, "--workers", "2")
    wait_for(lambda: len(children(z.pid)) == 2, 10, "2 workers")
    z.signal(signal.SIGTTIN)
    wait_for(lambda: len(children(z.pid)) == 3, 10, "3 workers")
    first = children(z.pid)
    z.signal(signal.SIGTTOU)
    wait_for(lambda: len(children(z.pid)) == 2, 10, "2 workers again")
    assert children(z.pid) < first  # one of them left, none was started
    z.signal(signal.SIGTTOU)
    wait_for(lambda: len(children(z.pid)) == 1, 10, "1 worker")
    z.signal(signal.SIGTTOU)  # never below one
    time.sleep(1.0)
    assert len(children(z.pid)) == 1
    assert get(tcp(z.port))[0] == 200
    assert z.stop() == 0


@pytest.mark.parametrize("workers", [None, "1"])
def test_health_is_503_while_draining_and_sigterm_exits_0(
    procs: list[Zzz], app_dir: Path, workers: str | None
) -> None:
    args = [] if workers is None else ["--workers", workers]
    z = _serve(procs, app_dir, *args, env={"DRAIN_BATCH": "1", "DRAIN_INTERVAL": "0.5"})
    sockets = [RawWebSocket(tcp(z.port)) for _ in range(6)]
    for ws in sockets:
        ws.wait_pid()
    keep = socket.create_connection(("127.0.0.1", z.port), timeout=5)  # a load balancer's check
    request = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
    keep.sendall(request)
    first = keep.recv(4096)
    assert first.startswith(b"HTTP/1.1 200 ") and first.endswith(b"ok\n"), first
    z.signal(signal.SIGTERM)
    wait_for(lambda: any(ws.done.is_set() for ws in sockets), 10, "the drain to start")
    assert not all(ws.done.is_set() for ws in sockets)  # one per 0.5 s: it lasts a few seconds
    keep.sendall(request)
    second = keep.recv(4096)
    assert second.startswith(b"HTTP/1.1 503 ") and b"Connection: close" in second, second
    keep.close()
    assert z.wait(30) == 0
    assert {ws.close_code for ws in sockets} == {1001}


def test_each_worker_knows_its_slot_and_id(procs: list[Zzz], app_dir: Path) -> None:
    z = _serve(procs, app_dir, "--workers", "2")
    seen = {get(tcp(z.port), "/worker")[1] for _ in range(60)}
    assert {w.split()[0] for w in seen} == {"1", "2"} and all(
        w.endswith(" True " + w.split()[0]) for w in seen
    )
    assert {int(w.split()[2]) for w in seen} == children(z.pid)
    ids = {w.split()[1] for w in seen}
    assert ids == {"1", "2"}
    victim = min(children(z.pid))
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: len(children(z.pid)) == 2 and victim not in children(z.pid), 5, "the replacement")
    later: dict[str, str] = {}  # id -> slot

    def new_one_answered() -> bool:
        index, worker_id = get(tcp(z.port), "/worker")[1].split()[:2]
        later[worker_id] = index
        return "3" in later

    wait_for(new_one_answered, 10, "the new worker answering")
    dead_slot = next(w.split()[0] for w in seen if int(w.split()[2]) == victim)
    assert later["3"] == dead_slot  # a new id, in the slot of the one that died
    assert z.stop() == 0


def test_workers_share_a_metrics_directory_removed_at_exit(procs: list[Zzz], app_dir: Path) -> None:
    z = _serve(procs, app_dir, "--workers", "2")
    dirs = {get(tcp(z.port), "/metrics-dir")[1] for _ in range(20)}
    assert len(dirs) == 1
    (path,) = dirs
    assert path != "-" and os.path.isdir(path)
    assert z.stop() == 0
    assert not os.path.exists(path)
    single = _serve(procs, app_dir)
    assert get(tcp(single.port), "/metrics-dir")[1] in ("-", os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
    assert single.stop() == 0


METRICS_APP = """
import os
import zzz

app = zzz.App(
    [zzz.Router.ws("/ws", zzz.WsConfig(on_open=lambda ws: ws.send(str(os.getpid()))))],
    metrics_path="/metrics",
    close_timeout=5,
)
"""


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    status, body = get(tcp(port), "/metrics")
    assert status == 200, body
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


def test_a_worker_that_exits_leaves_its_final_counts(procs: list[Zzz], tmp_path: Path) -> None:
    # The old workers of a rolling restart count their drain (every close 1012) and exit well
    # within the 1 s between their syncs: what a scrape of the new ones sums must include it.
    write_app(tmp_path, "metricsapp", METRICS_APP)
    proc = Zzz(["metricsapp:app", "--port", "0", "--workers", "2"], tmp_path)
    procs.append(proc)
    z = proc.start()
    old = children(z.pid)
    sockets = [RawWebSocket(tcp(z.port)) for _ in range(6)]
    for ws in sockets:
        ws.wait_pid()
    z.signal(signal.SIGHUP)
    for ws in sockets:
        assert ws.done.wait(15), "not closed by the restart"
    assert {ws.close_code for ws in sockets} == {1012}
    wait_for(lambda: not children(z.pid) & old and len(children(z.pid)) == 2, 15, "the old workers gone")
    samples = _scrape(z.port)
    assert samples[("zzz_closes_total", (("code", "1012"),))] == len(sockets)
    assert samples[("zzz_connections_total", ())] == len(sockets)
    assert z.stop() == 0


def test_multiprocess_metrics_marks_exited_workers_dead(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    import types

    from zzz.runner import multiprocess_metrics

    calls: list[tuple[int, str]] = []
    fake = types.ModuleType("prometheus_client.multiprocess")
    fake.mark_process_dead = lambda pid, path: calls.append((pid, path))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "prometheus_client", types.ModuleType("prometheus_client"))
    monkeypatch.setitem(sys.modules, "prometheus_client.multiprocess", fake)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "/somewhere/else")
    with multiprocess_metrics() as worker_exited:
        path = os.environ["PROMETHEUS_MULTIPROC_DIR"]
        assert path != "/somewhere/else" and os.path.isdir(path) and not os.listdir(path)
        worker_exited(1234)
    assert calls == [(1234, path)]
    assert not os.path.exists(path)
    assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == "/somewhere/else"  # put back


def test_workers_leave_when_their_supervisor_is_killed(procs: list[Zzz], app_dir: Path) -> None:
    z = _serve(procs, app_dir, "--workers", "2")
    workers = children(z.pid)
    assert len(workers) == 2
    os.kill(z.pid, signal.SIGKILL)
    z.proc.wait(10)

    def gone() -> bool:
        alive = set()
        for pid in workers:
            try:
                with open(f"/proc/{pid}/stat", "rb") as f:
                    if f.read().rsplit(b")", 1)[1].split()[0] != b"Z":
                        alive.add(pid)
            except OSError:
                continue
        return not alive

    wait_for(gone, 10, "the orphaned workers to exit")
