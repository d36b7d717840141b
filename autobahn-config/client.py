"""The zzz client under test for the Autobahn fuzzingserver run.
Asks wstest how many cases there are, echoes every case, then has wstest write its reports.

Usage: ``python autobahn-config/client.py --url ws://127.0.0.1:9001 --agent zzz-cython``
(normally started by ``run.py server``). Built only with zzz's public client API.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import os
import sys
import time
from urllib.parse import quote

import zzz
import zzz.core

__all__ = ["MAX_FRAGMENTS", "MAX_SIZE", "echo_case", "main", "run_all"]

# The suite's 9.x cases send messages of up to 16 MiB,
MAX_SIZE = 16 * 2**20
# and 4 MiB messages in 64-byte fragments (9.3.1, 9.4.1): 65,536 frames, plus the empty final frame
# wstest adds when the size divides evenly.
MAX_FRAGMENTS = 4 * 2**20 // 64 + 1
# The slowest cases (9.x with 16 MiB messages, 6.4.x waiting on purpose) take seconds; a case that
# hangs for this long is stuck, and the suite records whatever it saw.
CASE_TIMEOUT = 120.0


async def _send(result: object) -> None:
    # The client API may make send a coroutine or a plain call; the echo works either way.
    if inspect.isawaitable(result):
        await result


async def echo_case(url: str) -> None:
    """Connect, echo every message with its type until the server closes, then return.

    Args:
        url: The ``runCase`` URL of one case.
    """
    async with zzz.connect(
        url, compression=True, max_message_size=MAX_SIZE, max_frame_size=MAX_SIZE, max_fragments=MAX_FRAGMENTS
    ) as ws:
        async for msg in ws:
            if isinstance(msg, zzz.Text):
                await _send(ws.send(msg.data))
            else:
                await _send(ws.send_binary(msg.data))


async def case_count(base: str) -> int:
    """Ask the fuzzingserver how many cases it will run.

    Args:
        base: ``ws://host:port`` of the fuzzingserver.

    Returns:
        The number of cases.
    """
    count: int | None = None
    async with zzz.connect(f"{base}/getCaseCount") as ws:
        async for msg in ws:
            count = int(msg.data)
    if count is None:
        raise RuntimeError("the fuzzingserver closed without sending the case count")
    return count


async def run_all(base: str, agent: str, *, verbose: bool = False) -> int:
    """Run every case against the fuzzingserver, then ask it to write the reports.

    Errors inside a case are expected (many cases send invalid data on purpose) and only
    logged: the verdict is the fuzzingserver's, read from its report.

    Args:
        base: ``ws://host:port`` of the fuzzingserver.
        agent: The name the reports file the results under.
        verbose: Print every case's outcome, not just progress.

    Returns:
        The number of cases run.
    """
    count = await case_count(base)
    print(f"client: {count} cases, agent {agent}, zzz {zzz.core.IMPLEMENTATION}", flush=True)
    started = time.monotonic()
    for n in range(1, count + 1):
        url = f"{base}/runCase?case={n}&agent={quote(agent)}"
        try:
            await asyncio.wait_for(echo_case(url), CASE_TIMEOUT)
            outcome = "closed"
        except asyncio.TimeoutError:
            outcome = f"timed out after {CASE_TIMEOUT:.0f}s"
        except Exception as exc:  # noqa: BLE001 - a case may end in any error; the suite judges it
            outcome = f"{type(exc).__name__}: {exc}"
        if verbose or outcome.startswith("timed out"):
            print(f"client: case {n}: {outcome}", flush=True)
        if n % 50 == 0 or n == count:
            print(f"client: {n}/{count} cases, {time.monotonic() - started:.0f}s", flush=True)
    async with zzz.connect(f"{base}/updateReports?agent={quote(agent)}") as ws:
        async for _ in ws:
            pass
    return count


def main(argv: list[str]) -> int:
    """Parse the command line and run every case.

    Args:
        argv: Command-line arguments.

    Returns:
        The process exit status: 0 when the run completed (whatever the verdicts).
    """
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default=os.environ.get("ZZZ_AUTOBAHN_URL", "ws://127.0.0.1:9001"))
    parser.add_argument("--agent", default=f"zzz-{zzz.core.IMPLEMENTATION}")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    expected = os.environ.get("ZZZ_AUTOBAHN_IMPL")
    if expected and expected != zzz.core.IMPLEMENTATION:
        print(
            f"client: expected the {expected} implementation but zzz.core uses"
            f" {zzz.core.IMPLEMENTATION} (is the extension built? is ZZZ_NO_EXTENSIONS set?)",
            file=sys.stderr,
        )
        return 2
    asyncio.run(run_all(args.url.rstrip("/"), args.agent, verbose=args.verbose))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
