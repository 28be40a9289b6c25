// SPDX-License-Identifier: GPL-2.0
/*
 * sock.bpf.c: TCP socket syscalls -> ring buffer, for HTTP reassembly in user space.
 *
 * Only syscall tracepoints are used: kprobes and fentry are unavailable on
 * locked-down kernels. A socket is recognised from its fd by walking
 * task->files (CO-RE reads, allowed under lockdown=integrity); the result is
 * cached per (tgid, fd) in an LRU map, so the walk runs once per socket.
 */
#include "common.h"
#include "sock.h"
#include "maps.h"

char LICENSE[] SEC("license") = "GPL";

/* Set before load (rodata); the knobs shared with tls.bpf.c are in knobs.h.
 * --span-stacks: take the user stack at each HTTP/1 request's first syscall.
 * Off: the verifier drops the code (and the agent shrinks user_stacks to one
 * entry). */
const volatile __u8 span_stacks = 0;

/* BTF anchor: keeps every type shared with user space in this object's BTF
 * (unused types are otherwise dropped), so tests/unit/test_events_btf.py can
 * check the Python mirror against it. Nothing reads it. */
struct btf_anchor {
	struct open_event open;
	struct data_event data;
	struct close_event close;
	struct filter_config filter;
	struct conn_key ckey;
	struct conn_info cinfo;
	struct ssl_call ssl_call;
	struct ssl_key ssl_key;
	struct ssl_fd ssl_fd;
	struct exec_event exec;
	enum ssl_op ssl_op;
	enum conn_tls conn_tls;
	enum event_type type;
	enum conn_role role;
	enum data_dir dir;
	enum counter counter;
	enum sys_kind sys;
};
const volatile struct btf_anchor *btf_anchor __attribute__((unused));

/* Syscall arguments kept from sys_enter to sys_exit, per thread. */
struct active_io {
	__u64 conn_id;
	__u64 buf;      /* user buffer, or the iovec array */
	__u64 ts_enter;
	__s32 fd;
	__u32 iovcnt;   /* 0: buf is a plain buffer */
	__u8 role;
	__u8 dir;
	__u8 syscall;
	__u8 sniff;     /* first request-direction payload: check for the h2 preface */
	__u32 capture;  /* this connection's capture size */
	__u8 tls;       /* ciphertext: count its bytes, emit nothing */
	__u8 skip;      /* sampled-out connection: count request turns, emit nothing */
	__u8 live;      /* a syscall is open: set at sys_enter, cleared at sys_exit */
};

/* Task-local storage, not a hash keyed by tid: the task holds a pointer to
 * its entry, so sys_enter and sys_exit find it without hashing, locking a
 * bucket or taking an element from a free list (docs/performance.md). An
 * entry lives as long as its thread; `live` says whether a syscall is open. */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct active_io);
} active SEC(".maps");

static __always_inline struct active_io *active_get(bool create)
{
	return bpf_task_storage_get(&active, bpf_get_current_task_btf(), NULL,
				    create ? BPF_LOCAL_STORAGE_GET_F_CREATE : 0);
}

/* accept/connect: fd (connect) and entry time, per thread. */
struct pending_open {
	__u64 ts_enter;
	__s32 fd;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct pending_open);
} pending SEC(".maps");

/* Adaptive sampling: new connections sampled out per SAMPLE_SCALE (sock.h),
 * written by the agent under pressure. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} sampling SEC(".maps");

/* Decided once per connection, at accept/connect: the agent learns nothing
 * about a sampled-out connection but its requests, counted exactly. Sockets
 * of unknown role (older than the tracer) are never sampled out: their
 * request direction is unknown, so their requests could not be counted. */
static __always_inline bool sampled_out(__u8 role)
{
	__u32 zero = 0;
	__u32 *drop = bpf_map_lookup_elem(&sampling, &zero);

	if (!drop || !*drop || role == ROLE_UNKNOWN)
		return false;
	return (bpf_get_prandom_u32() & (SAMPLE_SCALE - 1)) < *drop;
}

/* --span-stacks: user stacks by id. Ids are never deleted (so user space can
 * cache an id's frames); a new stack hashing to a taken bucket is counted
 * (CTR_STACK_FAILED) and its span has no stack. */
struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 4096);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, SPAN_STACK_DEPTH * sizeof(__u64));
} user_stacks SEC(".maps");

/* Scratch space: a data event is too big for the 512-byte BPF stack. */
struct scratch {
	struct data_event ev;
	__u8 spill[MAX_PAYLOAD]; /* lets an iovec copy start anywhere below MAX_PAYLOAD */
	struct iovec iov[MAX_IOV]; /* the iovec array, read in one go */
	__u64 next_id;           /* per-CPU connection id sequence */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} scratch_map SEC(".maps");


/* fd -> struct sock of a TCP (stream, inet) socket, or NULL.
 * Runs for every read/write on an fd not yet known (files and pipes of traced
 * processes, each time): task -> files -> fdt are direct BTF loads (one
 * instruction each) instead of probe-read helper calls: 400 -> 280 ns per
 * non-socket read measured here. fds[fd] and what follows stay probe reads
 * (an untyped pointer; bpf_rdonly_cast needs a newer libbpf than Debian's). */
static __always_inline struct sock *fd_to_tcp_sock(int fd)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct files_struct *files = task->files;
	struct fdtable *fdt;
	struct file **fds;
	struct file *f = NULL;
	struct socket *sock;
	struct sock *sk;
	umode_t mode;
	__u16 family;

	if (!files)
		return NULL;
	fdt = files->fdt;
	if (!fdt || fd < 0 || (unsigned int)fd >= fdt->max_fds)
		return NULL;
	fds = fdt->fd;
	if (bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]) || !f)
		return NULL;
	mode = BPF_CORE_READ(f, f_inode, i_mode);
	if ((mode & S_IFMT) != S_IFSOCK)
		return NULL;
	sock = BPF_CORE_READ(f, private_data);
	if (!sock || BPF_CORE_READ(sock, type) != SOCK_STREAM)
		return NULL;
	sk = BPF_CORE_READ(sock, sk);
	if (!sk)
		return NULL;
	family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family != AF_INET && family != AF_INET6)
		return NULL;
	return sk;
}

static __always_inline __u64 bound_iov_bytes(__u64 n)
{
	asm volatile("if %[n] <= %[max] goto +1;\n"
		     "%[n] = %[max];\n"
		     : [n] "+r"(n)
		     : [max] "i"(MAX_IOV * sizeof(struct iovec)));
	return n;
}

static __always_inline void fill_header(struct event_header *h, __u8 type, __u64 pid_tgid,
					int fd, __u64 conn_id, __u8 role)
{
	h->type = type;
	h->dir = 0;
	h->role = role;
	h->syscall = 0;
	h->pid = pid_tgid >> 32;
	h->tid = (__u32)pid_tgid;
	h->fd = fd;
	h->conn_id = conn_id;
	h->ts_enter = 0;
	h->ts_exit = 0;
}

static __always_inline struct scratch *get_scratch(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&scratch_map, &zero);
}

/*
 * Start tracking a socket: check the filters that need the socket (netns,
 * port), cache the verdict, and emit an open event with its addresses.
 * Returns the cached info, or NULL if the fd is not a TCP socket.
 */
