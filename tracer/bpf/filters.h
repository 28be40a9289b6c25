/* SPDX-License-Identifier: GPL-2.0 */
/*
 * filters.h: the process filter, the only definition of its maps and checks,
 * for every object (sock, tls, inject, funcs, kfuncs).
 *
 * A thread is traced unless it belongs to the tracer (self_tgid) or a filter
 * that is on rejects it: its tgid is not in filter_pids, its cgroup id not in
 * filter_cgroups, its network namespace inode not in filter_netns, or (HTTP
 * tracer only) its comm not in filter_comms.
 *
 * The filters are switched on in one of two ways:
 *  - at run time (default; the HTTP tracer: sock, tls, inject): the switches
 *    are the filter_cfg map, rewritten on SIGHUP. sock.bpf.o owns the maps;
 *    tls.bpf.o and inject.bpf.o get their fds before load (bpf_map__reuse_fd),
 *    which needs identical definitions. sock.bpf.c applies --netns and --port
 *    to each socket when it starts tracking it (socket_wanted).
 *  - before load (define FILTERS_AT_LOAD; funcs, kfuncs): the switches are the
 *    rodata by_pid, by_cgroup and by_netns, and the verifier drops the checks
 *    that are off. --netns is the task's namespace: no socket at hand.
 * FILTER_MAP(name) names the maps; kfuncs keeps kf_pids, kf_cgroups and
 * kf_netns (user space fills them by name).
 */
#ifndef __TRACER_FILTERS_H
#define __TRACER_FILTERS_H

#ifndef FILTER_MAP
#define FILTER_MAP(name) filter_##name
#endif

const volatile __u32 self_tgid = 0; /* the tracer never traces itself */

/* tgids; the HTTP tracer adds the children of a traced process on fork */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u8);
} FILTER_MAP(pids) SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u64);
	__type(value, __u8);
} FILTER_MAP(cgroups) SEC(".maps");

/* network namespace inodes */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u8);
} FILTER_MAP(netns) SEC(".maps");

static __always_inline bool pid_wanted(__u32 tgid)
{
	return bpf_map_lookup_elem(&FILTER_MAP(pids), &tgid);
}

static __always_inline bool cgroup_wanted(void)
{
	__u64 cg = bpf_get_current_cgroup_id();

	return bpf_map_lookup_elem(&FILTER_MAP(cgroups), &cg);
}

static __always_inline bool netns_wanted(__u32 inum)
{
	return bpf_map_lookup_elem(&FILTER_MAP(netns), &inum);
}

/* The current task's network namespace (CO-RE read). */
static __always_inline bool task_netns_wanted(void)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();

	return netns_wanted(BPF_CORE_READ(task, nsproxy, net_ns, ns.inum));
}

#ifdef FILTERS_AT_LOAD

const volatile __u8 by_pid = 0;
const volatile __u8 by_cgroup = 0;
const volatile __u8 by_netns = 0;

static __always_inline bool process_wanted(__u32 tgid)
{
	if (tgid == self_tgid)
		return false;
	if (by_pid && !pid_wanted(tgid))
		return false;
	if (by_cgroup && !cgroup_wanted())
		return false;
	if (by_netns && !task_netns_wanted())
		return false;
	return true;
}

#else /* switched at run time */

#include "sock.h" /* struct filter_config */

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct filter_config);
} filter_cfg SEC(".maps");

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

/* Cheap process-level filter, run before anything else. task_netns: apply
 * --netns to the task (paths with no socket at hand; sock.bpf.c applies it
 * to the socket instead, in socket_wanted). */
static __always_inline bool process_wanted(__u32 tgid, struct filter_config *cfg,
					   bool task_netns)
{
	if (tgid == self_tgid)
		return false;
	if (!cfg)
		return true;
	if (cfg->by_pid && !pid_wanted(tgid))
		return false;
	if (cfg->by_cgroup && !cgroup_wanted())
		return false;
	if (cfg->by_comm) {
		char comm[TASK_COMM_LEN] = {};

		bpf_get_current_comm(comm, sizeof(comm));
		if (!bpf_map_lookup_elem(&filter_comms, comm))
			return false;
	}
	if (task_netns && cfg->by_netns && !task_netns_wanted())
		return false;
	return true;
}

/* --port: the local or the remote port (host order) is in filter_ports. */
static __always_inline bool port_wanted(struct filter_config *cfg, __u16 lport, __u16 rport)
{
	if (!cfg || !cfg->by_port)
		return true;
	return bpf_map_lookup_elem(&filter_ports, &lport) ||
	       bpf_map_lookup_elem(&filter_ports, &rport);
}

/* The filters that need the socket: its namespace and its ports. */
static __always_inline bool socket_wanted(struct filter_config *cfg, __u32 netns, __u16 lport,
					  __u16 rport)
{
	if (cfg && cfg->by_netns && !netns_wanted(netns))
		return false;
	return port_wanted(cfg, lport, rport);
}

#endif /* FILTERS_AT_LOAD */

#endif
