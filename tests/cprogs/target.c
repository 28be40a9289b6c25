/* Test target for function tracing (issue 10): main -> caller -> callee.
 *
 * Usage: target [N [GO_FILE]]
 *   N        number of caller(i) calls, i = 0..N-1 (default 23)
 *   GO_FILE  if given, wait (polling every 1 ms, at most 60 s) until this file
 *            exists before the first call, so a tracer can attach first; exit 3
 *            if it never appears. Without it the calls start at once.
 * Prints "ready <pid>\n" (flushed) before waiting, and "sum <S>\n" at the end,
 * S = sum of callee's return values. Exits 0.
 *
 * The functions are global and noinline so every build variant keeps them as
 * distinct functions with symbols (or FDEs, once stripped). */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

__attribute__((noinline)) long callee(int a, long b, const char *s)
{
    usleep(3000);  /* a known latency, and a libc frame below callee */
    /* use s so the compiler keeps the third argument */
    return a * 1000L + b + (s[0] == 'r' ? 0 : 1);
}

__attribute__((noinline)) long caller(int i)
{
    char buf[32];
    snprintf(buf, sizeof buf, "req-%d", i);
    return callee(i, 7L * i, buf);
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 23;
    long sum = 0;

    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    if (argc > 2) {
        int waited_ms = 0;
        while (access(argv[2], F_OK) != 0) {
            if (waited_ms++ >= 60000)
                return 3;
            usleep(1000);
        }
    }
    for (int i = 0; i < n; i++)
        sum += caller(i);
    printf("sum %ld\n", sum);
    return 0;
}
