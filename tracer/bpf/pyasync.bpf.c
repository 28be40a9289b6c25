// SPDX-License-Identifier: GPL-2.0
/*
 * pyasync.bpf.c: which server request a Python asyncio client call is made
 * for, from uprobes on CPython's _asyncio module and Context.run (user space:
 * tracer/pyasync.py).
 *
 * One thread runs every request of an event loop, so the thread that writes
 * a client request says nothing about the request it serves. Tasks do:
 *  - task steps: TaskStepMethWrapper_call(wrapper) and task_wakeup(task, fut)
 *    (task_step inside, inlined or not) bracket the time a task runs on a
 *    thread (entry and return), so a socket syscall knows the task that made
 *    it. Every hooked function is reached through a function pointer (a
 *    type slot or a method table), so no compiler inlines it away;
 *  - a loop callback that reads a server connection and, in the same
 *    callback, completes a future (Future.set_result) whose done-callback
 *    wakes a task: that task now serves that connection's request, from
 *    that read on. This is how a stream server's connection
 *    task learns each request: the selector callback reads the socket and
 *    feeds the StreamReader, whose waiter wakes the task. A callback that
 *    creates a task (protocol servers) hands it the connection the same way.
 *    Callbacks are delimited by Context.run (context_run): every loop handle
 *    runs through it, so a read in one callback never marks a future
 *    completed by the next one (a timer's, say);
 *  - Task.__init__ on a running task: the new task serves what its creator
 *    serves (PA_MAX_DEPTH generations at most);
 *  - a write on a client connection by a task that serves something: a
 *    pa_call record (client connection, server connection, read time).
 * User space joins the record's client connection to the client span that
 * sock.bpf.o sees on it, and the server connection to the server request in
 * flight there. Only arguments and a few fields of CPython's public object
 * layouts are read; under lockdown=integrity nothing is written to user
 * memory.
 */
/* Only pt_regs and tracepoint arguments are read: no CO-RE needed here. */
#define BPF_NO_PRESERVE_ACCESS_INDEX
#include "common.h"
#include "sock.h"
#include "conns.h"
#include "filters.h"
#include "pyasync.h"

char LICENSE[] SEC("license") = "GPL";

/* BTF anchor: keeps the types shared with user space in this object's BTF,
 * for tests/unit/test_pyasync.py. Nothing reads it. */
struct pa_btf_anchor {
	struct pa_call call;
	struct pa_thread thread;
	struct pa_key key;
	struct pa_serve serve;
	struct pa_offsets offsets;
	enum pa_record_type type;
	enum pa_counter counter;
};
const volatile struct pa_btf_anchor *pa_btf_anchor __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 << 10);
} pa_records SEC(".maps");

/* Processes that exec'd: interpreters are found there (user space). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 << 10);
} pa_execs SEC(".maps");

/* Threads that ran a task step: the only ones the syscall programs look at
 * past one lookup. LRU: threads die without a hook here. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct pa_thread);
} pa_threads SEC(".maps");

/* (tgid, task) -> what the task serves. LRU: tasks die without a hook (a
 * new Task at a freed address is reset in Task.__init__). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct pa_key);
	__type(value, struct pa_serve);
} pa_serving SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PA_MAX_MODULES);
	__type(key, __u32);
	__type(value, struct pa_offsets);
} pa_offsets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PA_CTR_MAX);
	__type(key, __u32);
	__type(value, __u64);
} pa_counters SEC(".maps");

static __always_inline void pa_count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&pa_counters, &idx);

	if (v)
		*v += 1;
}

static __always_inline struct pa_key pa_key(__u32 tgid, __u64 obj)
{
	struct pa_key k = { .tgid = tgid, .obj = obj };

	return k;
}

/* The task whose step runs on this thread, 0 outside any (a loop callback,
 * or the loop itself) or past PA_MAX_NEST. */
static __always_inline __u64 running_task(struct pa_thread *t)
{
	__u32 d = t->depth;

	if (d == 0 || d > PA_MAX_NEST)
		return 0;
	return t->stack[(d - 1) & (PA_MAX_NEST - 1)];
}

