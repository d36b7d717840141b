# cython: language_level=3, boundscheck=False, wraparound=False, auto_pickle=False, binding=False
"""The channel wire format's usual frames in C (``_wire.h``); ``zzz.channels.wire`` is the reference.

``wire`` binds these in place of its own ``decode_fields``, ``encode_ok_reply`` and ``dumps`` when
the compiled core is in use (``zzz.core.IMPLEMENTATION == "cython"``). Each answers the usual case
itself and hands every other input, unchanged, to the Python function it replaces (given once to
``bind``), so the results and the errors are the Python functions' own.
"""

cdef extern from "_wire.h":
    object zw_decode_fields(object text)
    object zw_ok_reply(bint array_form, object topic_json, object join_ref_json, object ref, object response)
    object zw_dumps(object value)

cdef object _decode_fields_py = None
cdef object _encode_ok_reply_py = None
cdef object _dumps_py = None


def bind(decode_fields, encode_ok_reply, dumps):
    """Name the Python functions that answer what the C path leaves (``wire``'s own three)."""
    global _decode_fields_py, _encode_ok_reply_py, _dumps_py
    _decode_fields_py = decode_fields
    _encode_ok_reply_py = encode_ok_reply
    _dumps_py = dumps


def decode_fields(text):
    """``wire.decode_fields(text)``: the usual frame decoded here, any other by ``wire``."""
    fields = zw_decode_fields(text)
    if fields is None:
        return _decode_fields_py(text)
    return fields


def encode_ok_reply(array_form, topic_json, join_ref_json, ref, response):
    """``wire.encode_ok_reply(...)``: the usual reply encoded here, any other by ``wire``."""
    text = zw_ok_reply(array_form, topic_json, join_ref_json, ref, response)
    if text is None:
        return _encode_ok_reply_py(array_form, topic_json, join_ref_json, ref, response)
    return text


def dumps(value):
    """``wire.dumps(value)``: plain values encoded here, any other by ``wire``."""
    text = zw_dumps(value)
    if text is None:
        return _dumps_py(value)
    return text
