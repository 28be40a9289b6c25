/* SPDX-License-Identifier: GPL-2.0 */
/* common.h: helpers shared by every tracer BPF object (kernel side only). */
#ifndef __TRACER_COMMON_H
#define __TRACER_COMMON_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>

/* Not in vmlinux.h: these are macros in the kernel's uapi headers. */
#define AF_INET 2
#define AF_INET6 10
#define SOCK_STREAM 1
#define S_IFMT 00170000
#define S_IFSOCK 0140000
#define MSG_PEEK 2
#define EINPROGRESS 115

#define min(a, b) ((a) < (b) ? (a) : (b))


#endif
