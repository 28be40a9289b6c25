// SPDX-License-Identifier: GPL-2.0
/*
 * tls.bpf.c: TLS plaintext from OpenSSL (and OpenSSL-compatible) libraries
 * through uprobes, joined to the sockets that sock.bpf.c tracks.
 *
 * At SSL_read/SSL_write[_ex]/SSL_do_handshake entry the call is stored per
 * thread in ssl_active. A socket syscall made during the call (seen by
 * sock.bpf.c) records SSL* -> fd in ssl_fds and marks the connection as TLS,
 * so its ciphertext is counted, not emitted. At return the plaintext becomes
 * a data_event of that fd's connection (syscall SYS_SSL_READ/SYS_SSL_WRITE).
 * A read served from records already decrypted makes no syscall: the
 * remembered SSL* -> fd pair joins it. The maps come from sock.bpf.o (maps.h).
 *
 * Programs are attached by user space (tracer/tls.py), once per library
 * inode, at offsets found in the ELF symbol tables: ssl_enter_multi and
 * ssl_ret_multi as two uprobe_multi links whose cookies name the function
 * (tls.h), or, where the kernel lacks those links, one program per function
 * and one perf-event link per probe.
 */
/* No CO-RE here: the only kernel struct read is pt_regs, whose layout is
 * user ABI. Without relocations libbpf does not parse the kernel's BTF to
 * load this object (measured: 11 MB of agent RSS peak and load time). */
#define BPF_NO_PRESERVE_ACCESS_INDEX
#include "common.h"
#include "sock.h"
#include "maps.h"
#include "tls.h"

char LICENSE[] SEC("license") = "GPL";

/* Processes that exec'd, for library discovery; drained by the agent on its
 * housekeeping tick (no wake-ups needed). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 << 10);
} tls_execs SEC(".maps");

/* BTF anchor: keeps enum tls_hook in the object's BTF for the mirror's test. */
const volatile enum tls_hook *tls_hook_anchor __attribute__((unused));

struct tls_scratch {
	struct data_event ev;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tls_scratch);
} tls_scratch_map SEC(".maps");

/* An SSL call on an SSL* with no live socket: a memory-BIO stack (node,
 * gRPC) reads the ciphertext itself, then calls SSL_* on the same thread with
 * no syscall inside. Join the TLS socket the thread read last, if no SSL* is
 * joined to it yet (so a new client SSL* never takes a server's socket). A
 * socket syscall inside a later call still overrides this (sock.bpf.c). */
static __always_inline void join_last_read(__u64 pid_tgid, __u64 ssl)
{
	struct ssl_key sk = { .ssl = ssl, .tgid = pid_tgid >> 32 };
	struct conn_info *info;
	struct ssl_fd *sf;

	sf = bpf_map_lookup_elem(&ssl_fds, &sk);
	if (sf && conn_lookup(sk.tgid, sf->fd, sf->conn_id))
		return; /* still joined (a freed SSL* may be reused: check) */
	sf = bpf_map_lookup_elem(&ssl_last_read, &pid_tgid);
	if (!sf)
		return;
	info = conn_lookup(sk.tgid, sf->fd, sf->conn_id);
	if (!info || info->tls != TLS_SEEN)
		return;
	info->tls = TLS_BOUND;
	bpf_map_update_elem(&ssl_fds, &sk, sf, BPF_ANY);
}

static __always_inline int ssl_enter(void *ssl, void *buf, __u64 nbytes, __u8 op)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct ssl_call call = {};

	if (!process_wanted(pid_tgid >> 32, filters(), false))
		return 0;
	/* A handshake inside a read/write belongs to that call: keep it. */
	if (op == SSL_OP_HANDSHAKE && bpf_map_lookup_elem(&ssl_active, &pid_tgid))
		return 0;
	call.ssl = (__u64)ssl;
	call.buf = (__u64)buf;
	call.nbytes = nbytes;
	call.ts_enter = bpf_ktime_get_ns();
	call.op = op;
	bpf_map_update_elem(&ssl_active, &pid_tgid, &call, BPF_ANY);
	join_last_read(pid_tgid, (__u64)ssl);
	return 0;
}

