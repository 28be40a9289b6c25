/* SPDX-License-Identifier: GPL-2.0 */
/*
 * inject.h: events and constants shared by inject.bpf.c and tracer/inject.py
 * (mirrored in Python and checked against this object's BTF by
 * tests/unit/test_inject_btf.py).
 */
#ifndef __TRACER_INJECT_H
#define __TRACER_INJECT_H

#define TRACEPARENT_LEN 70  /* "traceparent: 00-<32>-<16>-<2>\r\n" */
#define INJECT_SCAN 1024    /* request heads longer than this are never touched */
#define CTX_SCAN 512        /* server request prefix searched for traceparent */

enum inject_event_type {
	INJECT_EV_INJECTED = 1,
};

/* One injected request: the ids written into its traceparent. Key for user
 * space: (pid, tid, lport, rport) of the sending thread, in order. */
struct inject_event {
	__u8 type;          /* enum inject_event_type */
	__u8 flags;         /* W3C trace flags written */
	__u8 has_parent;    /* parent_id is the sending thread's server span */
	__u8 pad0;
	__u32 pid;
	__u32 tid;
	__u16 lport;        /* host order */
	__u16 rport;        /* host order */
	__u64 ts;           /* bpf_ktime_get_ns at injection */
	__u8 trace_id[16];
	__u8 span_id[8];    /* the client span, the downstream server's parent */
	__u8 parent_id[8];  /* the thread's server span id, or zero */
};

/* The request a thread is handling (map "thread_ctx", key: pid_tgid). */
struct thread_ctx {
	__u8 trace_id[16];
	__u8 span_id[8];    /* the server span's id, chosen here */
	__u64 ts;
	__u8 flags;
	__u8 from_header;
	__u8 pad[6];
};

enum inject_counter {
	INJ_DONE = 0,       /* traceparent written */
	INJ_NOT_HTTP1,      /* first segment is not a complete HTTP/1 request head */
	INJ_PRESENT,        /* traceparent already there */
	INJ_TOO_BIG,        /* head not within INJECT_SCAN bytes of the segment */
	INJ_PUSH_FAIL,      /* bpf_msg_push_data/pull_data refused */
	INJ_LOST,           /* injected, but the event did not fit in the ring */
	INJ_CTX_SET,        /* server request read: thread context set */
	INJ_CTX_HEADER,     /* ... from an incoming traceparent */
	INJ_SOCKS,          /* client sockets added to the SOCKHASH */
	INJ_UNFILTERED,     /* not injected: a filter sk_msg cannot check here is on */
	INJ_CTR_MAX,
};

#endif
