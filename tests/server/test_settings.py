"""zzz.settings: the groups, the flat names of App(**settings), and how one maps onto the other."""

from __future__ import annotations

import dataclasses

import pytest

import zzz
import zzz.server
from zzz.deflate import DeflateConfig
from zzz.settings import (
    FLAT_NAMES,
    Compression,
    FlowControl,
    HttpLimits,
    Operations,
    Security,
    Settings,
    StaticFiles,
    Telemetry,
    Timeouts,
    WsLimits,
)

GROUPS = {
    "ws": WsLimits,
    "http": HttpLimits,
    "timeouts": Timeouts,
    "flow": FlowControl,
    "telemetry": Telemetry,
    "permessage_deflate": Compression,
    "security": Security,
    "static": StaticFiles,
    "ops": Operations,
}


def test_public_name_is_the_settings_class() -> None:
    assert zzz.Settings is Settings
    assert zzz.server.Settings is Settings  # the old home still answers


def test_defaults_are_the_documented_ones() -> None:
    s = Settings()
    assert (s.max_message_size, s.max_frame_size, s.max_fragments) == (1 << 20, None, 4096)
    assert (s.max_request_line, s.max_header_size, s.max_header_count) == (8192, 8192, 128)
    assert (s.max_head_size, s.max_body_size, s.max_connections) == (65536, 1 << 20, 50_000)
    assert (s.max_backpressure, s.write_high_water, s.write_low_water) == (8 << 20, 64 * 1024, 16 * 1024)
    assert (s.open_timeout, s.close_timeout, s.ping_interval, s.ping_timeout) == (10.0, 10.0, 20.0, 20.0)
    assert (s.compression, s.deflate, s.allowed_origins, s.static_max_age) == (True, None, None, 86400)
    assert (s.proxy_headers, s.forwarded_allow_ips, s.metrics_path) == (False, ("127.0.0.1",), None)
    assert s.flow.max_queue == 16
    assert (s.proxy_headers, tuple(s.forwarded_allow_ips)) == (False, ("127.0.0.1",))
    assert (s.drain_batch, s.drain_interval, s.health_path) == (1000, 0.5, None)


@pytest.mark.parametrize(
    "bad",
    [
        {"drain_batch": 0},
        {"drain_batch": 1.5},
        {"drain_batch": True},
        {"drain_interval": -0.1},
        {"drain_interval": float("nan")},
        {"drain_interval": "1"},
        {"health_path": "healthz"},
        {"health_path": 3},
    ],
)
def test_operations_refuse_bad_values(bad: dict[str, object]) -> None:
    name = next(iter(bad))
    with pytest.raises(ValueError, match=name):
        zzz.App(**bad)


def test_every_flat_name_reads_its_group_field() -> None:
    values: dict[str, object] = {}
    for i, (flat, (group, field)) in enumerate(FLAT_NAMES.items()):
        special: dict[str, object] = {
            "deflate": DeflateConfig(),
            "allowed_origins": ("x",),
            "health_path": "/h",
        }
        values[flat] = special.get(flat, 1000 + i)
    s = Settings(**values)
    for flat, (group, field) in FLAT_NAMES.items():
        assert getattr(s, flat) == values[flat], flat
        assert getattr(getattr(s, group), field) == values[flat], flat


def test_flat_names_cover_every_group_field_once() -> None:
    mapped = set(FLAT_NAMES.values())
    assert len(mapped) == len(FLAT_NAMES)
    every = {(g, f.name) for g, cls in GROUPS.items() for f in dataclasses.fields(cls)}
    assert every - mapped == {("flow", "max_queue")}  # the client's only
    assert {f.name for f in dataclasses.fields(Settings)} == set(GROUPS)


def test_groups_and_flat_names_together() -> None:
    s = Settings(ws=WsLimits(max_message_size=10, max_fragments=3), max_fragments=5, open_timeout=None)
    assert s.ws == WsLimits(max_message_size=10, max_fragments=5)
    assert s.timeouts == Timeouts(open=None)
    assert s.http == HttpLimits()


def test_unknown_name_and_wrong_group_are_type_errors() -> None:
    with pytest.raises(TypeError, match="unknown setting.*max_queue"):
        Settings(max_queue=3)
    with pytest.raises(TypeError, match="ws= takes a WsLimits"):
        Settings(ws=Timeouts())  # type: ignore[arg-type]


def test_frozen_and_replaceable() -> None:
    s = Settings(max_message_size=7)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.ws = WsLimits()  # type: ignore[misc]
    with pytest.raises(AttributeError):
        s.max_message_size = 3  # type: ignore[misc]
    t = dataclasses.replace(s, timeouts=Timeouts(close=1.0))
    assert t.max_message_size == 7 and t.close_timeout == 1.0
    assert s == Settings(max_message_size=7) and s != t


def test_app_takes_the_flat_names() -> None:
    app = zzz.App(max_message_size=5, allowed_origins=["https://a.example"], compression=False)
    assert app.settings.ws.max_message_size == 5
    assert app.settings.security.allowed_origins == ["https://a.example"]
    assert app.settings.permessage_deflate == Compression(enabled=False)
    with pytest.raises(TypeError, match="unknown App setting"):
        zzz.App(ws=WsLimits())