/* Emit the plaintext of a finished SSL_read/SSL_write as a data event. */
static __always_inline void emit(__u64 pid_tgid, struct ssl_call *call, __u64 bytes)
{
	struct ssl_key sk = { .ssl = call->ssl, .tgid = pid_tgid >> 32 };
	struct tls_scratch *s;
	struct conn_info *info;
	struct ssl_fd *sf;
	struct data_event *ev;
	__u8 dir = call->op == SSL_OP_READ ? DIR_INGRESS : DIR_EGRESS;
	__u32 zero = 0;
	__u64 want, n;
	bool sniff;
	int fd;

	sf = bpf_map_lookup_elem(&ssl_fds, &sk);
	if (!sf) {
		count(CTR_TLS_NO_FD);
		return;
	}
	fd = sf->fd;
	info = conn_lookup(sk.tgid, fd, sf->conn_id);
	if (!info) {
		count(CTR_TLS_NO_FD); /* closed meanwhile, or the fd was reused */
		return;
	}
	if (!info->tracked)
		return;
	s = bpf_map_lookup_elem(&tls_scratch_map, &zero);
	if (!s)
		return;
	ev = &s->ev;
	ev->hdr.type = EVENT_DATA;
	ev->hdr.dir = dir;
	ev->hdr.role = info->role;
	ev->hdr.syscall = call->op == SSL_OP_READ ? SYS_SSL_READ : SYS_SSL_WRITE;
	ev->hdr.pid = pid_tgid >> 32;
	ev->hdr.tid = (__u32)pid_tgid;
	ev->hdr.fd = fd;
	ev->hdr.conn_id = info->conn_id;
	ev->hdr.ts_enter = call->ts_enter;
	ev->hdr.ts_exit = bpf_ktime_get_ns();
	ev->bytes = bytes;
	bpf_get_current_comm(ev->comm, sizeof(ev->comm));

	/* Same h2 sniff as sock.bpf.c, on the plaintext (ALPN h2). */
	want = info->capture ? info->capture : capture_bytes;
	sniff = !info->sniffed && request_direction(info->role, dir);
	if (sniff && h2_capture_bytes > want)
		want = h2_capture_bytes;
	n = bound_payload(min(bytes, want));
	if (bpf_probe_read_user(ev->payload, n, (void *)call->buf)) {
		count(CTR_READ_FAULT);
		n = 0;
	}
	if (sniff) {
		bool h2 = is_h2_preface(ev->payload, n);

		info->sniffed = 1;
		if (h2)
			info->capture = h2_capture_bytes;
		else if (n > capture_bytes && !info->capture)
			n = capture_bytes;
	}
	ev->captured = n;
	count(CTR_TLS_EVENTS);
	submit_event(ev, offsetof(struct data_event, payload) + bound_payload(n));
}

/* ret: the function's return value; ex: the _ex form (1 = success, the byte
 * count is in *call->nbytes). */
static __always_inline int ssl_exit(long ret, bool ex)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct ssl_call *call = bpf_map_lookup_elem(&ssl_active, &pid_tgid);
	struct ssl_call c;
	__u64 bytes = 0;

	if (!call)
		return 0;
	c = *call;
	bpf_map_delete_elem(&ssl_active, &pid_tgid);
	if (c.op == SSL_OP_HANDSHAKE)
		return 0; /* a stray handshake entry: its return was missed */
	if (ex) {
		if (ret != 1 || bpf_probe_read_user(&bytes, sizeof(bytes), (void *)c.nbytes))
			return 0;
	} else {
		if ((int)ret <= 0)
			return 0;
		bytes = (int)ret;
	}
	if (bytes)
		emit(pid_tgid, &c, bytes);
	return 0;
}

