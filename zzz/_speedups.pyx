# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, auto_pickle=False, binding=False
"""Compiled core of zzz: XOR masking, incremental UTF-8 validation, frame reading and encoding.

Bytes only: nothing here touches a transport, a loop or a user callback. ``zzz._purepy`` is its
twin and the reference for behaviour (errors and messages included); ``zzz.core`` picks one of the
two and nothing else imports this module (``_readloop_c`` cimports the types of
``_speedups.pxd``, the map of every field and C method here).
"""

cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_CheckExact, PyByteArray_GET_SIZE
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.exc cimport PyErr_Clear, PyErr_Occurred
from cpython.list cimport PyList_Append, PyList_GET_ITEM, PyList_GET_SIZE
from cpython.long cimport PyLong_Check
from cpython.pythread cimport PyThread_get_thread_ident
from cpython.ref cimport Py_DECREF, Py_INCREF, Py_XDECREF
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport UINT64_MAX
from libc.string cimport memcpy

from operator import index as _index

from zzz.errors import InvalidUtf8, MessageTooBig, PolicyViolation, ProtocolError, WebSocketError

cdef extern from "Python.h":
    # Declared without ``except`` so that a failure can be cleared and retried differently.
    int _try_get_buffer "PyObject_GetBuffer"(object obj, Py_buffer *view, int flags)
    int _PyBytes_Resize(PyObject **obj, Py_ssize_t size) except -1
    # Without ``except``: an overflow is cleared and handled by the caller.
    long PyLong_AsLong(object obj)
    object PyUnicode_New(Py_ssize_t size, Py_UCS4 maxchar)
    void *PyUnicode_DATA(object o)
    bint PyUnicode_IS_COMPACT_ASCII(object o)
    Py_ssize_t PyUnicode_GET_LENGTH(object o)
    object PyUnicode_AsUTF8String(object o)

cdef extern from "_mask.h":
    void zzz_mask(unsigned char *dst, const unsigned char *src, size_t n,
                  const unsigned char *key, size_t phase) nogil
    const char *zzz_mask_select(const char *name)
    const char *zzz_mask_kernel_name

cdef extern from "_ustr.h":
    void zzz_ustr_keep_utf8(object s, const unsigned char *src, Py_ssize_t n)
    const char *zzz_ustr_cached_utf8(object s, Py_ssize_t *n)

cdef extern from "_utf8.h":
    enum:
        ZZZ_UTF8_REJECT
        ZZZ_UTF8_ACCEPT
    void zzz_utf8_init_rows()
    const char *zzz_utf8_select(const char *name)
    const char *zzz_ascii_kernel_name
    size_t zzz_ascii_prefix(const unsigned char *p, size_t n) nogil
    bint zzz_is_ascii(const unsigned char *p, size_t n) nogil
    Py_ssize_t zzz_utf8_feed(uint32_t *state, const unsigned char *p, size_t n) nogil

__all__ = [
    "OP_BINARY",
    "OP_CLOSE",
    "OP_CONT",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "Binary",
    "FrameReader",
    "Outbox",
    "Text",
    "Utf8Validator",
    "encode_frame",
    "mask",
    "mask_inplace",
    "validate_utf8",
]

OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

zzz_utf8_init_rows()
zzz_mask_select(b"best")
zzz_utf8_select(b"best")

cdef enum:
    # Known opcodes as a bit set: 0, 1, 2, 8, 9, 10.
    _KNOWN_OPCODES = 0x0707
    # From this size on, masking lets other threads run while it works.
    _NOGIL_MASK = 1 << 20
    # Text frames up to this size are unmasked into a stack buffer before decoding.
    _SMALL_TEXT = 512
_UNLIMITED = 1 << 64
_KEY_ERROR = "mask key must be exactly 4 bytes"


cpdef unsigned long _thread_ident() noexcept:
    """The calling thread's id (``threading.get_ident()``), callable from C without a Python call."""
    return PyThread_get_thread_ident()


def _select_kernels(name="best"):
    """Pick the SIMD kernels by name ("best", "avx512", "avx2", "sse2", "word"), for tests and
    benchmarks; return (mask kernel, ASCII kernel) or raise ValueError if the CPU lacks it."""
    cdef bytes b = name.encode()
    if zzz_mask_select(b) == NULL:
        zzz_mask_select(b"best")
        raise ValueError(f"kernel {name!r} is not available on this CPU")
    zzz_utf8_select(b)
    return (zzz_mask_kernel_name.decode(), zzz_ascii_kernel_name.decode())


# ---------------------------------------------------------------------------------------------
# Argument helpers: each mirrors what the twin's Python code does with the same argument, so the
# odd inputs fail with the same exception and message.

cdef inline int _get_read_buffer(object obj, Py_buffer *view) except -1:
    """Contiguous read view of ``obj``; other inputs get the twin's ``memoryview(x).cast("B")``."""
    if _try_get_buffer(obj, view, PyBUF_SIMPLE) == 0:
        return 0
    PyErr_Clear()
    PyObject_GetBuffer(memoryview(obj).cast("B"), view, PyBUF_SIMPLE)
    return 0


cdef inline int _get_bytes_buffer(object obj, Py_buffer *view) except -1:
    """Contiguous read view of ``obj``; other inputs are passed through ``bytes()`` as the twin does."""
    if _try_get_buffer(obj, view, PyBUF_SIMPLE) == 0:
        return 0
    PyErr_Clear()
    PyObject_GetBuffer(bytes(obj), view, PyBUF_SIMPLE)
    return 0


cdef inline int _check_key(object key) except -1:
    if PyBytes_CheckExact(key):
        if PyBytes_GET_SIZE(key) != 4:
            raise ValueError(_KEY_ERROR)
    elif len(key) != 4:
        raise ValueError(_KEY_ERROR)
    return 0