static __always_inline struct conn_info *track(__u64 pid_tgid, int fd, __u8 role,
					       __u64 ts_enter, struct filter_config *cfg)
{
	struct conn_key key = { .tgid = pid_tgid >> 32, .fd = fd };
	struct conn_info info = {};
	struct open_event *ev;
	struct scratch *s;
	struct sock *sk;
	__u16 lport, rport;
	__u32 netns;

	sk = fd_to_tcp_sock(fd);
	if (!sk)
		return NULL;
	s = get_scratch();
	if (!s)
		return NULL;

	lport = BPF_CORE_READ(sk, __sk_common.skc_num);
	rport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);

	info.role = role;
	info.tracked = socket_wanted(cfg, netns, lport, rport);
	if (info.tracked && sampled_out(role)) {
		info.tracked = 0;
		info.sampled = 1;
		count(CTR_CONNS_SAMPLED);
	}
	/* Unique across CPUs: CPU number in the top bits. */
	if (info.tracked || info.sampled)
		info.conn_id = ((__u64)bpf_get_smp_processor_id() << 48) | ++s->next_id;

	if (info.tracked) {
		/* The data event buffer is free here; an open event fits in it. */
		ev = (struct open_event *)&s->ev;
		fill_header(&ev->hdr, EVENT_OPEN, pid_tgid, fd, info.conn_id, role);
		ev->hdr.ts_enter = ts_enter;
		ev->hdr.ts_exit = bpf_ktime_get_ns();
		ev->cgroup_id = bpf_get_current_cgroup_id();
		ev->netns = netns;
		ev->family = BPF_CORE_READ(sk, __sk_common.skc_family);
		ev->lport = lport;
		ev->rport = rport;
		__builtin_memset(ev->pad, 0, sizeof(ev->pad));
		__builtin_memset(ev->laddr, 0, sizeof(ev->laddr));
		__builtin_memset(ev->raddr, 0, sizeof(ev->raddr));
		if (ev->family == AF_INET) {
			bpf_core_read(ev->laddr, 4, &sk->__sk_common.skc_rcv_saddr);
			bpf_core_read(ev->raddr, 4, &sk->__sk_common.skc_daddr);
		} else {
			bpf_core_read(ev->laddr, 16, &sk->__sk_common.skc_v6_rcv_saddr);
			bpf_core_read(ev->raddr, 16, &sk->__sk_common.skc_v6_daddr);
		}
		bpf_get_current_comm(ev->comm, sizeof(ev->comm));
		submit_event(ev, sizeof(*ev));
	}
	if (bpf_map_update_elem(&conns, &key, &info, BPF_ANY)) {
		count(CTR_CONN_FULL);
		return NULL;
	}
	return bpf_map_lookup_elem(&conns, &key);
}

/* ---- accept / connect ------------------------------------------------- */

static __always_inline int open_enter(int fd)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct pending_open p = { .ts_enter = bpf_ktime_get_ns(), .fd = fd };
	__u32 tid = (__u32)pid_tgid;

	if (!process_wanted(pid_tgid >> 32, filters(), false))
		return 0;
	bpf_map_update_elem(&pending, &tid, &p, BPF_ANY);
	return 0;
}

static __always_inline int open_exit(long ret, __u8 role)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)pid_tgid;
	struct pending_open *p = bpf_map_lookup_elem(&pending, &tid);
	__u64 ts_enter;
	int fd;

	if (!p)
		return 0;
	ts_enter = p->ts_enter;
	fd = role == ROLE_SERVER ? (int)ret : p->fd;
	bpf_map_delete_elem(&pending, &tid);
	if (ret < 0 && !(role == ROLE_CLIENT && ret == -EINPROGRESS))
		return 0;
	track(pid_tgid, fd, role, ts_enter, filters());
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_accept")
int tp_enter_accept(struct syscall_trace_enter *ctx) { return open_enter(-1); }
SEC("tracepoint/syscalls/sys_exit_accept")
int tp_exit_accept(struct syscall_trace_exit *ctx) { return open_exit(ctx->ret, ROLE_SERVER); }
SEC("tracepoint/syscalls/sys_enter_accept4")
int tp_enter_accept4(struct syscall_trace_enter *ctx) { return open_enter(-1); }
SEC("tracepoint/syscalls/sys_exit_accept4")
int tp_exit_accept4(struct syscall_trace_exit *ctx) { return open_exit(ctx->ret, ROLE_SERVER); }
SEC("tracepoint/syscalls/sys_enter_connect")
int tp_enter_connect(struct syscall_trace_enter *ctx) { return open_enter((int)ctx->args[0]); }
SEC("tracepoint/syscalls/sys_exit_connect")
int tp_exit_connect(struct syscall_trace_exit *ctx) { return open_exit(ctx->ret, ROLE_CLIENT); }

/* ---- data --------------------------------------------------------------- */

