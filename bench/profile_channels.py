"""Instructions per round trip of the zzz server, under callgrind: Channels push + reply against echo.

Wall-clock throughput means little on a shared machine; the number of instructions the server
executes per round trip does not move with the load, so it is the proxy used here for the Channels
targets of issue #14 (push + reply ≥ 0.8× echo request/response, channel broadcast ≥ 0.8×
``zzz.broadcast``).

For each scenario the server (``bench/echo/server_zzz.py``'s app, on uvloop, port 0) runs twice under
``valgrind --tool=callgrind``, once for ``--small`` and once for ``--large`` round trips from a
minimal blocking client in this process; the difference of the two totals divided by the difference
of the counts is the cost of one round trip, with start-up, handshake and join cancelled out::

    python bench/profile_channels.py                       # every scenario, compiled core
    ZZZ_NO_EXTENSIONS=1 python bench/profile_channels.py   # the pure-Python twin
    python bench/profile_channels.py --scenarios ch-rr --keep  # keep callgrind.out.* for annotate

Scenarios: ``echo`` (32 B text echoed, the ``rr-32`` row), ``ch-rr`` (a push of ``echo`` with a
~32 B JSON payload, answered by its ``phx_reply``: the object form, as the load client speaks it),
``ch-rr-array`` (the same in the array form, ``vsn=2.0.0``, as phoenix.js speaks it),
``bcast-N`` (one 64 B text to N connections of ``/broadcast``) and ``ch-bcast-N`` (one ``pub`` push
broadcast by its sync handler to N subscribers); ``burst`` and ``ch-burst`` the same with ``--burst``
messages (10) sent in one write per round, counted per round; N is ``--fanout``.

``--history N`` gives the bench topics a ``zzz.History(N)``, as the ``zzz history`` rows of
``bench/run.py`` do: every broadcast is numbered, stored and carries its position as ``meta``.

``--no-valgrind`` runs the same without callgrind (a smoke test of the script; no figures).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import selectors
import socket
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
TOPIC = "bench:profile"


# -- the server (run in a child process, under callgrind) -------------------------------------------------


def serve(history: int) -> None:
    """Serve the bench app on 127.0.0.1, port 0; print the port; stop when stdin closes."""
    sys.path.insert(0, str(HERE / "echo"))
    import uvloop
    from server_zzz import build_app  # type: ignore[import-not-found]

    async def main() -> None:
        server = await build_app(history=history).start(host="127.0.0.1", port=0)
        print(server.port, flush=True)
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def stdin_readable() -> None:
            if not done.done():
                done.set_result(None)

        loop.add_reader(sys.stdin.fileno(), stdin_readable)
        await done
        loop.remove_reader(sys.stdin.fileno())
        await server.close()

    uvloop.run(main())


# -- a minimal blocking client ------------------------------------------------------------------------------


class Client:
    """One WebSocket connection with blocking reads: just enough protocol for the bench paths."""

    def __init__(self, port: int, path: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        if not head.startswith(b"HTTP/1.1 101"):
            raise SystemExit(f"upgrade of {path} refused: {head[:60]!r}")

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise SystemExit("server closed the connection")
        self.buf += chunk

    def send(self, *texts: str) -> None:
        """Send masked text frames (zero mask: the server unmasks it all the same), in one write."""
        out = b""
        for text in texts:
            data = text.encode()
            n = len(data)
            if n < 126:
                head = struct.pack("!BB", 0x81, 0x80 | n)
            else:
                head = struct.pack("!BBH", 0x81, 0x80 | 126, n)
            out += head + b"\0\0\0\0" + data
        self.sock.sendall(out)

    def frame(self) -> str:
        """The next whole text frame from the server (unmasked, unfragmented, as zzz sends them)."""
        while True:
            buf = self.buf
            if len(buf) >= 2:
                n, start = buf[1] & 0x7F, 2
                if n == 126:
                    n, start = (struct.unpack_from("!H", buf, 2)[0] if len(buf) >= 4 else 1 << 30), 4
                if len(buf) >= start + n:
                    self.buf = buf[start + n :]
                    return buf[start : start + n].decode()
            self._fill()

    def close(self) -> None:
        self.sock.close()


def _join(client: Client, array: bool) -> None:
    if array:
        client.send(json.dumps(["0", "0", TOPIC, "phx_join", {}]))
    else:
        client.send(
            json.dumps({"topic": TOPIC, "event": "phx_join", "payload": {}, "ref": "0", "join_ref": "0"})
        )
    # The ok reply, then the presence_state push: the round trips start after both.
    while '"presence_state"' not in client.frame():
        pass


def _channel_clients(port: int, count: int, array: bool) -> list[Client]:
    clients = [Client(port, "/socket/websocket?vsn=2.0.0" if array else "/socket")]
    clients += [Client(port, "/socket") for _ in range(count - 1)]
    for c in clients:
        _join(c, array)
    return clients


def run_echo(port: int, n: int, _fanout: int) -> None:
    """``n`` round trips of a 32 B text message on ``/``."""
    c = Client(port, "/")
    text = "x" * 32
    for _ in range(n):
        c.send(text)
        if c.frame() != text:
            raise SystemExit("echo: wrong reply")
    c.close()


def _ch_rr(port: int, n: int, array: bool) -> None:
    (c,) = _channel_clients(port, 1, array)
    for i in range(n):
        payload = f'{{"seq":{i},"body":"abcdefghijklmn"}}'
        if array:
            c.send(f'["0","{i}","{TOPIC}","echo",{payload}]')
        else:
            c.send(f'{{"topic":"{TOPIC}","event":"echo","payload":{payload},"ref":"{i}","join_ref":"0"}}')
        reply = json.loads(c.frame())
        got = reply[4] if array else reply["payload"]
        if got != {"status": "ok", "response": json.loads(payload)}:
            raise SystemExit(f"ch-rr: wrong reply {reply!r}")
    c.close()


def run_ch_rr(port: int, n: int, _fanout: int) -> None:
    """``n`` pushes of ``echo`` (object form), each answered by its ``phx_reply``."""
    _ch_rr(port, n, False)


def run_ch_rr_array(port: int, n: int, _fanout: int) -> None:
    """The same in the array form (phoenix.js, ``vsn=2.0.0``)."""
    _ch_rr(port, n, True)


def _fan(
    clients: list[Client],
    n: int,
    send: Callable[[int], None],
    check: str,
    last: Callable[[int], str] | None = None,
) -> None:
    """``n`` rounds of ``send(i)``, each waited for until every client has the round's ``last(i)``."""
    sel = selectors.DefaultSelector()
    for c in clients:
        sel.register(c.sock, selectors.EVENT_READ, c)
    for i in range(n):
        send(i)
        if last is not None:
            mark = last(i)
        else:
            mark = f'"seq":{i},' if check else f"{i:08d}"
        for c in clients:
            while True:
                text = c.frame()
                if mark in text:
                    break
                if check and (last is None or check not in text) and '"presence_' not in text:
                    raise SystemExit(f"broadcast: unexpected {text!r}")
    for c in clients:
        c.close()


