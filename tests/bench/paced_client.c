/* A paced HTTP/1.1 keep-alive load client for tests/bench/nginx_cost.py.
 *
 *   paced_client HOST PORT PATH RATE SECONDS CONNS
 *
 * Sends RATE requests per second in all (0: as fast as the server answers),
 * spread over CONNS keep-alive connections, one request in flight per
 * connection, each request at an absolute deadline so pacing does not drift.
 * Responses are framed by Content-Length. Prints "requests N errors E" and
 * the client's own CPU seconds. A C client keeps the load generator's CPU out
 * of the way of the agent being measured.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int dial(const char *host, int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
	int one = 1, fd = socket(AF_INET, SOCK_STREAM, 0);
	inet_pton(AF_INET, host, &a.sin_addr);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		perror("connect");
		exit(2);
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

/* Read one response: the head up to CRLFCRLF, then Content-Length bytes. */
static int read_response(int fd, char *buf, size_t cap)
{
	size_t have = 0;
	char *end = NULL;
	while (!end) {
		ssize_t n = read(fd, buf + have, cap - 1 - have);
		if (n <= 0)
			return -1;
		have += n;
		buf[have] = 0;
		end = strstr(buf, "\r\n\r\n");
		if (!end && have >= cap - 1)
			return -1;
	}
	char *cl = strcasestr(buf, "content-length:");
	long body = cl && cl < end ? strtol(cl + 15, NULL, 10) : 0;
	long got = have - (end + 4 - buf);
	while (got < body) {
		ssize_t n = read(fd, buf, cap - 1);
		if (n <= 0)
			return -1;
		got += n;
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc != 7) {
		fprintf(stderr, "usage: %s HOST PORT PATH RATE SECONDS CONNS\n", argv[0]);
		return 2;
	}
	const char *host = argv[1], *path = argv[3];
	int port = atoi(argv[2]), conns = atoi(argv[6]);
	double rate = atof(argv[4]), secs = atof(argv[5]);
	if (conns < 1 || conns > 64)
		return 2;
	int fds[64];
	for (int i = 0; i < conns; i++)
		fds[i] = dial(host, port);
	char req[512], buf[65536];
	int len = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: %s:%d\r\n"
			   "User-Agent: paced-client/1\r\nAccept: */*\r\n\r\n", path, host, port);
	long long start = now_ns(), stop = start + (long long)(secs * 1e9);
	long long gap = rate > 0 ? (long long)(1e9 / rate) : 0;
	long long requests = 0, errors = 0;
	for (long long i = 0;; i++) {
		long long due = start + i * gap;
		if (due >= stop || now_ns() >= stop)
			break;
		if (gap) {
			struct timespec ts = { due / 1000000000LL, due % 1000000000LL };
			while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
				;
		}
		int fd = fds[i % conns];
		if (write(fd, req, len) != len || read_response(fd, buf, sizeof(buf)) < 0)
			errors++;
		requests++;
	}
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	printf("requests %lld errors %lld cpu %.3f seconds %.3f\n", requests, errors,
	       ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6,
	       (now_ns() - start) / 1e9);
	return errors ? 1 : 0;
}
