// SPDX-License-Identifier: GPL-2.0
/*
 * kfuncs.bpf.c: kernel function entry/exit tracing for `tracer funcs kernel:NAME`.
 *
 * Two program pairs, one chosen at run time by the feature probe:
 *   kf_fentry/kf_fexit: BPF trampolines (cheapest; refused on this host's
 *     lockdown, loads on Debian 6.1). Generic: the target is set before load
 *     with bpf_program__set_attach_target, so the object is opened once per
 *     traced function and all copies share the maps below (reuse_fd).
 *   kf_kprobe/kf_kretprobe: for kernels without trampolines; attached by
 *     function name, the target index travels in the attach cookie.
 * Each thread keeps a small stack of open calls: entry pushes (time, args),
 * exit pops the matching frame and emits one event with the exact latency.
 */
#include "common.h"
#include "kfuncs.h"
/* pid/cgroup/netns filters: rodata by_pid, by_cgroup, by_netns, self_tgid and
 * maps kf_pids, kf_cgroups, kf_netns (shared by every copy of the object) */
#define FILTERS_AT_LOAD
#define FILTER_MAP(name) kf_##name
#include "filters.h"

char LICENSE[] SEC("license") = "GPL";

const volatile __u32 target_id = 0;  /* fentry copies: this copy's target index */
const volatile __u32 wakeup_batch = 64;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20);
} kf_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KF_CTR_MAX);
	__type(key, __u32);
	__type(value, __u64);
} kf_counters SEC(".maps");

/* LRU: a thread that dies inside a traced call leaves its entry behind. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct kf_thread);
} kf_threads SEC(".maps");

/* Zeroed template for new kf_threads entries (too big for the BPF stack),
 * and the per-CPU count of submitted events for batched wake-ups. */
struct kf_scratch {
	struct kf_thread zero;
	__u64 submitted;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kf_scratch);
} kf_scratch SEC(".maps");

/* Give the ctypes mirror's BTF check something to find. */
const volatile struct kf_event *kf_event_anchor __attribute__((unused));
const volatile enum kf_counter kf_counter_anchor __attribute__((unused));

enum { METHOD_FENTRY = 1, METHOD_KPROBE = 2 };

/* libbpf 1.1 (Debian bookworm) has no PT_REGS_PARM6. */
#ifndef PT_REGS_PARM6
#if defined(__TARGET_ARCH_x86)
#define PT_REGS_PARM6(x) (__PT_REGS_CAST(x)->r9)
#elif defined(__TARGET_ARCH_arm64)
#define PT_REGS_PARM6(x) (__PT_REGS_CAST(x)->regs[5])
#else
#define PT_REGS_PARM6(x) 0
#endif
#endif

static __always_inline void kf_count_add(__u32 idx, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&kf_counters, &idx);

	if (v)
		*v += n;
}

static __always_inline void kf_count(__u32 idx)
{
	kf_count_add(idx, 1);
}

/* The frame to fill for a new call on this thread, or NULL (counted). */
static __always_inline struct kf_frame *push(__u32 tid, __u32 target)
{
	__u32 zero = 0;
	struct kf_thread *t = bpf_map_lookup_elem(&kf_threads, &tid);
	struct kf_frame *f;
	__u32 d;

	if (!t) {
		struct kf_scratch *s = bpf_map_lookup_elem(&kf_scratch, &zero);

		if (!s)
			return NULL;
		bpf_map_update_elem(&kf_threads, &tid, &s->zero, BPF_NOEXIST);
		t = bpf_map_lookup_elem(&kf_threads, &tid);
		if (!t) {
			kf_count(KF_CTR_THREAD_FULL);
			return NULL;
		}
	}
	d = t->depth;
	if (d >= KF_MAX_DEPTH) {
		t->overflow++;
		kf_count(KF_CTR_DEPTH_OVERFLOW);
		return NULL;
	}
	f = &t->frames[d];
	f->ts = bpf_ktime_get_ns();
	f->target = target;
	t->depth = d + 1;
	return f;
}