static __always_inline int handshake_exit(void)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct ssl_call *call = bpf_map_lookup_elem(&ssl_active, &pid_tgid);

	if (call && call->op == SSL_OP_HANDSHAKE)
		bpf_map_delete_elem(&ssl_active, &pid_tgid);
	return 0;
}

SEC("uprobe")
int BPF_KPROBE(ssl_read_enter, void *ssl, void *buf)
{
	return ssl_enter(ssl, buf, 0, SSL_OP_READ);
}

SEC("uprobe")
int BPF_KPROBE(ssl_read_ex_enter, void *ssl, void *buf, __u64 num, void *readbytes)
{
	return ssl_enter(ssl, buf, (__u64)readbytes, SSL_OP_READ);
}

SEC("uprobe")
int BPF_KPROBE(ssl_write_enter, void *ssl, void *buf)
{
	return ssl_enter(ssl, buf, 0, SSL_OP_WRITE);
}

SEC("uprobe")
int BPF_KPROBE(ssl_write_ex_enter, void *ssl, void *buf, __u64 num, void *written)
{
	return ssl_enter(ssl, buf, (__u64)written, SSL_OP_WRITE);
}

SEC("uprobe")
int BPF_KPROBE(ssl_handshake_enter, void *ssl)
{
	return ssl_enter(ssl, 0, 0, SSL_OP_HANDSHAKE);
}

SEC("uretprobe")
int BPF_KRETPROBE(ssl_ret, long ret)
{
	return ssl_exit(ret, false);
}

SEC("uretprobe")
int BPF_KRETPROBE(ssl_ex_ret, long ret)
{
	return ssl_exit(ret, true);
}

SEC("uretprobe")
int BPF_KRETPROBE(ssl_handshake_ret)
{
	return handshake_exit();
}

/* The uprobe_multi pair: one entry and one return program for every hooked
 * function of a library, told apart by the cookie (enum tls_hook). The
 * function's arguments are read as the widest of them (the _ex forms). */
SEC("uprobe")
int BPF_KPROBE(ssl_enter_multi, void *ssl, void *buf, __u64 num, void *nbytes)
{
	__u64 n = 0;
	__u8 op;

	switch (bpf_get_attach_cookie(ctx)) {
	case TLS_HOOK_SSL_READ:
		op = SSL_OP_READ;
		break;
	case TLS_HOOK_SSL_WRITE:
		op = SSL_OP_WRITE;
		break;
	case TLS_HOOK_SSL_READ_EX:
		op = SSL_OP_READ;
		n = (__u64)nbytes;
		break;
	case TLS_HOOK_SSL_WRITE_EX:
		op = SSL_OP_WRITE;
		n = (__u64)nbytes;
		break;
	case TLS_HOOK_SSL_DO_HANDSHAKE:
		op = SSL_OP_HANDSHAKE;
		buf = 0;
		break;
	default:
		return 0;
	}
	return ssl_enter(ssl, buf, n, op);
}

SEC("uretprobe")
int BPF_KRETPROBE(ssl_ret_multi, long ret)
{
	__u64 hook = bpf_get_attach_cookie(ctx);

	if (hook == TLS_HOOK_SSL_DO_HANDSHAKE)
		return handshake_exit();
	if (hook < TLS_HOOK_SSL_READ || hook > TLS_HOOK_SSL_WRITE_EX)
		return 0;
	return ssl_exit(ret, hook >= TLS_HOOK_SSL_READ_EX);
}

/* A raw tracepoint: its link is released at once, where a perf-event
 * tracepoint link waits for grace periods when the tracer stops. */
SEC("raw_tp/sched_process_exec")
int tp_exec(void *ctx)
{
	struct exec_event ev = { .pid = bpf_get_current_pid_tgid() >> 32 };

	/* a process the filters exclude is never traced: no scan for it */
	if (process_wanted(ev.pid, filters(), false))
		bpf_ringbuf_output(&tls_execs, &ev, sizeof(ev), BPF_RB_NO_WAKEUP);
	return 0;
}
