# C types for ``_readloop.py`` when setup.py compiles it as ``zzz._readloop_c`` (Cython looks
# for the .pxd of the module it builds, hence the name). The .py is the one text; this only says
# which names are C: the classes become extension types, their fields C fields, and the byte
# core's FrameReader and Outbox are called through ``_speedups.pxd`` without Python calls.

cimport cython

from zzz._speedups cimport FrameReader, Outbox, _thread_ident

cdef Py_ssize_t _EARLY_FLUSH_SIZE
cdef Py_ssize_t _SKIP_MAX
cdef dict _TURNS
cdef object _TUPLE_NEW
cdef object ReadStop
cdef object WebSocketError
cdef tuple _COUNTER_FIELDS


@cython.final
cdef class Counters:
    cdef public long long connections_total
    cdef public long long messages_in
    cdef public long long messages_out
    cdef public long long bytes_in
    cdef public long long bytes_out
    cdef public dict closes
    cdef public dict handshake_failures
    cdef public long long backpressure_closes


@cython.final
cdef class Writer:
    cdef Outbox _out
    cdef Counters _counters
    cdef object _transport
    cdef object _write
    cdef object _writelines
    cdef object _buffer_size
    cdef Py_ssize_t _max_buffer
    cdef object _over_limit

    @cython.locals(out=Outbox, counters=Counters, buffers=list, transport=object)
    cpdef flush(self)

    cpdef attach(self, object transport)

    cpdef Py_ssize_t buffered(self) except -1


@cython.final
cdef class ReadLoop:
    cdef FrameReader _reader
    cdef Writer _writer
    cdef Outbox _out
    cdef object _on_message
    cdef object _ws
    cdef object _slow
    cdef object _finish
    cdef object _keepalive
    cdef Counters _counters
    cdef bint _raised
    cdef object _value
    cdef public bint enabled

    @cython.locals(out=Outbox, counters=Counters, frames=list, pos=Py_ssize_t)
    cpdef feed(self, object data)

    @cython.locals(out=Outbox, n=Py_ssize_t, start=Py_ssize_t, skipped=Py_ssize_t)
    cdef Py_ssize_t _run(self, list frames, Py_ssize_t pos) except -1

    cdef object _stop(self, list frames, Py_ssize_t pos, object error)


cdef class SendHandle:
    cdef Outbox _out
    cdef Writer _writer
    cdef object _conn
    cdef object _owner_loop
    cdef unsigned long _owner_thread
    cdef object _text_later
    cdef object _binary_later
    cdef bint _dirty

    cdef _hand_over(self, object fn, object arg)


# broadcast's loop (cpdef: a thread hands it to another loop with call_soon_threadsafe).
@cython.locals(handle=SendHandle, out=Outbox, writer=Writer, tid=cython.ulong, count=Py_ssize_t,
               frame=bytes, shared=dict, remote=dict, turn=list, group=list, fresh=object)
cpdef Py_ssize_t _fan_out(object websockets, bytes payload, int opcode, Py_ssize_t skip) except -1

@cython.locals(handles=list)
cdef list _turn(unsigned long tid, object loop)

@cython.locals(h=SendHandle)
cdef _forget(list handles)

@cython.locals(h=SendHandle)
cpdef _flush_turn(unsigned long tid, list handles)
