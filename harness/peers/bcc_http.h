// The bcc peer's event: the one layout bcc_http.bpf.c writes and
// bcc_http.py's ctypes mirror reads (checked by tests/unit/test_peers.py).
#ifndef BCC_HTTP_H
#define BCC_HTTP_H

#ifndef LINE_MAX
#define LINE_MAX 64
#endif

enum { CTR_SEEN, CTR_LINES, CTR_RING_FULL, CTR_MAX };

struct event_t {
    u32 tgid;
    u32 tid;
    s32 fd;
    u32 len;            // bytes of the syscall
    u8 dir;             // 0: received (read/recvfrom), 1: sent (write/sendto)
    u8 pad[3];
    char line[LINE_MAX];  // the first bytes: the request line
};

#endif