cdef inline bytes _key_bytes(object key):
    """The 4-byte key as ``bytes`` (after ``_check_key``)."""
    if PyBytes_CheckExact(key):
        return <bytes>key
    cdef bytes b = bytes(key)
    if PyBytes_GET_SIZE(b) != 4:
        raise ValueError(_KEY_ERROR)
    return b


cdef inline int _phase(object phase) except -1:
    """``phase & 3`` with Python's semantics (negative and huge ints included)."""
    cdef long v
    if PyLong_Check(phase):
        v = PyLong_AsLong(phase)
        if v != -1 or not PyErr_Occurred():
            return <int>(v & 3)
        PyErr_Clear()
    phase &= 3  # in-place, as the twin writes it: odd types fail with the same message
    return <int>phase


# ---------------------------------------------------------------------------------------------
# Masking

def mask(data, key, phase=0):
    """Return ``data`` XORed with the repeating 4-byte ``key``, starting at key byte ``phase``.

    Args:
        data: Any contiguous bytes-like object.
        key: The 4-byte masking key.
        phase: Index of the key byte that applies to ``data[0]`` (taken modulo 4), for payloads
            masked in pieces.

    Returns:
        A new ``bytes`` of the same length.

    Raises:
        ValueError: ``key`` is not 4 bytes long.
    """
    cdef Py_buffer view
    cdef Py_ssize_t n
    cdef int ph
    cdef bytes kb, out
    cdef unsigned char *dst
    cdef const unsigned char *src
    cdef const unsigned char *k
    if (PyBytes_CheckExact(data) and PyBytes_CheckExact(key) and PyBytes_GET_SIZE(key) == 4
            and PyBytes_GET_SIZE(data) < _NOGIL_MASK):
        # The common case without the buffer protocol's acquire and release.
        n = PyBytes_GET_SIZE(data)
        if n == 0:
            return b""
        ph = _phase(phase)
        out = PyBytes_FromStringAndSize(NULL, n)
        zzz_mask(<unsigned char *>PyBytes_AS_STRING(out), <const unsigned char *>PyBytes_AS_STRING(data),
                 <size_t>n, <const unsigned char *>PyBytes_AS_STRING(key), <size_t>ph)
        return out
    _check_key(key)
    _get_read_buffer(data, &view)
    try:
        n = view.len
        if n == 0:
            return b""
        ph = _phase(phase)
        kb = _key_bytes(key)
        out = PyBytes_FromStringAndSize(NULL, n)
        dst = <unsigned char *>PyBytes_AS_STRING(out)
        src = <const unsigned char *>view.buf
        k = <const unsigned char *>PyBytes_AS_STRING(kb)
        if n >= _NOGIL_MASK:
            with nogil:
                zzz_mask(dst, src, <size_t>n, k, <size_t>ph)
        else:
            zzz_mask(dst, src, <size_t>n, k, <size_t>ph)
        return out
    finally:
        PyBuffer_Release(&view)


def mask_inplace(buf, key, phase=0):
    """XOR the writable buffer ``buf`` with ``key`` in place, starting at key byte ``phase``.

    Args:
        buf: A writable contiguous buffer (``bytearray``, writable ``memoryview``, ...).
        key: The 4-byte masking key.
        phase: Index of the key byte that applies to ``buf[0]`` (taken modulo 4).

    Raises:
        TypeError: ``buf`` is read-only or not a contiguous buffer.
        ValueError: ``key`` is not 4 bytes long.
    """
    cdef Py_buffer view
    cdef Py_ssize_t n
    cdef int ph
    cdef bytes kb
    cdef unsigned char *p
    cdef const unsigned char *k
    if (PyByteArray_CheckExact(buf) and PyBytes_CheckExact(key) and PyBytes_GET_SIZE(key) == 4
            and PyByteArray_GET_SIZE(buf) < _NOGIL_MASK):
        # The common case without the buffer protocol's acquire and release.
        n = PyByteArray_GET_SIZE(buf)
        if n:
            p = <unsigned char *>PyByteArray_AS_STRING(buf)
            zzz_mask(p, p, <size_t>n, <const unsigned char *>PyBytes_AS_STRING(key), <size_t>_phase(phase))
        return None
    if _try_get_buffer(buf, &view, PyBUF_WRITABLE) != 0:
        PyErr_Clear()
        mv = memoryview(buf)
        if mv.readonly:
            raise TypeError("mask_inplace needs a writable buffer")
        PyObject_GetBuffer(mv.cast("B"), &view, PyBUF_WRITABLE)
    try:
        _check_key(key)
        n = view.len
        if n == 0:
            return None
        ph = _phase(phase)
        kb = _key_bytes(key)
        p = <unsigned char *>view.buf
        k = <const unsigned char *>PyBytes_AS_STRING(kb)
        if n >= _NOGIL_MASK:
            with nogil:
                zzz_mask(p, p, <size_t>n, k, <size_t>ph)
        else:
            zzz_mask(p, p, <size_t>n, k, <size_t>ph)
        return None
    finally:
        PyBuffer_Release(&view)


# ---------------------------------------------------------------------------------------------
# UTF-8

def validate_utf8(data):
    """Return -1 when ``data`` is complete, valid UTF-8.

    Otherwise return the index of the first invalid byte, or ``len(data)`` when the data is a
    valid prefix cut inside a multi-byte sequence.
    """
    cdef Py_buffer view
    cdef uint32_t state = ZZZ_UTF8_ACCEPT
    cdef Py_ssize_t r
    _get_bytes_buffer(data, &view)
    try:
        r = zzz_utf8_feed(&state, <const unsigned char *>view.buf, <size_t>view.len)
        if r >= 0:
            return r
        return -1 if state == ZZZ_UTF8_ACCEPT else view.len
    finally:
        PyBuffer_Release(&view)