static __always_inline int io_enter(int fd, __u64 buf, __u32 iovcnt, __u8 dir, __u8 sys)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct conn_key key = { .tgid = pid_tgid >> 32, .fd = fd };
	struct filter_config *cfg = filters();
	struct active_io io = { .live = 1 };
	struct active_io *slot;
	struct conn_info *info;
	struct ssl_call *call;
	__u64 ts;

	if (!process_wanted(key.tgid, cfg, false))
		return 0;
	ts = bpf_ktime_get_ns();
	info = bpf_map_lookup_elem(&conns, &key);
	if (!info) {
		/* Opened before we started (or by a path we don't hook). */
		info = track(pid_tgid, fd, ROLE_UNKNOWN, ts, cfg);
		if (!info)
			return 0;
	}
	/* Inside an SSL call (tls.bpf.c): this fd carries that SSL*'s
	 * ciphertext. Remember the pair; the plaintext comes from the uprobes
	 * (for a socket the filters reject too: its plaintext is then dropped
	 * as filtered, not counted as lost). */
	call = bpf_map_lookup_elem(&ssl_active, &pid_tgid);
	if (call) {
		struct ssl_key sk = { .ssl = call->ssl, .tgid = key.tgid };
		struct ssl_fd sf = { .conn_id = info->conn_id, .fd = fd };

		bpf_map_update_elem(&ssl_fds, &sk, &sf, BPF_ANY);
		if (!info->tls)
			info->sniffed = 0; /* a ciphertext sniff says nothing: redo on plaintext */
		info->tls = TLS_BOUND;
	}
	if (!info->tracked) {
		if (!info->sampled)
			return 0;
		/* sampled out: io_exit counts its requests, emits nothing */
		io.skip = 1;
		io.conn_id = info->conn_id;
		io.fd = fd;
		io.dir = dir;
		io.role = info->role;
		slot = active_get(true);
		if (slot)
			*slot = io;
		return 0;
	}
	io.tls = info->tls;
	if (info->tls && dir == DIR_INGRESS && !call) {
		struct ssl_fd last = { .conn_id = info->conn_id, .fd = fd };

		bpf_map_update_elem(&ssl_last_read, &pid_tgid, &last, BPF_ANY);
	}
	io.conn_id = info->conn_id;
	io.role = info->role;
	io.buf = buf;
	io.iovcnt = iovcnt;
	io.ts_enter = ts;
	io.fd = fd;
	io.dir = dir;
	io.syscall = sys;
	io.capture = info->capture ? info->capture : capture_bytes;
	/* The client preface leads the request direction: a client's writes, a
	 * server's reads (either for a socket of unknown role). */
	if (!info->sniffed && !info->tls)
		io.sniff = request_direction(info->role, dir);
	slot = active_get(true);
	if (slot)
		*slot = io;
	return 0;
}

/* First request-direction payload of a connection: an h2 preface raises the
 * connection's capture to h2_capture_bytes (this event keeps what it copied);
 * anything else keeps the normal capture. Returns the bytes to report. */
static __always_inline __u64 sniff_h2(__u64 pid_tgid, struct active_io *io,
				      struct data_event *ev, __u64 off)
{
	struct conn_info *info = conn_lookup(pid_tgid >> 32, io->fd, io->conn_id);
	bool h2 = is_h2_preface(ev->payload, off);

	if (info) {
		info->sniffed = 1;
		if (h2)
			info->capture = h2_capture_bytes;
	}
	if (!h2 && off > io->capture)
		off = io->capture;
	return off;
}

/* A ClientHello opened the connection: its bytes are ciphertext from now on,
 * whether or not an SSL call of a hooked library shows up. */
static __always_inline void mark_tls(__u64 pid_tgid, struct active_io *io, long ret)
{
	struct conn_info *info = conn_lookup(pid_tgid >> 32, io->fd, io->conn_id);

	if (info && !info->tls) {
		info->tls = TLS_SEEN;
		count(CTR_TLS_HELLO);
		if (io->dir == DIR_INGRESS) {
			struct ssl_fd last = { .conn_id = io->conn_id, .fd = io->fd };

			bpf_map_update_elem(&ssl_last_read, &pid_tgid, &last, BPF_ANY);
		}
	}
	count_add(CTR_TLS_SKIPPED, ret);
}

/* A sampled-out connection's requests: one per turn of the conversation to
 * the request direction (the first request-direction bytes, then the first
 * after response-direction bytes). Exact for HTTP/1 without pipelining; an
 * h2 connection counts its turns, fewer than its streams. */
