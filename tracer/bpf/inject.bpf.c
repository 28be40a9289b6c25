// SPDX-License-Identifier: GPL-2.0
/*
 * inject.bpf.c: W3C traceparent injection into outgoing HTTP/1 requests
 * (opt-in, `tracer run --inject`), without bpf_probe_write_user.
 *
 * - sockops on the cgroup v2 root adds every active (client) TCP socket to a
 *   SOCKHASH when it is established;
 * - an sk_msg verdict program on that map sees each sendmsg: when the segment
 *   starts with a complete HTTP/1 request head that has no traceparent, it
 *   pushes TRACEPARENT_LEN bytes after the request line and writes the header;
 * - syscall tracepoints keep the "thread context": the request a thread is
 *   handling (read of an HTTP/1 request head; cleared when it writes an
 *   HTTP/1 response), so an outgoing request continues that trace.
 * The ids chosen go to user space (ring "inject_events") so the client span
 * carries exactly them.
 */
#include "common.h"
#include "sock.h"
#include "inject.h"

char LICENSE[] SEC("license") = "GPL";

/* self_tgid: filters.h */
const volatile __u32 sample_per_10k = 10000; /* new traces sampled (flag 01) */
const volatile __u64 ctx_ttl_ns = 30000000000ULL; /* older thread contexts are stale */
/* Helpers sk_msg may lack (6.1 refuses bpf_get_current_comm there): user
 * space clears a knob when the verifier names its helper, the verifier then
 * drops the dead call, and the filter it served fails closed in sk_msg. */
const volatile __u8 msg_comm = 1;  /* bpf_get_current_comm: --comm */
const volatile __u8 msg_task = 1;  /* bpf_get_current_task: --netns */

/* BTF anchor for tests/unit/test_inject_btf.py (see sock.bpf.c). */
struct inject_btf_anchor {
	struct inject_event ev;
	struct thread_ctx ctx;
	enum inject_event_type type;
	enum inject_counter counter;
};
const volatile struct inject_btf_anchor *inject_btf_anchor __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 65536);
	__type(key, __u64);   /* socket cookie */
	__type(value, __u64);
} inject_socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 << 10);
} inject_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, INJ_CTR_MAX);
	__type(key, __u32);
	__type(value, __u64);
} inject_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct thread_ctx);
} thread_ctx SEC(".maps");

/* read/recvfrom arguments from sys_enter to sys_exit, per thread */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u64);
} read_buf SEC(".maps");

/* A copy of a request head at buf + 16: the scans may look one byte before
 * and the parse up to 70 bytes past any index below INJECT_SCAN. */
struct scratch {
	__u8 buf[16 + INJECT_SCAN + 80];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} scratch_map SEC(".maps");

/* The same filters as sock.bpf.o (all of them, --port in sk_msg only); the
 * loader makes these its maps (reuse_fd). */
#include "filters.h"

static __always_inline void count(__u32 idx)
{
	__u64 *c = bpf_map_lookup_elem(&inject_counters, &idx);
	if (c)
		*c += 1;
}

/* The current process passes the filters; --netns by the task's namespace:
 * no socket at hand on these paths. */
static __always_inline bool wanted(__u32 tgid)
{
	return process_wanted(tgid, filters(), true);
}

static __always_inline bool upper(__u8 c) { return c >= 'A' && c <= 'Z'; }

/* hex digit -> value, 0xff for anything else: a table keeps the parse
 * branch-free, which keeps the verifier's work small */
const volatile __u8 hexv[256] = {
	['0'] = 0, ['1'] = 1, ['2'] = 2, ['3'] = 3, ['4'] = 4, ['5'] = 5, ['6'] = 6,
	['7'] = 7, ['8'] = 8, ['9'] = 9, ['a'] = 10, ['b'] = 11, ['c'] = 12, ['d'] = 13,
	['e'] = 14, ['f'] = 15, ['A'] = 10, ['B'] = 11, ['C'] = 12, ['D'] = 13, ['E'] = 14,
	['F'] = 15,
	[0 ... '0' - 1] = 0xff, [':' ... '@'] = 0xff, ['G' ... '`'] = 0xff, ['g' ... 255] = 0xff,
};

static __always_inline void random_bytes(__u8 *out, int n)
{
	for (int i = 0; i < n; i += 4) {
		__u32 r = bpf_get_prandom_u32();
		__builtin_memcpy(out + i, &r, 4);
	}
}

static __always_inline bool all_zero(const __u8 *b, int n)
{
	__u8 acc = 0;
	for (int i = 0; i < n; i++)
		acc |= b[i];
	return acc == 0;
}

