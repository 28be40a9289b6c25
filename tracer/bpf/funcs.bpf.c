// SPDX-License-Identifier: GPL-2.0
/*
 * funcs.bpf.c: user-space function tracing (python -m tracer funcs).
 *
 * One uprobe (func_entry) and one uretprobe (func_exit) per traced function,
 * attached by tracer/funcs/tracer.py with the probe's index as bpf_cookie.
 * The index selects the argument spec in probe_specs (filled from the
 * command line or DWARF). Each thread keeps a small stack of open calls in
 * `threads`: the entry pushes (timestamp, arguments, strings), the return
 * pops it and emits one call_event with the exact latency, the nesting depth
 * and rax. With capture_stack, the entry also emits a stack_event: the
 * frame-pointer walk (bpf_get_stack) plus the registers and a bounded copy
 * of the stack from rsp, for the DWARF unwinder in user space.
 */
#include "common.h"
#include "funcs.h"
/* --pid/--netns/--cgroup: rodata by_pid, by_netns, by_cgroup, self_tgid and
 * maps filter_pids, filter_netns, filter_cgroups */
#define FILTERS_AT_LOAD
#include "filters.h"

char LICENSE[] SEC("license") = "GPL";

/* libbpf 1.1's bpf_tracing.h stops at PARM5. The stack registers below are
 * x86-64 too (the only architecture built here). */
#ifndef PT_REGS_PARM6
#define PT_REGS_PARM6(x) ((x)->r9)
#endif

/* BTF anchor: keeps the types shared with user space in the object's BTF
 * (unused ones are dropped otherwise) for tests/unit/test_funcs_events_btf.py.
 * Nothing reads it. */
struct funcs_btf_anchor {
	struct call_event call;
	struct stack_event stack;
	struct probe_spec spec;
	enum funcs_event_type type;
	enum funcs_arg_kind kind;
	enum funcs_counter counter;
};
const volatile struct funcs_btf_anchor *funcs_btf_anchor __attribute__((unused));

/* Set before load (rodata); the filter switches are in filters.h. */
const volatile __u8 capture_stack = 0;
const volatile __u32 stack_copy_bytes = FUNCS_STACK_COPY; /* rounded down to 1 KiB */
const volatile __u32 wakeup_batch = 64;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 << 20);
} funcs_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FCTR_MAX);
	__type(key, __u32);
	__type(value, __u64);
} funcs_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FUNCS_MAX_PROBES);
	__type(key, __u32);
	__type(value, struct probe_spec);
} probe_specs SEC(".maps");

struct thread_state {
	__u32 depth; /* open traced calls, including ones deeper than FUNCS_MAX_DEPTH */
	__u32 pad;
	struct call_frame frames[FUNCS_MAX_DEPTH];
};

/* tid -> open calls. Not preallocated (7 KiB a thread); entries are removed
 * when their thread exits. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, struct thread_state);
} threads SEC(".maps");

struct scratch {
	struct thread_state zero; /* source of a new thread's entry */
	__u64 submitted;          /* events submitted on this CPU (wake-up batching) */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} funcs_scratch SEC(".maps");

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&funcs_counters, &idx);

	if (v)
		*v += 1;
}

/* Batched wake-ups (KERNEL_FACTS.md: 380 instead of 1070 ns an event); user
 * space also drains on its poll timeout, and a filling ring wakes it. */
static __always_inline __u64 wakeup_flags(void)
{
	__u32 zero = 0;
	struct scratch *s = bpf_map_lookup_elem(&funcs_scratch, &zero);

	if (!s)
		return 0;
	s->submitted += 1;
	if (wakeup_batch <= 1 || s->submitted % wakeup_batch == 0)
		return BPF_RB_FORCE_WAKEUP;
	if (bpf_ringbuf_query(&funcs_events, BPF_RB_AVAIL_DATA) > (4 << 20))
		return BPF_RB_FORCE_WAKEUP;
	return BPF_RB_NO_WAKEUP;
}

static __always_inline struct thread_state *thread_state(__u32 tid)
{
	struct thread_state *ts = bpf_map_lookup_elem(&threads, &tid);
	struct scratch *s;
	__u32 zero = 0;

	if (ts)
		return ts;
	s = bpf_map_lookup_elem(&funcs_scratch, &zero);
	if (!s)
		return NULL;
	bpf_map_update_elem(&threads, &tid, &s->zero, BPF_NOEXIST);
	return bpf_map_lookup_elem(&threads, &tid);
}

static __always_inline void capture_arg(struct call_frame *f, struct probe_spec *spec,
					int i, __u64 val)
{
	__u32 len;

	f->args[i] = val;
	if (spec->kind[i] != FUNCS_ARG_STR)
		return;
	len = spec->size[i];
	if (len > FUNCS_STR_LEN || len == 0)
		len = FUNCS_STR_LEN;
	if (bpf_probe_read_user_str(f->strs[i], len, (const void *)val) < 0) {
		f->strs[i][0] = 0;
		f->flags |= 1 << i;
		count(FCTR_STR_FAULT);
	}
}