static __always_inline void count_turn(__u64 pid_tgid, struct active_io *io)
{
	struct conn_info *info = conn_lookup(pid_tgid >> 32, io->fd, io->conn_id);
	__u8 turn = request_direction(io->role, io->dir) ? 1 : 2;

	if (!info || info->turn == turn)
		return;
	info->turn = turn;
	if (turn == 1)
		count(CTR_REQS_SAMPLED);
}

/* --span-stacks: 1 + the user stack id when this syscall starts an HTTP/1
 * request (the first request-direction bytes of a turn of the conversation),
 * else 0. None for HTTP/2 (user space attaches stacks to HTTP/1 spans only):
 * called after the preface sniff, so a connection's preface takes none. The
 * user stack at sys_exit is the one at sys_enter: the thread is still in it. */
static __always_inline __u32 request_stack(void *ctx, __u64 pid_tgid, struct active_io *io)
{
	struct conn_info *info = conn_lookup(pid_tgid >> 32, io->fd, io->conn_id);
	__u8 turn = request_direction(io->role, io->dir) ? 1 : 2;
	long id;

	if (!info || conn_is_h2(info) || info->stack_turn == turn)
		return 0;
	info->stack_turn = turn;
	if (turn != 1)
		return 0;
	id = bpf_get_stackid(ctx, &user_stacks, BPF_F_USER_STACK);
	if (id < 0) {
		count(CTR_STACK_FAILED);
		return 0;
	}
	return (__u32)id + 1;
}

/* The iovec prefix copy, one iovec per step; the state lives on the stack
 * of the exit program so that bpf_loop's callback can reach it. */
_Static_assert((MAX_IOV & (MAX_IOV - 1)) == 0, "MAX_IOV is a power of two");

struct iov_copy {
	struct scratch *s;
	__u64 want;
	__u64 off;
	__u32 cnt;
};

/* Returns 1 to stop: past the iovecs, the wanted prefix is in, a short
 * iovec, or a fault. The spill area after the payload keeps payload + off + n
 * inside the map value. */
static __always_inline long copy_one_iov(__u32 i, struct iov_copy *c)
{
	struct iovec *iov;
	__u64 n, off;

	if (i >= c->cnt || c->off >= c->want)
		return 1;
	/* cnt <= MAX_IOV, so the mask changes nothing; the barrier keeps clang
	 * from dropping it, and the verifier needs it to bound the index. */
	asm volatile("" : "+r"(i));
	iov = &c->s->iov[i & (MAX_IOV - 1)];
	n = bound_payload(min((__u64)iov->iov_len, c->want - c->off));
	off = bound_payload(c->off);
	if (off >= MAX_PAYLOAD)
		return 1;
	if (bpf_probe_read_user(c->s->ev.payload + off, n, iov->iov_base)) {
		count(CTR_READ_FAULT);
		return 1;
	}
	c->off = off + n;
	return n < iov->iov_len;
}

static long copy_iov_cb(__u32 i, void *c)
{
	return copy_one_iov(i, c);
}

/* The exit path is one program, reached by a tail call from each sys_exit
 * stub: the verifier walks it once instead of once per syscall, and
 * bpf_stats still charge each syscall's stub for the whole run. With
 * bpf_loop (5.17+) the iovec loop body is verified once too; the bounded
 * variant is for older kernels. The agent puts one of them in exit_tail. */