@cython.final
cdef class Utf8Validator:
    """Incremental UTF-8 validator: state carries across ``feed`` calls, failure is reported
    at the first byte that can no longer start or continue a valid sequence."""

    def __cinit__(self):
        self._state = ZZZ_UTF8_ACCEPT

    def __init__(self):
        pass

    def reset(self):
        """Forget all state: ready for a new message."""
        self._state = ZZZ_UTF8_ACCEPT

    @property
    def complete(self):
        """True when no multi-byte sequence is left open (and nothing failed)."""
        return self._state == ZZZ_UTF8_ACCEPT

    def feed(self, data):
        """Validate the next chunk. Return -1 if all is well so far, else the index in ``data``
        of the first invalid byte (0 for every chunk after a failure)."""
        cdef Py_buffer view
        if self._state == ZZZ_UTF8_REJECT:
            return 0
        _get_bytes_buffer(data, &view)
        try:
            return zzz_utf8_feed(&self._state, <const unsigned char *>view.buf, <size_t>view.len)
        finally:
            PyBuffer_Release(&view)


# ---------------------------------------------------------------------------------------------
# Messages. ``zzz.Text`` and ``zzz.Binary`` are these classes: created once per received message
# and matched by user code, so they are extension types (a dataclass costs three times as much).

@cython.freelist(128)
cdef class Text:
    """A text message; ``data`` is the decoded ``str``."""

    __match_args__ = ("data",)

    def __init__(self, data):
        self.data = data

    def __eq__(self, other):
        if type(other) is not Text:
            return NotImplemented
        return self.data == (<Text>other).data

    def __hash__(self):
        return hash((Text, self.data))

    def __repr__(self):
        return f"Text(data={self.data!r})"

    def __reduce__(self):
        return (Text, (self.data,))


@cython.freelist(128)
cdef class Binary:
    """A binary message; ``data`` is ``bytes``."""

    __match_args__ = ("data",)

    def __init__(self, data):
        self.data = data

    def __eq__(self, other):
        if type(other) is not Binary:
            return NotImplemented
        return self.data == (<Binary>other).data

    def __hash__(self):
        return hash((Binary, self.data))

    def __repr__(self):
        return f"Binary(data={self.data!r})"

    def __reduce__(self):
        return (Binary, (self.data,))


# ---------------------------------------------------------------------------------------------
# Frame reader

cdef int _set_limit(_Limit *limit, object value) except -1:
    value = _index(value)
    if value < 0:
        limit.negative = True
        limit.value = 0
    else:
        limit.negative = False
        limit.value = UINT64_MAX if value >= _UNLIMITED else <uint64_t>value
    return 0