static __always_inline void step_enter(__u64 task)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct pa_thread *t = bpf_map_lookup_elem(&pa_threads, &pid_tgid);
	__u32 d;

	pa_count(PA_HIT_STEP);
	if (!t) {
		struct pa_thread fresh = { .read_fd = -1 };

		if (!process_wanted(pid_tgid >> 32, filters(), false))
			return;
		bpf_map_update_elem(&pa_threads, &pid_tgid, &fresh, BPF_NOEXIST);
		t = bpf_map_lookup_elem(&pa_threads, &pid_tgid);
		if (!t)
			return;
	}
	d = t->depth;
	if (d < PA_MAX_NEST)
		t->stack[d & (PA_MAX_NEST - 1)] = task;
	else
		pa_count(PA_NEST_LIMIT);
	if (d < 64)
		t->depth = d + 1;
}

static __always_inline struct pa_offsets *offsets(void *ctx)
{
	__u32 slot = (__u32)bpf_get_attach_cookie(ctx);
	struct pa_offsets *o = bpf_map_lookup_elem(&pa_offsets, &slot);

	if (!o || !o->valid) {
		pa_count(PA_NO_OFFSETS);
		return NULL;
	}
	return o;
}

static __always_inline __u64 read_ptr(__u64 addr)
{
	__u64 v = 0;

	if (!addr || bpf_probe_read_user(&v, sizeof(v), (void *)addr)) {
		pa_count(PA_READ_FAULT);
		return 0;
	}
	return v;
}

/* static PyObject *TaskStepMethWrapper_call(TaskStepMethWrapper *o, ...):
 * a step scheduled by call_soon (the first, and after a bare yield); the
 * task is o->sw_task. Reached through tp_call only: never inlined. */
SEC("uprobe")
int pa_step_wrapper(struct pt_regs *ctx)
{
	struct pa_offsets *o = offsets(ctx);

	/* pushed even when unknown (0: serves nothing), so returns stay paired */
	step_enter(o ? read_ptr(ctx->di + o->stepwrapper_task) : 0);
	return 0;
}

/* static PyObject *task_wakeup(TaskObj *task, PyObject *o): the future the
 * task awaited completed; the step follows inside (task_step, inlined or
 * not). Reached through the PyCFunction of the done-callback only. */
SEC("uprobe")
int pa_wakeup(struct pt_regs *ctx)
{
	step_enter(ctx->di);
	return 0;
}

/* the return of either */
SEC("uretprobe")
int pa_step_ret(struct pt_regs *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct pa_thread *t = bpf_map_lookup_elem(&pa_threads, &pid_tgid);

	pa_count(PA_HIT_STEP_RET);
	if (t && t->depth > 0)
		t->depth--;
	return 0;
}

/* context_run(ctx, ...): Context.run, through which every loop handle runs.
 * A new callback: the previous one's read says nothing about this one. */
SEC("uprobe")
int pa_callback(struct pt_regs *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct pa_thread *t = bpf_map_lookup_elem(&pa_threads, &pid_tgid);

	pa_count(PA_HIT_CALLBACK);
	if (t)
		t->cb_conn = 0;
	return 0;
}

/* static int _asyncio_Task___init__(PyObject *self, ...): a task is created */
SEC("uprobe")
int pa_task_init(struct pt_regs *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32;
	struct pa_thread *t = bpf_map_lookup_elem(&pa_threads, &pid_tgid);
	struct pa_key k = pa_key(tgid, ctx->di);
	struct pa_serve s = {}, *ps;
	__u64 parent;

	pa_count(PA_HIT_TASK_INIT);
	if (t) {
		parent = running_task(t);
		if (parent) {
			struct pa_key pk = pa_key(tgid, parent);

			ps = bpf_map_lookup_elem(&pa_serving, &pk);
			if (ps && ps->depth + 1 <= PA_MAX_DEPTH) {
				s = *ps;
				s.depth++;
				bpf_map_update_elem(&pa_serving, &k, &s, BPF_ANY);
				pa_count(PA_INHERITED);
				return 0;
			}
			if (ps)
				pa_count(PA_DEPTH_LIMIT);
		} else if (t->depth == 0 && t->cb_conn) {
			s.conn_id = t->cb_conn;
			s.serve_ts = t->cb_ts;
			bpf_map_update_elem(&pa_serving, &k, &s, BPF_ANY);
			pa_count(PA_CREATED);
			return 0;
		}
	}
	/* an address reused by a new task: what the old one served is not its */
	bpf_map_delete_elem(&pa_serving, &k);
	return 0;
}

