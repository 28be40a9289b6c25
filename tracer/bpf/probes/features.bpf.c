// SPDX-License-Identifier: GPL-2.0
/*
 * features.bpf.c: one trivial program per attach type. The feature probe
 * (tracer/probe.py) loads and attaches each one on its own, so a feature is
 * reported available only when the kernel really accepted it.
 */
#include "common.h"

char LICENSE[] SEC("license") = "GPL";

SEC("tracepoint/syscalls/sys_enter_getppid")
int probe_tp_syscall(void *ctx) { return 0; }

SEC("tracepoint/sock/inet_sock_set_state")
int probe_tp_sock(void *ctx) { return 0; }

SEC("tracepoint/tcp/tcp_retransmit_skb")
int probe_tp_tcp(void *ctx) { return 0; }

SEC("raw_tracepoint/sys_enter")
int probe_raw_tp(void *ctx) { return 0; }

SEC("kprobe/tcp_sendmsg")
int probe_kprobe(void *ctx) { return 0; }

SEC("fentry/tcp_sendmsg")
int BPF_PROG(probe_fentry) { return 0; }

SEC("uprobe")
int probe_uprobe(void *ctx) { return 0; }

/* Loaded, never attached: the verifier refuses the helper under lockdown. */
SEC("tracepoint/syscalls/sys_enter_getppid")
int probe_write_user(void *ctx)
{
	char c = 0;

	bpf_probe_write_user((void *)0, &c, 1);
	return 0;
}
