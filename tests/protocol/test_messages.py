"""``zzz.Text`` and ``zzz.Binary`` behave alike in both cores: frozen, comparable, matchable, picklable."""

from __future__ import annotations

import pickle
from types import ModuleType

import pytest

from zzz import _purepy

try:
    from zzz import _speedups
except ImportError:  # the Makefile's cython pass checks the extension is built
    _speedups = None  # type: ignore[assignment]

IMPLS = [_purepy] + ([_speedups] if _speedups is not None else [])


@pytest.mark.parametrize("impl", IMPLS, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_messages(impl: ModuleType) -> None:
    text, binary = impl.Text("héllo"), impl.Binary(b"\x00\xff")
    assert text.data == "héllo" and binary.data == b"\x00\xff"
    assert text == impl.Text("héllo") and text != impl.Text("x") and text != impl.Binary(b"h")
    assert hash(text) == hash(impl.Text("héllo"))
    assert repr(text) == "Text(data='héllo')" and repr(binary) == "Binary(data=b'\\x00\\xff')"
    with pytest.raises(AttributeError):
        text.data = "changed"  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(binary)) == binary
    for msg, want in ((text, "text"), (binary, "binary")):
        match msg:
            case impl.Text(data):
                kind = "text"
                assert data == msg.data
            case impl.Binary(data):
                kind = "binary"
                assert data == msg.data
        assert kind == want


def test_the_extension_is_there_unless_disabled() -> None:
    import os

    if os.environ.get("ZZZ_NO_EXTENSIONS"):
        return
    assert _speedups is not None, "the compiled core is not built"