/* A future completes (set_result(self, res) / set_exception(self, exc), both
 * METH_O methods: never inlined) in a loop callback that read a server
 * connection: if its first done-callback wakes a task (a PyCFunction of
 * task_wakeup bound to the task, what a task awaiting it adds), that task
 * serves the connection from this read on. `vaddr`: the probed function's
 * address in the module, so that ip - vaddr is the module's load bias. */
static __always_inline int completing(struct pt_regs *ctx, bool exc)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct pa_thread *t = bpf_map_lookup_elem(&pa_threads, &pid_tgid);
	struct pa_offsets *o;
	struct pa_serve s = {};
	struct pa_key k;
	__u64 cb, ml, meth, task, bias;

	pa_count(PA_HIT_SET_RESULT);
	if (!t || t->depth != 0 || !t->cb_conn)
		return 0;
	o = offsets(ctx);
	if (!o)
		return 0;
	pa_count(PA_WOKEN);
	bias = ctx->ip - (exc ? o->set_exception : o->set_result);
	cb = read_ptr(ctx->di + o->fut_callback0);
	ml = cb ? read_ptr(cb + o->cfunc_ml) : 0;
	meth = ml ? read_ptr(ml + o->ml_meth) : 0;
	if (!meth || meth != bias + o->wakeup)
		return 0;
	task = read_ptr(cb + o->cfunc_self);
	if (!task)
		return 0;
	k = pa_key(pid_tgid >> 32, task);
	s.conn_id = t->cb_conn;
	s.serve_ts = t->cb_ts;
	bpf_map_update_elem(&pa_serving, &k, &s, BPF_ANY);
	pa_count(PA_SERVED);
	return 0;
}

SEC("uprobe")
int pa_set_result(struct pt_regs *ctx) { return completing(ctx, false); }

SEC("uprobe")
int pa_set_exception(struct pt_regs *ctx) { return completing(ctx, true); }

/* ---- socket syscalls of threads that run tasks ------------------------------ */

static __always_inline int read_enter(int fd)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct pa_thread *t = bpf_map_lookup_elem(&pa_threads, &pid_tgid);

	if (t)
		t->read_fd = fd;
	return 0;
}

static __always_inline int read_exit(long ret)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct pa_thread *t = bpf_map_lookup_elem(&pa_threads, &pid_tgid);
	struct conn_key ck = { .tgid = pid_tgid >> 32 };
	struct conn_info *info;
	struct pa_serve s = {};
	__u64 task;

	if (!t || t->read_fd < 0)
		return 0;
	ck.fd = t->read_fd;
	t->read_fd = -1;
	if (ret <= 0)
		return 0;
	info = bpf_map_lookup_elem(&conns, &ck);
	if (!info || !info->tracked)
		return 0;
	task = running_task(t);
	if (info->role == ROLE_CLIENT) {
		/* a response read: it serves no request of this process */
		if (t->depth == 0)
			t->cb_conn = 0;
		return 0;
	}
	if (t->depth == 0) {
		t->cb_conn = info->conn_id;
		t->cb_ts = bpf_ktime_get_ns();
		pa_count(PA_CB_READS);
	} else if (task) {
		/* the task reads its server socket itself (loop.sock_recv) */
		struct pa_key k = pa_key(ck.tgid, task);

		s.conn_id = info->conn_id;
		s.serve_ts = bpf_ktime_get_ns();
		bpf_map_update_elem(&pa_serving, &k, &s, BPF_ANY);
		pa_count(PA_TASK_READS);
	}
	return 0;
}

