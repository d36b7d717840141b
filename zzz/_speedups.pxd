# The map of the compiled byte core: every extension type's fields and C methods.
#
# Read it before ``_speedups.pyx``. ``_readloop_c`` (the per-read fast path, compiled from
# ``_readloop.py``) cimports ``FrameReader`` and ``Outbox`` from here and calls their ``cpdef``
# methods and fields at C speed; Python code (and the pure-Python read loop over either core)
# sees the same names: ``FrameReader.feed`` and ``.error``, ``Outbox.text/binary/raw/take/take_one``,
# ``.size``, ``.open`` and ``.in_read``. The twin (``_purepy.py``) has the same names.

cimport cython
from cpython.object cimport PyObject
from libc.stdint cimport uint32_t, uint64_t


# The calling thread's id without a Python call (``threading.get_ident`` in the twin's text).
cpdef unsigned long _thread_ident() noexcept


@cython.final
cdef class Utf8Validator:
    cdef uint32_t _state


cdef class Text:
    cdef readonly object data


cdef class Binary:
    cdef readonly object data


cdef struct _Limit:
    bint negative    # every size is over it
    uint64_t value   # saturated at UINT64_MAX (sizes never come near it)


@cython.final
cdef class FrameReader:
    cdef public bint require_mask
    cdef public bint allow_rsv1
    cdef public bint messages
    cdef object _max_frame_size_obj
    cdef object _max_message_size_obj
    cdef object _max_fragments_obj
    cdef _Limit _frame_limit
    cdef _Limit _message_limit
    cdef _Limit _fragment_limit
    # The violation that failed this reader (raised again by every later feed), or None.
    cdef readonly object error
    # A header cut by the end of the previous chunk (a header is at most 14 bytes).
    cdef unsigned char _stash[16]
    cdef Py_ssize_t _stash_len
    # The frame whose payload is being read.
    cdef bint _in_payload
    cdef int _opcode
    cdef bint _fin
    cdef bint _rsv1
    cdef bint _masked
    cdef unsigned char _key[4]
    cdef uint64_t _length
    cdef uint64_t _received
    # Payload received so far when it came in pieces: a private bytes object grown as data
    # arrives (never to the declared length up front), shrunk to size and handed out as is.
    cdef PyObject *_acc
    cdef Py_ssize_t _acc_cap
    # The data message in progress (opcode 0 when none).
    cdef int _msg_opcode
    cdef bint _msg_compressed
    cdef uint64_t _msg_size
    cdef uint64_t _msg_frames
    cdef uint32_t _utf8

    cpdef list feed(self, object data)
    cdef int _parse(self, const unsigned char *p, Py_ssize_t n, list frames) except -1
    cdef object _whole_payload(self, const unsigned char *src, Py_ssize_t n)
    cdef int _append(self, const unsigned char *src, Py_ssize_t take) except -1
    cdef object _accumulated_payload(self)


# The frames that consecutive broadcasts of one loop turn queued on many outboxes, shared by them
# (``Outbox.share``): a receiver's queue is then a slice of ``frames``, written as one buffer
# joined once for every receiver with the same slice (the last slice joined is kept).
@cython.final
cdef class Run:
    cdef list frames
    cdef Py_ssize_t _start
    cdef Py_ssize_t _end
    cdef object _joined
    # The run that receivers of ``frames[_fork_start:_fork_end]`` go on with when the next frame
    # they get is not the next of this run (``Outbox.share``); None before the first.
    cdef Run _fork
    cdef Py_ssize_t _fork_start
    cdef Py_ssize_t _fork_end

    cdef object join(self, Py_ssize_t start, Py_ssize_t end)


@cython.final
cdef class Outbox:
    # ``open`` mirrors the owning Connection's state (True exactly while it is OPEN); its one
    # setter is ``Connection._set_state``. ``in_read`` is True while a driver handles a read or
    # runs callbacks: sends then wait for the one write at its end.
    cdef public bint open
    cdef public bint in_read
    cdef public object encoder
    # Bytes queued in all: those of the sealed buffers plus the ``_len`` of the one being filled.
    cdef readonly Py_ssize_t size
    # Data messages among them (``text``/``binary``; a caller of ``raw`` that queues one adds
    # it): read with ``size`` by whoever takes them, for the metrics; ``take`` resets both.
    cdef public Py_ssize_t messages
    cdef list _buffers
    cdef PyObject *_buf  # the bytes being filled (only reference), or NULL
    cdef Py_ssize_t _len
    cdef Py_ssize_t _cap
    # The queue, when it is one frame ``raw`` was given alone (a broadcast's frame, shared by every
    # receiver): held by reference, not copied; else None. Once more comes it is copied into the
    # buffer being filled, so what follows is written after it in one buffer as before.
    cdef object _held
    # The queue, when it is only broadcast frames: ``_run.frames[_run_start:_run_end]``, shared
    # with the other receivers of the same broadcasts (``share``); else None. Anything else queued
    # makes it the ``_held`` frame first (``_unshare``), so the order is kept.
    cdef Run _run
    cdef Py_ssize_t _run_start
    cdef Py_ssize_t _run_end

    cpdef text(self, object text)
    cpdef binary(self, object data)
    cpdef raw(self, object frame)
    cpdef list take(self)
    cpdef object take_one(self)
    cpdef object share(self, bytes frame, object fresh)
    cdef int _unshare(self) except -1
    cdef int _data(self, int b0, object payload) except -1
    cdef int _raw(self, object frame) except -1
    cdef int _frame(self, int b0, const unsigned char *payload, Py_ssize_t n) except -1
    cdef int _big(self, int b0, bytes payload, Py_ssize_t n) except -1
    cdef unsigned char *_reserve(self, Py_ssize_t n) except NULL
    cdef int _seal(self) except -1
    cdef bytes _detach(self)
