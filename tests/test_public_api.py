"""The public names of the contract exist at the top level and are listed in ``zzz.__all__``."""

from __future__ import annotations

import zzz

CONTRACT = [
    "App",
    "Binary",
    "ChannelConfig",
    "ChannelDef",
    "ChannelSocket",
    "CloseCode",
    "ConnectionClosed",
    "Controller",
    "History",
    "JoinResult",
    "Presence",
    "RedisPubSub",
    "Reply",
    "Request",
    "Response",
    "Router",
    "Text",
    "WebSocket",
    "WsConfig",
    "WsMessage",
    "connect",
]


def test_contract_names_resolve_and_are_exported() -> None:
    for name in CONTRACT:
        assert getattr(zzz, name) is not None, name
        assert name in zzz.__all__, name
    assert sorted(zzz.__all__) == sorted(zzz._EXPORTS)
    for name in zzz.__all__:
        getattr(zzz, name)


def test_close_codes_and_message_classes() -> None:
    assert [int(c) for c in zzz.CloseCode] == list(range(1000, 1015))
    text, binary = zzz.Text("x"), zzz.Binary(b"y")
    match text:
        case zzz.Binary(_):
            raise AssertionError("a Text matched Binary")
        case zzz.Text(data):
            assert data == "x"
    assert binary.data == b"y" and text != zzz.Text("y") and text == zzz.Text("x")
