/* Per-call cost of a traced function (tests/bench/test_bench_funcs.py).
 *
 * Usage: funcs_loop N [GO_FILE]: waits until GO_FILE exists (if given), calls
 * work() N times and prints "ns_per_call <float>" (CLOCK_MONOTONIC over the
 * loop), "cpu_ns_per_call <float>" (this process's CPU time, user + system:
 * the breakpoint traps count here, other processes on the CPU do not), then
 * "sum <S>". */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

__attribute__((noinline)) long work(long x)
{
	__asm__ volatile("" ::: "memory"); /* keep the call */
	return x * 3 + 1;
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 100000, sum = 0;
	struct timespec a, b, ca, cb;

	printf("ready %d\n", (int)getpid());
	fflush(stdout);
	if (argc > 2)
		for (int waited = 0; access(argv[2], F_OK) != 0; waited++) {
			if (waited >= 60000)
				return 3;
			usleep(1000);
		}
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ca);
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (long i = 0; i < n; i++)
		sum += work(i);
	clock_gettime(CLOCK_MONOTONIC, &b);
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cb);
	printf("ns_per_call %.1f\ncpu_ns_per_call %.1f\nsum %ld\n",
	       ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n,
	       ((cb.tv_sec - ca.tv_sec) * 1e9 + (cb.tv_nsec - ca.tv_nsec)) / n, sum);
	return 0;
}
