/* SPDX-License-Identifier: GPL-2.0 */
/*
 * golang.h: the records, counters and per-binary offsets of golang.bpf.c,
 * shared with user space (tracer/golang.py mirrors them; the mirror is
 * checked against the object's BTF by tests/unit/test_golang.py).
 */
#ifndef __TRACER_GOLANG_H
#define __TRACER_GOLANG_H

#pragma clang diagnostic push
#pragma clang diagnostic error "-Wpadded"

/* Generations of goroutines a request's identity is handed down (a handler's
 * goroutine, its children, theirs...). Past it a goroutine serves nobody:
 * long-lived pools started by a request should not claim later work. */
#define GO_MAX_DEPTH 8
#define GO_MAX_BINARIES 64 /* offsets slots: one per attached executable */

enum go_record_type {
	GO_REC_CALL = 1,
};

/* net/http (*persistConn).roundTrip entered by a goroutine that serves a
 * request (itself, or one of its ancestors): the client call that follows on
 * client_conn belongs to the server request on server_conn (and HTTP/2
 * stream_id) that started at serve_ts. Connection ids are sock.bpf.o's (conns map). */
struct go_call {
	__u8 type; /* enum go_record_type */
	__u8 depth; /* goroutine generations between the server request and the call */
	__u16 pad;
	__u32 pid;
	__u64 ts; /* roundTrip entry (ktime) */
	__u64 client_conn_id;
	__u64 server_conn_id;
	__u64 serve_ts; /* the server request's entry probe (ktime) */
	__u32 stream_id; /* HTTP/2 stream of the server request (gRPC); 0: HTTP/1 */
	__u32 pad2;
};

/* What a goroutine is doing for a server request: key (tgid, g address). */
struct go_gkey {
	__u32 tgid;
	__u32 pad;
	__u64 g;
};

struct go_serve {
	__u64 server_conn_id;
	__u64 serve_ts;
	__u32 depth;
	__u32 stream_id; /* 0: an HTTP/1 request */
};

/* Field offsets of one executable's Go types (from its DWARF, or the table
 * by Go version in tracer/golang.py), in slot = the probe's attach cookie. */
struct go_offsets {
	__u16 response_conn;   /* net/http.response.conn (*conn) */
	__u16 conn_rwc;        /* net/http.conn.rwc (net.Conn interface) */
	__u16 conn_tls;        /* net/http.conn.tlsState (non-nil: a TLS connection) */
	__u16 pconn_conn;      /* net/http.persistConn.conn (net.Conn interface) */
	__u16 pconn_tls;       /* net/http.persistConn.tlsState */
	__u16 tcpconn_fd;      /* net.TCPConn -> net.conn.fd (*netFD) */
	__u16 netfd_sysfd;     /* net.netFD.pfd + internal/poll.FD.Sysfd (int) */
	__u16 grpc_stream_id;  /* grpc internal/transport.Stream.id (uint32) */
	__u16 grpc_st_conn;    /* grpc internal/transport.http2Server.conn (net.Conn) */
	__u16 valid;           /* 1 once user space filled the slot */
};

/* counters (per CPU, summed by user space): probe hits, then what came of them */
enum go_counter {
	GO_HIT_SERVE,       /* serverHandler.ServeHTTP entries */
	GO_HIT_SERVE_RET,   /* its RET instructions */
	GO_HIT_NEWPROC,     /* runtime.newproc1 entries */
	GO_HIT_NEWPROC_RET, /* its RET instructions */
	GO_HIT_GOEXIT,      /* runtime.goexit1 */
	GO_HIT_ROUNDTRIP,   /* (*persistConn).roundTrip entries */
	GO_HIT_GRPC_SERVE,  /* grpc (*Server).handleStream entries */
	GO_HIT_GRPC_SERVE_RET, /* its RET instructions */
	GO_SERVE_NO_CONN,   /* a server request on a connection sock.bpf.o does not trace */
	GO_SERVE_TLS,       /* a server request over TLS (not joined yet) */
	GO_INHERITED,       /* goroutines that took a server request from their creator */
	GO_DEPTH_LIMIT,     /* ... and those past GO_MAX_DEPTH that did not */
	GO_CALL_OUTSIDE,    /* a client call by a goroutine that serves no request */
	GO_CALL_NO_CONN,    /* a client call on a connection sock.bpf.o does not trace */
	GO_CALL_TLS,        /* a client call over TLS (not joined yet) */
	GO_CALLS,           /* records written */
	GO_RING_FULL,       /* records lost: the ring was full */
	GO_READ_FAULT,      /* a Go structure could not be read */
	GO_NO_OFFSETS,      /* a probe fired on a binary whose slot is empty */
	GO_CTR_MAX,
};

#pragma clang diagnostic pop

#endif
