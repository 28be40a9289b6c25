// SPDX-License-Identifier: GPL-2.0
/*
 * golang.bpf.c: which server request a Go client call is made for, from
 * uprobes on the Go runtime and net/http (user space: tracer/golang.py).
 *
 * The Go scheduler moves goroutines between threads, and a pooled connection
 * is written by its own writeLoop goroutine, so the thread that writes a
 * client request says nothing about the request it serves. Goroutines do:
 *  - serverHandler.ServeHTTP entry: the current goroutine serves the request
 *    read from that connection (go_serving[g] = its conn_id, entry time);
 *    cleared at the function's RET instructions;
 *  - grpc-go (*Server).handleStream entry: the same for one RPC, which is one
 *    HTTP/2 stream of the connection (go_serving[g] also has the stream id);
 *    the unary or streaming handler runs on this goroutine, RETs clear it;
 *  - runtime.newproc1: a goroutine created by a serving one serves the same
 *    request (copied at creation, GO_MAX_DEPTH generations at most): entry
 *    saves the creator (2nd argument) per thread, the RET instructions read
 *    the new g (return value);
 *  - runtime.goexit1: the goroutine is gone, its g may be reused;
 *  - (*persistConn).roundTrip entry, on the caller's goroutine: the request
 *    it serves and the connection the call goes out on (the writeLoop writes
 *    one request at a time per connection) become a go_call record.
 * User space joins the record's client connection to the client span that
 * sock.bpf.o sees on it, and the server connection to the server span.
 *
 * No uretprobes: Go moves goroutine stacks, and a rewritten return address
 * would crash it. User space attaches to each RET instruction instead
 * (found by disassembly). amd64 register ABI (Go >= 1.17): arguments in
 * rax, rbx, rcx, rdi..., results in rax, the current g in r14. Structure
 * offsets come per binary through the attach cookie (go_offsets slot).
 * Under lockdown=integrity nothing is written to user memory: the context
 * rides in maps.
 */
/* Only pt_regs (user ABI) is read: no CO-RE, no kernel BTF parse at load. */
#define BPF_NO_PRESERVE_ACCESS_INDEX
#include "common.h"
#include "sock.h"
#include "conns.h"
#include "filters.h"
#include "golang.h"

char LICENSE[] SEC("license") = "GPL";

/* BTF anchor: keeps the types shared with user space in this object's BTF,
 * for tests/unit/test_golang.py. Nothing reads it. */
struct go_btf_anchor {
	struct go_call call;
	struct go_gkey gkey;
	struct go_serve serve;
	struct go_offsets offsets;
	enum go_record_type type;
	enum go_counter counter;
};
const volatile struct go_btf_anchor *go_btf_anchor __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 << 10);
} go_records SEC(".maps");

/* Processes that exec'd: Go executables are found there (user space). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 << 10);
} go_execs SEC(".maps");

/* (tgid, g) -> the server request that goroutine works for. LRU: a process
 * that dies leaves its goroutines behind. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct go_gkey);
	__type(value, struct go_serve);
} go_serving SEC(".maps");

/* pid_tgid -> the creating g, from newproc1's entry to its RET (the same
 * thread: newproc1 runs on the system stack). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, __u64);
} go_spawning SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, GO_MAX_BINARIES);
	__type(key, __u32);
	__type(value, struct go_offsets);
} go_offsets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, GO_CTR_MAX);
	__type(key, __u32);
	__type(value, __u64);
} go_counters SEC(".maps");

static __always_inline void go_count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&go_counters, &idx);

	if (v)
		*v += 1;
}

static __always_inline struct go_offsets *offsets(void *ctx)
{
	__u32 slot = (__u32)bpf_get_attach_cookie(ctx);
	struct go_offsets *o = bpf_map_lookup_elem(&go_offsets, &slot);

	if (!o || !o->valid) {
		go_count(GO_NO_OFFSETS);
		return NULL;
	}
	return o;
}

static __always_inline __u64 read_ptr(__u64 addr)
{
	__u64 v = 0;

	if (!addr || bpf_probe_read_user(&v, sizeof(v), (void *)addr)) {
		go_count(GO_READ_FAULT);
		return 0;
	}
	return v;
}

/* The conn_id of the socket behind a net.Conn interface holding a
 * *net.TCPConn (iface: the data word), or 0 if sock.bpf.o does not trace it. */
