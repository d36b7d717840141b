"""Run every atheris target of fuzz/ for a bounded time and report: ``python fuzz/run.py --seconds 60``.

Each target runs in its own process for ``--seconds`` (so the whole run takes about that times
the number of targets). The corpus grows in ``reports/fuzz/corpus/<target>/`` and is reused by the
next run; a crashing input is written to ``reports/fuzz/crashes/<target>/`` and the run exits 1.
The compiled core must be built (``python setup.py build_ext --inplace``): the differential
targets compare it with the pure-Python twin.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["TARGETS", "main"]

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TARGETS = ("frame_reader", "utf8", "http", "extensions", "connection", "wire", "outbox")


def _run_target(name: str, seconds: int, out: Path, rss_limit_mb: int) -> tuple[int, str, list[Path]]:
    corpus = out / "corpus" / name
    crashes = out / "crashes" / name
    logs = out / "logs"
    for path in (corpus, crashes, logs):
        path.mkdir(parents=True, exist_ok=True)
    before = set(crashes.iterdir())
    cmd = [
        sys.executable,
        str(HERE / f"fuzz_{name}.py"),
        str(corpus),
        f"-max_total_time={seconds}",
        f"-artifact_prefix={crashes}/",
        f"-rss_limit_mb={rss_limit_mb}",
        "-timeout=20",
        "-print_final_stats=1",
    ]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("ZZZ_NO_EXTENSIONS", None)  # the differential targets need both cores
    log = logs / f"{name}.log"
    with log.open("w") as handle:
        # Generous wall-clock cap: libFuzzer stops itself at max_total_time.
        try:
            code = subprocess.run(
                cmd,
                cwd=ROOT,
                env=env,
                stdout=handle,
                stderr=subprocess.STDOUT,
                check=False,
                timeout=seconds + 120,
            ).returncode
        except subprocess.TimeoutExpired:
            code = -1
    text = log.read_text(errors="replace")
    runs = re.findall(r"Done (\d+) runs in (\d+) second", text)
    summary = f"{runs[-1][0]} runs in {runs[-1][1]} s" if runs else "no summary"
    new = sorted(set(crashes.iterdir()) - before)
    return code, summary, new


def main(argv: list[str] | None = None) -> int:
    """Run the targets; return 0 when none crashed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=60, help="time per target (default 60)")
    parser.add_argument(
        "--targets", default=",".join(TARGETS), help="comma-separated subset of " + ", ".join(TARGETS)
    )
    parser.add_argument(
        "--out", default=str(ROOT / "reports" / "fuzz"), help="corpus, crashes and logs go here"
    )
    parser.add_argument("--rss-limit-mb", type=int, default=2048)
    args = parser.parse_args(argv)
    try:
        from zzz import _speedups  # noqa: F401
    except ImportError:
        print(
            "fuzz/run.py: zzz._speedups is not built; run `python setup.py build_ext --inplace`",
            file=sys.stderr,
        )
        return 2
    names = [n.strip() for n in args.targets.split(",") if n.strip()]
    unknown = set(names) - set(TARGETS)
    if unknown:
        parser.error(f"unknown target(s): {', '.join(sorted(unknown))}")
    out = Path(args.out)
    failed = False
    start = time.monotonic()
    for name in names:
        code, summary, crashes = _run_target(name, args.seconds, out, args.rss_limit_mb)
        status = "ok" if code == 0 and not crashes else f"FAILED (exit {code})"
        failed |= status != "ok"
        print(f"fuzz {name:13s} {status:18s} {summary}", flush=True)
        for crash in crashes:
            print(f"    crash input: {crash}  (reproduce: python fuzz/fuzz_{name}.py {crash})", flush=True)
        if code != 0 and not crashes:
            print(f"    see {out / 'logs' / (name + '.log')}", flush=True)
    print(
        f"fuzz: {len(names)} targets, {time.monotonic() - start:.0f} s, {'FAILED' if failed else 'no crash'}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
