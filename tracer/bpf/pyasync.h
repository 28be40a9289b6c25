/* SPDX-License-Identifier: GPL-2.0 */
/*
 * pyasync.h: the records, counters and per-interpreter offsets of
 * pyasync.bpf.c, shared with user space (tracer/pyasync.py mirrors them; the
 * mirror is checked against the object's BTF by tests/unit/test_pyasync.py).
 */
#ifndef __TRACER_PYASYNC_H
#define __TRACER_PYASYNC_H

#pragma clang diagnostic push
#pragma clang diagnostic error "-Wpadded"

/* Task steps nested on one thread (a step that runs another loop's step:
 * rare; asyncio itself refuses two tasks at once on one loop). */
#define PA_MAX_NEST 4
/* Generations of tasks a request's identity is handed down (the connection
 * task, the tasks it creates, theirs...). */
#define PA_MAX_DEPTH 8
#define PA_MAX_MODULES 64 /* offsets slots: one per attached _asyncio module */

enum pa_record_type {
	PA_REC_CALL = 1,
};

/* A write on a client connection by a task that serves a server connection:
 * the client request starting with this write belongs to the server request
 * in flight on server_conn that had started by serve_ts. Connection ids are
 * sock.bpf.o's (conns map). */
struct pa_call {
	__u8 type; /* enum pa_record_type */
	__u8 depth; /* task generations between the serving task and this one */
	__u16 pad;
	__u32 pid;
	__u32 tid;
	__u32 pad2;
	__u64 ts; /* write entry (ktime) */
	__u64 client_conn_id;
	__u64 server_conn_id;
	__u64 serve_ts; /* the read on server_conn that woke or created the task (exit, ktime) */
	__u64 task; /* the TaskObj address (debugging) */
};

/* Per thread of an asyncio process (key: pid_tgid). */
struct pa_thread {
	__u64 stack[PA_MAX_NEST]; /* tasks whose step runs, innermost last */
	__u64 cb_conn;  /* the server connection read by the running loop callback (0: none) */
	__u64 cb_ts;    /* that read's exit */
	__s32 read_fd;  /* a read-family syscall in progress on this fd (-1: none) */
	__u32 depth;    /* entries of stack in use */
};

/* (tgid, object address): a task or a future of one process. */
struct pa_key {
	__u32 tgid;
	__u32 pad;
	__u64 obj;
};

/* What a task works for: the server connection whose data woke or created it
 * (or an ancestor task), and when that data was read. */
struct pa_serve {
	__u64 conn_id;
	__u64 serve_ts;
	__u32 depth;
	__u32 pad;
};

/* One _asyncio module: structure offsets (the table by CPython version in
 * tracer/pyasync.py) and function addresses (the ELF's), in slot = the
 * probe's cookie. */
struct pa_offsets {
	__u16 stepwrapper_task; /* TaskStepMethWrapper.sw_task */
	__u16 fut_callback0;    /* FutureObj.fut_callback0: the first done-callback */
	__u16 cfunc_ml;         /* PyCFunctionObject.m_ml */
	__u16 cfunc_self;       /* PyCFunctionObject.m_self */
	__u16 ml_meth;          /* PyMethodDef.ml_meth */
	__u16 valid;            /* 1 once user space filled the slot */
	__u32 pad;
	__u64 set_result;       /* the module's vaddr of _asyncio_Future_set_result */
	__u64 set_exception;    /* ... of _asyncio_Future_set_exception */
	__u64 wakeup;           /* ... of task_wakeup: a callback of it wakes a task */
};

/* counters (per CPU, summed by user space): probe hits, then what came of them */
enum pa_counter {
	PA_HIT_STEP,         /* TaskStepMethWrapper_call / task_wakeup entries: a step */
	PA_HIT_STEP_RET,     /* ... and their returns */
	PA_HIT_TASK_INIT,    /* Task.__init__ */
	PA_HIT_SET_RESULT,   /* Future.set_result / set_exception (a future completes) */
	PA_HIT_CALLBACK,     /* context_run: a loop callback starts */
	PA_NEST_LIMIT,       /* a step nested deeper than PA_MAX_NEST: not followed */
	PA_CB_READS,         /* a loop callback read a server connection */
	PA_TASK_READS,       /* a task read a server connection itself */
	PA_WOKEN,            /* futures completed by such a callback */
	PA_SERVED,           /* ... whose callback wakes a task: it serves that connection */
	PA_CREATED,          /* tasks created by such a callback */
	PA_INHERITED,        /* tasks that took a server connection from their creator */
	PA_DEPTH_LIMIT,      /* ... and those past PA_MAX_DEPTH that did not */
	PA_CALL_OUTSIDE,     /* a client write by a task that serves nothing */
	PA_CALLS,            /* records written */
	PA_RING_FULL,        /* records lost: the ring was full */
	PA_READ_FAULT,       /* a Python structure could not be read */
	PA_NO_OFFSETS,       /* a probe fired on a module whose slot is empty */
	PA_CTR_MAX,
};

#pragma clang diagnostic pop

#endif
