/* SPDX-License-Identifier: GPL-2.0 */
/*
 * funcs.h: the layout shared by funcs.bpf.c (user-space function tracing) and
 * tracer/funcs/events.py. The single source of truth; the Python mirror is
 * checked against the object's BTF by tests/unit/test_funcs_events_btf.py.
 * Fixed-width types and explicit padding only (-Wpadded).
 */
#ifndef __TRACER_FUNCS_H
#define __TRACER_FUNCS_H

#pragma clang diagnostic push
#pragma clang diagnostic error "-Wpadded"

#define FUNCS_COMM_LEN 16
#define FUNCS_MAX_ARGS 6      /* x86-64 SysV integer argument registers */
#define FUNCS_STR_LEN 64      /* bytes kept per string argument (with the NUL) */
#define FUNCS_MAX_DEPTH 16    /* traced calls kept per thread; deeper ones are counted */
#define FUNCS_STACK_FRAMES 64 /* bpf_get_stack depth (frame-pointer walk) */
#define FUNCS_STACK_COPY 8192 /* upper bound of the raw user-stack copy (DWARF unwinding) */
#define FUNCS_MAX_PROBES 4096 /* entries of the probe_specs map */

enum funcs_event_type {
	FUNCS_EV_CALL = 1,  /* a completed call, emitted at return */
	FUNCS_EV_STACK = 2, /* the stack at a call's entry (--stack), joined by (tid, start_ns) */
};

enum funcs_arg_kind {
	FUNCS_ARG_NONE = 0,
	FUNCS_ARG_INT = 1,  /* signed, `size` bytes of the register */
	FUNCS_ARG_UINT = 2, /* unsigned, `size` bytes */
	FUNCS_ARG_PTR = 3,
	FUNCS_ARG_STR = 4,  /* NUL-terminated, at most `size` bytes copied */
};

/* Per-CPU counters; every loss and mismatch is counted here. */
enum funcs_counter {
	FCTR_ENTRIES = 0,         /* entries seen (after the filters) */
	FCTR_CALLS = 1,           /* call events submitted */
	FCTR_DROPPED = 2,         /* ring buffer full: call events lost */
	FCTR_UNMATCHED_EXIT = 3,  /* a return with no recorded entry (call began before attach) */
	FCTR_DEPTH_OVERFLOW = 4,  /* nesting deeper than FUNCS_MAX_DEPTH: call not recorded */
	FCTR_THREADS_FULL = 5,    /* per-thread table full: entry not recorded */
	FCTR_STR_FAULT = 6,       /* a string argument could not be read */
	FCTR_STACKS = 7,          /* stack events submitted */
	FCTR_STACK_DROPPED = 8,   /* ring buffer full: stack events lost */
	FCTR_STACK_FAULT = 9,     /* the raw stack copy could not be read */
	FCTR_NO_SPEC = 10,        /* probe cookie without a spec (should not happen) */
	FCTR_OPEN_AT_EXIT = 11,   /* calls still open when their thread exited (longjmp, exit()) */
	FCTR_MAX = 12,
};

/* What the probe with this cookie (its index) captures; set by user space
 * before attach, from the command line's type spec or from DWARF. */
struct probe_spec {
	__u8 nargs;
	__u8 kind[FUNCS_MAX_ARGS]; /* enum funcs_arg_kind */
	__u8 pad;
	__u8 size[FUNCS_MAX_ARGS]; /* integer width in bytes, or string bound */
	__u8 pad2[2];
};

/* One traced call in progress, kept per thread from entry to return. */
struct call_frame {
	__u64 start_ns;
	__u32 probe;  /* cookie of the entry probe */
	__u32 flags;  /* bit i: string argument i could not be read */
	__u64 args[FUNCS_MAX_ARGS];
	char strs[FUNCS_MAX_ARGS][FUNCS_STR_LEN];
};

struct call_event {
	__u8 type;   /* FUNCS_EV_CALL */
	__u8 pad[3];
	__u32 depth; /* traced calls already open on this thread at entry */
	__u32 pid;
	__u32 tid;
	__u64 duration_ns;
	__u64 retval; /* rax at return */
	char comm[FUNCS_COMM_LEN];
	struct call_frame frame;
};

struct stack_event {
	__u8 type;  /* FUNCS_EV_STACK */
	__u8 pad[3];
	__u32 probe;
	__u32 pid;
	__u32 tid;
	__u64 start_ns;  /* equals the call_event's frame.start_ns */
	__s32 fp_bytes;  /* bpf_get_stack result: bytes of `ips`, or -errno */
	__u32 copy_len;  /* bytes of `stack` read from `regs[1]` (rsp) upward */
	__u64 regs[8];   /* rip, rsp, rbp, rbx, r12, r13, r14, r15 at entry */
	__u64 ips[FUNCS_STACK_FRAMES];
	__u8 stack[FUNCS_STACK_COPY];
};

#pragma clang diagnostic pop

#endif
