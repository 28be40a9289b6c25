/* SPDX-License-Identifier: GPL-2.0 */
/*
 * filters.h: the run-time filter maps (--pid/--cgroup per process, --netns and
 * --port per socket). sock.bpf.o owns them; tls.bpf.o and inject.bpf.o get
 * their fds before load (bpf_map__reuse_fd), so the definitions must be
 * identical in every object: this header is the only copy.
 */
#ifndef __TRACER_FILTERS_H
#define __TRACER_FILTERS_H

#include "sock.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct filter_config);
} filter_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u8);
} filter_pids SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u64);
	__type(value, __u8);
} filter_cgroups SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u8);
} filter_netns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u16);
	__type(value, __u8);
} filter_ports SEC(".maps");

#endif
