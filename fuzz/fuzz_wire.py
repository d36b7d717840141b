"""Atheris target: the compiled channel wire path (``_wire_c``) against ``wire``'s Python functions.

Every text, whatever it is, must decode to the same fields (same types, key order and float
bits) or raise the same ``MalformedMessage``; every value that decodes must encode (``dumps``, and
inside an ok reply) to the same text. Inputs are raw fuzzed text, and push frames of both forms
with one fuzzed edit, so that both the C path and its hand-overs to Python are reached.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from zzz.channels import wire

from tests.channels.wire_compare import outcome, same
from zzz.channels import _wire_c

_wire_c.bind(wire.decode_fields_py, wire.encode_ok_reply_py, wire.dumps_py)

TEMPLATES = (
    (
        '{"topic":"room:1","event":"msg","payload":{"body":"hi \u00e9","n":12,"f":-1.5e3,"l":[true,null]},'
        '"ref":"7","join_ref":"3"}'
    ),
    '["3","7","room:1","msg",{"body":"\U0001f600","n":[0,-0,1e400,{"a":{}}]}]',
    '{ "join_ref" : null , "ref" : null , "payload" : null , "event" : "e" , "topic" : "t" }',
)


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    if fdp.ConsumeBool():
        text = fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, 512))
    else:
        base = TEMPLATES[fdp.ConsumeIntInRange(0, len(TEMPLATES) - 1)]
        at = fdp.ConsumeIntInRange(0, len(base))
        cut = fdp.ConsumeIntInRange(0, 3)
        text = base[:at] + fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, 6)) + base[at + cut :]
    got, want = outcome(_wire_c.decode_fields, text), outcome(wire.decode_fields_py, text)
    assert got[0] == want[0] and same(got[1], want[1]), (text, got, want)
    if got[0] != "value":
        return
    payload = got[1][2]
    a, b = outcome(_wire_c.dumps, payload), outcome(wire.dumps_py, payload)
    assert a == b, (payload, a, b)
    args = (got[1][5], wire.dumps_py(got[1][0]), wire.quote(got[1][4]), got[1][3] or "1", payload)
    a, b = outcome(_wire_c.encode_ok_reply, *args), outcome(wire.encode_ok_reply_py, *args)
    assert a == b, (args, a, b)


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
