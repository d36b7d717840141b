"""The wire module's quick paths give exactly what the plain ``json`` calls give."""

from __future__ import annotations

import json
from typing import Any

import pytest

from zzz.channels.wire import (
    MalformedMessage,
    Message,
    _check_fields,
    decode,
    decode_fields,
    dumps,
    encode,
    encode_ok_reply,
    encode_raw,
    quote,
    reply_payload,
)

FRAME = '{"topic":"room:1","event":"e","payload":{"n":1},"ref":"1"}'


@pytest.mark.parametrize(
    "text",
    [
        FRAME,
        " " + FRAME,
        FRAME + " \t\r\n",
        "\n" + FRAME + "\n",
        FRAME + "x",
        FRAME + " {}",
        FRAME + "\x0b",  # not JSON whitespace, though str.isspace() says it is
        FRAME + "\u3000",
        "\ufeff" + FRAME,
        "",
        "   ",
        '["1","1","room:1","e",{}]',
        '["1","1","room:1","e",{}] ]',
        "NaN",
        '{"topic": "room:1", "event": "e", "payload": NaN, "ref": "1"}',
    ],
)
def test_decode_accepts_and_refuses_what_json_loads_does(text: str) -> None:
    try:
        expected: Any = json.loads(text)
    except ValueError:
        expected = None
    if expected is None:
        with pytest.raises(MalformedMessage) as info:
            decode(text)
        assert info.value.not_json
        return
    try:
        message = decode(text)
    except MalformedMessage as exc:  # JSON, but not a channel message: never for want of JSON
        assert not exc.not_json
        return
    payload = expected[4] if isinstance(expected, list) else expected["payload"]
    assert json.dumps(message.payload) == json.dumps(payload)  # (NaN != NaN)


@pytest.mark.parametrize(
    "value", ["room:1", 'a"b\\c\n\x01\x7f', "", "caf\u00e9", "\ud800", "\U0001f600", 1, None, {"a": ["b"]}]
)
def test_dumps_of_strings_is_the_encoder_s(value: Any) -> None:
    text = dumps(value)
    text.encode("utf-8")  # always encodable, lone surrogates included
    assert json.loads(text) == value
    if isinstance(value, str) and value != "\ud800":  # (a lone surrogate is escaped instead)
        assert text == json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def test_encode_raw_quotes_fields_as_json() -> None:
    text = encode_raw(False, 'room:"1"', "e\n", "{}", "r\\1", None)
    assert json.loads(text) == {
        "topic": 'room:"1"',
        "event": "e\n",
        "payload": {},
        "ref": "r\\1",
        "join_ref": None,
    }


@pytest.mark.parametrize(
    "value",
    [
        {"status": "ok", "response": {"d": "x" * 32}},
        [1, -2, 3.25, 1e300, float("inf"), float("-inf"), None, True, False],
        {1: "int key", 2.5: "float key", False: "bool key", None: "null key"},
        {"caf\u00e9": "\u00e9\U0001f600", "ctl": "\x00\x1f\x7f"},
        {"nested": [[[{"a": []}]]]},
        (1, 2),
        12345678901234567890,
    ],
)
def test_dumps_of_values_is_the_encoder_s(value: Any) -> None:
    expected = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    assert dumps(value) == expected


def test_dumps_raises_what_the_encoder_raises() -> None:
    circular: list[Any] = []
    circular.append(circular)
    with pytest.raises(ValueError, match="Circular"):
        dumps(circular)
    nested: Any = []
    for _ in range(100_000):
        nested = [nested]
    with pytest.raises(RecursionError):
        dumps(nested)
    with pytest.raises(TypeError, match="not JSON serializable"):
        dumps({"a": object()})
    assert json.loads(dumps({"s": "\ud800"})) == {"s": "\ud800"}  # escaped, so the frame stays UTF-8


# -- the push path's shortcuts (decode_fields' usual shapes, quote, encode_ok_reply) ------------------------

FIELD_FRAMES = [
    '["1","2","room:1","e",{"n":1}]',
    '[null,null,"room:1","e",null]',
    '[null,"2","room:1","e",[1,2]]',
    '["1",2,"room:1","e",{}]',  # a numeric ref: normalised by the full checks
    '["1","2","room:1","e",{},{"recover":null}]',
    '["1","2","room:1","e",{},null]',
    '["1","2","room:1","e"]',
    '["1","2",3,"e",{}]',
    '["1",true,"room:1","e",{}]',
    '{"topic":"room:1","event":"e","payload":{"n":1},"ref":"1","join_ref":"1"}',
    '{"topic":"room:1","event":"e","payload":{"n":1},"ref":"1"}',
    '{"topic":"room:1","event":"e","ref":"1"}',
    '{"topic":"room:1","event":"e","payload":null,"ref":null,"join_ref":null}',
    '{"topic":"room:1","event":"e","payload":{},"ref":7,"join_ref":"1"}',
    '{"topic":"room:1","event":"e","payload":{},"ref":"1","meta":{"recover":{"offset":1,"epoch":"x"}}}',
    '{"topic":"room:1","event":"e","payload":{},"ref":"1","meta":3}',
    '{"topic":"room:1","event":"e","payload":{},"ref":"1","extra":1,"more":2}',
    '{"topic":"room:1","payload":{},"ref":"1"}',
    '{"topic":1,"event":"e","payload":{},"ref":"1"}',
    '"just a string"',
]


@pytest.mark.parametrize("text", FIELD_FRAMES)
def test_decode_fields_gives_what_the_full_checks_give(text: str) -> None:
    try:
        expected: Any = _check_fields(json.loads(text))
    except MalformedMessage as exc:
        with pytest.raises(MalformedMessage) as info:
            decode_fields(text)
        got = info.value
        assert (got.reason, got.ref, got.topic, got.join_ref, got.array_form) == (
            exc.reason,
            exc.ref,
            exc.topic,
            exc.join_ref,
            exc.array_form,
        )
        return
    assert decode_fields(text) == expected
    assert decode(text) == Message(*expected)


def test_decode_fields_refuses_broken_json_after_a_value_starts() -> None:
    for text in ('["1","2","room:1","e",{', '{"topic":"room:1",', "[1,]"):
        with pytest.raises(MalformedMessage) as info:
            decode_fields(text)
        assert info.value.not_json and info.value.reason == "invalid JSON"


REFS = [
    "1",
    "12345",
    "abcXYZ09",
    "",
    'a"b',
    "a\\b",
    "x\n",
    "caf\u00e9",
    "\u00b2",
    "\u0661\u0662",
    "\ud800",
    "a b",
]


@pytest.mark.parametrize("value", [*REFS, None])
def test_quote_is_dumps_or_null(value: str | None) -> None:
    assert quote(value) == ("null" if value is None else dumps(value))


@pytest.mark.parametrize("array_form", [False, True])
@pytest.mark.parametrize("ref", REFS)
@pytest.mark.parametrize("join_ref", [None, "1", "j\u00e9"])
@pytest.mark.parametrize(
    "response", [{"seq": 1, "body": "b"}, [1, "x"], "s\u00e9", 0, 2.5, True, ("t", 1), {"s": "\ud800"}]
)
def test_encode_ok_reply_is_byte_for_byte_encode(
    array_form: bool, ref: str, join_ref: str | None, response: Any
) -> None:
    for topic in ("room:1", 'r"\u00e9'):
        expected = encode(array_form, topic, "phx_reply", reply_payload("ok", response), ref, join_ref)
        got = encode_ok_reply(array_form, dumps(topic), quote(join_ref), ref, response)
        assert got == expected