/* ---- sockops: collect client sockets ------------------------------------------ */

SEC("sockops")
int inject_sockops(struct bpf_sock_ops *skops)
{
	__u64 cookie;

	if (skops->op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB)
		return 1;
	if (skops->family != AF_INET && skops->family != AF_INET6)
		return 1;
	cookie = bpf_get_socket_cookie(skops);
	if (bpf_sock_hash_update(skops, &inject_socks, &cookie, BPF_NOEXIST) == 0)
		count(INJ_SOCKS);
	return 1;
}

/* ---- thread context: the request a thread is handling ------------------------------ */

static __always_inline int on_read_enter(__u64 buf)
{
	__u64 id = bpf_get_current_pid_tgid();

	/* filter here: every read(2) on the machine passes by, most are unwanted */
	if (wanted(id >> 32))
		bpf_map_update_elem(&read_buf, &id, &buf, BPF_ANY);
	return 0;
}

/* "\ntraceparent:" at p (the header name in any case) */
static __always_inline bool tp_name_at(const __u8 *p)
{
	return p[0] == '\n' && (p[1] | 0x20) == 't' && (p[2] | 0x20) == 'r' &&
	       (p[3] | 0x20) == 'a' && (p[4] | 0x20) == 'c' && (p[5] | 0x20) == 'e' &&
	       (p[6] | 0x20) == 'p' && (p[7] | 0x20) == 'a' && (p[8] | 0x20) == 'r' &&
	       (p[9] | 0x20) == 'e' && (p[10] | 0x20) == 'n' && (p[11] | 0x20) == 't' &&
	       p[12] == ':';
}

/* Byte scans run under bpf_loop: an open-coded loop of this length makes
 * the verifier walk every iteration and give up. */
struct scan {
	__u32 n;        /* bytes copied into the scratch buffer */
	__u32 line_end; /* offset after the request line's '\n' */
	__u32 head_end; /* offset after the blank line */
	__u32 tp;       /* offset of "\ntraceparent:", 0 when absent */
	__u8 *buf;      /* the copy; buf[-16..-1] and 16 bytes past n are slack */
};

static long scan_step(__u32 i, struct scan *c)
{
	__u8 *p;

	if (i + 3 > c->n)
		return 1;
	p = c->buf;
	if (!p)
		return 1;
	p += i & (INJECT_SCAN - 1);
	if (p[0] != '\n')
		return 0;
	if (!c->line_end)
		c->line_end = i + 1;
	if (p[1] == '\r' && p[2] == '\n') {
		c->head_end = i + 3;
		return 1;
	}
	if (i + 13 <= c->n && tp_name_at(p)) {
		c->tp = i;
		return 1;
	}
	return 0;
}

/* The traceparent value at v: ids into tc; false when malformed. */
static __always_inline bool parse_traceparent(const __u8 *v, struct thread_ctx *tc)
{
	__u8 bad = (v[0] != '0') | (v[1] != '0') | (v[2] != '-') | (v[35] != '-') | (v[52] != '-');

	for (int k = 0; k < 16; k++) {
		__u8 hi = hexv[v[3 + 2 * k]], lo = hexv[v[4 + 2 * k]];
		bad |= (hi | lo) & 0xf0;
		tc->trace_id[k] = hi << 4 | (lo & 15);
	}
	bad |= (hexv[v[53]] | hexv[v[54]]) & 0xf0;
	tc->flags = hexv[v[54]] & 1;
	return !bad && !all_zero(tc->trace_id, 16);
}

static __always_inline int on_read_exit(long ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u64 *bufp = bpf_map_lookup_elem(&read_buf, &id);
	struct scan c = {};
	struct scratch *s;
	struct thread_ctx tc = {};
	__u32 zero = 0;
	__u64 ubuf;
	__u8 *l;

	if (!bufp)
		return 0;
	ubuf = *bufp;
	bpf_map_delete_elem(&read_buf, &id);
	if (ret < 16)
		return 0;
	s = bpf_map_lookup_elem(&scratch_map, &zero);
	if (!s)
		return 0;
	/* cheap test first: three uppercase letters (a method) */
	if (bpf_probe_read_user(s->buf + 16, 8, (void *)ubuf))
		return 0;
	if (!upper(s->buf[16]) || !upper(s->buf[17]) || !upper(s->buf[18]))
		return 0;
	c.n = ret < CTX_SCAN ? ret : CTX_SCAN;
	asm volatile("" : "+r"(c.n));
	if (c.n > CTX_SCAN)
		return 0;
	if (bpf_probe_read_user(s->buf + 16, c.n, (void *)ubuf))
		return 0;
	c.buf = s->buf + 16;
	bpf_loop(CTX_SCAN, scan_step, &c, 0);
	if (c.line_end < 16)
		return 0;
	l = &s->buf[16 + ((c.line_end - 11) & (INJECT_SCAN - 1))];
	if (l[0] != ' ' || l[1] != 'H' || l[2] != 'T' || l[5] != '/' || l[6] != '1')
		return 0;
	if (c.tp) {
		__u8 *v = &s->buf[16 + ((c.tp + 13) & (INJECT_SCAN - 1))];
		if (v[0] == ' ')
			v++;
		tc.from_header = parse_traceparent(v, &tc);
	}
	if (tc.from_header) {
		count(INJ_CTX_HEADER);
	} else {
		random_bytes(tc.trace_id, 16);
		tc.flags = bpf_get_prandom_u32() % 10000 < sample_per_10k;
	}
	random_bytes(tc.span_id, 8);
	tc.ts = bpf_ktime_get_ns();
	bpf_map_update_elem(&thread_ctx, &id, &tc, BPF_ANY);
	count(INJ_CTX_SET);
	return 0;
}

