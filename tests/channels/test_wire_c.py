"""The compiled wire functions (``_wire_c``, for the usual frames) answer exactly as ``wire``'s Python ones.

On the compiled core ``wire.decode_fields``, ``encode_ok_reply`` and ``dumps`` are the C ones, and
each must give the same value (same types, same key order, same float bits) or raise the same error
as the reference (``wire.decode_fields_py`` and the others) for any input: generated JSON frames
in both forms, with spacing, escapes, odd numbers and broken text. On the twin they are the
reference itself, so only the binding test applies there.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zzz import core
from zzz.channels import wire

from .wire_compare import outcome, same

compiled = pytest.mark.skipif(
    core.IMPLEMENTATION != "cython", reason="the C wire path is in the extension build"
)


def test_the_compiled_build_binds_the_c_functions() -> None:
    bound = (wire.decode_fields, wire.encode_ok_reply, wire.dumps)
    reference = (wire.decode_fields_py, wire.encode_ok_reply_py, wire.dumps_py)
    if core.IMPLEMENTATION == "cython":
        assert all(b is not r for b, r in zip(bound, reference))
        assert all(type(b).__name__ == "builtin_function_or_method" for b in bound)
    else:
        assert bound == reference


def check_decode(text: str) -> None:
    got, want = outcome(wire.decode_fields, text), outcome(wire.decode_fields_py, text)
    assert got[0] == want[0], (text, got, want)
    assert same(got[1], want[1]), (text, got, want)


def check_dumps(value: Any) -> None:
    got, want = outcome(wire.dumps, value), outcome(wire.dumps_py, value)
    assert got == want, (value, got, want)


# Strings the C path takes (plain) and the ones it leaves (escapes, controls, surrogates, non-ASCII).
texts = st.text(alphabet=st.characters(codec="utf-8"), max_size=12) | st.sampled_from(
    ["", "a", "room:lobby", "caf\u00e9", "\U0001f600", 'q"', "b\\s", "nl\n", "\x00\x1f\x7f", "\u2028"]
)
numbers = (
    st.integers(min_value=-(2**70), max_value=2**70)
    | st.sampled_from([0, -0, 10**18 - 1, 10**18, -(10**18) + 1, 2**63 - 1, -(2**63), 2**63])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([0.0, -0.0, 1e-320, 5e-324, 1.7976931348623157e308, 0.1, 1e16, 123456789.125])
)
scalars = st.none() | st.booleans() | numbers | texts
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4) | st.tuples(inner, inner)
    ),
    max_leaves=20,
)
refs = st.none() | texts | st.integers(min_value=-5, max_value=10**6) | st.sampled_from(["1", "42", "ab9"])


@compiled
@settings(max_examples=600, deadline=None)
@given(
    topic=texts | st.integers(),
    event=texts,
    payload=values,
    ref=refs,
    join_ref=refs,
    array=st.booleans(),
    spaces=st.sampled_from(["", " ", "\n\t ", "\r"]),
    ascii=st.booleans(),
)
def test_decode_fields_of_generated_frames(
    topic: Any, event: str, payload: Any, ref: Any, join_ref: Any, array: bool, spaces: str, ascii: bool
) -> None:
    if array:
        frame: Any = [join_ref, ref, topic, event, payload]
    else:
        frame = {"topic": topic, "event": event, "payload": payload, "ref": ref, "join_ref": join_ref}
    text = json.dumps(frame, ensure_ascii=ascii, separators=(spaces + "," + spaces, ":" + spaces))
    check_decode(text)
    check_decode(spaces + text)
    check_decode(text + spaces)


@compiled
@settings(max_examples=400, deadline=None)
@given(
    payload=values,
    cut=st.integers(min_value=0, max_value=400),
    junk=st.sampled_from(list('{}[],:"\\ 0-.eEx')),
)
def test_decode_fields_of_broken_frames(payload: Any, cut: int, junk: str) -> None:
    text = json.dumps({"topic": "t", "event": "e", "payload": payload, "ref": "1", "join_ref": None})
    cut %= len(text) + 1
    check_decode(text[:cut])
    check_decode(text[:cut] + junk + text[cut:])
    check_decode(text[:cut] + text[cut + 1 :])


@compiled
@pytest.mark.parametrize(
    "text",
    [
        '{"topic":"t","event":"e","payload":{},"ref":"1","join_ref":"1","topic":"u"}',  # 6 keys, a repeat
        '{"topic":"t","topic":"u","event":"e","payload":{},"ref":"1"}',
        '{"topic":"t","event":"e","payload":{"a":1,"a":2,"b":3},"ref":"1","join_ref":"1"}',
        '{"topic":"t","event":"e","payload":{"n":01},"ref":"1","join_ref":"1"}',
        '{"topic":"t","event":"e","payload":[1.,2],"ref":"1","join_ref":"1"}',
        '{"topic":"t","event":"e","payload":[1e,2],"ref":"1","join_ref":"1"}',
        '{"topic":"t","event":"e","payload":[-],"ref":"1","join_ref":"1"}',
        '{"topic":"t","event":"e","payload":[-Infinity,NaN,Infinity],"ref":"1","join_ref":"1"}',
        '{"topic":"t","event":"e","payload":[1E+2,1e-2,-0,-0.0,0e0],"ref":"1","join_ref":"1"}',
        '{"topic":"t","event":"e","payload":[123456789012345678,1234567890123456789],"ref":"1","join_ref":"1"}',
        '{"topic":"t","event":"e","payload":[1e999,-1e999,1e-999],"ref":"1","join_ref":"1"}',
        '{"topic":"t","event":"e","payload":[tru,nul,fals],"ref":"1","join_ref":"1"}',
        '{"topic":"t","event":"e","payload":{"a":[1,2,],"b":{}},"ref":"1","join_ref":"1"}',
        '{"topic":"t","event":"e","payload":{,},"ref":"1","join_ref":"1"}',
        '{"topic":"t\\u0041","event":"e","payload":{},"ref":"1","join_ref":"1"}',
        '{"\\u0074opic":"t","event":"e","payload":{},"ref":"1","join_ref":"1"}',
        '{"topic":"t\tx","event":"e","payload":{},"ref":"1","join_ref":"1"}',
        '{"topic":"t","event":"e","payload":"\x7f\u00e9\U0001f600","ref":"1","join_ref":"1"}',
        '{"topic":"t","event":"e","payload":{},"ref":"1","join_ref":"1"}\x00',
        '{"topic":"t","event":"e","payload":{},"ref":"1","join_ref":"1"',
        '{"topic":"t","event":"e","payload":,"ref":"1","join_ref":"1"}',
        '{"topic":"t","event":"e","payload":{},"ref":"1","join_ref":"1",}',
        '{"topic":"t","event":"e","payload":{},"ref":"1","join_ref":"1","meta":{}}',
        '{"topic":"t","event":"e","payload":{},"ref":"1","join_ref":1}',
        '{"topic":"t","event":"e","payload":{},"ref":"1"}',
        '["1","2","t","e",{}',
        '["1","2","t","e",{},]',
        '["1","2","t","e"]',
        '["1","2","t","e",{},{}]',
        '[ "1" , "2" , "t" , "e" , null ]',
        '[null,null,"t","e",' + "[" * 63 + "]" * 63 + "]",
        '[null,null,"t","e",' + "[" * 64 + "]" * 64 + "]",
        '[null,null,"t","e",' + "[" * 600 + "]" * 600 + "]",
        '[null,null,"t","e",' + "[" * 5000 + "]",
        "[",
        "{",
        "[]",
        "{}",
        "",
    ],
)
def test_decode_fields_of_edge_cases(text: str) -> None:
    check_decode(text)


class Str(str):
    pass


class Dict(dict):  # type: ignore[type-arg]
    pass


@compiled
@settings(max_examples=600, deadline=None)
@given(value=values)
def test_dumps_of_generated_values(value: Any) -> None:
    check_dumps(value)


@compiled
@pytest.mark.parametrize(
    "value",
    [
        "".join(map(chr, range(0x80))),
        "\ud800",
        "a\udfffb",
        "\U0010ffff\u07ff\u0800\uffff",
        {"k": "\ud83d"},
        {1: 2},
        {"a": {True: 1}},
        {"a": Str("x")},
        Str("x"),
        Dict(a=1),
        [float("nan"), 1],
        2**64,
        -(2**63) - 1,
        [
            [
                [
                    [
                        [
                            [
                                [
                                    [
                                        [
                                            [
                                                [
                                                    [
                                                        [
                                                            [
                                                                [
                                                                    [
                                                                        [
                                                                            [
                                                                                [
                                                                                    [
                                                                                        [
                                                                                            [
                                                                                                [
                                                                                                    [
                                                                                                        [
                                                                                                            [
                                                                                                                [
                                                                                                                    [
                                                                                                                        [
                                                                                                                            [
                                                                                                                                [
                                                                                                                                    [
                                                                                                                                        [
                                                                                                                                            [
                                                                                                                                                [
                                                                                                                                                    [
                                                                                                                                                        [
                                                                                                                                                            [
                                                                                                                                                                [
                                                                                                                                                                    [
                                                                                                                                                                        [
                                                                                                                                                                            [
                                                                                                                                                                                [
                                                                                                                                                                                    [
                                                                                                                                                                                        [
                                                                                                                                                                                            [
                                                                                                                                                                                                [
                                                                                                                                                                                                    [
                                                                                                                                                                                                        [
                                                                                                                                                                                                            [
                                                                                                                                                                                                                [
                                                                                                                                                                                                                    [
                                                                                                                                                                                                                        [
                                                                                                                                                                                                                            [
                                                                                                                                                                                                                                [
                                                                                                                                                                                                                                    [
                                                                                                                                                                                                                                        [
                                                                                                                                                                                                                                            [
                                                                                                                                                                                                                                                [
                                                                                                                                                                                                                                                    [
                                                                                                                                                                                                                                                        [
                                                                                                                                                                                                                                                            [
                                                                                                                                                                                                                                                                [
                                                                                                                                                                                                                                                                    [
                                                                                                                                                                                                                                                                        [
                                                                                                                                                                                                                                                                            [
                                                                                                                                                                                                                                                                                [
                                                                                                                                                                                                                                                                                    [
                                                                                                                                                                                                                                                                                        1
                                                                                                                                                                                                                                                                                    ]
                                                                                                                                                                                                                                                                                ]
                                                                                                                                                                                                                                                                            ]
                                                                                                                                                                                                                                                                        ]
                                                                                                                                                                                                                                                                    ]
                                                                                                                                                                                                                                                                ]
                                                                                                                                                                                                                                                            ]
                                                                                                                                                                                                                                                        ]
                                                                                                                                                                                                                                                    ]
                                                                                                                                                                                                                                                ]
                                                                                                                                                                                                                                            ]
                                                                                                                                                                                                                                        ]
                                                                                                                                                                                                                                    ]
                                                                                                                                                                                                                                ]
                                                                                                                                                                                                                            ]
                                                                                                                                                                                                                        ]
                                                                                                                                                                                                                    ]
                                                                                                                                                                                                                ]
                                                                                                                                                                                                            ]
                                                                                                                                                                                                        ]
                                                                                                                                                                                                    ]
                                                                                                                                                                                                ]
                                                                                                                                                                                            ]
                                                                                                                                                                                        ]
                                                                                                                                                                                    ]
                                                                                                                                                                                ]
                                                                                                                                                                            ]
                                                                                                                                                                        ]
                                                                                                                                                                    ]
                                                                                                                                                                ]
                                                                                                                                                            ]
                                                                                                                                                        ]
                                                                                                                                                    ]
                                                                                                                                                ]
                                                                                                                                            ]
                                                                                                                                        ]
                                                                                                                                    ]
                                                                                                                                ]
                                                                                                                            ]
                                                                                                                        ]
                                                                                                                    ]
                                                                                                                ]
                                                                                                            ]
                                                                                                        ]
                                                                                                    ]
                                                                                                ]
                                                                                            ]
                                                                                        ]
                                                                                    ]
                                                                                ]
                                                                            ]
                                                                        ]
                                                                    ]
                                                                ]
                                                            ]
                                                        ]
                                                    ]
                                                ]
                                            ]
                                        ]
                                    ]
                                ]
                            ]
                        ]
                    ]
                ]
            ]
        ],
        object(),
        b"bytes",
        "x" * 100_000,
    ],
)
def test_dumps_of_edge_cases(value: Any) -> None:
    check_dumps(value)


@compiled
def test_dumps_of_cycles_and_depth() -> None:
    circular: list[Any] = []
    circular.append(circular)
    check_dumps(circular)
    loop: dict[str, Any] = {}
    loop["self"] = loop
    check_dumps(loop)
    nested: Any = []
    for _ in range(100_000):
        nested = [nested]
    check_dumps(nested)


@compiled
@settings(max_examples=400, deadline=None)
@given(
    array=st.booleans(),
    topic=texts,
    join_ref=st.none() | texts,
    ref=texts | st.sampled_from(["1", "99", "abcXYZ09"]),
    response=values,
)
def test_encode_ok_reply_of_generated_replies(
    array: bool, topic: str, join_ref: str | None, ref: str, response: Any
) -> None:
    args = (array, wire.dumps_py(topic), wire.quote(join_ref), ref, response)
    got, want = outcome(wire.encode_ok_reply, *args), outcome(wire.encode_ok_reply_py, *args)
    assert got == want, (args, got, want)
    if got[0] == "value":
        got[1].encode("utf-8")  # always a frame that can be sent


@compiled
def test_the_usual_frames_never_reach_python() -> None:
    """Push frames of both forms, ASCII or not, and their replies are made in C alone."""
    from zzz.channels import _wire_c

    def refuse(*_: Any) -> Any:
        raise AssertionError("handed to Python")

    usual = [
        '{"topic":"room:1","event":"new_msg","payload":{"body":"hi","n":1},"ref":"7","join_ref":"3"}',
        (
            '{"ref":"7", "join_ref":null, "payload":{"t":[1.5,true,null,"caf\u00e9 \U0001f600"]}, '
            '"event":"e", "topic":"r\u00e9"}'
        ),
        '["3","7","room:1","new_msg",{"body":"\u4f60\u597d","n":-12}]',
        '[null,null,"phoenix","heartbeat",{}]',
    ]
    _wire_c.bind(refuse, refuse, refuse)
    try:
        fields = [wire.decode_fields(text) for text in usual]
        replies = [
            wire.encode_ok_reply(form, '"room:1"', '"3"', "7", fields[k][2])
            for k, form in ((0, False), (1, False), (2, True))
        ]
        dumped = wire.dumps({"body": "caf\u00e9\n", "n": [1, 2.5, None]})
    finally:
        _wire_c.bind(wire.decode_fields_py, wire.encode_ok_reply_py, wire.dumps_py)
    assert [f[:2] for f in fields] == [
        ("room:1", "new_msg"),
        ("r\u00e9", "e"),
        ("room:1", "new_msg"),
        ("phoenix", "heartbeat"),
    ]
    for text, got in zip(usual, fields):
        assert got == wire.decode_fields_py(text)
    assert (
        replies[2]
        == '["3","7","room:1","phx_reply",{"status":"ok","response":{"body":"\u4f60\u597d","n":-12}}]'
    )
    assert json.loads(replies[1])["payload"]["response"] == {"t": [1.5, True, None, "caf\u00e9 \U0001f600"]}
    assert dumped == '{"body":"caf\u00e9\\n","n":[1,2.5,null]}'


@compiled
def test_names_that_repeat_are_the_same_str_and_stay_right_when_slots_are_reused() -> None:
    """Keys, topics, events and join refs are shared from frame to frame; refs and values are not.

    Thousands of distinct names go through the bounded table (so slots are taken over again and
    again), and every frame still decodes to what the reference makes of it.
    """
    frame = '{{"topic":"room:{n}","event":"ev{n}","payload":{{"k{n}":"v{n}","body":"x"}},"ref":"{n}1","join_ref":"j{n}"}}'
    a, b = (wire.decode_fields(frame.format(n=7)) for _ in range(2))
    assert a == b
    for k in (0, 1, 4):  # topic, event, join ref
        assert a[k] is b[k], k
    assert [x is y for x, y in zip(a[2], b[2])] == [True, True]  # the payload's keys
    assert a[3] is not b[3] and a[2]["k7"] is not b[2]["k7"]  # the ref and the values are new
    for n in range(5000):
        for text in (frame.format(n=n), frame.format(n=n % 50)):
            check_decode(text)
    # Not cached, still right: Latin-1 and wider names, names longer than the table keeps, empty ones.
    for name in ("caf\u00e9", "\u4f60\u597d", "\U0001f600", "k" * 40, "k" * 41, "k" * 500, ""):
        text = frame.replace("room:{n}", name).replace("k{n}", name).format(n=1)
        for _ in range(2):
            check_decode(text)
        assert wire.decode_fields(text)[0] == name