static __always_inline void emit_stack(struct pt_regs *ctx, struct call_frame *f, __u32 pid,
				       __u32 tid)
{
	struct stack_event *ev;
	__u32 chunks = stack_copy_bytes / 1024, i;
	__u64 sp = PT_REGS_SP(ctx);

	ev = bpf_ringbuf_reserve(&funcs_events, sizeof(*ev), 0);
	if (!ev) {
		count(FCTR_STACK_DROPPED);
		return;
	}
	ev->type = FUNCS_EV_STACK;
	ev->pad[0] = ev->pad[1] = ev->pad[2] = 0;
	ev->probe = f->probe;
	ev->pid = pid;
	ev->tid = tid;
	ev->start_ns = f->start_ns;
	ev->fp_bytes = bpf_get_stack(ctx, ev->ips, sizeof(ev->ips), BPF_F_USER_STACK);
	ev->regs[0] = PT_REGS_IP(ctx);
	ev->regs[1] = sp;
	ev->regs[2] = ctx->bp;
	ev->regs[3] = ctx->bx;
	ev->regs[4] = ctx->r12;
	ev->regs[5] = ctx->r13;
	ev->regs[6] = ctx->r14;
	ev->regs[7] = ctx->r15;
	/* 1 KiB at a time: a read that crosses the top of the stack mapping
	 * fails whole, so keep the chunks below it. */
	ev->copy_len = 0;
	for (i = 0; i < FUNCS_STACK_COPY / 1024; i++) {
		if (i >= chunks)
			break;
		if (bpf_probe_read_user(&ev->stack[i * 1024], 1024, (const void *)(sp + i * 1024))) {
			if (i == 0)
				count(FCTR_STACK_FAULT);
			break;
		}
		ev->copy_len = (i + 1) * 1024;
	}
	count(FCTR_STACKS);
	/* wake user space now: it reads /proc/PID/maps to symbolise, and a
	 * short-lived process may be gone after a batched wake-up */
	bpf_ringbuf_submit(ev, BPF_RB_FORCE_WAKEUP);
}

SEC("uprobe")
int func_entry(struct pt_regs *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32, tid = (__u32)pid_tgid;
	__u32 probe, d;
	struct probe_spec *spec;
	struct thread_state *ts;
	struct call_frame *f;

	if (!process_wanted(tgid))
		return 0;
	probe = (__u32)bpf_get_attach_cookie(ctx);
	spec = bpf_map_lookup_elem(&probe_specs, &probe);
	if (!spec) {
		count(FCTR_NO_SPEC);
		return 0;
	}
	ts = thread_state(tid);
	if (!ts) {
		count(FCTR_THREADS_FULL);
		return 0;
	}
	count(FCTR_ENTRIES);
	d = ts->depth;
	ts->depth = d + 1;
	if (d >= FUNCS_MAX_DEPTH) {
		count(FCTR_DEPTH_OVERFLOW);
		return 0;
	}
	f = &ts->frames[d & (FUNCS_MAX_DEPTH - 1)];
	f->probe = probe;
	f->flags = 0;
	if (spec->nargs > 0)
		capture_arg(f, spec, 0, PT_REGS_PARM1(ctx));
	if (spec->nargs > 1)
		capture_arg(f, spec, 1, PT_REGS_PARM2(ctx));
	if (spec->nargs > 2)
		capture_arg(f, spec, 2, PT_REGS_PARM3(ctx));
	if (spec->nargs > 3)
		capture_arg(f, spec, 3, PT_REGS_PARM4(ctx));
	if (spec->nargs > 4)
		capture_arg(f, spec, 4, PT_REGS_PARM5(ctx));
	if (spec->nargs > 5)
		capture_arg(f, spec, 5, PT_REGS_PARM6(ctx));
	/* last, so the argument copies are not part of the measured latency */
	f->start_ns = bpf_ktime_get_ns();
	if (capture_stack)
		emit_stack(ctx, f, tgid, tid);
	return 0;
}

SEC("uretprobe")
int func_exit(struct pt_regs *ctx)
{
	__u64 now = bpf_ktime_get_ns();
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32, tid = (__u32)pid_tgid;
	struct thread_state *ts;
	struct call_event *ev;
	struct call_frame *f;
	__u32 d;

	if (!process_wanted(tgid))
		return 0;
	ts = bpf_map_lookup_elem(&threads, &tid);
	if (!ts || ts->depth == 0) {
		count(FCTR_UNMATCHED_EXIT);
		return 0;
	}
	d = ts->depth - 1;
	if (d >= FUNCS_MAX_DEPTH) {
		ts->depth = d; /* its entry was counted as a depth overflow */
		return 0;
	}
	f = &ts->frames[d & (FUNCS_MAX_DEPTH - 1)];
	/* A call entered while the probes were being attached has a return
	 * probe but no entry: do not pop another function's frame for it. */
	if (f->probe != (__u32)bpf_get_attach_cookie(ctx)) {
		count(FCTR_UNMATCHED_EXIT);
		return 0;
	}
	ts->depth = d;
	ev = bpf_ringbuf_reserve(&funcs_events, sizeof(*ev), 0);
	if (!ev) {
		count(FCTR_DROPPED);
		return 0;
	}
	ev->type = FUNCS_EV_CALL;
	ev->pad[0] = ev->pad[1] = ev->pad[2] = 0;
	ev->depth = d;
	ev->pid = tgid;
	ev->tid = tid;
	ev->duration_ns = now - f->start_ns;
	ev->retval = PT_REGS_RC(ctx);
	bpf_get_current_comm(ev->comm, sizeof(ev->comm));
	__builtin_memcpy(&ev->frame, f, sizeof(*f));
	count(FCTR_CALLS);
	bpf_ringbuf_submit(ev, wakeup_flags());
	return 0;
}

/* A thread that exits inside traced calls (exit(), longjmp past them) leaves
 * its entry: drop it, counting the calls that never returned. */
SEC("tracepoint/sched/sched_process_exit")
int funcs_thread_exit(void *ctx)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct thread_state *ts = bpf_map_lookup_elem(&threads, &tid);
	__u32 idx = FCTR_OPEN_AT_EXIT;
	__u64 *v;

	if (!ts)
		return 0;
	v = bpf_map_lookup_elem(&funcs_counters, &idx);
	if (v)
		*v += ts->depth;
	bpf_map_delete_elem(&threads, &tid);
	return 0;
}
