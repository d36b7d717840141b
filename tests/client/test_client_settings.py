"""``connect(**flat)`` builds the settings groups the server uses too (``zzz.settings``), and
the client's connection and driver read them."""

from __future__ import annotations

import ssl

import pytest
from server.helpers import serve, url

import zzz
from zzz.client import ClientSettings
from zzz.deflate import DeflateConfig
from zzz.settings import Compression, FlowControl, Timeouts, WsLimits


def test_flat_keywords_land_in_their_groups() -> None:
    context = ssl.create_default_context()
    config = DeflateConfig(compress_level=1)
    settings = zzz.connect(
        "wss://example.invalid/",
        subprotocols=["a", "b"],
        compression=False,
        extra_headers={"x-one": "1"},
        max_message_size=1000,
        max_frame_size=500,
        max_fragments=7,
        open_timeout=1.5,
        close_timeout=2.5,
        ping_interval=3.5,
        ping_timeout=4.5,
        max_queue=9,
        write_limit=4000,
        ssl=context,
        deflate=config,
    )._settings
    assert settings == ClientSettings(
        ws=WsLimits(max_message_size=1000, max_frame_size=500, max_fragments=7),
        timeouts=Timeouts(open=1.5, close=2.5, ping_interval=3.5, ping_timeout=4.5),
        flow=FlowControl(write_high_water=4000, write_low_water=1000, max_backpressure=None, max_queue=9),
        permessage_deflate=Compression(enabled=False, config=config),
        subprotocols=["a", "b"],
        extra_headers={"x-one": "1"},
        ssl=context,
    )


def test_the_defaults_are_the_groups_defaults_without_backpressure() -> None:
    settings = zzz.connect("ws://127.0.0.1/")._settings
    assert settings.ws == WsLimits()
    assert settings.timeouts == Timeouts()
    assert settings.flow == FlowControl(max_backpressure=None)
    assert settings.permessage_deflate == Compression()


def test_max_queue_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="max_queue must be at least 1"):
        zzz.connect("ws://127.0.0.1/", max_queue=0)


async def test_the_connection_and_the_driver_use_the_groups() -> None:
    app = zzz.App([zzz.Router.ws("/ws", zzz.WsConfig(on_message=lambda ws, msg: None))])
    async with serve(app) as server:
        options = {"max_message_size": 1234, "write_limit": 4000, "close_timeout": 3}
        async with zzz.connect(url(server, "/ws"), **options) as ws:  # type: ignore[arg-type]
            proto = ws._proto
            assert proto.transport is not None
            assert proto.transport.get_write_buffer_limits() == (1000, 4000)
            assert proto._close_timeout == 3
            reader, _ = proto.conn.fast_path()  # type: ignore[union-attr]
            assert reader.max_message_size == 1234
