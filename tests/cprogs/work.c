/* Test target for separate debug files (issue 24): main -> caller -> work.
 *
 * Usage: work [N [GO_FILE]]
 *   N        number of caller(i) calls, i = 0..N-1 (default 23)
 *   GO_FILE  if given, wait (polling every 1 ms, at most 60 s) until this file
 *            exists before the first call, so a tracer can attach first; exit 3
 *            if it never appears.
 * Prints "ready <pid>\n" (flushed) before waiting, and "sum <S>\n" at the end,
 * S = sum of work's return values. Exits 0.
 *
 * Built "split" (tests/cprogs/build.py): stripped, its symbols and DWARF only
 * in a separate debug file. The functions are global and noinline so they
 * stay distinct functions; caller passes a pointer to its own buffer, so its
 * call to work is no tail call and caller keeps a frame on the stack. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

__attribute__((noinline)) long work(int id, long weight, const char *label)
{
    usleep(1000);  /* a libc frame below work */
    return id * 1000L + weight + (label[0] == 'w' ? 0 : 1);
}

__attribute__((noinline)) long caller(int i)
{
    char buf[32];
    snprintf(buf, sizeof buf, "work-%d", i);
    return work(i, 3L * i, buf);
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
