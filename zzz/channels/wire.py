"""Phoenix channel wire format: decode client messages, encode replies, pushes and broadcasts.

Two forms share one meaning: the JSON object form (zzz.js, Phoenix serializer v1) and the array form
``[join_ref, ref, topic, event, payload]`` (phoenix.js with ``vsn=2.0.0``). zzz extends both with an
optional ``meta`` object (the key ``"meta"``, or a 6th array element) that carries stream positions and
recovery requests; a frame without one is exactly Phoenix's. Pure functions, no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "MAX_DEPTH",
    "Fields",
    "MalformedMessage",
    "Message",
    "decode",
    "decode_fields",
    "dumps",
    "encode",
    "encode_ok_reply",
    "encode_raw",
    "position_meta",
    "quote",
    "reply_payload",
]

# Compact separators keep frames small; ensure_ascii=False keeps non-ASCII text as it is (frames are UTF-8).
_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_encode = _encoder.encode
_encode_ascii = json.JSONEncoder(separators=(",", ":")).encode
# What _encode does with a str, without the encoder's Python wrapper (topics, events and refs are
# quoted for every frame).
_quote = json.encoder.encode_basestring
# The decoder's scanner itself (C when the interpreter has it): ``scan(text, 0)`` -> (value, end),
# StopIteration when no JSON value starts at 0. ``JSONDecoder.raw_decode`` is a Python wrapper of it.
_scan: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def _quick_encoder() -> Callable[[Any, int], Sequence[str]] | None:
    """The C encoder ``_encode`` makes on every call, made once; None when this Python has none.

    It is made without the circular-reference check (its bookkeeping is what cannot be shared between
    calls): a circular value then overflows the stack, and ``dumps`` asks ``_encode`` what went wrong.
    """
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return None
    sample = {"a": [1, 2.5, None, True, "\u00e9\n"], "2": {}}
    try:
        quick = make(None, _encoder.default, _quote, None, ":", ",", False, False, True)
        if "".join(quick(sample, 0)) != _encode(sample):
            return None
    except Exception:  # noqa: BLE001 (another Python's signature: do without)
        return None
    return quick  # type: ignore[no-any-return]


_quick = _quick_encoder()


# The deepest nesting a client message may have, the message itself counting as one level. Python's JSON
# decoder and encoder recurse once per level, so a message that only just decodes could fail to encode
# again a few frames deeper (in a handler echoing it): the limit leaves them both ample stack.
MAX_DEPTH = 512


def dumps(value: Any) -> str:
    """Compact JSON that is always valid UTF-8 once encoded.

    A client can smuggle a lone surrogate in through a ``\\ud800`` escape; written out raw it would make
    the frame unencodable, so such text is escaped instead.

    Raises:
        TypeError: the value is not JSON-serialisable.
        ValueError: the value holds a circular reference.
        RecursionError: the value is nested too deeply to encode.
    """
    if type(value) is str:
        text = _quote(value)
    elif _quick is not None:
        try:
            text = "".join(_quick(value, 0))
        except RecursionError:  # circular, or nested too deeply: the checking encoder raises the right one
            text = _encode(value)
    else:
        text = _encode(value)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return _encode_ascii(value)
    return text


# Not frozen: one is made per client message, and a frozen dataclass's __init__ costs several times more.
@dataclass(slots=True)
class Message:
    """One channel message (treat it as read-only: ``dataclasses.replace`` makes a changed copy).

    Attributes:
        topic: the channel topic, e.g. ``"room:lobby"`` (``"phoenix"`` for heartbeats).
        event: the event name, e.g. ``"phx_join"`` or ``"new_msg"``.
        payload: the decoded JSON payload.
        ref: the client's message reference (``None`` for server pushes).
        join_ref: the ref of the join this message belongs to, when the client sent one.
        array_form: True when the message came in the array form.
        meta: the zzz extension object (``"meta"`` key or 6th array element), when the client sent one;
            never part of ``payload``.
    """

    topic: str
    event: str
    payload: Any
    ref: str | None = None
    join_ref: str | None = None
    array_form: bool = False
    meta: dict[str, Any] | None = None


class MalformedMessage(ValueError):
    """A text message that is not a channel message.

    Attributes:
        ref: the ref found in the message when one could be recovered (then an error reply is possible).
        topic: the topic found, when there was one (so the reply can name it).
        not_json: True when the text is not JSON at all.
        array_form: True when the message looked like the array form.
    """

    def __init__(
        self,
        reason: str,
        *,
        ref: str | None = None,
        topic: str | None = None,
        join_ref: str | None = None,
        not_json: bool = False,
        array_form: bool = False,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.ref = ref
        self.topic = topic
        self.join_ref = join_ref
        self.not_json = not_json
        self.array_form = array_form


def _ref(value: Any) -> str | None:
    # Clients send refs as strings; tolerate numbers (some hand-written clients do) by normalising.
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise TypeError("ref must be a string")


def decode(text: str) -> Message:
    """Decode one client text frame in either form.

    Args:
        text: the frame's text.

    Returns:
        The message; a missing payload becomes ``{}``.

    Raises:
        MalformedMessage: not JSON, nested more than ``MAX_DEPTH`` levels, not an object or a 5- or
            6-element array, or a field of the wrong type (``meta`` must be an object or null).
    """
    return Message(*decode_fields(text))


# What decode_fields returns: topic, event, payload, ref, join_ref, array_form, meta (Message's order).
Fields = tuple[str, str, Any, "str | None", "str | None", bool, "dict[str, Any] | None"]


def decode_fields(text: str) -> Fields:
    """``decode`` without the ``Message``: its fields as a tuple, in ``Message``'s order.

    The endpoint's push path reads the fields straight from here and makes a ``Message`` only for
    the rarer messages that need one (joins, leaves, errors). Same result and errors as ``decode``.
    """
    try:
        data, end = _scan(text, 0)
    except StopIteration:
        data = _loads_slow(text)  # leading whitespace, or not JSON: json.loads decides
    except ValueError:  # a value starts at 0 and is broken (json.loads would scan the same)
        raise MalformedMessage("invalid JSON", not_json=True) from None
    except RecursionError:
        # The JSON decoder recurses once per level: thousands of nested brackets exhaust the stack.
        # That is the sender's malformed input, not our failure.
        raise MalformedMessage("JSON nested too deeply", not_json=True) from None
    else:
        if end != len(text) and text[end:].strip(" \t\n\r"):
            data = _loads_slow(text)  # more after the value: json.loads raises "Extra data"
    # A text cannot nest deeper than it has characters; past that, counting brackets (strings
    # included) is cheap and bounds the depth from above, so only messages with many brackets pay
    # for the exact walk.
    if (
        len(text) > MAX_DEPTH
        and text.count("[") + text.count("{") > MAX_DEPTH
        and _deeper_than(data, MAX_DEPTH)
    ):
        raise MalformedMessage("JSON nested too deeply", not_json=True)
    kind = type(data)
    # The usual frames first: phoenix.js's 5-element array, or an object with the five keys and no
    # "meta", with string (or null) refs and string topic and event. Anything else: the full checks.
    if kind is list and len(data) == 5:
        join_ref, ref, topic, event, payload = data
        if (
            type(topic) is str
            and type(event) is str
            and (type(ref) is str or ref is None)
            and (type(join_ref) is str or join_ref is None)
        ):
            return (topic, event, {} if payload is None else payload, ref, join_ref, True, None)
    elif kind is dict and "meta" not in data:
        try:
            topic, event, payload = data["topic"], data["event"], data["payload"]
            ref, join_ref = data["ref"], data["join_ref"]
        except KeyError:  # zzz.js may leave join_ref (or more) out
            return _check_fields(data)
        if (
            type(topic) is str
            and type(event) is str
            and (type(ref) is str or ref is None)
            and (type(join_ref) is str or join_ref is None)
        ):
            return (topic, event, {} if payload is None else payload, ref, join_ref, False, None)
    return _check_fields(data)


def _check_fields(data: Any) -> Fields:
    """The fields of a decoded frame of any shape, every check made (``decode_fields``' slow path)."""
    if isinstance(data, dict):
        array_form = False
        raw_join_ref, raw_ref = data.get("join_ref"), data.get("ref")
        topic, event, payload = data.get("topic"), data.get("event"), data.get("payload", {})
        meta = data.get("meta")
        complete = "topic" in data and "event" in data
    elif isinstance(data, list):
        array_form = True
        meta = data[5] if len(data) == 6 else None
        if len(data) not in (5, 6):
            # Still try to salvage the ref so the client gets an answer instead of silence.
            raw_ref = data[1] if len(data) > 1 else None
            raw_join_ref = data[0] if data else None
            topic = data[2] if len(data) > 2 else None
            event, payload, complete = None, None, False
        else:
            raw_join_ref, raw_ref, topic, event, payload = data[:5]
            complete = True
    else:
        raise MalformedMessage("not an object or array")
    try:
        ref, join_ref = _ref(raw_ref), _ref(raw_join_ref)
    except TypeError:
        raise MalformedMessage("bad ref", array_form=array_form) from None
    good_topic = topic if isinstance(topic, str) else None
    if not complete:
        raise MalformedMessage(
            "missing fields", ref=ref, topic=good_topic, join_ref=join_ref, array_form=array_form
        )
    if good_topic is None or not isinstance(event, str):
        raise MalformedMessage(
            "topic and event must be strings",
            ref=ref,
            topic=good_topic,
            join_ref=join_ref,
            array_form=array_form,
        )
    if meta is not None and not isinstance(meta, dict):
        raise MalformedMessage(
            "meta must be an object", ref=ref, topic=good_topic, join_ref=join_ref, array_form=array_form
        )
    if payload is None:
        payload = {}
    return (good_topic, event, payload, ref, join_ref, array_form, meta)


def _loads_slow(text: str) -> Any:
    """``json.loads(text)``, its errors made ``MalformedMessage``."""
    try:
        return json.loads(text)
    except ValueError:
        raise MalformedMessage("invalid JSON", not_json=True) from None
    except RecursionError:
        raise MalformedMessage("JSON nested too deeply", not_json=True) from None


def _deeper_than(value: Any, limit: int) -> bool:
    """True when ``value`` nests lists and dicts more than ``limit`` levels deep (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        for child in item.values() if isinstance(item, dict) else item:
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1))
    return False


def encode_raw(
    array_form: bool,
    topic: str,
    event: str,
    payload_json: str,
    ref: str | None = None,
    join_ref: str | None = None,
    meta_json: str | None = None,
) -> str:
    """Encode a frame around a payload that is already JSON text.

    This is what lets a broadcast serialise its payload once and reuse the text for every receiver.

    Args:
        array_form: encode ``[join_ref, ref, topic, event, payload]`` instead of the object form.
        topic: the topic.
        event: the event.
        payload_json: the payload, already JSON-encoded.
        ref: the ref (``None`` for pushes and broadcasts).
        join_ref: the join ref (``None`` for broadcasts).
        meta_json: the ``meta`` object, already JSON-encoded: the object form's ``"meta"`` key, the
            array form's 6th element. None leaves it out altogether (Phoenix's frame, byte for byte).

    Returns:
        The frame's text.
    """
    jr = "null" if join_ref is None else dumps(join_ref)
    r = "null" if ref is None else dumps(ref)
    if array_form:
        if meta_json is None:
            return f"[{jr},{r},{dumps(topic)},{dumps(event)},{payload_json}]"
        return f"[{jr},{r},{dumps(topic)},{dumps(event)},{payload_json},{meta_json}]"
    if meta_json is None:
        return (
            f'{{"topic":{dumps(topic)},"event":{dumps(event)},"payload":{payload_json},'
            f'"ref":{r},"join_ref":{jr}}}'
        )
    return (
        f'{{"topic":{dumps(topic)},"event":{dumps(event)},"payload":{payload_json},'
        f'"ref":{r},"join_ref":{jr},"meta":{meta_json}}}'
    )


def encode(
    array_form: bool,
    topic: str,
    event: str,
    payload: Any,
    ref: str | None = None,
    join_ref: str | None = None,
    meta: dict[str, Any] | None = None,
) -> str:
    """Encode a frame whose payload (and ``meta``, when given) are Python values.

    Raises:
        TypeError: the payload is not JSON-serialisable.
    """
    return encode_raw(
        array_form, topic, event, dumps(payload), ref, join_ref, None if meta is None else dumps(meta)
    )


def quote(value: str | None) -> str:
    """A ref, join ref or topic as JSON: ``null`` for None, else what ``dumps`` makes of the string.

    Letters and digits need no escape (and are never surrogates), so the usual refs (``"12"``) are
    quoted without the encoder.
    """
    if value is None:
        return "null"
    if value.isalnum():
        return f'"{value}"'
    return dumps(value)


def encode_ok_reply(array_form: bool, topic_json: str, join_ref_json: str, ref: str, response: Any) -> str:
    """The ``phx_reply`` frame of an ok reply to the push ``ref``, topic and join ref already JSON.

    Byte for byte what ``encode(array_form, topic, "phx_reply", reply_payload("ok", response), ref,
    join_ref)`` makes (``topic_json`` is ``dumps(topic)``, ``join_ref_json`` is ``quote(join_ref)``);
    the push path prepares those two once per join.

    Raises:
        TypeError, ValueError, RecursionError: as ``dumps(response)``.
    """
    ref_json = f'"{ref}"' if ref.isalnum() else dumps(ref)  # quote(ref), without the call
    if array_form:
        return (
            f'[{join_ref_json},{ref_json},{topic_json},"phx_reply",'
            f'{{"status":"ok","response":{dumps(response)}}}]'
        )
    return (
        f'{{"topic":{topic_json},"event":"phx_reply","payload":{{"status":"ok","response":{dumps(response)}}},'
        f'"ref":{ref_json},"join_ref":{join_ref_json}}}'
    )


def position_meta(offset: int, epoch: str) -> str:
    """The ``meta`` JSON of a broadcast on a topic with history: ``{"offset": N, "epoch": E}``."""
    return f'{{"offset":{int(offset)},"epoch":{dumps(epoch)}}}'


def reply_payload(status: str, response: Any) -> dict[str, Any]:
    """The payload of a ``phx_reply``: ``{"status": ..., "response": ...}``."""
    return {"status": status, "response": {} if response is None else response}


# The compiled build answers the usual frames in C (``_wire_c``, from ``_wire.h``) and hands the rest
# to the functions above, which stay the reference (same results, same errors) under these names.
# The twin (``ZZZ_NO_EXTENSIONS=1``) runs them as they are.
decode_fields_py, encode_ok_reply_py, dumps_py = decode_fields, encode_ok_reply, dumps


def _compiled() -> Any:
    from zzz import core

    if core.IMPLEMENTATION != "cython":
        return None
    try:
        from zzz.channels import _wire_c
    except ImportError:  # a build without it: the Python functions serve alone
        return None
    _wire_c.bind(decode_fields_py, encode_ok_reply_py, dumps_py)
    return _wire_c


_c = _compiled()
if _c is not None:
    decode_fields = _c.decode_fields
    encode_ok_reply = _c.encode_ok_reply
    dumps = _c.dumps
