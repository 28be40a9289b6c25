/* Open-loop paced HTTP/1.1 keep-alive client for the harness's cost scenario.
 *
 *   paced_client HOST PORT PATH RATE SECONDS CONNS TAG LATENCIES_CSV [REQUESTS]
 *
 * REQUESTS > 0: stop after that many requests instead of SECONDS.
 * Request i is due at start + i / RATE (absolute deadlines: pacing does not
 * drift) and goes out on connection i % CONNS, one request in flight at a
 * time. Its latency is measured from its due time, not from when it was
 * written, so a stall delays the requests behind it and shows in their
 * latencies (no coordinated omission, as in wrk2). Every request carries
 * x-request-id TAG-<n> and a fresh W3C traceparent, like harness/load.py.
 * Writes one CSV row per request in harness/load.py's columns, plus
 * wake_late_us: how late the client woke up for a request it slept for
 * (empty when the previous response came after the due time): the
 * machine's own scheduling jitter, nothing of the server in it. Prints
 * one JSON line: requests, failures, start/end (unix s), own CPU seconds.
 * A C client, because a Python load generator's own jitter (milliseconds
 * at p99) hides microseconds of added latency.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 64

static long long clock_ns(clockid_t id)
{
	struct timespec ts;
	clock_gettime(id, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int dial(const char *host, int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
	int one = 1, fd = socket(AF_INET, SOCK_STREAM, 0);
	if (inet_pton(AF_INET, host, &a.sin_addr) != 1) {
		fprintf(stderr, "paced_client: bad IPv4 address %s\n", host);
		exit(2);
	}
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		fprintf(stderr, "paced_client: connect %s:%d: %s\n", host, port, strerror(errno));
		exit(2);
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

/* One response: the head up to CRLFCRLF, then Content-Length bytes. Returns
 * the status code, or -1 on a closed or malformed connection. */
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
	int status = have > 12 ? atoi(buf + 9) : -1;
	char *cl = strcasestr(buf, "content-length:");
	long body = cl && cl < end ? strtol(cl + 15, NULL, 10) : 0;
	long got = have - (end + 4 - buf);
	while (got < body) {
		ssize_t n = read(fd, buf, cap - 1);
		if (n <= 0)
			return -1;
		got += n;
	}
	return status;
}

static uint64_t rng_state;

static uint64_t rng(void) /* xorshift64*: ids, not secrets */
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 2685821657736338717ULL;
}

int main(int argc, char **argv)
{
	if (argc != 9 && argc != 10) {
		fprintf(stderr, "usage: %s HOST PORT PATH RATE SECONDS CONNS TAG LATENCIES_CSV"
			" [REQUESTS]\n", argv[0]);
		return 2;
	}
	const char *host = argv[1], *path = argv[3], *tag = argv[7];
	int port = atoi(argv[2]), conns = atoi(argv[6]);
	double rate = atof(argv[4]), secs = atof(argv[5]);
	long long max_requests = argc == 10 ? atoll(argv[9]) : 0;
	if (conns < 1 || conns > MAX_CONNS || rate <= 0 || secs <= 0) {
		fprintf(stderr, "paced_client: need 1 <= CONNS <= %d, RATE > 0, SECONDS > 0\n",
			MAX_CONNS);
		return 2;
	}
	FILE *out = fopen(argv[8], "w");
	if (!out) {
		fprintf(stderr, "paced_client: %s: %s\n", argv[8], strerror(errno));
		return 2;
	}
	setvbuf(out, NULL, _IOFBF, 1 << 20);
	fputs("request_id,trace_id,span_id,method,path,status,ok,start_unix_ns,latency_us,"
	      "wake_late_us\n", out);
	rng_state = (uint64_t)clock_ns(CLOCK_REALTIME) ^ ((uint64_t)getpid() << 32) ^ 1;
	int fds[MAX_CONNS];
	for (int i = 0; i < conns; i++)
		fds[i] = dial(host, port);
	char req[1024], buf[65536];
	long long start = clock_ns(CLOCK_MONOTONIC);
	long long unix0 = clock_ns(CLOCK_REALTIME) - start; /* monotonic -> unix ns */
	long long stop = start + (long long)(secs * 1e9), gap = (long long)(1e9 / rate);
	long long requests = 0, failures = 0;
	for (long long i = 0;; i++) {
		long long due = start + i * gap;
		/* by duration: the schedule's end, or the clock's when the
		 * server cannot keep up (an unreachable rate = as fast as it goes) */
		if (max_requests ? i >= max_requests
				 : due >= stop || clock_ns(CLOCK_MONOTONIC) >= stop)
			break;
		struct timespec ts = { due / 1000000000LL, due % 1000000000LL };
		long long woke = -1;
		if (clock_ns(CLOCK_MONOTONIC) < due) {
			while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
				;
			woke = clock_ns(CLOCK_MONOTONIC);
		}
		uint64_t t_hi = rng(), t_lo = rng(), span = rng() | 1;
		int len = snprintf(req, sizeof(req),
				   "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: paced-client/1\r\n"
				   "x-request-id: %s-%07lld\r\n"
				   "traceparent: 00-%016llx%016llx-%016llx-01\r\n\r\n",
				   path, host, port, tag, i + 1, (unsigned long long)t_hi,
				   (unsigned long long)t_lo, (unsigned long long)span);
		int fd = fds[i % conns];
		int status = write(fd, req, len) == len ? read_response(fd, buf, sizeof(buf)) : -1;
		long long done = clock_ns(CLOCK_MONOTONIC);
		int ok = status >= 200 && status < 400;
		requests++;
		failures += !ok;
		fprintf(out, "%s-%07lld,%016llx%016llx,%016llx,GET,%s,%d,%d,%lld,%.1f,", tag, i + 1,
			(unsigned long long)t_hi, (unsigned long long)t_lo,
			(unsigned long long)span, path, status, ok, unix0 + due, (done - due) / 1e3);
		if (woke >= 0)
			fprintf(out, "%.1f", (woke - due) / 1e3);
		fputc('\n', out);
		if (status < 0) { /* reconnect: the next request on this slot needs a socket */
			close(fd);
			fds[i % conns] = dial(host, port);
		}
	}
	long long end = clock_ns(CLOCK_MONOTONIC);
	if (fclose(out) != 0) {
		fprintf(stderr, "paced_client: %s: %s\n", argv[8], strerror(errno));
		return 2;
	}
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	printf("{\"requests\": %lld, \"failures\": %lld, \"start_unix\": %.6f, "
	       "\"end_unix\": %.6f, \"cpu_s\": %.6f, \"users\": %d}\n",
	       requests, failures, (unix0 + start) / 1e9, (unix0 + end) / 1e9,
	       ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
		       (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6, conns);
	return 0;
}