def _broadcast_clients(port: int, fanout: int) -> list[Client]:
    """``fanout`` connections of ``/broadcast``, every one registered."""
    clients = [Client(port, "/broadcast") for _ in range(fanout)]
    # The server registers a connection at its on_open: wait until a broadcast reaches all of them.
    clients[0].send("w" * 64)
    for c in clients:
        c.frame()
    return clients


def _numbered(seq: int) -> str:
    """Broadcast text number ``seq``: 64 B, starting with the number (what ``_fan`` looks for)."""
    return f"{seq:08d}" + "b" * 56


def _pub(seq: int, ref: str) -> str:
    """A ``pub`` push of payload ``seq`` on ``TOPIC``; ``ref`` is JSON (``null``: no reply wanted)."""
    return (
        f'{{"topic":"{TOPIC}","event":"pub","payload":{{"seq":{seq},"body":"abcdefghijklmnopqrstuvwxyz0123"}},'
        f'"ref":{ref},"join_ref":"0"}}'
    )


def run_bcast(port: int, n: int, fanout: int) -> None:
    """``n`` broadcasts of 64 B text to ``fanout`` connections of ``/broadcast``, one at a time."""
    clients = _broadcast_clients(port, fanout)
    _fan(clients, n, lambda i: clients[0].send(_numbered(i)), "")


def run_burst(port: int, n: int, fanout: int) -> None:
    """``n`` rounds of ``BURST`` 64 B texts sent in one write to ``/broadcast`` (``fanout`` connections)."""
    clients = _broadcast_clients(port, fanout)
    _fan(
        clients,
        n,
        lambda i: clients[0].send(*(_numbered(i * BURST + k) for k in range(BURST))),
        "",
        lambda i: _numbered(i * BURST + BURST - 1)[:8],
    )


def run_ch_bcast(port: int, n: int, fanout: int) -> None:
    """``n`` ``pub`` pushes broadcast by the sync handler to ``fanout`` subscribers, one at a time."""
    clients = _channel_clients(port, fanout, False)
    _fan(clients, n, lambda i: clients[0].send(_pub(i, f'"p{i}"')), '"seq"')