static __always_inline __u64 tcp_conn_id(__u32 tgid, __u64 iface, struct go_offsets *o)
{
	__u64 tcp = read_ptr(iface + 8);
	__u64 nfd = tcp ? read_ptr(tcp + o->tcpconn_fd) : 0;
	__u64 fd = nfd ? read_ptr(nfd + o->netfd_sysfd) : 0;
	struct conn_key key = { .tgid = tgid };
	struct conn_info *info;

	if (!nfd || (__s64)fd < 0 || fd > 0x7fffffff)
		return 0;
	key.fd = (__s32)fd;
	info = bpf_map_lookup_elem(&conns, &key);
	return info && info->tracked ? info->conn_id : 0;
}

static __always_inline struct go_gkey gkey(__u64 pid_tgid, __u64 g)
{
	struct go_gkey k = { .tgid = pid_tgid >> 32, .g = g };

	return k;
}

/* func (sh serverHandler) ServeHTTP(rw ResponseWriter, req *Request):
 * sh in rax, rw in rbx (itab) and rcx (data: *http.response). */
SEC("uprobe")
int go_serve(struct pt_regs *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32;
	struct go_gkey k = gkey(pid_tgid, ctx->r14);
	struct go_serve s = {};
	struct go_offsets *o;
	__u64 c;

	go_count(GO_HIT_SERVE);
	if (!process_wanted(tgid, filters(), false))
		return 0;
	o = offsets(ctx);
	if (!o)
		return 0;
	c = read_ptr(ctx->cx + o->response_conn);
	if (!c)
		return 0;
	if (read_ptr(c + o->conn_tls)) {
		go_count(GO_SERVE_TLS);
		return 0;
	}
	s.server_conn_id = tcp_conn_id(tgid, c + o->conn_rwc, o);
	if (!s.server_conn_id) {
		go_count(GO_SERVE_NO_CONN);
		bpf_map_delete_elem(&go_serving, &k); /* no longer what it served before */
		return 0;
	}
	s.serve_ts = bpf_ktime_get_ns();
	bpf_map_update_elem(&go_serving, &k, &s, BPF_ANY);
	return 0;
}

/* at each RET of ServeHTTP: the request is handled (its children keep it) */
SEC("uprobe")
int go_serve_ret(struct pt_regs *ctx)
{
	struct go_gkey k = gkey(bpf_get_current_pid_tgid(), ctx->r14);

	go_count(GO_HIT_SERVE_RET);
	bpf_map_delete_elem(&go_serving, &k);
	return 0;
}

/* func (s *Server) handleStream(t transport.ServerTransport, stream *transport.Stream, ...)
 * (grpc-go; the same registers with or without the trailing trInfo): s in
 * rax, t in rbx (itab) and rcx (data: *http2Server), stream in rdi. The RPC
 * is the stream of that id on the transport's connection. A connection that
 * is not a plain *net.TCPConn (TLS credentials) gives no traced conn_id or a
 * conn_id without that stream in flight: user space joins nothing then. */
SEC("uprobe")
int go_grpc_serve(struct pt_regs *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32;
	struct go_gkey k = gkey(pid_tgid, ctx->r14);
	struct go_serve s = {};
	struct go_offsets *o;
	__u32 sid = 0;

	go_count(GO_HIT_GRPC_SERVE);
	if (!process_wanted(tgid, filters(), false))
		return 0;
	o = offsets(ctx);
	if (!o || !ctx->cx || !ctx->di)
		return 0;
	if (bpf_probe_read_user(&sid, sizeof(sid), (void *)(ctx->di + o->grpc_stream_id)) || !sid) {
		go_count(GO_READ_FAULT);
		return 0;
	}
	s.server_conn_id = tcp_conn_id(tgid, ctx->cx + o->grpc_st_conn, o);
	if (!s.server_conn_id) {
		go_count(GO_SERVE_NO_CONN);
		bpf_map_delete_elem(&go_serving, &k);
		return 0;
	}
	s.serve_ts = bpf_ktime_get_ns();
	s.stream_id = sid;
	bpf_map_update_elem(&go_serving, &k, &s, BPF_ANY);
	return 0;
}

/* at each RET of handleStream: the RPC is handled */
SEC("uprobe")
int go_grpc_serve_ret(struct pt_regs *ctx)
{
	struct go_gkey k = gkey(bpf_get_current_pid_tgid(), ctx->r14);

	go_count(GO_HIT_GRPC_SERVE_RET);
	bpf_map_delete_elem(&go_serving, &k);
	return 0;
}

