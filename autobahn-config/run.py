"""Run the Autobahn TestSuite against zzz and gate on the result.
Starts the peer under test, runs wstest, stops everything, summarises the JSON report per section.

Modes:
  ``client``  wstest is the fuzzing *client*: it tests the zzz echo server (``echo_server.py``).
  ``server``  wstest is the fuzzing *server*: it tests the zzz client (``client.py``).

Examples::

    python autobahn-config/run.py client --impl both
    python autobahn-config/run.py client --impl python --cases "1.*,6.4.*,12.1.*"
    python autobahn-config/run.py server --impl cython

The exit status is 0 only when every case passed: behaviour OK, or INFORMATIONAL with an OK close.
wstest comes from the cache that ``.ci/install_autobahn.sh`` fills (``$ZZZ_WSTEST`` overrides).
Reports go to ``$ZZZ_REPORTS/autobahn`` (default ``<repo>/reports/autobahn``, git-ignored).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CaseResult", "Summary", "case_passes", "load_results", "main", "summarise"]

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
IMPLEMENTATIONS = ("cython", "python")
BEHAVIOURS = ("OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED")
# Close behaviours that are not a problem (wstest reports INFORMATIONAL for a close it cannot judge).
GOOD_CLOSE = ("OK", "INFORMATIONAL")


def default_wstest() -> str:
    """Return where ``.ci/install_autobahn.sh`` puts wstest, unless the environment overrides it.

    Returns:
        ``$ZZZ_WSTEST``, else ``$ZZZ_AUTOBAHN_VENV/bin/wstest``, else
        ``${ZZZ_CACHE:-/var/cache/zzz}/autobahn-venv/bin/wstest``.
    """
    if os.environ.get("ZZZ_WSTEST"):
        return os.environ["ZZZ_WSTEST"]
    venv = os.environ.get("ZZZ_AUTOBAHN_VENV") or os.path.join(
        os.environ.get("ZZZ_CACHE", "/var/cache/zzz"), "autobahn-venv"
    )
    return os.path.join(venv, "bin", "wstest")


def default_reports() -> Path:
    """Return the reports root: ``$ZZZ_REPORTS/autobahn`` or ``<repo>/reports/autobahn``."""
    root = os.environ.get("ZZZ_REPORTS")
    return (Path(root) if root else REPO / "reports") / "autobahn"


# ---------------------------------------------------------------------------------------------
# Report reading and gating


@dataclass(frozen=True)
class CaseResult:
    """One case of one agent in wstest's ``index.json``.

    Attributes:
        case_id: Dotted id such as ``"6.4.1"``.
        behavior: ``OK``, ``NON-STRICT``, ``INFORMATIONAL``, ``UNIMPLEMENTED`` or ``FAILED``.
        behavior_close: The verdict on the closing handshake (``OK``, ``FAILED``, ``WRONG CODE``, ...).
        duration_ms: How long the case took, in milliseconds.
        remote_close_code: The close code the peer under test sent, if any.
    """

    case_id: str
    behavior: str
    behavior_close: str
    duration_ms: int
    remote_close_code: int | None

    @property
    def key(self) -> tuple[int, ...]:
        """Numeric sort key, so that ``9.10.1`` sorts after ``9.2.1``."""
        return tuple(int(part) for part in self.case_id.split("."))

    @property
    def section(self) -> int:
        """The top-level section number (1 … 13)."""
        return self.key[0]


def case_passes(result: CaseResult) -> bool:
    """Return whether a case counts as passed for the gate.

    Args:
        result: One case.

    Returns:
        True for behaviour OK with a good close, or INFORMATIONAL with a good close.
    """
    return result.behavior in ("OK", "INFORMATIONAL") and result.behavior_close in GOOD_CLOSE


def load_results(index_json: Path) -> dict[str, list[CaseResult]]:
    """Read wstest's master report.

    Args:
        index_json: The ``index.json`` wstest writes into its outdir.

    Returns:
        Results per agent, sorted by case id.
    """
    raw = json.loads(index_json.read_text())
    agents: dict[str, list[CaseResult]] = {}
    for agent, cases in raw.items():
        results = [
            CaseResult(
                case_id=case_id,
                behavior=str(data.get("behavior")),
                behavior_close=str(data.get("behaviorClose")),
                duration_ms=int(data.get("duration") or 0),
                remote_close_code=data.get("remoteCloseCode"),
            )
            for case_id, data in cases.items()
        ]
        agents[agent] = sorted(results, key=lambda r: r.key)
    return agents


@dataclass
class Summary:
    """What one run amounted to.

    Attributes:
        label: e.g. ``"server/cython"``.
        results: Every case, sorted.
        failing: The cases that fail the gate.
        problem: Why there are no results at all (wstest crashed, server did not start, ...).
        text: The printed summary table.
    """

    label: str
    results: list[CaseResult]
    failing: list[CaseResult]
    problem: str | None = None
    text: str = ""

    @property
    def passed(self) -> bool:
        """True when there are results and every one passes."""
        return self.problem is None and bool(self.results) and not self.failing


def summarise(label: str, results: list[CaseResult]) -> Summary:
    """Print a per-section table, the 9.x timings and the failing cases.

    Args:
        label: What ran, for the headings.
        results: The cases of one agent.

    Returns:
        The summary, with the failing cases and the printed text.
    """
    lines: list[str] = []

    def out(text: str = "") -> None:
        print(text)
        lines.extend(text.split("\n"))

    by_section: dict[int, list[CaseResult]] = collections.defaultdict(list)
    for result in results:
        by_section[result.section].append(result)

    header = f"{'section':>7} {'cases':>6} " + " ".join(f"{b:>13}" for b in BEHAVIOURS)
    header += f" {'close≠OK':>9} {'time ms':>9}"
    out(f"\n== Autobahn {label}: {len(results)} cases ==")
    out(header)
    totals: collections.Counter[str] = collections.Counter()
    for section in sorted(by_section):
        cases = by_section[section]
        counts = collections.Counter(r.behavior for r in cases)
        bad_close = sum(r.behavior_close not in GOOD_CLOSE for r in cases)
        totals.update(counts)
        totals["close"] += bad_close
        totals["time"] += sum(r.duration_ms for r in cases)
        row = f"{str(section) + '.x':>7} {len(cases):>6} " + " ".join(
            f"{counts.get(b, 0):>13}" for b in BEHAVIOURS
        )
        out(row + f" {bad_close:>9} {sum(r.duration_ms for r in cases):>9}")
    row = f"{'all':>7} {len(results):>6} " + " ".join(f"{totals.get(b, 0):>13}" for b in BEHAVIOURS)
    out(row + f" {totals['close']:>9} {totals['time']:>9}")
    other = sorted({r.behavior for r in results} - set(BEHAVIOURS))
    if other:
        out(f"other behaviours: {', '.join(other)}")

    perf = [r for r in results if r.section == 9]
    if perf:
        total = sum(r.duration_ms for r in perf)
        out(f"\n9.x (performance) total {total} ms over {len(perf)} cases; per case (ms):")
        line = ""
        for r in perf:
            cell = f"{r.case_id}={r.duration_ms}"
            if len(line) + len(cell) > 96:
                out("  " + line)
                line = ""
            line += (" " if line else "") + cell
        if line:
            out("  " + line)

    failing = [r for r in results if not case_passes(r)]
    if failing:
        out(f"\nFAILING {len(failing)} case(s) ({label}):")
        for r in failing:
            out(
                f"  {r.case_id:<10} behavior={r.behavior:<13} close={r.behavior_close:<13}"
                f" remoteCloseCode={r.remote_close_code}"
            )
    else:
        out(f"\nall {len(results)} cases pass ({label})")
    return Summary(label, results, failing, text="\n".join(lines) + "\n")


# ---------------------------------------------------------------------------------------------
# Processes


def port_open(host: str, port: int) -> bool:
    """Return whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for_port(host: str, port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait until host:port accepts connections.

    Args:
        host: Address to poll.
        port: Port to poll.
        proc: The process that should open it; its early exit ends the wait.
        timeout: Seconds to wait at most.

    Raises:
        RuntimeError: The process exited or the port stayed closed for ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with status {proc.returncode} before listening")
        if port_open(host, port):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {host}:{port} after {timeout:.0f}s")


def stop(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """Stop a process started by this runner (and its process group): SIGINT, SIGTERM, then SIGKILL.

    Args:
        proc: A process started with ``start_new_session=True``.
        grace: Seconds to allow each polite signal.
    """
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue


@contextmanager
def background(
    cmd: Sequence[str], log: Path, env: dict[str, str], cwd: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a command in its own process group for the duration of a ``with`` block.

    Args:
        cmd: The command.
        log: File that receives its stdout and stderr.
        env: Its environment.
        cwd: Its working directory.

    Yields:
        The running process; it is stopped when the block ends, however it ends.
    """
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            list(cmd), stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True
        )
        try:
            yield proc
        finally:
            stop(proc)


def run_bounded(
    cmd: Sequence[str],
    log: Path,
    env: dict[str, str],
    cwd: Path,
    timeout: float,
    progress: Callable[[str], None] | None = None,
) -> int:
    """Run a command to completion with a time limit, output to a log file.

    Args:
        cmd: The command.
        log: File that receives its stdout and stderr.
        env: Its environment.
        cwd: Its working directory.
        timeout: Seconds before it is stopped.
        progress: Called with each new line of the log while the command runs.

    Returns:
        Its exit status.

    Raises:
        RuntimeError: It ran out of time.
    """
    deadline = time.monotonic() + timeout
    offset = 0
    pending = b""
    with background(cmd, log, env, cwd) as proc:
        while True:
            try:
                status = proc.wait(timeout=max(0.0, min(1.0, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                status = None
            if progress is not None:
                with log.open("rb") as f:
                    f.seek(offset)
                    chunk = f.read()
                offset += len(chunk)
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    progress(line.decode(errors="replace"))
            if status is not None:
                return status
            if time.monotonic() >= deadline:
                raise RuntimeError(f"{Path(cmd[0]).name} still running after {timeout:.0f}s, stopped")


def tail(path: Path, lines: int = 25) -> str:
    """Return the last lines of a log, indented, for error messages."""
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return "  (no log)"
    return "\n".join("  | " + line for line in text)


class SectionProgress:
    """Prints a line when wstest (fuzzingclient) moves on to the next section of cases."""

    def __init__(self, label: str, started: float) -> None:
        self.label = label
        self.started = started
        self.section = ""
        self.cases = 0

    def __call__(self, line: str) -> None:
        """Look at one line of wstest's output."""
        marker = "Running test case ID "
        if marker not in line:
            return
        self.cases += 1
        case_id = line.split(marker, 1)[1].split(" ", 1)[0]
        section = case_id.split(".", 1)[0]
        if section != self.section:
            self.section = section
            elapsed = time.monotonic() - self.started
            print(f"[{self.label}] {elapsed:6.0f}s  section {section}.x (case {self.cases})", flush=True)


def relay(label: str, line: str) -> None:
    """Pass on the client's own progress lines (those starting with ``client:``)."""
    if line.startswith("client:"):
        print(f"[{label}] {line}", flush=True)


def impl_env(impl: str, args: argparse.Namespace) -> dict[str, str]:
    """Return the environment for a zzz process running the given implementation."""
    env = dict(os.environ)
    env.pop("ZZZ_NO_EXTENSIONS", None)
    if impl == "python":
        env["ZZZ_NO_EXTENSIONS"] = "1"
    env["ZZZ_AUTOBAHN_IMPL"] = impl
    env["ZZZ_AUTOBAHN_HOST"] = args.host
    env["ZZZ_AUTOBAHN_PORT"] = str(args.port)
    if not args.installed:
        # Test the working tree (with its in-place extension), not whatever zzz is installed.
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def wstest_env() -> dict[str, str]:
    """Return the environment for wstest (Python 2.7): no inherited Python 3 paths, quiet warnings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONWARNINGS"] = "ignore"  # cryptography's Python 2 deprecation, on every import
    env["PYTHONUNBUFFERED"] = "1"  # so that the log (and the progress read from it) is live
    return env


def write_spec(template: Path, outdir: Path, args: argparse.Namespace, agent: str, tmp: Path) -> Path:
    """Write a copy of a wstest spec with this run's outdir, address, agent and cases.

    Args:
        template: The committed spec.
        outdir: Where wstest writes its reports.
        args: The command line.
        agent: Name of the peer under test.
        tmp: Directory for the copy.

    Returns:
        The path of the copy.
    """
    spec = json.loads(template.read_text())
    spec["outdir"] = str(outdir)
    url = f"ws://{args.host}:{args.port}"
    if "servers" in spec:
        spec["servers"] = [dict(spec["servers"][0], url=url, agent=agent)]
    else:
        spec["url"] = url
    if args.cases:
        spec["cases"] = [c.strip() for c in args.cases.split(",") if c.strip()]
    if args.exclude_cases:
        spec["exclude-cases"] = [c.strip() for c in args.exclude_cases.split(",") if c.strip()]
    path = tmp / template.name
    path.write_text(json.dumps(spec, indent=2))
    return path


def fresh_outdir(path: Path) -> Path:
    """Empty a report directory so that a stale ``index.json`` can never be read as this run's."""
    if path.exists():
        for item in sorted(path.rglob("*"), reverse=True):
            item.rmdir() if item.is_dir() else item.unlink()
    path.mkdir(parents=True, exist_ok=True)
    return path


def results_for(outdir: Path, agent: str, label: str) -> Summary:
    """Read and summarise one run's report, or explain why there is none."""
    index = outdir / "index.json"
    if not index.exists():
        return Summary(label, [], [], f"no report at {index}")
    agents = load_results(index)
    if agent not in agents:
        return Summary(label, [], [], f"agent {agent!r} not in {index} (found {sorted(agents)})")
    print(f"report: {outdir / 'index.html'}")
    summary = summarise(label, agents[agent])
    (outdir / "summary.txt").write_text(summary.text)
    return summary


def run_client_mode(impl: str, args: argparse.Namespace, tmp: Path) -> Summary:
    """wstest fuzzingclient against the zzz echo server (or ``--server-cmd``)."""
    label = f"server/{impl}"
    agent = f"zzz-{impl}"
    outdir = fresh_outdir(args.reports / "server" / impl)
    spec = write_spec(HERE / "fuzzingclient.json", outdir, args, agent, tmp)
    if args.server_cmd:
        cmd = shlex.split(args.server_cmd.format(host=args.host, port=args.port, python=sys.executable))
    else:
        cmd = [sys.executable, str(HERE / "echo_server.py"), args.host, str(args.port)]
    server_log = outdir / "echo_server.log"
    wstest_log = outdir / "wstest.log"
    started = time.monotonic()
    with background(cmd, server_log, impl_env(impl, args), REPO) as server:
        try:
            wait_for_port(args.host, args.port, server, args.start_timeout)
        except RuntimeError as exc:
            return Summary(label, [], [], f"echo server: {exc}\n{tail(server_log)}")
        print(f"[{label}] echo server up: {shlex.join(cmd)}  (log {server_log})", flush=True)
        try:
            status = run_bounded(
                [args.wstest, "-m", "fuzzingclient", "-s", str(spec)],
                wstest_log,
                wstest_env(),
                tmp,
                args.timeout,
                SectionProgress(label, started),
            )
        except RuntimeError as exc:
            return Summary(label, [], [], f"wstest: {exc}\n{tail(wstest_log)}")
        alive = server.poll() is None
    print(f"[{label}] wstest finished in {time.monotonic() - started:.1f}s (status {status})", flush=True)
    if not alive:
        print(f"[{label}] warning: the echo server exited during the run\n{tail(server_log)}")
    summary = results_for(outdir, agent, label)
    if summary.problem:
        summary.problem += f"\n{tail(wstest_log)}"
    return summary


def run_server_mode(impl: str, args: argparse.Namespace, tmp: Path) -> Summary:
    """wstest fuzzingserver, and the zzz client (or ``--client-cmd``) running every case against it."""
    label = f"client/{impl}"
    agent = f"zzz-{impl}"
    outdir = fresh_outdir(args.reports / "client" / impl)
    spec = write_spec(HERE / "fuzzingserver.json", outdir, args, agent, tmp)
    url = f"ws://{args.host}:{args.port}"
    if args.client_cmd:
        cmd = shlex.split(args.client_cmd.format(url=url, agent=agent, python=sys.executable))
    else:
        cmd = [sys.executable, str(HERE / "client.py"), "--url", url, "--agent", agent]
    wstest_log = outdir / "wstest.log"
    client_log = outdir / "client.log"
    if port_open(args.host, args.port):
        return Summary(label, [], [], f"something already listens on {args.host}:{args.port}")
    started = time.monotonic()
    wstest_cmd = [args.wstest, "-m", "fuzzingserver", "-s", str(spec), "--webport", "0"]
    with background(wstest_cmd, wstest_log, wstest_env(), tmp) as fuzzer:
        try:
            wait_for_port(args.host, args.port, fuzzer, args.start_timeout)
        except RuntimeError as exc:
            return Summary(label, [], [], f"wstest fuzzingserver: {exc}\n{tail(wstest_log)}")
        print(f"[{label}] fuzzingserver up; running {shlex.join(cmd)}  (log {client_log})", flush=True)
        try:
            status = run_bounded(
                cmd, client_log, impl_env(impl, args), REPO, args.timeout, lambda line: relay(label, line)
            )
        except RuntimeError as exc:
            return Summary(label, [], [], f"client: {exc}\n{tail(client_log)}")
    print(f"[{label}] client finished in {time.monotonic() - started:.1f}s (status {status})", flush=True)
    summary = results_for(outdir, agent, label)
    if status != 0:
        note = f"client exited with status {status}\n{tail(client_log)}"
        summary.problem = f"{summary.problem}\n{note}" if summary.problem else note
    return summary


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", choices=("client", "server"), help="which wstest fuzzer to run (see above)")
    parser.add_argument("--impl", choices=(*IMPLEMENTATIONS, "both"), default="both")
    parser.add_argument("--cases", help='comma-separated case patterns, e.g. "1.*,6.4.*" (default: all)')
    parser.add_argument("--exclude-cases", help="comma-separated case patterns to leave out")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("ZZZ_AUTOBAHN_PORT", "9001")))
    parser.add_argument("--wstest", default=default_wstest(), help="wstest executable (default: %(default)s)")
    parser.add_argument("--reports", type=Path, default=default_reports(), help="default: %(default)s")
    parser.add_argument("--timeout", type=float, default=1200.0, help="seconds for one wstest run")
    parser.add_argument("--start-timeout", type=float, default=30.0, help="seconds for a port to open")
    parser.add_argument(
        "--installed", action="store_true", help="test the installed zzz instead of the working tree"
    )
    parser.add_argument(
        "--server-cmd",
        help="client mode: run this server instead of echo_server.py ({host}, {port}, {python} are filled in)",
    )
    parser.add_argument(
        "--client-cmd",
        help="server mode: run this client instead of client.py ({url}, {agent}, {python} are filled in)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the selected mode for the selected implementations.

    Args:
        argv: Command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        0 when every case of every run passed, 1 otherwise.
    """
    args = parse_args(sys.argv[1:] if argv is None else argv)
    args.reports = args.reports.resolve()
    if not os.access(args.wstest, os.X_OK):
        print(
            f"wstest not found at {args.wstest}; run .ci/install_autobahn.sh (or set ZZZ_WSTEST)",
            file=sys.stderr,
        )
        return 1
    impls = IMPLEMENTATIONS if args.impl == "both" else (args.impl,)
    runner = run_client_mode if args.mode == "client" else run_server_mode
    summaries = []
    with tempfile.TemporaryDirectory(prefix="zzz-autobahn-") as tmp:
        for impl in impls:
            if args.mode == "client" and port_open(args.host, args.port):
                summaries.append(
                    Summary(f"server/{impl}", [], [], f"something already listens on {args.host}:{args.port}")
                )
                continue
            summaries.append(runner(impl, args, Path(tmp)))

    print()
    for s in summaries:
        if s.problem:
            print(f"{s.label}: ERROR {s.problem}")
        elif s.passed:
            print(f"{s.label}: PASS ({len(s.results)} cases)")
        else:
            print(f"{s.label}: FAIL ({len(s.failing)} of {len(s.results)} cases)")
    return 0 if summaries and all(s.passed for s in summaries) else 1


if __name__ == "__main__":
    sys.exit(main())