static __always_inline int exit_body(struct syscall_trace_exit *ctx, bool use_loop)
{
	long ret = ctx->ret;
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct active_io *io = active_get(false);
	struct scratch *s;
	struct data_event *ev;
	__u64 want, n, off = 0;

	if (!io || !io->live)
		return 0;
	if (ret <= 0)
		goto out;
	if (io->skip) {
		count_turn(pid_tgid, io);
		goto out;
	}
	if (io->tls) {
		count_add(CTR_TLS_SKIPPED, ret);
		goto out;
	}
	s = get_scratch();
	if (!s)
		goto out;
	ev = &s->ev;
	fill_header(&ev->hdr, EVENT_DATA, pid_tgid, io->fd, io->conn_id, io->role);
	ev->hdr.dir = io->dir;
	ev->hdr.syscall = io->syscall;
	ev->hdr.ts_enter = io->ts_enter;
	ev->hdr.ts_exit = bpf_ktime_get_ns();
	ev->bytes = ret;
	ev->pad = 0;
	bpf_get_current_comm(ev->comm, sizeof(ev->comm));

	/* A sniffed payload is copied at the h2 size, then cut back if not h2. */
	want = io->capture;
	if (io->sniff && h2_capture_bytes > want)
		want = h2_capture_bytes;
	want = bound_payload(min((__u64)ret, want));

	if (!io->iovcnt) {
		n = bound_payload(want);
		if (bpf_probe_read_user(ev->payload, n, (void *)io->buf)) {
			count(CTR_READ_FAULT);
			n = 0;
		}
		off = n;
	} else {
		/* Copy a contiguous prefix from the first iovecs. The iovec
		 * array is read with one call: h2 stacks write many small
		 * slices, and a helper call per iovec doubles the cost. */
		struct iov_copy c = { .s = s, .want = want, .off = 0 };

		c.cnt = io->iovcnt < MAX_IOV ? io->iovcnt : MAX_IOV;
		if (bpf_probe_read_user(s->iov, bound_iov_bytes((__u64)c.cnt * sizeof(struct iovec)),
					(void *)io->buf))
			c.cnt = 0;
		if (use_loop) {
			bpf_loop(MAX_IOV, copy_iov_cb, &c, 0);
		} else {
			for (__u32 i = 0; i < MAX_IOV; i++)
				if (copy_one_iov(i, &c))
					break;
		}
		off = c.off;
	}
	if (off > want)
		off = want;
	if (io->sniff) {
		if (is_client_hello(ev->payload, off)) {
			mark_tls(pid_tgid, io, ret);
			goto out;
		}
		off = sniff_h2(pid_tgid, io, ev, off);
	}
	ev->stack = span_stacks ? request_stack(ctx, pid_tgid, io) : 0;
	ev->captured = off;
	n = bound_payload(off);
	submit_event(ev, offsetof(struct data_event, payload) + n);
out:
	io->live = 0;
	return 0;
}

SEC("tracepoint")
int io_exit(struct syscall_trace_exit *ctx) { return exit_body(ctx, true); }

SEC("tracepoint")
int io_exit_bounded(struct syscall_trace_exit *ctx) { return exit_body(ctx, false); }

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, int(void *));
} exit_tail SEC(".maps");

static __always_inline int exit_io(void *ctx)
{
	bpf_tail_call(ctx, &exit_tail, 0);
	/* Reached only while exit_tail is empty (before the agent fills it):
	 * the entry stays live until the thread's next hooked syscall enters. */
	count(CTR_EXIT_UNREACHED);
	return 0;
}

/* recvmsg/sendmsg: the iovec array lives in the user's msghdr. */
static __always_inline int msg_enter(int fd, __u64 umsg, __u8 dir, __u8 sys)
{
	struct user_msghdr msg;

	if (bpf_probe_read_user(&msg, sizeof(msg), (void *)umsg))
		return 0;
	if (!msg.msg_iovlen)
		return 0;
	return io_enter(fd, (__u64)msg.msg_iov, msg.msg_iovlen, dir, sys);
}

#define ARG(i) (ctx->args[i])

SEC("tracepoint/syscalls/sys_enter_read")
int tp_enter_read(struct syscall_trace_enter *ctx)
{ return io_enter(ARG(0), ARG(1), 0, DIR_INGRESS, SYS_READ); }
SEC("tracepoint/syscalls/sys_exit_read")
int tp_exit_read(struct syscall_trace_exit *ctx) { return exit_io(ctx); }

SEC("tracepoint/syscalls/sys_enter_readv")
int tp_enter_readv(struct syscall_trace_enter *ctx)
{ return ARG(2) ? io_enter(ARG(0), ARG(1), ARG(2), DIR_INGRESS, SYS_READV) : 0; }
SEC("tracepoint/syscalls/sys_exit_readv")
int tp_exit_readv(struct syscall_trace_exit *ctx) { return exit_io(ctx); }

