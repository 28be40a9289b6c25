/* SPDX-License-Identifier: GPL-2.0 */
/*
 * sock.h: the event layout shared by sock.bpf.c and tracer/events.py.
 * It is the single source of truth; tests/unit/test_events_btf.py checks the
 * Python mirror against the BTF of the compiled object. Fixed-width types and
 * explicit padding only (built with -Wpadded).
 */
#ifndef __TRACER_SOCK_H
#define __TRACER_SOCK_H

/* Event structs must have explicit padding: the layout is an ABI. */
#pragma clang diagnostic push
#pragma clang diagnostic error "-Wpadded"

#define TASK_COMM_LEN 16
/* Upper bound of the per-event payload capture; the default is capture_bytes. */
#define MAX_PAYLOAD 4096
/* Only the first iovecs of readv/writev/recvmsg/sendmsg are copied. gRPC
 * (and other h2 stacks) write a frame header, a header block and a message
 * as separate slices: 32 covers a 4 KiB capture of such writes. */
#define MAX_IOV 128
/* --span-stacks: user frames kept per stack (innermost first). */
#define SPAN_STACK_DEPTH 32

enum event_type {
	EVENT_OPEN = 1,  /* accept/connect returned, or first sight of an open socket */
	EVENT_DATA = 2,  /* read/write-family syscall moved bytes */
	EVENT_CLOSE = 3, /* close(fd) on a tracked socket */
};

enum conn_role {
	ROLE_UNKNOWN = 0, /* socket opened before the tracer started */
	ROLE_SERVER = 1,  /* from accept() */
	ROLE_CLIENT = 2,  /* from connect() */
};

enum data_dir {
	DIR_EGRESS = 0,  /* write, writev, sendto, sendmsg */
	DIR_INGRESS = 1, /* read, readv, recvfrom, recvmsg */
};

/* Per-CPU counters, read by the loader; every loss is counted here. */
enum counter {
	CTR_EVENTS = 0,      /* events the kernel side tried to submit */
	CTR_DROPPED = 1,     /* ring buffer full: bpf_ringbuf_output failed */
	CTR_READ_FAULT = 2,  /* payload copy from user memory failed */
	CTR_CONN_FULL = 3,   /* connection table update failed */
	CTR_TLS_SKIPPED = 4, /* ciphertext bytes not emitted: the plaintext comes from uprobes */
	CTR_TLS_NO_FD = 5,   /* TLS plaintext dropped: its SSL* was never seen on a socket */
	CTR_TLS_EVENTS = 6,  /* TLS plaintext data events submitted */
	CTR_TLS_HELLO = 7,   /* connections marked TLS by their ClientHello (no SSL call seen) */
	CTR_CONNS_SAMPLED = 8, /* adaptive sampling: new connections not traced */
	CTR_REQS_SAMPLED = 9,  /* requests on those: request-direction turns (see conn_info.turn) */
	CTR_STACK_FAILED = 10, /* --span-stacks: bpf_get_stackid failed (bucket taken, no user stack) */
	CTR_EXIT_UNREACHED = 11, /* sys_exit stub's tail call failed: that syscall's event is lost */
	CTR_MAX = 12,
};

/* Adaptive sampling (array map "sampling", one __u32): how many new
 * connections out of SAMPLE_SCALE are sampled out; 0, the map's initial
 * value, keeps them all. The agent raises it under pressure. */
#define SAMPLE_SCALE 65536

struct event_header {
	__u8 type;      /* enum event_type */
	__u8 dir;       /* enum data_dir (data events) */
	__u8 role;      /* enum conn_role */
	__u8 syscall;   /* which syscall (enum sys_kind), for debugging */
	__u32 pid;      /* tgid */
	__u32 tid;
	__s32 fd;
	__u64 conn_id;  /* unique per traced connection, never reused */
	__u64 ts_enter; /* bpf_ktime_get_ns() at syscall entry */
	__u64 ts_exit;  /* bpf_ktime_get_ns() at syscall exit */
};

struct open_event {
	struct event_header hdr;
	__u64 cgroup_id;
	__u32 netns;    /* inode of the socket's network namespace */
	__u16 family;   /* AF_INET or AF_INET6 */
	__u16 lport;    /* host byte order */
	__u16 rport;    /* host byte order */
	__u8 pad[6];
	__u8 laddr[16]; /* IPv4 in the first 4 bytes */
	__u8 raddr[16];
	char comm[TASK_COMM_LEN];
};