@cython.final
cdef class FrameReader:
    """Incremental RFC 6455 frame reader.

    ``feed(data)`` accepts any chunking and returns the frames completed by it, each a tuple
    ``(opcode, fin, rsv1, payload)`` with the payload unmasked. The payload of an unfragmented,
    uncompressed text frame is a ``str``; every other payload is ``bytes``. Every rule of
    RFC 6455 §5 that can be checked on the header is checked before any payload is buffered,
    and the text of uncompressed text messages is validated as its bytes arrive.

    With ``messages=True`` a frame that is a whole uncompressed data message on its own is
    delivered as ``Text(str)`` or ``Binary(bytes)`` instead of a tuple: the form the callbacks
    get, made once.

    On a violation ``feed`` raises a ``WebSocketError`` subclass whose ``frames`` attribute holds
    the frames completed before it; the reader stays failed afterwards (``error`` is that
    violation, None until then).
    """

    def __cinit__(self):
        self._acc = NULL
        self._utf8 = ZZZ_UTF8_ACCEPT

    def __dealloc__(self):
        Py_XDECREF(self._acc)
        self._acc = NULL

    def __init__(
        self,
        *,
        require_mask=True,
        allow_rsv1=False,
        max_frame_size=None,
        max_message_size=None,
        max_fragments=None,
        messages=False,
    ):
        self.require_mask = require_mask
        self.allow_rsv1 = allow_rsv1
        self.messages = messages
        self.max_frame_size = _UNLIMITED if max_frame_size is None else max_frame_size
        self.max_message_size = _UNLIMITED if max_message_size is None else max_message_size
        self.max_fragments = _UNLIMITED if max_fragments is None else max_fragments

    @property
    def max_frame_size(self):
        return self._max_frame_size_obj

    @max_frame_size.setter
    def max_frame_size(self, value):
        _set_limit(&self._frame_limit, value)
        self._max_frame_size_obj = value

    @property
    def max_message_size(self):
        return self._max_message_size_obj

    @max_message_size.setter
    def max_message_size(self, value):
        _set_limit(&self._message_limit, value)
        self._max_message_size_obj = value

    @property
    def max_fragments(self):
        return self._max_fragments_obj

    @max_fragments.setter
    def max_fragments(self, value):
        _set_limit(&self._fragment_limit, value)
        self._max_fragments_obj = value

    cpdef list feed(self, object data):
        """Parse ``data``; return the frames it completes.

        Args:
            data: The next bytes read from the connection, any contiguous bytes-like object.

        Returns:
            The frames completed by ``data``, in order, as ``(opcode, fin, rsv1, payload)``.

        Raises:
            WebSocketError: The peer broke the protocol or a limit; ``frames`` on the exception
                holds the frames completed before the failure, and every later call raises it
                again (with no frames).
        """
        cdef Py_buffer view
        cdef list frames
        if self.error is not None:
            self.error.frames = []
            raise self.error
        if _try_get_buffer(data, &view, PyBUF_SIMPLE) != 0:
            PyErr_Clear()
            raise TypeError(f"can't concat {type(data).__name__} to bytearray")
        frames = []
        try:
            self._parse(<const unsigned char *>view.buf, view.len, frames)
        except WebSocketError as exc:
            exc.frames = frames
            self.error = exc
            raise
        finally:
            PyBuffer_Release(&view)
        return frames

    cdef int _parse(self, const unsigned char *p, Py_ssize_t n, list frames) except -1:
        cdef Py_ssize_t pos = 0
        cdef Py_ssize_t header
        cdef Py_ssize_t take
        cdef uint64_t want
        if not self._in_payload and self._stash_len:
            # Finish the header held back from the previous chunk first.
            take = 14 - self._stash_len
            if take > n:
                take = n
            memcpy(&self._stash[self._stash_len], p, take)
            header = _read_header(self, self._stash, self._stash_len + take)
            if header < 0:
                self._stash_len += take  # a short header means all of data went in
                return 0
            pos = header - self._stash_len
            self._stash_len = 0
        while True:
            if not self._in_payload:
                header = _read_header(self, p + pos, n - pos)
                if header < 0:
                    memcpy(self._stash, p + pos, n - pos)
                    self._stash_len = n - pos
                    return 0
                pos += header
            want = self._length - self._received
            if self._received == 0 and <uint64_t>(n - pos) >= want:
                # The whole payload is here: build the result straight from the caller's data.
                _deliver(self, self._whole_payload(p + pos, <Py_ssize_t>want), frames)
                pos += <Py_ssize_t>want
                continue
            take = n - pos
            if <uint64_t>take > want:
                take = <Py_ssize_t>want
            if take:
                self._append(p + pos, take)
                pos += take
            if self._received < self._length:
                return 0
            _deliver(self, self._accumulated_payload(), frames)

    cdef object _whole_payload(self, const unsigned char *src, Py_ssize_t n):
        """The payload of a frame that arrived whole: unmasked, validated, decoded if text."""
        cdef object payload
        cdef unsigned char *dst
        cdef unsigned char small[_SMALL_TEXT]
        cdef bint text = _validates_text(self)
        if text and self._fin and self._opcode == 1:
            if n == 0:
                return ""
            if not self._masked:
                return _decode(src, n)
            if n <= _SMALL_TEXT:
                # Unmask on the stack: non-ASCII text then decodes without a scratch object.
                zzz_mask(small, src, <size_t>n, self._key, 0)
                if not zzz_is_ascii(small, <size_t>n):
                    return _decode(small, n)
                payload = PyUnicode_New(n, 127)
                memcpy(PyUnicode_DATA(payload), small, n)
                return payload
            # Unmask straight into an ASCII str; most text is ASCII and then that is the result.
            payload = PyUnicode_New(n, 127)
            dst = <unsigned char *>PyUnicode_DATA(payload)
            zzz_mask(dst, src, <size_t>n, self._key, 0)
            if zzz_is_ascii(dst, <size_t>n):
                return payload
            return _decode(dst, n)
        if n == 0:
            payload = b""
        else:
            payload = PyBytes_FromStringAndSize(NULL, n)
            dst = <unsigned char *>PyBytes_AS_STRING(payload)
            if self._masked:
                zzz_mask(dst, src, <size_t>n, self._key, 0)
            else:
                memcpy(dst, src, n)
        if text:
            if zzz_utf8_feed(&self._utf8, <const unsigned char *>PyBytes_AS_STRING(payload), <size_t>n) >= 0:
                raise InvalidUtf8("invalid UTF-8")
            if self._fin and self._utf8 != ZZZ_UTF8_ACCEPT:
                raise InvalidUtf8("invalid UTF-8")
        return payload

    cdef int _append(self, const unsigned char *src, Py_ssize_t take) except -1:
        """Unmask the next piece of a payload into the accumulator; check text as it arrives."""
        cdef Py_ssize_t needed = <Py_ssize_t>self._received + take
        cdef Py_ssize_t cap
        cdef unsigned char *dst
        if needed > self._acc_cap:
            # Grow with the data actually received, never towards the declared length alone:
            # to the whole frame only once a quarter of it is here (at most 4 bytes kept per
            # byte received), else by doubling. Each growth may copy what came so far (realloc
            # moves big blocks whenever the heap's layout says so): few steps, few copies.
            cap = 2 * self._acc_cap
            if cap < 1024:
                cap = 1024
            if cap < needed:
                cap = needed
            if <uint64_t>cap > self._length or self._length <= 4 * <uint64_t>needed:
                cap = <Py_ssize_t>self._length
            if self._acc == NULL:
                fresh = PyBytes_FromStringAndSize(NULL, cap)
                Py_INCREF(fresh)  # this reference now belongs to self._acc
                self._acc = <PyObject *>fresh
            else:
                _PyBytes_Resize(&self._acc, cap)
            self._acc_cap = cap
        dst = <unsigned char *>PyBytes_AS_STRING(<object>self._acc) + self._received
        if self._masked:
            zzz_mask(dst, src, <size_t>take, self._key, <size_t>(self._received & 3))
        else:
            memcpy(dst, src, take)
        self._received += take
        if _validates_text(self) and zzz_utf8_feed(&self._utf8, dst, <size_t>take) >= 0:
            raise InvalidUtf8("invalid UTF-8")
        return 0

    cdef object _accumulated_payload(self):
        """The payload of a frame that came in pieces, all of which are now here."""
        cdef object payload
        cdef Py_ssize_t n = <Py_ssize_t>self._length
        if self._acc_cap != n:
            _PyBytes_Resize(&self._acc, n)
        payload = <object>self._acc
        Py_DECREF(payload)  # drop the accumulator's own reference, ``payload`` keeps one
        self._acc = NULL
        self._acc_cap = 0
        if _validates_text(self):
            if self._fin and self._utf8 != ZZZ_UTF8_ACCEPT:
                raise InvalidUtf8("invalid UTF-8")
            if self._fin and self._opcode == 1:
                return _decode(<const unsigned char *>PyBytes_AS_STRING(payload), n)
        return payload