/* A thread that writes an HTTP/1 response is done with its request. */
static __always_inline int on_write_enter(__u64 ubuf)
{
	__u64 id = bpf_get_current_pid_tgid();
	char head[8];

	if (!bpf_map_lookup_elem(&thread_ctx, &id))
		return 0;
	if (bpf_probe_read_user(head, sizeof(head), (void *)ubuf))
		return 0;
	if (head[0] == 'H' && head[1] == 'T' && head[2] == 'T' && head[3] == 'P' &&
	    head[4] == '/' && head[5] == '1')
		bpf_map_delete_elem(&thread_ctx, &id);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_read")
int inj_enter_read(struct syscall_trace_enter *ctx) { return on_read_enter(ctx->args[1]); }

SEC("tracepoint/syscalls/sys_exit_read")
int inj_exit_read(struct syscall_trace_exit *ctx) { return on_read_exit(ctx->ret); }

SEC("tracepoint/syscalls/sys_enter_recvfrom")
int inj_enter_recvfrom(struct syscall_trace_enter *ctx) { return on_read_enter(ctx->args[1]); }

SEC("tracepoint/syscalls/sys_exit_recvfrom")
int inj_exit_recvfrom(struct syscall_trace_exit *ctx) { return on_read_exit(ctx->ret); }

SEC("tracepoint/syscalls/sys_enter_write")
int inj_enter_write(struct syscall_trace_enter *ctx) { return on_write_enter(ctx->args[1]); }

SEC("tracepoint/syscalls/sys_enter_sendto")
int inj_enter_sendto(struct syscall_trace_enter *ctx) { return on_write_enter(ctx->args[1]); }

/* ---- sk_msg: write the header -------------------------------------------------------- */

const volatile char hexdig[16] = "0123456789abcdef";

static __always_inline void hex(char *out, const __u8 *in, int n)
{
	for (int k = 0; k < n; k++) {
		out[2 * k] = hexdig[in[k] >> 4];
		out[2 * k + 1] = hexdig[in[k] & 15];
	}
}

/* The process filter in sk_msg: filters.h's where this kernel gives sk_msg
 * its helpers; else a --comm or --netns filter that is on rejects (counted):
 * never write into a process that was not chosen. */
static __always_inline bool msg_wanted(__u32 tgid)
{
	struct filter_config *cfg;

	if (msg_comm && msg_task)
		return wanted(tgid);
	if (tgid == self_tgid)
		return false;
	cfg = filters();
	if (!cfg)
		return true;
	if (cfg->by_pid && !pid_wanted(tgid))
		return false;
	if (cfg->by_cgroup && !cgroup_wanted())
		return false;
	if ((cfg->by_comm && !msg_comm) || (cfg->by_netns && !msg_task)) {
		count(INJ_UNFILTERED);
		return false;
	}
	if (cfg->by_comm) {
		char comm[TASK_COMM_LEN] = {};

		bpf_get_current_comm(comm, sizeof(comm));
		if (!bpf_map_lookup_elem(&filter_comms, comm))
			return false;
	}
	if (cfg->by_netns && !task_netns_wanted())
		return false;
	return true;
}

/* --port: the local or the remote port is in filter_ports */
static __always_inline bool msg_port_wanted(struct sk_msg_md *msg)
{
	return port_wanted(filters(), msg->local_port, bpf_ntohl(msg->remote_port));
}

SEC("sk_msg")
int inject_msg(struct sk_msg_md *msg)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 size = msg->size, line_end, zero = 0;
	__u64 n;
	struct scan c = {};
	struct scratch *s;
	struct thread_ctx *tc;
	struct inject_event *ev;
	char hdr[TRACEPARENT_LEN + 2];
	__u8 *data, *end;

	if (size < 16)
		return SK_PASS;
	data = msg->data;
	end = msg->data_end;
	/* TLS (0x16...), HTTP/2 frames and bodies fail this before any work */
	if (data + 4 > end || !upper(data[0]) || !upper(data[1]) || !upper(data[2]))
		return SK_PASS;
	if (!msg_wanted(id >> 32) || !msg_port_wanted(msg))
		return SK_PASS;
	/* the head must lie in the bounded, linear prefix of this segment */
	if (bpf_msg_pull_data(msg, 0, size < INJECT_SCAN ? size : INJECT_SCAN, 0))
		goto not_http;
	data = msg->data;
	end = msg->data_end;
	n = (__u8 *)end - data;
	if (n > INJECT_SCAN)
		n = INJECT_SCAN;
	asm volatile("" : "+r"(n)); /* keep the bound check below: the verifier needs it */
	if (n > INJECT_SCAN)
		goto not_http;
	s = bpf_map_lookup_elem(&scratch_map, &zero);
	if (!s || n < 16 || bpf_probe_read_kernel(s->buf + 16, n, data))
		goto not_http;
	c.n = n;
	c.buf = s->buf + 16;
	bpf_loop(INJECT_SCAN, scan_step, &c, 0);
	if (c.tp) {
		count(INJ_PRESENT);
		return SK_PASS;
	}
	line_end = c.line_end;
	if (line_end < 16)
		goto not_http;
	if (!c.head_end) {
		count(INJ_TOO_BIG);
		return SK_PASS;
	}
	/* the request line: "<METHOD> <target> HTTP/1.x\r\n" */
	{
		__u8 *l = &s->buf[16 + ((line_end - 11) & (INJECT_SCAN - 1))];
		if (l[0] != ' ' || l[1] != 'H' || l[2] != 'T' || l[3] != 'T' || l[4] != 'P' ||
		    l[5] != '/' || l[6] != '1' || l[7] != '.' || l[9] != '\r')
			goto not_http;
	}

	ev = bpf_ringbuf_reserve(&inject_events, sizeof(*ev), 0);
	if (!ev) {
		count(INJ_LOST);
		return SK_PASS; /* user space could not give the client span these ids */
	}
	__builtin_memset(ev, 0, sizeof(*ev));
	ev->type = INJECT_EV_INJECTED;
	ev->pid = id >> 32;
	ev->tid = (__u32)id;
	ev->lport = msg->local_port;
	ev->rport = bpf_ntohl(msg->remote_port);
	ev->ts = bpf_ktime_get_ns();
	random_bytes(ev->span_id, 8);
	tc = bpf_map_lookup_elem(&thread_ctx, &id);
	if (tc && ev->ts - tc->ts < ctx_ttl_ns) {
		__builtin_memcpy(ev->trace_id, tc->trace_id, 16);
		__builtin_memcpy(ev->parent_id, tc->span_id, 8);
		ev->flags = tc->flags;
		ev->has_parent = 1;
	} else {
		random_bytes(ev->trace_id, 16);
		ev->flags = bpf_get_prandom_u32() % 10000 < sample_per_10k;
	}
	__builtin_memcpy(hdr, "traceparent: 00-", 16);
	hex(hdr + 16, ev->trace_id, 16);
	hdr[48] = '-';
	hex(hdr + 49, ev->span_id, 8);
	hdr[65] = '-';
	hdr[66] = '0';
	hdr[67] = ev->flags ? '1' : '0';
	hdr[68] = '\r';
	hdr[69] = '\n';

	if (bpf_msg_push_data(msg, line_end, TRACEPARENT_LEN, 0))
		goto push_fail;
	if (bpf_msg_pull_data(msg, line_end, line_end + TRACEPARENT_LEN, 0))
		goto pop;
	data = msg->data;
	end = msg->data_end;
	if ((void *)(data + TRACEPARENT_LEN) > (void *)end)
		goto pop;
	__builtin_memcpy(data, hdr, TRACEPARENT_LEN);
	bpf_ringbuf_submit(ev, 0);
	count(INJ_DONE);
	return SK_PASS;

pop:
	/* never send the pushed (uninitialised) bytes: take them out again */
	bpf_msg_pop_data(msg, line_end, TRACEPARENT_LEN, 0);
push_fail:
	bpf_ringbuf_discard(ev, 0);
	count(INJ_PUSH_FAIL);
	return SK_PASS;
not_http:
	count(INJ_NOT_HTTP1);
	return SK_PASS;
}
