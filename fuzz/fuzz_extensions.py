"""Atheris target: the extension and subprotocol header parsers and permessage-deflate
negotiation (``zzz.handshake.parse_extensions``, ``select_subprotocol``, ``zzz.deflate.negotiate``).

``parse_extensions`` may raise only ``ValueError``; negotiation never raises, and what it answers
parses back to exactly one valid permessage-deflate response that a client accepts.
"""

from __future__ import annotations

import sys

import _util  # noqa: F401
import atheris

with atheris.instrument_imports():
    from zzz import deflate, handshake

SEEDS = [
    "permessage-deflate; client_max_window_bits",
    'permessage-deflate; server_max_window_bits="10"; client_no_context_takeover, x-webkit-deflate-frame',
    "__proto__, constructor; prototype=1",
]


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    values = [fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, 512)) for _ in range(fdp.ConsumeIntInRange(1, 3))]
    if fdp.ConsumeBool():
        values[0] = SEEDS[fdp.ConsumeIntInRange(0, len(SEEDS) - 1)] + values[0]
    config = deflate.DeflateConfig(
        server_max_window_bits=fdp.ConsumeIntInRange(8, 15),
        client_max_window_bits=fdp.ConsumeIntInRange(8, 15),
        server_no_context_takeover=fdp.ConsumeBool(),
        client_no_context_takeover=fdp.ConsumeBool(),
    )
    supported = [s for s in fdp.ConsumeUnicode(64).split(",") if handshake.is_token(s)]
    chosen = handshake.select_subprotocol(values, supported)
    assert chosen is None or chosen in supported
    handshake.parse_header_tokens(values)
    try:
        offers = handshake.parse_extensions(values)
    except ValueError:
        assert deflate.negotiate_request(values, config) is None
        return
    for name, params in offers:
        assert handshake.is_token(name)
        for param, value in params:
            assert handshake.is_token(param) and (value is None or handshake.is_token(value))
    answer = deflate.negotiate(offers, config)
    assert answer == deflate.negotiate_request(values, config)
    if answer is None:
        return
    header, agreed = answer
    ((name, params),) = handshake.parse_extensions([header])
    assert name == deflate.EXTENSION_NAME
    assert 8 <= agreed.server_max_window_bits <= 15 and 8 <= agreed.client_max_window_bits <= 15
    assert agreed.server_max_window_bits <= config.server_max_window_bits
    # Both ends can build their state from it.
    deflate.PerMessageDeflate(agreed, is_server=True).compress(b"x")
    deflate.PerMessageDeflate(agreed, is_server=False)


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
