# Types for the compiled correlator (Cython pure-Python mode, see tracer/core.py).
# Spans and stats stay Python objects here.

cimport cython
from tracer.connstate cimport Conn
from tracer.spans cimport Span


@cython.locals(key=tuple, laddr=object, raddr=object)
cpdef tuple conn_key(Conn conn, bint server)
cdef bint _loopback(str addr) except -1


@cython.final
cdef class Context:
    cdef public object trace_id, span_id, parent_span_id, source, confidence
    cdef public bint pending
    cdef public Context parent
    cdef public list children
    cdef public object span
    cdef public bint server
    cdef public object pid, tid
    cdef public tuple key
    cdef public object start_ts, done_ts
    cdef public tuple header
    cdef public object flag, sampled
    cdef public list act
    cdef public set inflight

    cdef int _init(self, span_id, bint server, pid, tid, start_ts) except -1
    cdef int adopt(self, Context parent, source, confidence) except -1
    @cython.locals(c=Context)
    cdef void set_trace(self, trace_id)
    @cython.locals(c=Context, _i=Py_ssize_t)
    cpdef bint blocked(self) except -1


@cython.final
cdef class Correlator:
    cdef public object sink, stats
    cdef public dict clients, pending, active, active_pid
    cdef public set fanout
    cdef public list held
    cdef public set client_addrs
    cdef public object injected, policy
    cdef public list runtime_parents, runtime_pids

    cpdef note_client(self, addr, netns)
    @cython.locals(addr=object)
    cdef bint _client_traced(self, Conn conn) except -1
    @cython.locals(ctx=Context, tp=object, tids=tuple, ids=tuple, key=tuple, client=Context,
                   waiting=Context, inj=object, parent=Context, hook=object)
    cpdef Context start(self, Conn conn, bint server, pid, tid, headers, seq=*, ts=*)
    @cython.locals(q=object, other=Context, ts=object)
    cdef Context _take(self, dict table, tuple key, Context ctx)
    @cython.locals(act=list, inflight=set)
    cdef int _activate(self, Context ctx) except -1
    @cython.locals(key=tuple, act=list, inflight=set)
    cdef int _deactivate(self, Context ctx) except -1
    @cython.locals(act=list, header=tuple, parent=Context, pids=set)
    cdef void _link_client(self, Context ctx, pid, tid)
    @cython.locals(inflight=set, ts=object, found=Context, cand=Context, up=Context)
    cdef Context _io_parent(self, Context ctx, pid)
    @cython.locals(act=list, parent=Context, c=Context)
    cdef void _link_injected(self, Context ctx, inj)
    @cython.locals(header=tuple, c=Context)
    cdef void _link_server(self, Context ctx, Context client)
    @cython.locals(c=Context)
    cdef int _resolved(self, Context ctx) except -1
    cpdef finish(self, Context ctx, span)
    @cython.locals(q=object)
    cpdef abandon(self, Context ctx)
    @cython.locals(span=Span, policy=object, keep=bint)
    cdef void _emit(self, Context ctx)
    @cython.locals(held=list, ctx=Context)
    cdef int _release(self) except -1
    @cython.locals(ctx=Context, c=Context, _i=Py_ssize_t, old=object, done=object, table=dict,
                   q=object, stale=Context)
    cpdef flush(self, now_ktime, max_age_ns=*)
    @cython.locals(q=object)
    cdef int _unqueue(self, Context ctx) except -1
    @cython.locals(q=object, ctx=Context)
    cpdef close(self)


@cython.locals(q=object)
cdef int _push(dict table, tuple key, Context ctx) except -1
