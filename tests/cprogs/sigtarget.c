/* Unwinding through a signal frame: main -> spin() busy-loops; SIGALRM
 * (every 20 ms) runs on_alarm -> in_handler() -> usleep(3000). Stopped in that
 * sleep, the stack is libc -> in_handler -> on_alarm -> __restore_rt (the
 * kernel-built signal frame) -> spin -> main.
 * Prints "ready <pid>\n" once the timer is armed; runs until killed. */
#include <signal.h>
#include <stdio.h>
#include <sys/time.h>
#include <unistd.h>

volatile unsigned long spins;

__attribute__((noinline)) void in_handler(void)
{
    usleep(3000);
    __asm__ volatile("");  /* keeps the call a call, not a tail jump */
}

__attribute__((noinline)) void on_alarm(int sig)
{
    (void)sig;
    in_handler();
    __asm__ volatile("");
}

__attribute__((noinline)) void spin(void)
{
    for (;;)
        spins++;
}

int main(void)
{
    struct sigaction sa = {0};
    struct itimerval it = {{0, 20000}, {0, 20000}};

    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, NULL);
    setitimer(ITIMER_REAL, &it, NULL);
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    spin();
    return 0;
}
