// bcc reference peer: HTTP/1 request lines from socket syscalls.
// Syscall tracepoints only (no kprobes on the target kernel). The tracepoint
// argument structs come from the running kernel's tracefs format files, so no
// kernel struct is read here: the peer is correct even with another
// kernel's headers (which bcc still needs to compile).
// Knobs are -D cflags set by bcc_http.py: FILTER_PIDS, SELF_TGID, LINE_MAX.
#include <uapi/linux/ptrace.h>
#include "bcc_http.h"

struct pending_t {
    u64 buf;
    s32 fd;
    u32 pad;
};

BPF_HASH(pids, u32, u8, 4096);
BPF_HASH(pending, u64, struct pending_t, 16384);
BPF_PERCPU_ARRAY(counters, u64, CTR_MAX);
BPF_RINGBUF_OUTPUT(events, 2048);  // pages: 8 MiB, the tracer's size

static __always_inline int in_scope(u32 tgid) {
#if FILTER_PIDS
    return pids.lookup(&tgid) != NULL;
#else
    return tgid != SELF_TGID;
#endif
}

static __always_inline void count(int idx) {
    u64 *v = counters.lookup(&idx);
    if (v)
        (*v)++;
}

// An HTTP/1 request starts with a method and a space.
static __always_inline int is_request(const char *h) {
    switch (h[0]) {
    case 'G': return h[1] == 'E' && h[2] == 'T' && h[3] == ' ';
    case 'P': return (h[1] == 'O' && h[2] == 'S' && h[3] == 'T') ||
                     (h[1] == 'U' && h[2] == 'T' && h[3] == ' ') ||
                     (h[1] == 'A' && h[2] == 'T' && h[3] == 'C');
    case 'H': return h[1] == 'E' && h[2] == 'A' && h[3] == 'D';
    case 'D': return h[1] == 'E' && h[2] == 'L' && h[3] == 'E';
    case 'O': return h[1] == 'P' && h[2] == 'T' && h[3] == 'I';
    }
    return 0;
}

static __always_inline void capture(u64 id, u64 buf, s64 len, s32 fd, u8 dir) {
    char head[4] = {};
    count(CTR_SEEN);
    if (len < 4 || bpf_probe_read_user(head, sizeof(head), (void *)buf) != 0)
        return;
    if (!is_request(head))
        return;
    count(CTR_LINES);
    struct event_t *e = events.ringbuf_reserve(sizeof(struct event_t));
    if (!e) {
        count(CTR_RING_FULL);
        return;
    }
    u32 n = len < LINE_MAX ? (u32)len : LINE_MAX;
    e->tgid = id >> 32;
    e->tid = (u32)id;
    e->fd = fd;
    e->len = (u32)len;
    e->dir = dir;
    if (bpf_probe_read_user(e->line, n, (void *)buf) != 0)
        e->line[0] = 0;
    else if (n < LINE_MAX)
        e->line[n] = 0;
    events.ringbuf_submit(e, 0);
}

static __always_inline void enter_recv(u64 buf, s32 fd) {
    u64 id = bpf_get_current_pid_tgid();
    if (!in_scope(id >> 32))
        return;
    struct pending_t p = {.buf = buf, .fd = fd};
    pending.update(&id, &p);
}

static __always_inline void exit_recv(s64 ret) {
    u64 id = bpf_get_current_pid_tgid();
    struct pending_t *p = pending.lookup(&id);
    if (!p)
        return;
    u64 buf = p->buf;
    s32 fd = p->fd;
    pending.delete(&id);
    if (ret > 0)
        capture(id, buf, ret, fd, 0);
}

static __always_inline void on_send(u64 buf, s64 len, s32 fd) {
    u64 id = bpf_get_current_pid_tgid();
    if (in_scope(id >> 32))
        capture(id, buf, len, fd, 1);
}

TRACEPOINT_PROBE(syscalls, sys_enter_read) {
    enter_recv((u64)args->buf, (s32)args->fd);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_read) {
    exit_recv(args->ret);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_recvfrom) {
    enter_recv((u64)args->ubuf, (s32)args->fd);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_recvfrom) {
    exit_recv(args->ret);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_write) {
    on_send((u64)args->buf, (s64)args->count, (s32)args->fd);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_sendto) {
    on_send((u64)args->buff, (s64)args->len, (s32)args->fd);
    return 0;
}
