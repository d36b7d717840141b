"""The Python client: ``async with zzz.connect(url) as ws``, ``send``, ``recv`` and ``async for``.

Start the echo server first (``python examples/echo.py``), then run
``python examples/client.py [--host H] [--port N]``: it sends a few messages, prints what comes
back and closes the connection with code 1000.
"""

from __future__ import annotations

import argparse
import asyncio

import zzz

__all__ = ["main"]


async def main(url: str, count: int = 3) -> list[str | bytes]:
    """Talk to the echo server at ``url``; return what it sent back, in order.

    Args:
        url: the echo endpoint, e.g. ``ws://127.0.0.1:8080/ws/echo``.
        count: how many numbered messages to stream and read back with ``async for``.
    """
    got: list[str | bytes] = []
    async with zzz.connect(url, open_timeout=5) as ws:
        ws.send("hello")
        reply = await ws.recv()  # zzz.Text or zzz.Binary
        assert isinstance(reply, zzz.Text)
        got.append(reply.data)

        ws.send_binary(b"\x00\x01\xfe\xff")
        binary = await ws.recv()
        assert isinstance(binary, zzz.Binary)
        got.append(binary.data)

        for n in range(count):  # sends don't wait: these go out back to back
            ws.send(f"message {n}")
        async for msg in ws:  # ends when the server closes normally; we stop earlier
            got.append(msg.data)
            if len(got) == count + 2:
                break
    # Leaving the block sent a close frame (1000) and waited for the server's answer.
    for item in got:
        print(repr(item))
    return got


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="zzz client talking to examples/echo.py")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    asyncio.run(main(f"ws://{args.host}:{args.port}/ws/echo"))