SEC("tracepoint/syscalls/sys_enter_recvfrom")
int tp_enter_recvfrom(struct syscall_trace_enter *ctx)
{
	/* A peek does not consume: the same bytes come again with the real read. */
	if (ARG(3) & MSG_PEEK)
		return 0;
	return io_enter(ARG(0), ARG(1), 0, DIR_INGRESS, SYS_RECVFROM);
}
SEC("tracepoint/syscalls/sys_exit_recvfrom")
int tp_exit_recvfrom(struct syscall_trace_exit *ctx) { return exit_io(ctx); }

SEC("tracepoint/syscalls/sys_enter_recvmsg")
int tp_enter_recvmsg(struct syscall_trace_enter *ctx)
{
	if (ARG(2) & MSG_PEEK)
		return 0;
	return msg_enter(ARG(0), ARG(1), DIR_INGRESS, SYS_RECVMSG);
}
SEC("tracepoint/syscalls/sys_exit_recvmsg")
int tp_exit_recvmsg(struct syscall_trace_exit *ctx) { return exit_io(ctx); }

SEC("tracepoint/syscalls/sys_enter_write")
int tp_enter_write(struct syscall_trace_enter *ctx)
{ return io_enter(ARG(0), ARG(1), 0, DIR_EGRESS, SYS_WRITE); }
SEC("tracepoint/syscalls/sys_exit_write")
int tp_exit_write(struct syscall_trace_exit *ctx) { return exit_io(ctx); }

SEC("tracepoint/syscalls/sys_enter_writev")
int tp_enter_writev(struct syscall_trace_enter *ctx)
{ return ARG(2) ? io_enter(ARG(0), ARG(1), ARG(2), DIR_EGRESS, SYS_WRITEV) : 0; }
SEC("tracepoint/syscalls/sys_exit_writev")
int tp_exit_writev(struct syscall_trace_exit *ctx) { return exit_io(ctx); }

SEC("tracepoint/syscalls/sys_enter_sendto")
int tp_enter_sendto(struct syscall_trace_enter *ctx)
{ return io_enter(ARG(0), ARG(1), 0, DIR_EGRESS, SYS_SENDTO); }
SEC("tracepoint/syscalls/sys_exit_sendto")
int tp_exit_sendto(struct syscall_trace_exit *ctx) { return exit_io(ctx); }

SEC("tracepoint/syscalls/sys_enter_sendmsg")
int tp_enter_sendmsg(struct syscall_trace_enter *ctx)
{ return msg_enter(ARG(0), ARG(1), DIR_EGRESS, SYS_SENDMSG); }
SEC("tracepoint/syscalls/sys_exit_sendmsg")
int tp_exit_sendmsg(struct syscall_trace_exit *ctx) { return exit_io(ctx); }

/* ---- close ------------------------------------------------------------- */

SEC("tracepoint/syscalls/sys_enter_close")
int tp_enter_close(struct syscall_trace_enter *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct conn_key key = { .tgid = pid_tgid >> 32, .fd = (int)ARG(0) };
	struct conn_info *info = bpf_map_lookup_elem(&conns, &key);
	struct close_event *ev;
	struct scratch *s;

	if (!info)
		return 0;
	if (info->tracked) {
		s = get_scratch();
		if (s) {
			ev = (struct close_event *)&s->ev;
			fill_header(&ev->hdr, EVENT_CLOSE, pid_tgid, key.fd, info->conn_id,
				    info->role);
			ev->hdr.ts_enter = ev->hdr.ts_exit = bpf_ktime_get_ns();
			submit_event(ev, sizeof(*ev));
		}
	}
	bpf_map_delete_elem(&conns, &key);
	return 0;
}

/* ---- process filter follows children ------------------------------------ */

SEC("tracepoint/sched/sched_process_fork")
int tp_fork(struct trace_event_raw_sched_process_fork *ctx)
{
	struct filter_config *cfg = filters();
	__u32 parent = bpf_get_current_pid_tgid() >> 32;
	__u32 child = ctx->child_pid;
	__u8 one = 1;

	if (cfg && cfg->by_pid && pid_wanted(parent))
		bpf_map_update_elem(&filter_pids, &child, &one, BPF_ANY);
	return 0;
}
