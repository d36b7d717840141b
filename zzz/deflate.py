"""permessage-deflate (RFC 7692): negotiation of its parameters and bounded per-message (de)compression.

Sans-I/O: turns offers into answers and whole messages into payloads; frames are the caller's job.

Defaults are chosen for many idle connections on one machine. Measured with tracemalloc (zlib
allocates through ``PyMem_RawMalloc``, which it traces) on CPython 3.11 with zlib 1.2.13:

===========================================  ===========  ==============
zlib object                                   wbits 12     wbits 15
===========================================  ===========  ==============
compressor, memLevel 5                        38 KiB       150 KiB
compressor, memLevel 8 (zlib's default)       150 KiB      262 KiB
decompressor (window allocated on first use)  11 KiB       39 KiB
===========================================  ===========  ==============

So a server connection with the defaults (server window 12, memLevel 5, client asked for 12)
costs about 49 KiB once both directions have been used, against about 301 KiB with zlib's own
defaults (15/8). Both objects are created lazily: a connection that never sends or receives a
compressed message costs nothing, and a side with ``*_no_context_takeover`` drops its object
after every message, so an idle connection holds only what context takeover needs.

Choices, all in ``DeflateConfig``:

* ``server_max_window_bits = 12`` and ``client_max_window_bits = 12``: a quarter of the memory of
  15 for a few percent of ratio on typical JSON; clients that don't offer
  ``client_max_window_bits`` keep 15, as the RFC requires.
* ``mem_level = 5``: the hash table dominates the compressor's memory; 5 instead of 8 saves
  112 KiB per connection and, measured on small JSON messages, neither ratio nor speed got worse.
* ``compress_level = 6``: zlib's default; on small JSON messages it compressed about 15% better
  than level 1 at about the same speed (per-call overhead dominates small messages).
* ``min_size = 0``: every message is compressed when the extension is in use. With context
  takeover even short repetitive messages shrink, and it keeps Autobahn's 12.x/13.x cases
  meaningful. A larger value sends shorter messages uncompressed (RSV1 clear), which is legal.

Window bits 8: zlib refuses a raw deflate stream with ``wbits=-8`` (since zlib 1.2.9) and its
deflate never had a 256-byte window: asking it for 8 silently gave 9. But zlib's compressor never
emits a match distance beyond ``w_size - MIN_LOOKAHEAD`` (``MAX_DIST`` in deflate.h, with
``MIN_LOOKAHEAD = 258 + 3 + 1``), which for a 512-byte window is 250 bytes — inside a 256-byte
window. Node.js relies on the same fact ("passing windowBits = 9 to zlib actually results in a
compressed stream that effectively uses an 8-bit window only", docs of ``zlib.createDeflateRaw``).
So when 8 is negotiated for our side we answer 8 (honouring RFC 7692 §7.1.2.1, which only allows
the value asked for or less) and compress with zlib's 9; the tests inflate every such stream
byte by byte with zlib's 256-byte window, where a reference further back fails. Inflating
uses the negotiated value itself (inflate supports 8), which is all the memory it needs; a peer
reaching back further than zlib still holds fails as corrupt data (1007). (zlib may still copy
from output it produced in the same call, so it does not catch every oversized reference; the
result is then still the right bytes.)
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import InvalidPayload, MessageTooBig
from .handshake import parse_extensions

__all__ = [
    "EXTENSION_NAME",
    "DeflateConfig",
    "DeflateParams",
    "PerMessageDeflate",
    "accept_response",
    "client_offer",
    "compressed_size_bound",
    "negotiate",
    "negotiate_request",
]

EXTENSION_NAME = "permessage-deflate"

# A sync flush ends with an empty stored block; RFC 7692 §7.2.1 drops these four octets on the
# wire and §7.2.2 has the receiver put them back.
_TAIL = b"\x00\x00\xff\xff"

# Most compressed input and inflated output handled per zlib call when a budget applies
# (see PerMessageDeflate._inflate).
_INPUT_CHUNK = 64 * 1024
_OUTPUT_STEP = 64 * 1024

Offers = Sequence[tuple[str, Sequence[tuple[str, "str | None"]]]]


def compressed_size_bound(size: int) -> int:
    """The longest permessage-deflate payload that zlib makes of ``size`` bytes, whatever level,
    window, memLevel and strategy the peer compressed with.

    Incompressible data comes out a little longer than it went in, and how much longer depends on
    the peer's settings, not ours: at a small memLevel zlib ends a block every 127 (memLevel 1)
    or 2047 (memLevel 5) symbols and sends random bytes as stored blocks with 5 bytes of header
    each (about 4 % and 0.25 %); with a window too small to keep a block's input it falls back to
    fixed Huffman codes, up to 9 bits a byte (about 12.5 %). zlib.h's ``deflateBound`` bounds all
    of that for non-default windows and memLevels with a conservative formula; this is the larger
    of its two published forms (zlib 1.2.11's ``n + ceil(n/8) + ceil(n/64) + 5``, and the
    larger of the fixed-block and stored-block bounds of zlib 1.2.12 and later), for a raw
    stream (no zlib or gzip wrapper).

    ``deflateBound`` holds for a stream ended with ``Z_FINISH``; a message ends with a sync flush
    instead, whose empty stored block (3 bits, padding, then ``00 00 ff ff``) costs at most one
    byte more once the four octets are removed (RFC 7692 §7.2.1). 8 bytes are allowed for it.

    Args:
        size: the uncompressed length (of a message, or of the part of one that one frame carries).

    Returns:
        An upper bound of the compressed payload's length.
    """
    if size < 0:
        raise ValueError(f"size must be >= 0, got {size}")
    zlib_1_2_11 = size + ((size + 7) >> 3) + ((size + 63) >> 6) + 5
    fixed_blocks = size + (size >> 3) + (size >> 8) + (size >> 9) + 4
    stored_blocks = size + (size >> 5) + (size >> 7) + (size >> 11) + 7
    return max(zlib_1_2_11, fixed_blocks, stored_blocks) + 8


@dataclass(frozen=True)
class DeflateParams:
    """The agreed parameters of one connection (RFC 7692 §7.1), as both sides must apply them.

    Attributes:
        server_no_context_takeover: the server compresses each message with an empty window.
        client_no_context_takeover: the client compresses each message with an empty window.
        server_max_window_bits: base-2 log of the largest window the server compresses with.
        client_max_window_bits: base-2 log of the largest window the client compresses with.
    """

    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = False
    server_max_window_bits: int = 15
    client_max_window_bits: int = 15

    def __post_init__(self) -> None:
        for bits in (self.server_max_window_bits, self.client_max_window_bits):
            if not 8 <= bits <= 15:
                raise ValueError(f"window bits must be 8..15, got {bits}")


@dataclass(frozen=True)
class DeflateConfig:
    """What this endpoint wants from permessage-deflate; see the module docstring for the defaults.

    On a server these bound what ``negotiate`` accepts; on a client, ``client_offer`` turns them
    into the offer.

    Attributes:
        enabled: negotiate the extension at all.
        server_max_window_bits: largest window the server compresses with (8..15). When the
            client asks for a limit the server answers the smaller of the two; unasked, it uses
            this without announcing it.
        client_max_window_bits: window the client is asked to stay within (8..15), when it offered
            ``client_max_window_bits``; it bounds the server's inflate window.
        server_no_context_takeover: the server resets its compressor after every message (less
            memory between messages, worse ratio), even if the client didn't ask for it.
        client_no_context_takeover: ask the client to reset its compressor after every message,
            so the server can drop its decompressor between messages.
        compress_level: zlib level 0..9 (or -1 for zlib's default, which is 6).
        mem_level: zlib memLevel 1..9: size of the compressor's hash table.
        min_size: messages shorter than this many bytes are sent uncompressed.
    """

    enabled: bool = True
    server_max_window_bits: int = 12
    client_max_window_bits: int = 12
    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = False
    compress_level: int = 6
    mem_level: int = 5
    min_size: int = 0

    def __post_init__(self) -> None:
        for name in ("server_max_window_bits", "client_max_window_bits"):
            bits = getattr(self, name)
            if not 8 <= bits <= 15:
                raise ValueError(f"{name} must be 8..15, got {bits}")
        if not -1 <= self.compress_level <= 9:
            raise ValueError(f"compress_level must be -1..9, got {self.compress_level}")
        if not 1 <= self.mem_level <= 9:
            raise ValueError(f"mem_level must be 1..9, got {self.mem_level}")
        if self.min_size < 0:
            raise ValueError(f"min_size must be >= 0, got {self.min_size}")


@dataclass(frozen=True)
class _Parsed:
    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = False
    server_max_window_bits: int | None = None
    client_max_window_bits: int | None = None
    client_max_window_bits_present: bool = False


def _window_bits(name: str, value: str | None) -> int:
    # RFC 7692 §7.1.2: a decimal integer 8..15 without leading zeros.
    if value is None:
        raise ValueError(f"{name} needs a value")
    if not (1 <= len(value) <= 2 and value.isascii() and value.isdigit()) or value[0] == "0":
        raise ValueError(f"invalid {name} value {value!r}")
    bits = int(value)
    if not 8 <= bits <= 15:
        raise ValueError(f"{name} out of range 8..15: {bits}")
    return bits


def _parse_params(params: Sequence[tuple[str, str | None]], *, response: bool) -> _Parsed:
    """Validate one offer's or response's parameters; any problem raises ValueError."""
    seen: set[str] = set()
    snct = cnct = cmwb_present = False
    smwb: int | None = None
    cmwb: int | None = None
    for name, value in params:
        if name in seen:
            raise ValueError(f"duplicate parameter {name}")
        seen.add(name)
        if name == "server_no_context_takeover" or name == "client_no_context_takeover":
            if value is not None:
                raise ValueError(f"{name} takes no value")
            if name == "server_no_context_takeover":
                snct = True
            else:
                cnct = True
        elif name == "server_max_window_bits":
            smwb = _window_bits(name, value)
        elif name == "client_max_window_bits":
            cmwb_present = True
            # In an offer the value is optional (§7.1.2.2); in a response it is required.
            if value is not None or response:
                cmwb = _window_bits(name, value)
        else:
            raise ValueError(f"unknown parameter {name}")
    return _Parsed(snct, cnct, smwb, cmwb, cmwb_present)


def negotiate(offers: Offers, config: DeflateConfig) -> tuple[str, DeflateParams] | None:
    """Server side: accept the first valid permessage-deflate offer, in the client's order.

    An offer with an unknown or duplicate parameter, or a bad value, is declined and the next one
    is tried (RFC 7692 §5: the server declines what it cannot accept). Every parameter is honoured:
    ``server_no_context_takeover`` from the client is obeyed, a requested
    ``server_max_window_bits=N`` caps ours at N, an offered ``client_max_window_bits`` lets us ask
    the client for ``min(config, N)``, and ``client_no_context_takeover`` is echoed.

    Args:
        offers: parsed ``Sec-WebSocket-Extensions`` of the request (``handshake.parse_extensions``).
        config: this server's settings.

    Returns:
        ``(response header value, parameters in force)``, or ``None`` to go on without
        compression. The parameters describe what this server does: its
        ``server_max_window_bits`` may be smaller than what the client was told (when the client
        asked for no limit), which is always safe for the client.
    """
    if not config.enabled:
        return None
    for name, params in offers:
        if name.lower() != EXTENSION_NAME:
            continue
        try:
            offer = _parse_params(params, response=False)
        except ValueError:
            continue
        server_nct = offer.server_no_context_takeover or config.server_no_context_takeover
        client_nct = offer.client_no_context_takeover or config.client_no_context_takeover
        server_bits = config.server_max_window_bits
        if offer.server_max_window_bits is not None:
            server_bits = min(server_bits, offer.server_max_window_bits)
        client_bits = 15
        if offer.client_max_window_bits_present:
            client_bits = min(config.client_max_window_bits, offer.client_max_window_bits or 15)
        parts = [EXTENSION_NAME]
        if server_nct:
            parts.append("server_no_context_takeover")
        if client_nct:
            parts.append("client_no_context_takeover")
        # Unasked, our smaller window is not announced: the client inflates with 15 bits, which
        # decodes any smaller window, and some clients (old Firefox, per faye's
        # permessage-deflate) failed on an unrequested server_max_window_bits.
        if offer.server_max_window_bits is not None:
            parts.append(f"server_max_window_bits={server_bits}")
        # Unoffered, client_max_window_bits must not appear in the response (§7.1.2.2).
        if offer.client_max_window_bits_present:
            parts.append(f"client_max_window_bits={client_bits}")
        agreed = DeflateParams(
            server_no_context_takeover=server_nct,
            client_no_context_takeover=client_nct,
            server_max_window_bits=server_bits,
            client_max_window_bits=client_bits,
        )
        return "; ".join(parts), agreed
    return None


def negotiate_request(
    header_values: Sequence[str], config: DeflateConfig
) -> tuple[str, DeflateParams] | None:
    """Server side: ``negotiate`` straight from the request's ``Sec-WebSocket-Extensions`` values.

    A malformed header declines compression (RFC 7692 lets a server decline any offer) instead of
    failing the handshake: the connection goes on uncompressed.

    Args:
        header_values: every ``Sec-WebSocket-Extensions`` value of the request, in order.
        config: this server's settings.

    Returns:
        As ``negotiate``.
    """
    if not config.enabled or not header_values:
        return None
    try:
        offers = parse_extensions(header_values)
    except ValueError:
        return None
    return negotiate(offers, config)


def client_offer(config: DeflateConfig) -> str:
    """Client side: the ``Sec-WebSocket-Extensions`` offer for ``config``.

    ``client_max_window_bits`` is always offered, without a value: it only tells the server that
    we can compress with a smaller window if it asks. Our own limit is applied on our side
    (compressing with a smaller window than allowed is always valid), so a server that answers a
    value above it (some do) is still accepted. ``server_max_window_bits`` is asked for when below 15.

    Args:
        config: this client's settings.

    Returns:
        One offer, e.g. ``permessage-deflate; server_max_window_bits=12; client_max_window_bits=12``.
    """
    parts = [EXTENSION_NAME]
    if config.server_no_context_takeover:
        parts.append("server_no_context_takeover")
    if config.client_no_context_takeover:
        parts.append("client_no_context_takeover")
    if config.server_max_window_bits < 15:
        parts.append(f"server_max_window_bits={config.server_max_window_bits}")
    parts.append("client_max_window_bits")
    return "; ".join(parts)


def accept_response(value: str, config: DeflateConfig) -> DeflateParams:
    """Client side: check the server's answer to ``client_offer(config)`` strictly.

    Args:
        value: the response's ``Sec-WebSocket-Extensions`` value(s), joined with ``", "``.
        config: the settings the offer was made from.

    Returns:
        The parameters in force.

    Raises:
        ValueError: malformed header, more than one extension, another extension, an unknown or
            duplicate parameter, a bad value, a server window larger than requested, or a request we made
            (``server_no_context_takeover``, ``server_max_window_bits``) that was not accepted.
            The client must then fail the connection (RFC 6455 §4.1).
    """
    extensions = parse_extensions([value])
    if len(extensions) != 1:
        raise ValueError("expected exactly one extension in the response")
    name, params = extensions[0]
    if name.lower() != EXTENSION_NAME:
        raise ValueError(f"server accepted an extension we did not offer: {name}")
    answer = _parse_params(params, response=True)
    if config.server_no_context_takeover and not answer.server_no_context_takeover:
        raise ValueError("server did not accept server_no_context_takeover")
    server_bits = answer.server_max_window_bits
    if config.server_max_window_bits < 15:
        # We asked for a limit: the server accepts it only by answering it, equal or smaller.
        if server_bits is None:
            raise ValueError("server did not accept server_max_window_bits")
        if server_bits > config.server_max_window_bits:
            raise ValueError("server_max_window_bits larger than requested")
    client_bits = answer.client_max_window_bits
    if client_bits is None or client_bits > config.client_max_window_bits:
        client_bits = config.client_max_window_bits  # a smaller window than allowed is always valid
    return DeflateParams(
        server_no_context_takeover=answer.server_no_context_takeover,
        client_no_context_takeover=answer.client_no_context_takeover or config.client_no_context_takeover,
        server_max_window_bits=15 if server_bits is None else server_bits,
        client_max_window_bits=client_bits,
    )


class PerMessageDeflate:
    """Compression state of one connection once permessage-deflate is agreed.

    ``compress`` turns a whole message into the payload to send with RSV1 set;
    ``decompress_frame`` inflates a received compressed message frame by frame within a size
    budget. zlib objects are created on first use and dropped after each message on a side with
    no context takeover, so idle connections hold as little as the agreement allows.

    Args:
        params: the agreed parameters.
        is_server: which end we are; it decides which half of ``params`` applies to sending.
        compress_level: zlib compression level.
        mem_level: zlib memLevel of the compressor.
        min_size: ``should_compress`` is false below this many bytes.
    """

    def __init__(
        self,
        params: DeflateParams,
        *,
        is_server: bool,
        compress_level: int = 6,
        mem_level: int = 5,
        min_size: int = 0,
    ) -> None:
        self.params = params
        self.is_server = is_server
        self.min_size = min_size
        self._level = compress_level
        self._mem_level = mem_level
        if is_server:
            local_bits, self._local_reset = params.server_max_window_bits, params.server_no_context_takeover
            remote_bits, self._remote_reset = params.client_max_window_bits, params.client_no_context_takeover
        else:
            local_bits, self._local_reset = params.client_max_window_bits, params.client_no_context_takeover
            remote_bits, self._remote_reset = params.server_max_window_bits, params.server_no_context_takeover
        # zlib cannot deflate with a 256-byte window, but its 512-byte one never reaches back
        # more than 250 bytes (module docstring), so 9 honours an agreed 8.
        self._local_wbits = -max(local_bits, 9)
        self._remote_wbits = -remote_bits
        # Without context takeover on our side, a message compresses to the same bytes on every
        # connection with the same window, level, memLevel and min_size: a broadcast compresses
        # once per key (``shared_key``). With context takeover, each connection's own bytes.
        self.shared_key: tuple[int, int, int, int] | None = (
            (self._local_wbits, compress_level, mem_level, min_size) if self._local_reset else None
        )
        self._encoder: zlib._Compress | None = None
        self._decoder: zlib._Decompress | None = None
        # Compressed bytes received so far in the current message.
        self._message_input = 0

    @classmethod
    def from_config(
        cls, params: DeflateParams, config: DeflateConfig, *, is_server: bool
    ) -> PerMessageDeflate:
        """Build the state for agreed ``params`` with ``config``'s level, memLevel and min_size."""
        return cls(
            params,
            is_server=is_server,
            compress_level=config.compress_level,
            mem_level=config.mem_level,
            min_size=config.min_size,
        )

    def should_compress(self, size: int) -> bool:
        """Tell whether a message of ``size`` bytes is worth compressing (``size >= min_size``)."""
        return size >= self.min_size

    def compress(self, data: bytes | bytearray | memoryview) -> bytes:
        """Compress one whole message into the payload of a frame with RSV1 set.

        Args:
            data: the message payload (text already UTF-8 encoded).

        Returns:
            The deflate data with the sync flush's trailing ``00 00 ff ff`` removed (RFC 7692
            §7.2.1). An empty message becomes ``b"\\x00"`` (an empty stored block).
        """
        encoder = self._encoder
        if encoder is None:
            encoder = zlib.compressobj(self._level, zlib.DEFLATED, self._local_wbits, self._mem_level)
            # Without context takeover a fresh compressor per message costs about what a
            # Z_FULL_FLUSH would, and lets the connection hold no compressor between messages.
            if not self._local_reset:
                self._encoder = encoder
        out = encoder.compress(data)
        out += encoder.flush(zlib.Z_SYNC_FLUSH)
        if out.endswith(_TAIL):
            return out[:-4]
        return out  # pragma: no cover - a sync flush always ends with the empty stored block

    def decompress_frame(
        self,
        data: bytes | bytearray | memoryview,
        fin: bool,
        max_size: int | None,
    ) -> bytes | bytearray:
        """Inflate one frame of a compressed message within a size budget.

        Call it for every frame of a message whose first frame had RSV1 set, in order.

        Args:
            data: the frame's (unmasked) payload.
            fin: whether this is the message's last frame; the removed ``00 00 ff ff`` is fed
                after it.
            max_size: how many more bytes this message may inflate to (the limit minus what its
                earlier frames produced); ``None`` for no limit.

        Returns:
            The inflated bytes of this frame (for the last frame, including what the flush
            released).

        Raises:
            MessageTooBig: the message would inflate past ``max_size``. zlib is never allowed to
                produce more than ``max_size + 1`` bytes, so a bomb costs at most that much memory.
            InvalidPayload: the data is not valid deflate data for the agreed window, or more
                data follows a final (BFINAL) block.
        """
        budget = None if max_size is None else max(max_size, 0)
        self._message_input += len(data)
        decoder = self._decoder
        if decoder is None:
            decoder = self._decoder = zlib.decompressobj(self._remote_wbits)
        out: bytes | bytearray
        try:
            if decoder.eof:
                # A BFINAL block already ended this message's stream in an earlier frame.
                if data:
                    raise InvalidPayload("data after the end of the compressed stream")
                out = b""
            else:
                out = self._inflate(decoder, data, budget)
                if decoder.unused_data:
                    raise InvalidPayload("data after the end of the compressed stream")
            if fin:
                # An empty payload is not deflate data even with the tail; it can only mean an
                # empty message, which leaves the window as it was, so don't feed anything.
                if not decoder.eof and self._message_input:
                    remaining = None if budget is None else budget - len(out)
                    tail_out = self._inflate(decoder, _TAIL, remaining)
                    if tail_out:
                        out += tail_out
                self._message_input = 0
                # After BFINAL the peer's next message is a new stream; without context takeover
                # the window must start empty anyway. Either way a fresh decoder, made lazily.
                if decoder.eof or self._remote_reset:
                    self._decoder = None
        except zlib.error:
            self._decoder = None
            raise InvalidPayload("invalid compressed data") from None
        except (MessageTooBig, InvalidPayload):
            self._decoder = None
            raise
        return out

    @staticmethod
    def _inflate(
        decoder: zlib._Decompress, data: bytes | bytearray | memoryview, budget: int | None
    ) -> bytes | bytearray:
        if budget is None:
            return decoder.decompress(data)
        # Bounded: zlib is asked for at most one byte past the budget, which tells "exactly the
        # limit" from "over it", and never for more than _OUTPUT_STEP at once, because CPython
        # assembles one call's output from blocks and copies it, doubling a large result. Input
        # goes in _INPUT_CHUNK slices because zlib copies whatever it did not consume into
        # ``unconsumed_tail``. Output is appended to one bytearray as it comes: joining a list of
        # pieces at the end would hold the frame's output twice. So a bomb costs the budget plus
        # about three steps, whatever its size and however it is fragmented.
        out = bytearray()
        produced = 0
        view = memoryview(data)
        for start in range(0, len(view), _INPUT_CHUNK):
            pending: bytes | memoryview = view[start : start + _INPUT_CHUNK]
            while True:
                want = min(_OUTPUT_STEP, budget - produced + 1)
                piece = decoder.decompress(pending, want)
                got = len(piece)
                produced += got
                if produced > budget:
                    raise MessageTooBig("message too big")
                out += piece
                del piece
                pending = decoder.unconsumed_tail
                # Less than asked for means zlib ran out of input; exactly as much may leave
                # output pending inside zlib (e.g. the rest of a long match), so ask again.
                if got < want and not pending:
                    break
        return out