# The reader's per-frame steps, module-level so that C inlines them into ``_parse`` (methods
# declared in ``_speedups.pxd`` can't be inline).

cdef inline Py_ssize_t _read_header(FrameReader self, const unsigned char *p, Py_ssize_t avail) except -2:
    """Parse a header; return its length, or -1 if incomplete. Checks in the twin's order."""
    cdef unsigned int b0, b1
    cdef int opcode
    cdef bint fin, rsv1, masked, compressed
    cdef uint64_t length
    cdef Py_ssize_t offset
    if avail < 2:
        return -1
    b0 = p[0]
    b1 = p[1]
    fin = (b0 & 0x80) != 0
    rsv1 = (b0 & 0x40) != 0
    opcode = b0 & 0x0F
    masked = (b1 & 0x80) != 0
    length = b1 & 0x7F
    if b0 & 0x30:
        raise ProtocolError("reserved bits set")
    if not ((_KNOWN_OPCODES >> opcode) & 1):
        raise ProtocolError(f"invalid opcode {opcode}")
    if opcode >= 8:
        if not fin:
            raise ProtocolError("fragmented control frame")
        if length > 125:
            raise ProtocolError("control frame too long")
        if rsv1:
            raise ProtocolError("reserved bits set")
    elif rsv1:
        if not self.allow_rsv1:
            raise ProtocolError("reserved bits set")
        if opcode == 0:
            raise ProtocolError("RSV1 set on continuation frame")
    if opcode == 0:
        if not self._msg_opcode:
            raise ProtocolError("unexpected continuation frame")
    elif opcode < 8 and self._msg_opcode:
        raise ProtocolError("expected continuation frame")
    if masked != self.require_mask:
        raise ProtocolError("frame not masked" if self.require_mask else "frame masked by server")
    offset = 2
    if length == 126:
        if avail < 4:
            return -1
        length = (<uint64_t>p[2] << 8) | p[3]
        offset = 4
    elif length == 127:
        if avail < 10:
            return -1
        length = ((<uint64_t>p[2] << 56) | (<uint64_t>p[3] << 48) | (<uint64_t>p[4] << 40)
                  | (<uint64_t>p[5] << 32) | (<uint64_t>p[6] << 24) | (<uint64_t>p[7] << 16)
                  | (<uint64_t>p[8] << 8) | <uint64_t>p[9])
        if length >> 63:
            raise ProtocolError("invalid frame length")
        offset = 10
    if masked:
        if avail < offset + 4:
            return -1
        memcpy(self._key, p + offset, 4)
        offset += 4
    if self._frame_limit.negative or length > self._frame_limit.value:
        raise MessageTooBig("frame too big")
    if opcode < 8:
        if self._fragment_limit.negative or self._msg_frames >= self._fragment_limit.value:
            raise PolicyViolation("too many fragments")
        compressed = rsv1 if opcode != 0 else self._msg_compressed
        # Subtract, never add: the declared length may be anything up to 2**63 - 1.
        if not compressed and (
            self._message_limit.negative
            or self._msg_size > self._message_limit.value
            or length > self._message_limit.value - self._msg_size
        ):
            raise MessageTooBig("message too big")
        if opcode != 0:
            self._msg_opcode = opcode
            self._msg_compressed = rsv1
        self._msg_frames += 1
        self._msg_size += length
    self._length = length
    self._received = 0
    self._opcode = opcode
    self._fin = fin
    self._rsv1 = rsv1
    self._masked = masked
    self._in_payload = True
    return offset


cdef inline bint _validates_text(FrameReader self) noexcept:
    return self._msg_opcode == 1 and not self._msg_compressed and self._opcode < 8


cdef inline int _deliver(FrameReader self, object payload, list frames) except -1:
    cdef int opcode = self._opcode
    cdef bint fin = self._fin
    if fin and opcode < 8:
        self._msg_opcode = 0
        self._msg_compressed = False
        self._msg_size = 0
        self._msg_frames = 0
        self._utf8 = ZZZ_UTF8_ACCEPT
    self._in_payload = False
    if self.messages and fin and not self._rsv1 and (opcode == 1 or opcode == 2):
        PyList_Append(frames, _message(opcode, payload))
    else:
        PyList_Append(frames, (opcode, fin, self._rsv1, payload))
    return 0


cdef inline object _message(int opcode, object payload):
    """``Text(payload)`` or ``Binary(payload)`` without the cost of calling the class."""
    cdef Text text
    cdef Binary binary
    if opcode == 1:
        text = Text.__new__(Text)
        text.data = payload
        return text
    binary = Binary.__new__(Binary)
    binary.data = payload
    return binary


cdef object _decode(const unsigned char *p, Py_ssize_t n):
    """The str of valid UTF-8 text, carrying those bytes as its UTF-8 form (``_ustr.h``): sending
    it on then encodes nothing."""
    cdef object text
    try:
        text = PyUnicode_DecodeUTF8(<const char *>p, n, NULL)
    except UnicodeDecodeError:
        raise InvalidUtf8("invalid UTF-8") from None
    zzz_ustr_keep_utf8(text, p, n)
    return text


