/* SPDX-License-Identifier: GPL-2.0 */
/*
 * knobs.h: the knobs and loss counters of the HTTP tracer's objects
 * (sock.bpf.c, tls.bpf.c), the only copy.
 *
 * The knobs are rodata, set before load; each object has its own copy, and
 * the agent gives both the same values (sock.py, tls.py). self_tgid is in
 * filters.h. The counters map is one: sock.bpf.o owns it, tls.bpf.o gets its
 * fd before load (bpf_map__reuse_fd).
 */
#ifndef __TRACER_KNOBS_H
#define __TRACER_KNOBS_H

#include "sock.h"

const volatile __u32 capture_bytes = 512;    /* payload prefix copied per syscall */
const volatile __u64 wakeup_bytes = 1 << 20; /* unread ring data that wakes the agent */
/* HTTP/2 connections get a larger capture: HEADERS frames often sit behind
 * DATA frames in one write, past capture_bytes. */
const volatile __u32 h2_capture_bytes = MAX_PAYLOAD;

/* enum counter (sock.h), summed over CPUs by user space */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CTR_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline void count_add(__u32 idx, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &idx);

	if (v)
		*v += n;
}

static __always_inline void count(__u32 idx)
{
	count_add(idx, 1);
}

#endif
