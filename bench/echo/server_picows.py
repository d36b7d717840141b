"""picows echo and broadcast server on plain uvloop transports, for the echo benchmark.

Each frame is echoed as it comes (same opcode, same FIN bit); picows has no permessage-deflate.
"""

from __future__ import annotations

from typing import ClassVar

import uvloop
from common import BROADCAST_PATH, ECHO_PATH, parse_args
from picows import WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server

__all__ = ["BroadcastListener", "EchoListener", "main"]

_DATA = (WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.CONTINUATION)


class EchoListener(WSListener):  # type: ignore[misc]
    """Send every data frame straight back."""

    def on_ws_frame(self, transport: WSTransport, frame: object) -> None:
        """Echo data frames; answer a close."""
        kind = frame.msg_type  # type: ignore[attr-defined]
        if kind in _DATA:
            transport.send(kind, frame.get_payload_as_memoryview(), frame.fin)  # type: ignore[attr-defined]
        elif kind == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())  # type: ignore[attr-defined]
            transport.disconnect()


class BroadcastListener(WSListener):  # type: ignore[misc]
    """Register on connect; a text message goes to every registered connection."""

    members: ClassVar[set[WSTransport]] = set()  # shared by every connection on the path

    def on_ws_connected(self, transport: WSTransport) -> None:
        """Join the broadcast set."""
        self.members.add(transport)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        """Leave the broadcast set."""
        self.members.discard(transport)

    def on_ws_frame(self, transport: WSTransport, frame: object) -> None:
        """Fan a text message out; answer a close."""
        kind = frame.msg_type  # type: ignore[attr-defined]
        if kind == WSMsgType.TEXT:
            payload = frame.get_payload_as_bytes()  # type: ignore[attr-defined]
            for member in self.members:
                member.send(WSMsgType.TEXT, payload)
        elif kind == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())  # type: ignore[attr-defined]
            transport.disconnect()


def route(request: WSUpgradeRequest) -> WSListener | None:
    """Pick the listener by path; None means 404."""
    path = request.path.decode()
    if path == ECHO_PATH:
        return EchoListener()
    if path == BROADCAST_PATH:
        return BroadcastListener()
    return None


async def serve(host: str, port: int) -> None:
    """Listen until killed.  aiofastnet is turned off so every server runs on uvloop's transports."""
    server = await ws_create_server(
        route, host, port, max_frame_size=2**24, use_aiofastnet=False, backlog=4096
    )
    await server.serve_forever()


def main() -> None:
    """Entry point: ``python server_picows.py --port P``."""
    args = parse_args("picows echo server")
    if args.compression:
        raise SystemExit("picows has no permessage-deflate")
    uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