# ---------------------------------------------------------------------------------------------
# Encoder

def encode_frame(opcode, payload, fin=True, rsv1=False, mask_key=None):
    """Return one frame: header plus payload, masked with ``mask_key`` when one is given.

    Args:
        opcode: The frame opcode, 0..15 (not checked against the known ones).
        payload: The payload, any contiguous bytes-like object.
        fin: Whether this is the final frame of its message.
        rsv1: Whether to set RSV1 (permessage-deflate's "compressed" bit).
        mask_key: The 4-byte masking key (clients), or ``None`` for an unmasked frame (servers).

    Returns:
        The whole frame, built in one allocation.

    Raises:
        ValueError: ``opcode`` is out of range or ``mask_key`` is not 4 bytes long.
    """
    cdef long op = -1
    cdef int b0
    cdef Py_buffer view
    cdef Py_buffer keyview
    cdef Py_ssize_t n, header, total
    cdef bytes out
    cdef unsigned char *dst
    cdef bint exact = PyLong_Check(opcode)
    if exact:
        op = PyLong_AsLong(opcode)
        if op == -1 and PyErr_Occurred():
            PyErr_Clear()  # too big either way
        if not 0 <= op <= 15:
            raise ValueError("opcode must be 0..15")
    elif not 0 <= opcode <= 0xF:
        raise ValueError("opcode must be 0..15")
    _get_read_buffer(payload, &view)
    try:
        n = view.len
        if exact:
            b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | <int>op
        else:
            b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
        header = 2 if n < 126 else (4 if n < 0x10000 else 10)
        if mask_key is None:
            out = PyBytes_FromStringAndSize(NULL, header + n)
            dst = <unsigned char *>PyBytes_AS_STRING(out)
            _write_header(dst, b0, 0, n)
            memcpy(dst + header, view.buf, n)
            return out
        _check_key(mask_key)
        if _try_get_buffer(mask_key, &keyview, PyBUF_SIMPLE) != 0:
            PyErr_Clear()
            raise TypeError(f"can't concat {type(mask_key).__name__} to bytes")
        try:
            if keyview.len != 4:
                raise ValueError(_KEY_ERROR)
            out = PyBytes_FromStringAndSize(NULL, header + 4 + n)
            dst = <unsigned char *>PyBytes_AS_STRING(out)
            _write_header(dst, b0, 0x80, n)
            memcpy(dst + header, keyview.buf, 4)
            zzz_mask(dst + header + 4, <const unsigned char *>view.buf, <size_t>n,
                     <const unsigned char *>keyview.buf, 0)
            return out
        finally:
            PyBuffer_Release(&keyview)
    finally:
        PyBuffer_Release(&view)


cdef inline void _write_header(unsigned char *dst, int b0, int mask_bit, Py_ssize_t n) noexcept:
    cdef uint64_t v = <uint64_t>n
    cdef int i
    dst[0] = <unsigned char>b0
    if n < 126:
        dst[1] = <unsigned char>(mask_bit | n)
    elif n < 0x10000:
        dst[1] = <unsigned char>(mask_bit | 126)
        dst[2] = <unsigned char>(n >> 8)
        dst[3] = <unsigned char>(n & 0xFF)
    else:
        dst[1] = <unsigned char>(mask_bit | 127)
        for i in range(8):
            dst[9 - i] = <unsigned char>(v & 0xFF)
            v >>= 8


# ---------------------------------------------------------------------------------------------
# Sending

cdef enum:
    # Payloads from this size on are queued as their own buffer, not copied behind their header.
    _SPLIT_FRAME_SIZE = 64 * 1024
    _OUTBOX_FIRST_SIZE = 1024
    # A first frame up to this size gets a buffer of its exact size: a bytes object that small
    # comes from CPython's small-object allocator and needs no shrinking when it is the only
    # frame (one reply per read); a 1 KiB one went to malloc, then realloc, then free.
    _OUTBOX_EXACT_SIZE = 256
    # A buffer this full is queued as it is when it would have to grow; the next one starts at
    # _OUTBOX_CHUNK_SIZE, so a big batch of replies is never copied by growing.
    _OUTBOX_SEAL_SIZE = 32 * 1024
    _OUTBOX_CHUNK_SIZE = 64 * 1024

@cython.final
cdef class Run:
    """Frames that consecutive broadcasts of one loop turn queued on many outboxes, in order.

    ``Outbox.share`` makes one per broadcast whose receivers had nothing queued, and the receivers
    that get the next broadcasts too extend it, so a burst of broadcasts to the same receivers
    is one list of frames however many receivers there are; each receiver's queue is a slice of
    it. At the flush ``join`` makes the slice one buffer, once for all the receivers with the
    same slice (the last slice joined is kept), so every receiver's write is that one object.
    The items of ``frames`` are whole frames, or (the first of a fork) several joined.
    """

    def __cinit__(self):
        self.frames = []
        self._joined = None
        self._fork = None

    cdef object join(self, Py_ssize_t start, Py_ssize_t end):
        """``frames[start:end]`` as one bytes object (the frame itself for a slice of one)."""
        if end - start == 1:
            return self.frames[start]
        if self._joined is None or self._start != start or self._end != end:
            self._joined = b"".join(self.frames[start:end])
            self._start = start
            self._end = end
        return self._joined


cdef Run _run_of(object first, bytes frame):
    """A run that starts with ``first`` (a frame, or several joined) and then ``frame``."""
    cdef Run run = Run()
    run.frames.append(first)
    run.frames.append(frame)
    return run