struct data_event {
	struct event_header hdr;
	__u32 bytes;    /* the syscall's return value: bytes really moved */
	__u32 captured; /* payload bytes that follow (<= bytes) */
	__u32 stack;    /* --span-stacks: 1 + the user stack id in map user_stacks, taken at a
			 * request's first syscall; 0: none (always 0 when off, and for TLS) */
	__u32 pad;
	char comm[TASK_COMM_LEN];
	__u8 payload[MAX_PAYLOAD];
};

struct close_event {
	struct event_header hdr;
};

enum sys_kind {
	SYS_READ = 1, SYS_READV, SYS_RECVFROM, SYS_RECVMSG,
	SYS_WRITE, SYS_WRITEV, SYS_SENDTO, SYS_SENDMSG,
	SYS_ACCEPT, SYS_CONNECT, SYS_CLOSE,
	/* TLS plaintext from uprobes (tls.bpf.c): SSL_read[_ex], SSL_write[_ex] */
	SYS_SSL_READ, SYS_SSL_WRITE,
};

/* Key and value of the "conns" LRU map: one entry per (tgid, fd) socket.
 * User space reads and updates entries too (raising an h2 connection's
 * capture), hence the shared layout. */
struct conn_key {
	__u32 tgid;
	__s32 fd;
};

struct conn_info {
	__u64 conn_id;
	__u8 role;     /* enum conn_role */
	__u8 tracked;  /* 0: a TCP socket the filters reject; cached to skip the walk */
	__u8 sniffed;  /* the first request-direction payload was checked for the h2 preface */
	__u8 tls;      /* enum conn_tls: its bytes are ciphertext, not emitted */
	__u32 capture; /* payload bytes copied per syscall; 0: capture_bytes */
	__u8 sampled;  /* 1: sampled out at accept/connect (tracked is 0): only its requests are counted */
	__u8 turn;     /* sampled out: 1 after request-direction bytes, 2 after response-direction */
	__u8 stack_turn; /* --span-stacks, traced: the same, to take a stack once per request */
	__u8 pad[5];
};

enum conn_tls {
	TLS_NONE = 0,
	TLS_SEEN = 1,  /* a ClientHello opened it; no SSL* joined yet */
	TLS_BOUND = 2, /* an SSL* is joined to it (ssl_fds) */
};

/* Run-time filter switches (array map "filter_cfg", one entry). */
struct filter_config {
	__u8 by_pid;    /* only tgids in filter_pids (children are added on fork) */
	__u8 by_netns;  /* only netns inodes in filter_netns */
	__u8 by_cgroup; /* only cgroup ids in filter_cgroups */
	__u8 by_port;   /* only connections with a local or remote port in filter_ports */
	__u8 by_comm;   /* only threads whose comm is in filter_comms (exact, NUL-padded) */
};

/* An SSL call in progress on a thread (map "ssl_active", key: pid_tgid),
 * written by tls.bpf.c's uprobes and read by sock.bpf.c: a socket syscall
 * made during the call tells which fd the SSL* uses. */
enum ssl_op {
	SSL_OP_READ = 1,      /* SSL_read, SSL_read_ex */
	SSL_OP_WRITE = 2,     /* SSL_write, SSL_write_ex */
	SSL_OP_HANDSHAKE = 3, /* SSL_do_handshake (SSL_accept/SSL_connect call it) */
};

struct ssl_call {
	__u64 ssl;      /* the SSL* */
	__u64 buf;      /* plaintext buffer */
	__u64 nbytes;   /* _ex variants: size_t * for the bytes moved; 0 otherwise */
	__u64 ts_enter;
	__u8 op;        /* enum ssl_op */
	__u8 pad[7];
};

/* Map "ssl_fds": which socket an SSL* uses (key: tgid + SSL*), so a read
 * served from already-decrypted records (no syscall) still joins it.
 * Map "ssl_last_read" (key: pid_tgid, value: struct ssl_fd): the TLS socket
 * a thread read last. Stacks that feed SSL through memory BIOs (node, gRPC)
 * read the ciphertext first, then call SSL_read/SSL_do_handshake on the same
 * thread with no syscall inside: that read joins their SSL*. */
struct ssl_key {
	__u64 ssl;
	__u32 tgid;
	__u32 pad;
};

struct ssl_fd {
	__u64 conn_id;  /* the connection of fd then: a reused fd is not joined */
	__s32 fd;
	__u32 pad;
};

/* Ring "tls_execs": a process exec'd; user space looks for OpenSSL in it. */
struct exec_event {
	__u32 pid;
	__u32 pad;
};

#pragma clang diagnostic pop

#endif
