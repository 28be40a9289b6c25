/* SPDX-License-Identifier: GPL-2.0 */
/*
 * tls.h: the OpenSSL functions tls.bpf.c hooks, shared with tracer/tls.py
 * (TlsHook, checked against this object's BTF).
 *
 * With uprobe_multi links (Linux 6.6+) one entry and one return program
 * serve every function of a library, and the bpf cookie of each offset names
 * its function: two links per library instead of two per function, each of
 * which costs the kernel a synchronize when it is released.
 */
#ifndef __TLS_H
#define __TLS_H

enum tls_hook {
	TLS_HOOK_NONE = 0, /* a link without a cookie: ignored */
	TLS_HOOK_SSL_READ = 1,
	TLS_HOOK_SSL_WRITE = 2,
	TLS_HOOK_SSL_READ_EX = 3,
	TLS_HOOK_SSL_WRITE_EX = 4,
	TLS_HOOK_SSL_DO_HANDSHAKE = 5,
};

#endif /* __TLS_H */