cdef inline bint _starts_with(Run run, object first, bytes frame):
    """``run`` was made by ``_run_of(first, frame)`` (its first two items are those objects)."""
    return (
        PyList_GET_SIZE(run.frames) >= 2
        and <PyObject *>PyList_GET_ITEM(run.frames, 0) == <PyObject *>first
        and <PyObject *>PyList_GET_ITEM(run.frames, 1) == <PyObject *>frame
    )


@cython.final
cdef class Outbox:
    """The frames one connection has queued for the network, in order.

    ``text`` and ``binary`` queue data messages and do nothing unless ``open``; ``raw`` queues a
    frame that is already encoded (control frames, broadcasts) whatever the state. Without an
    ``encoder`` the frames are a server's: unmasked and uncompressed, built here; with one,
    ``encoder(payload: bytes, opcode)`` returns each data frame (masking, compression).
    ``take`` hands everything over as a list of immutable buffers for one vectored write.

    Small frames are written one after another into a bytes object that grows as needed and is
    handed over as it is (shrunk to fit, never copied again); big payloads are their own buffer.
    ``size`` counts the bytes queued, ``messages`` the data messages among them (``raw`` frames
    count when their caller adds them). No view of a buffer that is reused is ever handed out:
    ``take`` gives bytes objects the outbox no longer touches.
    """

    def __cinit__(self):
        self._buf = NULL

    def __dealloc__(self):
        Py_XDECREF(self._buf)
        self._buf = NULL

    def __init__(self, encoder=None):
        self.open = True
        self.in_read = False
        self.encoder = encoder
        self._buffers = []
        self.size = 0
        self.messages = 0

    @property
    def pending(self):
        """True when something is queued."""
        return self.size > 0

    cpdef text(self, object text):
        """Queue a text message."""
        cdef const char *utf8
        cdef Py_ssize_t n = 0
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, not {type(text).__name__}")
        if not self.open:
            return None
        if self.encoder is not None:
            self._data(0x81, PyUnicode_AsUTF8String(text))
        elif PyUnicode_IS_COMPACT_ASCII(text):
            # ASCII: the str's own bytes are the UTF-8 payload.
            self._frame(0x81, <const unsigned char *>PyUnicode_DATA(text), PyUnicode_GET_LENGTH(text))
        else:
            utf8 = zzz_ustr_cached_utf8(text, &n)
            if utf8 == NULL:
                self._data(0x81, PyUnicode_AsUTF8String(text))
            elif n < _SPLIT_FRAME_SIZE:
                # Text as it was received (``_decode``): its UTF-8 bytes are there already.
                self._frame(0x81, <const unsigned char *>utf8, n)
            else:
                self._big(0x81, PyBytes_FromStringAndSize(utf8, n), n)
        self.messages += 1
        return None

    cpdef binary(self, object data):
        """Queue a binary message; a mutable buffer is copied, since its owner may reuse it."""
        if self.open:
            self._data(0x82, data)
            self.messages += 1
        return None

    cpdef raw(self, object frame):
        """Queue bytes that are already one or more whole frames."""
        self._raw(frame)
        return None

    cpdef object share(self, bytes frame, object fresh):
        """Queue a broadcast's frame, shared with the broadcast's other receivers; returns what to
        pass as ``fresh`` to the next receiver of the same broadcast (None for the first).

        An outbox that holds only the frames of earlier broadcasts of this turn (a ``Run``) and
        gets this one too adds it to that run, without a copy (or, when the run went on without
        it, to the run's fork). An empty one holds the frame by reference, as ``raw`` does; one
        that holds a frame alone starts, with that frame and this one, on the run ``fresh``
        (made here by the first such receiver, and returned). Any other outbox, and a frame too
        big to be copied anyway, is queued as ``raw`` does. What is written is the same either
        way: the frames queued, in order.
        """
        cdef Run run = self._run
        cdef Run started
        cdef Py_ssize_t n = PyBytes_GET_SIZE(frame)
        cdef Py_ssize_t k
        if n == 0 or n >= _SPLIT_FRAME_SIZE:
            self._raw(frame)
            return fresh
        if run is not None:
            k = PyList_GET_SIZE(run.frames)
            if self._run_end == k:  # the first of this broadcast's receivers on this run
                run.frames.append(frame)
                self._run_end = k + 1
                self.size += n
                return fresh
            if self._run_end == k - 1 and <PyObject *>PyList_GET_ITEM(run.frames, k - 1) == <PyObject *>frame:
                self._run_end = k  # another receiver added this frame to the run already
                self.size += n
                return fresh
            # The run went on without this receiver (another one got a broadcast it did not): its
            # slice, joined, and this frame start a run of their own, which the receivers in the
            # same place find as the run's fork, so that they go on sharing.
            started = run._fork
            if (
                started is None
                or run._fork_start != self._run_start
                or run._fork_end != self._run_end
                or <PyObject *>PyList_GET_ITEM(started.frames, 1) != <PyObject *>frame
            ):
                started = _run_of(run.join(self._run_start, self._run_end), frame)
                run._fork = started
                run._fork_start = self._run_start
                run._fork_end = self._run_end
            self._run = started
            self._run_start = 0
            self._run_end = 2
            self.size += n
            return fresh
        elif self.size == 0:  # alone: held by reference, as ``raw`` holds it
            self._held = frame
            self.size = n
            return fresh
        elif self._held is not None:
            # A frame held alone (the last broadcast's, usually) and this one start a run, the
            # one of every receiver of this broadcast that holds the same frame.
            if fresh is None or not _starts_with(<Run>fresh, self._held, frame):
                fresh = _run_of(self._held, frame)
            self._held = None
            self._run = <Run>fresh
            self._run_start = 0
            self._run_end = 2
            self.size += n
            return fresh
        self._raw(frame)
        return fresh

    cdef int _unshare(self) except -1:
        """The run's slice becomes the frame held, so that what comes next is queued after it."""
        if self._run is not None:
            self._held = self._run.join(self._run_start, self._run_end)
            self._run = None
        return 0

    cpdef list take(self):
        """Everything queued, in order; the outbox is empty afterwards."""
        cdef list buffers
        self._unshare()
        if self._held is not None:
            buffers = [self._held]
            self._held = None
        else:
            self._seal()
            buffers = self._buffers
            self._buffers = []
        self.size = 0
        self.messages = 0
        return buffers

    cpdef object take_one(self):
        """What is queued when it is one buffer (the outbox is then empty, as after ``take``);
        otherwise None, and nothing is taken. A flush's usual case, without a list."""
        cdef object one
        if self._run is not None:
            one = self._run.join(self._run_start, self._run_end)
            self._run = None
        elif self._held is not None:
            one = self._held
            self._held = None
        elif self._buf != NULL and not self._buffers:
            one = self._detach()
        else:
            return None
        self.size = 0
        self.messages = 0
        return one

    # The work, callable from C without argument parsing.

    cdef int _data(self, int b0, object payload) except -1:
        cdef Py_buffer view
        cdef Py_ssize_t n
        if self.encoder is not None:
            self._raw(self.encoder(payload, b0 & 0x0F))
            return 0
        if PyBytes_CheckExact(payload):
            n = PyBytes_GET_SIZE(payload)
            if n >= _SPLIT_FRAME_SIZE:
                self._big(b0, payload, n)
            else:
                self._frame(b0, <const unsigned char *>PyBytes_AS_STRING(payload), n)
            return 0
        _get_read_buffer(payload, &view)
        try:
            if view.len >= _SPLIT_FRAME_SIZE:
                self._big(b0, PyBytes_FromStringAndSize(<const char *>view.buf, view.len), view.len)
            else:
                self._frame(b0, <const unsigned char *>view.buf, view.len)
        finally:
            PyBuffer_Release(&view)
        return 0

    cdef int _raw(self, object frame) except -1:
        cdef Py_ssize_t n
        self._unshare()
        if not PyBytes_CheckExact(frame):
            frame = bytes(frame)
        n = PyBytes_GET_SIZE(frame)
        if n >= _SPLIT_FRAME_SIZE:
            if self._held is not None:  # it stays a buffer of its own, before this one
                self._buffers.append(self._held)
                self._held = None
            self._seal()
            self._buffers.append(frame)
            self.size += n
        elif n and self.size == 0:
            # Alone in the queue, as a broadcast's frame usually is: held, not copied.
            self._held = frame
            self.size = n
        elif n:
            memcpy(self._reserve(n), PyBytes_AS_STRING(frame), n)
            self._len += n
            self.size += n
        return 0

    cdef int _frame(self, int b0, const unsigned char *payload, Py_ssize_t n) except -1:
        cdef Py_ssize_t header = 2 if n < 126 else (4 if n < 0x10000 else 10)
        cdef unsigned char *dst = self._reserve(header + n)
        _write_header(dst, b0, 0, n)
        memcpy(dst + header, payload, n)
        self._len += header + n
        self.size += header + n
        return 0

    cdef int _big(self, int b0, bytes payload, Py_ssize_t n) except -1:
        """The header goes into the buffer; the payload is queued as it is, after it."""
        _write_header(self._reserve(10), b0, 0, n)
        self._len += 10
        self.size += 10
        self._seal()
        self._buffers.append(payload)
        self.size += n
        return 0

    cdef unsigned char *_reserve(self, Py_ssize_t n) except NULL:
        """Room for ``n`` more bytes in the buffer being filled."""
        cdef Py_ssize_t needed = self._len + n
        cdef Py_ssize_t cap
        cdef unsigned char *dst
        cdef Py_ssize_t m
        self._unshare()
        if self._held is not None:
            # More after a frame held by reference: it moves into a buffer of the outbox's own, so
            # what follows is written after it in the same buffer (one write, as before).
            first = self._held
            self._held = None
            m = PyBytes_GET_SIZE(first)
            dst = self._reserve(m + n)
            memcpy(dst, PyBytes_AS_STRING(first), m)
            self._len += m
            return dst + m
        if needed > self._cap:
            if self._len >= _OUTBOX_SEAL_SIZE:
                self._seal()
                needed = n
                cap = _OUTBOX_CHUNK_SIZE
            elif self._buf == NULL and needed <= _OUTBOX_EXACT_SIZE:
                cap = needed
            else:
                cap = 2 * self._cap
                if cap < _OUTBOX_FIRST_SIZE:
                    cap = _OUTBOX_FIRST_SIZE
            if cap < needed:
                cap = needed
            if self._buf == NULL:
                fresh = PyBytes_FromStringAndSize(NULL, cap)
                Py_INCREF(fresh)  # this reference now belongs to self._buf
                self._buf = <PyObject *>fresh
            else:
                _PyBytes_Resize(&self._buf, cap)
            self._cap = cap
        return <unsigned char *>PyBytes_AS_STRING(<object>self._buf) + self._len

    cdef int _seal(self) except -1:
        """Move the buffer being filled, shrunk to its length, to the queue."""
        if self._buf != NULL:
            self._buffers.append(self._detach())
        return 0

    cdef bytes _detach(self):
        """The buffer being filled (there is one), shrunk to its length; the outbox lets go of it."""
        cdef bytes filled
        if self._len != self._cap:
            _PyBytes_Resize(&self._buf, self._len)
        filled = <bytes>self._buf
        Py_DECREF(filled)  # drop self._buf's reference, ``filled`` keeps one
        self._buf = NULL
        self._len = 0
        self._cap = 0
        return filled