static __always_inline void pop_and_emit(__u32 target, __u64 retval, __u8 method)
{
	__u64 now = bpf_ktime_get_ns();
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)pid_tgid, zero = 0;
	struct kf_thread *t = bpf_map_lookup_elem(&kf_threads, &tid);
	struct kf_scratch *s;
	struct kf_event *ev;
	struct kf_frame *f = NULL;
	__u32 d, i, found = KF_MAX_DEPTH;

	if (!t) {
		kf_count(KF_CTR_UNMATCHED_EXIT);
		return;
	}
	if (t->overflow) { /* the innermost open call is one that was not recorded */
		t->overflow--;
		return;
	}
	d = t->depth;
	/* The innermost open frame of this target; frames above it lost their
	 * exit (a kretprobe out of instances) and are discarded, counted. */
	for (i = 0; i < KF_MAX_DEPTH; i++) {
		if (i >= d)
			break;
		if (t->frames[(d - 1 - i) & (KF_MAX_DEPTH - 1)].target == target) {
			found = d - 1 - i;
			break;
		}
	}
	if (found >= KF_MAX_DEPTH) {
		kf_count(KF_CTR_UNMATCHED_EXIT);
		return;
	}
	if (d > found + 1)
		kf_count_add(KF_CTR_UNMATCHED_ENTRY, d - found - 1);
	t->depth = found;
	/* found < KF_MAX_DEPTH already, but the verifier cannot see it through
	 * d - 1 - i and clang drops a plain mask: mask in asm. */
	asm volatile("%[x] &= %[m]" : [x] "+r"(found) : [m] "i"(KF_MAX_DEPTH - 1));
	f = &t->frames[found];

	kf_count(KF_CTR_EVENTS);
	s = bpf_map_lookup_elem(&kf_scratch, &zero);
	if (!s)
		return;
	ev = bpf_ringbuf_reserve(&kf_events, sizeof(*ev), 0);
	if (!ev) {
		kf_count(KF_CTR_DROPPED);
		return;
	}
	ev->start_ns = f->ts;
	ev->duration_ns = now - f->ts;
	for (i = 0; i < KF_MAX_ARGS; i++)
		ev->args[i] = f->args[i];
	ev->retval = retval;
	ev->pid = pid_tgid >> 32;
	ev->tid = tid;
	ev->target = target;
	ev->depth = found;
	ev->method = method;
	ev->pad = 0;
	bpf_get_current_comm(ev->comm, sizeof(ev->comm));
	/* Batched wake-ups (KERNEL_FACTS.md: 380 instead of 1070 ns per event);
	 * the consumer also drains on a poll timeout. */
	s->submitted++;
	if (wakeup_batch <= 1 || s->submitted % wakeup_batch == 0 ||
	    bpf_ringbuf_query(&kf_events, BPF_RB_AVAIL_DATA) > (1 << 20))
		bpf_ringbuf_submit(ev, BPF_RB_FORCE_WAKEUP);
	else
		bpf_ringbuf_submit(ev, BPF_RB_NO_WAKEUP);
}

SEC("fentry")
int kf_fentry(__u64 *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct kf_frame *f;
	__u32 i;

	if (!process_wanted(pid_tgid >> 32))
		return 0;
	f = push((__u32)pid_tgid, target_id);
	if (!f)
		return 0;
	/* bpf_get_func_arg fails past the function's real argument count. */
	for (i = 0; i < KF_MAX_ARGS; i++) {
		__u64 v = 0;

		bpf_get_func_arg(ctx, i, &v);
		f->args[i] = v;
	}
	return 0;
}

SEC("fexit")
int kf_fexit(__u64 *ctx)
{
	__u64 ret = 0;

	if (!process_wanted(bpf_get_current_pid_tgid() >> 32))
		return 0;
	bpf_get_func_ret(ctx, &ret);
	pop_and_emit(target_id, ret, METHOD_FENTRY);
	return 0;
}

SEC("kprobe")
int kf_kprobe(struct pt_regs *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct kf_frame *f;

	if (!process_wanted(pid_tgid >> 32))
		return 0;
	f = push((__u32)pid_tgid, (__u32)bpf_get_attach_cookie(ctx));
	if (!f)
		return 0;
	/* All six registers; user space keeps the function's real count (BTF). */
	f->args[0] = PT_REGS_PARM1(ctx);
	f->args[1] = PT_REGS_PARM2(ctx);
	f->args[2] = PT_REGS_PARM3(ctx);
	f->args[3] = PT_REGS_PARM4(ctx);
	f->args[4] = PT_REGS_PARM5(ctx);
	f->args[5] = PT_REGS_PARM6(ctx);
	return 0;
}

SEC("kretprobe")
int kf_kretprobe(struct pt_regs *ctx)
{
	if (!process_wanted(bpf_get_current_pid_tgid() >> 32))
		return 0;
	pop_and_emit((__u32)bpf_get_attach_cookie(ctx), PT_REGS_RC(ctx), METHOD_KPROBE);
	return 0;
}