static __always_inline int write_enter(int fd)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct pa_thread *t = bpf_map_lookup_elem(&pa_threads, &pid_tgid);
	struct conn_key ck = { .tgid = pid_tgid >> 32, .fd = fd };
	struct conn_info *info;
	struct pa_serve *s;
	struct pa_call *rec;
	struct pa_key k;
	__u64 task;

	if (!t)
		return 0;
	task = running_task(t);
	if (!task)
		return 0;
	info = bpf_map_lookup_elem(&conns, &ck);
	if (!info || !info->tracked || info->role == ROLE_SERVER)
		return 0;
	k = pa_key(ck.tgid, task);
	s = bpf_map_lookup_elem(&pa_serving, &k);
	if (!s) {
		pa_count(PA_CALL_OUTSIDE);
		return 0;
	}
	rec = bpf_ringbuf_reserve(&pa_records, sizeof(*rec), 0);
	if (!rec) {
		pa_count(PA_RING_FULL);
		return 0;
	}
	rec->type = PA_REC_CALL;
	rec->depth = s->depth;
	rec->pad = 0;
	rec->pid = ck.tgid;
	rec->tid = (__u32)pid_tgid;
	rec->pad2 = 0;
	rec->ts = bpf_ktime_get_ns();
	rec->client_conn_id = info->conn_id;
	rec->server_conn_id = s->conn_id;
	rec->serve_ts = s->serve_ts;
	rec->task = task;
	/* drained before every read of the events ring: no wake-up needed */
	bpf_ringbuf_submit(rec, BPF_RB_NO_WAKEUP);
	pa_count(PA_CALLS);
	return 0;
}

#define ARG(i) (ctx->args[i])

SEC("tracepoint/syscalls/sys_enter_read")
int pa_enter_read(struct syscall_trace_enter *ctx) { return read_enter(ARG(0)); }
SEC("tracepoint/syscalls/sys_exit_read")
int pa_exit_read(struct syscall_trace_exit *ctx) { return read_exit(ctx->ret); }
SEC("tracepoint/syscalls/sys_enter_readv")
int pa_enter_readv(struct syscall_trace_enter *ctx) { return read_enter(ARG(0)); }
SEC("tracepoint/syscalls/sys_exit_readv")
int pa_exit_readv(struct syscall_trace_exit *ctx) { return read_exit(ctx->ret); }
SEC("tracepoint/syscalls/sys_enter_recvfrom")
int pa_enter_recvfrom(struct syscall_trace_enter *ctx)
{
	/* a peek consumes nothing: the real read follows */
	return (ARG(3) & MSG_PEEK) ? 0 : read_enter(ARG(0));
}
SEC("tracepoint/syscalls/sys_exit_recvfrom")
int pa_exit_recvfrom(struct syscall_trace_exit *ctx) { return read_exit(ctx->ret); }
SEC("tracepoint/syscalls/sys_enter_recvmsg")
int pa_enter_recvmsg(struct syscall_trace_enter *ctx)
{
	return (ARG(2) & MSG_PEEK) ? 0 : read_enter(ARG(0));
}
SEC("tracepoint/syscalls/sys_exit_recvmsg")
int pa_exit_recvmsg(struct syscall_trace_exit *ctx) { return read_exit(ctx->ret); }

SEC("tracepoint/syscalls/sys_enter_write")
int pa_enter_write(struct syscall_trace_enter *ctx) { return write_enter(ARG(0)); }
SEC("tracepoint/syscalls/sys_enter_writev")
int pa_enter_writev(struct syscall_trace_enter *ctx) { return write_enter(ARG(0)); }
SEC("tracepoint/syscalls/sys_enter_sendto")
int pa_enter_sendto(struct syscall_trace_enter *ctx) { return write_enter(ARG(0)); }
SEC("tracepoint/syscalls/sys_enter_sendmsg")
int pa_enter_sendmsg(struct syscall_trace_enter *ctx) { return write_enter(ARG(0)); }

SEC("tracepoint/sched/sched_process_exec")
int pa_exec(void *ctx)
{
	struct exec_event ev = { .pid = bpf_get_current_pid_tgid() >> 32 };

	if (process_wanted(ev.pid, filters(), false))
		bpf_ringbuf_output(&pa_execs, &ev, sizeof(ev), BPF_RB_NO_WAKEUP);
	return 0;
}
