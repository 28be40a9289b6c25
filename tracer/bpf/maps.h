/* SPDX-License-Identifier: GPL-2.0 */
/*
 * maps.h: maps shared by sock.bpf.c and tls.bpf.c, and helpers over them.
 * sock.bpf.o owns them; the loader hands their fds to tls.bpf.o before it
 * loads (bpf_map__reuse_fd), so both objects see one ring and one per-thread
 * SSL-call table. The definitions must stay identical in both objects: this
 * header is the only copy. It includes the other shared headers: knobs.h
 * (knobs, counters), conns.h (the connection table), filters.h.
 */
#ifndef __TRACER_MAPS_H
#define __TRACER_MAPS_H

#include "sock.h"
#include "knobs.h"
#include "conns.h"
/* Filters, changeable at run time by the agent; shared so the uprobes skip
 * unwanted processes before any map update. */
#include "filters.h"

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20);
} events SEC(".maps");

/* pid_tgid -> the SSL call in progress on that thread. LRU: a thread that
 * dies inside a call leaves its entry behind. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct ssl_call);
} ssl_active SEC(".maps");

/* (tgid, SSL*) -> fd; LRU: SSL objects are freed without a hook. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct ssl_key);
	__type(value, struct ssl_fd);
} ssl_fds SEC(".maps");

/* pid_tgid -> the TLS socket the thread read last (memory-BIO stacks). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct ssl_fd);
} ssl_last_read SEC(".maps");

/* Wake-ups: the agent drains the ring on a short poll timeout, so a record
 * needs no wake-up of its own (a forced one costs the producing CPU an
 * irq_work and the consumer a context switch per batch). One is forced only
 * where the unread data crosses wake_bytes, and again at twice that, so a
 * burst is drained well before the ring fills. */
static __always_inline __u64 wakeup_flags(__u64 size, __u64 wake_bytes)
{
	__u64 avail = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);

	if ((avail < wake_bytes && avail + size >= wake_bytes) ||
	    (avail < 2 * wake_bytes && avail + size >= 2 * wake_bytes))
		return BPF_RB_FORCE_WAKEUP;
	return BPF_RB_NO_WAKEUP;
}

static __always_inline void submit_event(void *ev, __u64 size)
{
	count(CTR_EVENTS);
	if (bpf_ringbuf_output(&events, ev, size, wakeup_flags(size, wakeup_bytes)))
		count(CTR_DROPPED);
}

/* Bound a copy length for the verifier. A plain `if (n > MAX) n = MAX` is not
 * enough: clang 14 may test a zero-extended copy and pass the original. */
static __always_inline __u64 bound_payload(__u64 n)
{
	asm volatile("if %[n] <= %[max] goto +1;\n"
		     "%[n] = %[max];\n"
		     : [n] "+r"(n)
		     : [max] "i"(MAX_PAYLOAD));
	return n;
}

/* "PRI * HTTP/2.0\r\n", the first 16 bytes of the client preface, as two
 * little-endian words. */
#define H2_PREFACE_LO 0x5448202a20495250ULL
#define H2_PREFACE_HI 0x0a0d302e322f5054ULL

static __always_inline bool is_h2_preface(const __u8 *payload, __u64 len)
{
	const __u64 *words = (const __u64 *)payload;

	return len >= 16 && words[0] == H2_PREFACE_LO && words[1] == H2_PREFACE_HI;
}

/* A TLS handshake record holding a ClientHello: content type 22, version
 * 3.x, handshake type 1. As a connection's first request-direction bytes it
 * means TLS, whichever library (hooked or not) speaks it. */
static __always_inline bool is_client_hello(const __u8 *p, __u64 len)
{
	return len >= 6 && p[0] == 0x16 && p[1] == 0x03 && p[2] <= 0x04 && p[5] == 0x01;
}

/* The client preface leads the request direction: a client's writes, a
 * server's reads (either for a socket of unknown role). */
static __always_inline bool request_direction(__u8 role, __u8 dir)
{
	return role == ROLE_UNKNOWN || (role == ROLE_SERVER) == (dir == DIR_INGRESS);
}

#endif