/* func newproc1(fn *funcval, callergp *g, callerpc uintptr, ...) *g */
SEC("uprobe")
int go_newproc(struct pt_regs *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u64 parent = ctx->bx;
	struct go_gkey k = gkey(pid_tgid, parent);

	go_count(GO_HIT_NEWPROC);
	/* only creators that serve something are remembered */
	if (bpf_map_lookup_elem(&go_serving, &k))
		bpf_map_update_elem(&go_spawning, &pid_tgid, &parent, BPF_ANY);
	return 0;
}

/* at each RET of newproc1: rax is the new g */
SEC("uprobe")
int go_newproc_ret(struct pt_regs *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct go_gkey child = gkey(pid_tgid, ctx->ax);
	struct go_serve *ps, s;
	struct go_gkey pk;
	__u64 *parent;

	go_count(GO_HIT_NEWPROC_RET);
	parent = bpf_map_lookup_elem(&go_spawning, &pid_tgid);
	if (!parent) {
		/* a g struct is reused: whatever it served is not the new one's */
		bpf_map_delete_elem(&go_serving, &child);
		return 0;
	}
	pk = gkey(pid_tgid, *parent);
	bpf_map_delete_elem(&go_spawning, &pid_tgid);
	ps = bpf_map_lookup_elem(&go_serving, &pk);
	if (!ps || ps->depth + 1 > GO_MAX_DEPTH) {
		if (ps)
			go_count(GO_DEPTH_LIMIT);
		bpf_map_delete_elem(&go_serving, &child);
		return 0;
	}
	s = *ps;
	s.depth++;
	bpf_map_update_elem(&go_serving, &child, &s, BPF_ANY);
	go_count(GO_INHERITED);
	return 0;
}

SEC("uprobe")
int go_exit(struct pt_regs *ctx)
{
	struct go_gkey k = gkey(bpf_get_current_pid_tgid(), ctx->r14);

	go_count(GO_HIT_GOEXIT);
	bpf_map_delete_elem(&go_serving, &k);
	return 0;
}

/* func (pc *persistConn) roundTrip(req *transportRequest) (*Response, error):
 * pc in rax; runs on the goroutine that made the call */
SEC("uprobe")
int go_roundtrip(struct pt_regs *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32;
	struct go_gkey k = gkey(pid_tgid, ctx->r14);
	struct go_offsets *o;
	struct go_serve *s;
	struct go_call *rec;
	__u64 pc = ctx->ax, client;

	go_count(GO_HIT_ROUNDTRIP);
	if (!process_wanted(tgid, filters(), false))
		return 0;
	s = bpf_map_lookup_elem(&go_serving, &k);
	if (!s) {
		go_count(GO_CALL_OUTSIDE);
		return 0;
	}
	o = offsets(ctx);
	if (!o || !pc)
		return 0;
	if (read_ptr(pc + o->pconn_tls)) {
		go_count(GO_CALL_TLS);
		return 0;
	}
	client = tcp_conn_id(tgid, pc + o->pconn_conn, o);
	if (!client) {
		go_count(GO_CALL_NO_CONN);
		return 0;
	}
	rec = bpf_ringbuf_reserve(&go_records, sizeof(*rec), 0);
	if (!rec) {
		go_count(GO_RING_FULL);
		return 0;
	}
	rec->type = GO_REC_CALL;
	rec->depth = s->depth;
	rec->pad = 0;
	rec->pid = tgid;
	rec->ts = bpf_ktime_get_ns();
	rec->client_conn_id = client;
	rec->server_conn_id = s->server_conn_id;
	rec->serve_ts = s->serve_ts;
	rec->stream_id = s->stream_id;
	rec->pad2 = 0;
	/* drained before every read of the events ring: no wake-up needed */
	bpf_ringbuf_submit(rec, BPF_RB_NO_WAKEUP);
	go_count(GO_CALLS);
	return 0;
}

SEC("tracepoint/sched/sched_process_exec")
int go_exec(void *ctx)
{
	struct exec_event ev = { .pid = bpf_get_current_pid_tgid() >> 32 };

	if (process_wanted(ev.pid, filters(), false))
		bpf_ringbuf_output(&go_execs, &ev, sizeof(ev), BPF_RB_NO_WAKEUP);
	return 0;
}