def run_ch_burst(port: int, n: int, fanout: int) -> None:
    """``n`` rounds of ``BURST`` ``pub`` pushes in one write, each broadcast to ``fanout`` subscribers."""
    clients = _channel_clients(port, fanout, False)
    _fan(
        clients,
        n,
        lambda i: clients[0].send(*(_pub(i * BURST + k, "null") for k in range(BURST))),
        '"seq"',
        lambda i: f'"seq":{i * BURST + BURST - 1},',
    )


SCENARIOS: dict[str, Callable[[int, int, int], None]] = {
    "echo": run_echo,
    "ch-rr": run_ch_rr,
    "ch-rr-array": run_ch_rr_array,
    "bcast": run_bcast,
    "ch-bcast": run_ch_bcast,
    "burst": run_burst,
    "ch-burst": run_ch_burst,
}
BURST = 10  # messages per round of the burst scenarios (--burst)
HISTORY = 0  # broadcasts each bench topic keeps (--history; 0: no History)


# -- driving ------------------------------------------------------------------------------------------------


def measure(scenario: str, n: int, fanout: int, valgrind: bool, keep: Path | None) -> int:
    """Run the server for one load; return the instructions it executed (0 without valgrind)."""
    with tempfile.TemporaryDirectory(prefix="zzz-prof-") as tmp:
        return _measure_in(Path(tmp) / f"callgrind.out.{scenario}.{n}", scenario, n, fanout, valgrind, keep)


def _measure_in(out: Path, scenario: str, n: int, fanout: int, valgrind: bool, keep: Path | None) -> int:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--serve", "--history", str(HISTORY)]
    if valgrind:
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *cmd]
    server = subprocess.Popen(
        cmd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=None if os.environ.get("PROFILE_DEBUG") else subprocess.DEVNULL,
    )
    try:
        assert server.stdout is not None and server.stdin is not None
        port = int(server.stdout.readline())
        SCENARIOS[scenario](port, n, fanout)
        server.stdin.close()
        server.wait(timeout=300)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    if not valgrind:
        return 0
    match = re.search(r"^(?:summary|totals): (\d+)", out.read_text(), re.MULTILINE)
    if match is None:
        raise SystemExit(f"no totals in {out}")
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        out.replace(keep / out.name)
    return int(match.group(1))


def main() -> None:
    """Command line: see the module docstring."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--scenarios", default="echo,ch-rr,ch-rr-array,bcast,ch-bcast")
    p.add_argument("--small", type=int, default=500, help="round trips of the first run")
    p.add_argument("--large", type=int, default=3000, help="round trips of the second run")
    p.add_argument("--fanout", type=int, default=100, help="connections of the broadcast scenarios")
    p.add_argument("--burst", type=int, default=10, help="messages per round of the burst scenarios")
    p.add_argument("--history", type=int, default=0, help="broadcasts each bench topic keeps (zzz.History)")
    p.add_argument("--no-valgrind", action="store_true", help="smoke-test the script: no figures")
    p.add_argument("--keep", type=Path, default=None, help="keep the callgrind outputs in this folder")
    args = p.parse_args()
    if args.serve:
        serve(args.history)
        return
    global BURST, HISTORY
    BURST, HISTORY = args.burst, args.history
    impl = "python" if os.environ.get("ZZZ_NO_EXTENSIONS") else "compiled"
    extra = f"; History({HISTORY}) on the topics" if HISTORY else ""
    print(
        f"zzz server instructions per round trip ({impl} core; {args.large} - {args.small} round trips{extra})"
    )
    base: float | None = None
    for scenario in args.scenarios.split(","):
        if scenario not in SCENARIOS:
            raise SystemExit(f"unknown scenario {scenario!r}; known: {', '.join(SCENARIOS)}")
        small = measure(scenario, args.small, args.fanout, not args.no_valgrind, args.keep)
        large = measure(scenario, args.large, args.fanout, not args.no_valgrind, args.keep)
        per = (large - small) / (args.large - args.small)
        if "burst" in scenario:
            name = f"{scenario}{BURST}-{args.fanout}"  # per round of BURST messages
        else:
            name = f"{scenario}-{args.fanout}" if "bcast" in scenario else scenario
        if scenario == "echo":
            base = per
        ratio = f"  ({per / base:.2f}x echo)" if base and scenario.startswith("ch-rr") else ""
        print(f"{name:>16}: {per:12,.0f}{ratio}", flush=True)


if __name__ == "__main__":
    main()
