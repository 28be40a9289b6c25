/* SPDX-License-Identifier: GPL-2.0 */
/*
 * conns.h: the connection table (one entry per traced (tgid, fd) socket) and
 * its lookups, the only copy. sock.bpf.o owns the map and fills it at
 * accept/connect or first sight; tls.bpf.o gets its fd before load
 * (bpf_map__reuse_fd); user space raises an entry's capture
 * (conn.kernel_capture_hook). Layouts: struct conn_key/conn_info in sock.h.
 */
#ifndef __TRACER_CONNS_H
#define __TRACER_CONNS_H

#include "sock.h"

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct conn_key);
	__type(value, struct conn_info);
} conns SEC(".maps");

/* The entry of (tgid, fd), if it is still connection conn_id: the fd may have
 * been closed and reused by another socket since conn_id was read. */
static __always_inline struct conn_info *conn_lookup(__u32 tgid, int fd, __u64 conn_id)
{
	struct conn_key key = { .tgid = tgid, .fd = fd };
	struct conn_info *info = bpf_map_lookup_elem(&conns, &key);

	if (!info || info->conn_id != conn_id)
		return NULL;
	return info;
}

/* A connection handled as HTTP/2. The capture is raised for HTTP/2 only: by
 * the kernel's preface sniff (sock.bpf.c on syscalls, tls.bpf.c on TLS
 * plaintext) and by user space for a connection it recognises mid-stream. */
static __always_inline bool conn_is_h2(const struct conn_info *info)
{
	return info->capture != 0;
}

#endif
