"""Type stub for the compiled wire hot path (``_wire_c.pyx``); ``zzz.channels.wire`` is its reference."""

from collections.abc import Callable
from typing import Any

def bind(
    decode_fields: Callable[[str], Any],
    encode_ok_reply: Callable[[bool, str, str, str, Any], str],
    dumps: Callable[[Any], str],
) -> None: ...
def decode_fields(text: str) -> Any: ...
def encode_ok_reply(
    array_form: bool, topic_json: str, join_ref_json: str, ref: str, response: Any
) -> str: ...
def dumps(value: Any) -> str: ...
