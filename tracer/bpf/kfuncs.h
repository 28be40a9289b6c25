/* SPDX-License-Identifier: GPL-2.0 */
/*
 * kfuncs.h: the event layout shared by kfuncs.bpf.c and tracer/funcs/kernel.py
 * (kernel-function tracing: fentry/fexit or kprobe/kretprobe). A unit test
 * checks the ctypes mirror against the compiled object's BTF.
 */
#ifndef __TRACER_KFUNCS_H
#define __TRACER_KFUNCS_H

#pragma clang diagnostic push
#pragma clang diagnostic error "-Wpadded"

#define KF_TASK_COMM_LEN 16
#define KF_MAX_ARGS 6
/* Nested traced calls remembered per thread; deeper ones are counted, not timed. */
#define KF_MAX_DEPTH 8

enum kf_counter {
	KF_CTR_EVENTS = 0,          /* completed calls the kernel side tried to submit */
	KF_CTR_DROPPED = 1,         /* ring buffer full */
	KF_CTR_UNMATCHED_EXIT = 2,  /* an exit with no recorded entry (attached mid-call) */
	KF_CTR_UNMATCHED_ENTRY = 3, /* entries whose exit never came (discarded frames) */
	KF_CTR_DEPTH_OVERFLOW = 4,  /* calls nested deeper than KF_MAX_DEPTH */
	KF_CTR_THREAD_FULL = 5,     /* per-thread state could not be stored */
	KF_CTR_MAX = 6,
};

/* One entry of a thread's call stack of traced functions. */
struct kf_frame {
	__u64 ts;                   /* bpf_ktime_get_ns() at entry */
	__u64 args[KF_MAX_ARGS];    /* raw argument registers at entry */
	__u32 target;               /* index of the traced function */
	__u32 pad;
};

/* Map "kf_threads" value, key: tid. */
struct kf_thread {
	struct kf_frame frames[KF_MAX_DEPTH];
	__u32 depth;                /* frames in use */
	__u32 overflow;             /* entries beyond KF_MAX_DEPTH still open */
};

/* One completed call, emitted at exit. */
struct kf_event {
	__u64 start_ns;             /* bpf_ktime_get_ns() at entry (CLOCK_MONOTONIC) */
	__u64 duration_ns;
	__u64 args[KF_MAX_ARGS];
	__u64 retval;               /* raw return register */
	__u32 pid;                  /* tgid */
	__u32 tid;
	__u32 target;               /* index of the traced function (attach order) */
	__u16 depth;                /* 0: outermost traced call on the thread */
	__u8 method;                /* 1: fentry/fexit, 2: kprobe/kretprobe */
	__u8 pad;
	char comm[KF_TASK_COMM_LEN];
};

#pragma clang diagnostic pop

#endif
