"""socketify (uWebSockets in C, through cffi) echo and broadcast server, for the fan-out rows.

``/`` echoes each message with its opcode; ``/broadcast`` subscribes every connection to one
topic on open, and a text message from any of them is published to the topic with
``app.publish`` (uWebSockets' pub/sub: the fan-out loop and the writes are C; the sender gets it
too, like every other server here). Limits are raised so that uWebSockets neither drops nor
closes anything during a run: ``max_payload_length`` 16 MiB, ``max_backpressure`` 64 MiB (its
default of 64 KiB would make it skip slow receivers of a burst), ``idle_timeout`` 0 (off: the
receivers send nothing). ``--compression`` turns on its shared compressor (one compression per
published message for everybody: it answers with ``server_no_context_takeover``).

The wheel's Linux library is x86-64 only and links the system's ``libuv.so.1`` (Debian package
``libuv1``); without it the script exits saying so, and the rows show "failed to start".
"""

from __future__ import annotations

from typing import Any

from common import BROADCAST_PATH, ECHO_PATH, parse_args

try:
    from socketify import App, CompressOptions, OpCode
except OSError as exc:  # the wheel's C library did not load
    # socketify's Linux x86-64 library links the system's libuv.so.1 (and libz); its wheel has no
    # Linux library for other architectures.
    raise SystemExit(
        f"socketify's native library does not load ({exc}); it needs libuv.so.1 "
        "(Debian/Ubuntu: apt-get install libuv1) and an x86-64 Linux, macOS or Windows machine"
    ) from None

__all__ = ["build_app", "main"]

TOPIC = "all"


def build_app(compression: bool) -> Any:
    """The app with its two WebSocket routes."""
    app = App()
    comp = CompressOptions.SHARED_COMPRESSOR if compression else CompressOptions.DISABLED
    limits = {
        "compression": comp,
        "max_payload_length": 16 * 1024 * 1024,
        "max_backpressure": 64 * 1024 * 1024,
        "idle_timeout": 0,
    }

    def echo(ws: Any, message: Any, opcode: Any) -> None:
        ws.send(message, opcode)

    def subscribe(ws: Any) -> None:
        ws.subscribe(TOPIC)

    def fan_out(ws: Any, message: Any, opcode: Any) -> None:
        if opcode == OpCode.TEXT:
            app.publish(TOPIC, message, OpCode.TEXT, compression)

    app.ws(ECHO_PATH, {**limits, "message": echo})
    app.ws(BROADCAST_PATH, {**limits, "open": subscribe, "message": fan_out})
    return app


def main() -> None:
    """Entry point: ``python server_socketify.py --port P [--compression]``."""
    args = parse_args("socketify echo and broadcast server")
    app = build_app(args.compression)

    def listening(config: Any) -> None:
        print(f"listening on {args.host}:{args.port}", flush=True)

    app.listen({"port": args.port, "host": args.host}, listening)
    app.run()


if __name__ == "__main__":
    main()
