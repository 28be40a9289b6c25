/* SPDX-License-Identifier: GPL-2.0 */
/*
 * filters.h: the run-time filter maps (--pid/--cgroup and [scope] processes
 * per process, --netns and --port per socket). sock.bpf.o owns them; tls.bpf.o and inject.bpf.o get
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

/* Process names (comm, TASK_COMM_LEN bytes, NUL-padded): [scope] processes. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, char[TASK_COMM_LEN]);
	__type(value, __u8);
} filter_comms SEC(".maps");

static __always_inline struct filter_config *filters(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&filter_cfg, &zero);
}

/* Cheap process-level filter, run before anything else. */
static __always_inline bool process_wanted(__u32 tgid, struct filter_config *cfg, __u32 self)
{
	if (tgid == self)
		return false;
	if (!cfg)
		return true;
	if (cfg->by_pid && !bpf_map_lookup_elem(&filter_pids, &tgid))
		return false;
	if (cfg->by_cgroup) {
		__u64 cg = bpf_get_current_cgroup_id();

		if (!bpf_map_lookup_elem(&filter_cgroups, &cg))
			return false;
	}
	if (cfg->by_comm) {
		char comm[TASK_COMM_LEN] = {};

		bpf_get_current_comm(comm, sizeof(comm));
		if (!bpf_map_lookup_elem(&filter_comms, comm))
			return false;
	}
	return true;
}

#endif
