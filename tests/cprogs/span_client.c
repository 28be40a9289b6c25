/*
 * span_client.c: an HTTP/1.1 client for tests/e2e/test_span_stacks.py.
 *
 *   span_client PORT N [hold]   N keep-alive GET /ok/<i> requests to 127.0.0.1:PORT
 *
 * Each request is written from do_request() through send_all(), so the user
 * stack at the request's first writev(2) holds do_request and main (frame
 * pointers: build with -fno-omit-frame-pointer). send_all itself is not seen:
 * libc's writev wrapper sets up no frame, so the frame-pointer walk goes from
 * writev straight to send_all's caller. Exits 0 after N complete responses;
 * with "hold", prints "done" then and exits when stdin reaches EOF, so the
 * process (its /proc maps, which stacks are symbolized from) outlives the
 * tracer's handling of its spans.
 */
#define _GNU_SOURCE /* memmem, strcasestr */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

__attribute__((noinline)) int send_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		/* writev, which nothing else on a test machine uses, so its BPF
		 * program's run time (bpf_stats) is this client's alone. */
		struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
		ssize_t n = writev(fd, &iov, 1);

		if (n <= 0)
			return -1;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Reads one response (headers + Content-Length body); returns the status. */
__attribute__((noinline)) int read_response(int fd)
{
	static char buf[65536];
	size_t have = 0;
	char *end = NULL;
	long body;
	int status;

	while (!(end = memmem(buf, have, "\r\n\r\n", 4))) {
		ssize_t n = read(fd, buf + have, sizeof(buf) - have);

		if (n <= 0)
			return -1;
		have += (size_t)n;
	}
	if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1)
		return -1;
	char *cl = strcasestr(buf, "\r\ncontent-length:");
	body = cl && cl < end ? strtol(cl + 17, NULL, 10) : 0;
	size_t want = (size_t)(end + 4 - buf) + (size_t)body;
	while (have < want) {
		ssize_t n = read(fd, buf + have, sizeof(buf) - have);

		if (n <= 0)
			return -1;
		have += (size_t)n;
	}
	return status;
}

__attribute__((noinline)) int do_request(int fd, int i)
{
	char req[256];
	int len = snprintf(req, sizeof(req),
			   "GET /ok/%d HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: span_client\r\n\r\n", i);

	if (send_all(fd, req, (size_t)len))
		return -1;
	return read_response(fd);
}

int main(int argc, char **argv)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	int n = argc > 2 ? atoi(argv[2]) : 23;
	int fd;

	if (argc < 2) {
		fprintf(stderr, "usage: span_client PORT [N]\n");
		return 2;
	}
	sa.sin_port = htons((unsigned short)atoi(argv[1]));
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		perror("connect");
		return 1;
	}
	for (int i = 0; i < n; i++) {
		int status = do_request(fd, i);

		if (status != 200) {
			fprintf(stderr, "request %d: status %d\n", i, status);
			return 1;
		}
	}
	close(fd);
	if (argc > 3 && !strcmp(argv[3], "hold")) {
		printf("done\n");
		fflush(stdout);
		while (getchar() != EOF)
			;
	}
	return 0;
}
