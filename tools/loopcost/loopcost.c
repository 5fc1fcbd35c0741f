/* loopcost.c -- what one event-loop wake-up costs with N idle connections: poll() vs epoll.
 *
 * libwebsockets' default backend calls poll() over every descriptor it serves and then scans
 * the whole array; its libev backend (which wshub's workers use) waits in epoll_wait(), whose
 * cost does not grow with idle descriptors. This program measures exactly that difference on
 * the machine at hand: N idle eventfds (one fd each, so N can approach the fd limit) plus one
 * that is made readable before each wait, and the wall time per wait for both calls.
 *
 *   loopcost [N ...]      default: 1000 5000 10000 19000
 *
 * Prints one line per N: microseconds per wake-up for poll() (including the scan for the ready
 * entry, as lws does) and for epoll_wait().
 */
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define ROUNDS 2000

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int die(const char *what)
{
    fprintf(stderr, "loopcost: %s: %s\n", what, strerror(errno));
    exit(1);
}

/* One wake-up with poll(): wait, then scan every entry for revents, as a poll loop must. */
static double time_poll(struct pollfd *pfd, int n, int active)
{
    uint64_t one = 1, v;
    double t0 = now_us();
    for (int r = 0; r < ROUNDS; r++) {
        if (write(pfd[active].fd, &one, sizeof(one)) != sizeof(one))
            die("write(eventfd)");
        if (poll(pfd, (nfds_t)n, -1) < 1)
            die("poll");
        for (int i = 0; i < n; i++) {
            if (pfd[i].revents & POLLIN && read(pfd[i].fd, &v, sizeof(v)) != sizeof(v))
                die("read(eventfd)");
        }
    }
    return (now_us() - t0) / ROUNDS;
}

static double time_epoll(struct pollfd *pfd, int n, int active)
{
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        die("epoll_create1");
    for (int i = 0; i < n; i++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = pfd[i].fd};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, pfd[i].fd, &ev) < 0)
            die("epoll_ctl");
    }
    uint64_t one = 1, v;
    struct epoll_event out[64];
    double t0 = now_us();
    for (int r = 0; r < ROUNDS; r++) {
        if (write(pfd[active].fd, &one, sizeof(one)) != sizeof(one))
            die("write(eventfd)");
        int k = epoll_wait(ep, out, 64, -1);
        if (k < 1)
            die("epoll_wait");
        for (int i = 0; i < k; i++) {
            if (read(out[i].data.fd, &v, sizeof(v)) != sizeof(v))
                die("read(eventfd)");
        }
    }
    double per = (now_us() - t0) / ROUNDS;
    close(ep);
    return per;
}

static void measure(int n)
{
    struct pollfd *pfd = calloc((size_t)n, sizeof(*pfd));
    if (pfd == NULL)
        die("calloc");
    for (int i = 0; i < n; i++) {
        pfd[i].fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (pfd[i].fd < 0)
            die("eventfd");
        pfd[i].events = POLLIN;
    }
    double p = time_poll(pfd, n, n / 2);
    double e = time_epoll(pfd, n, n / 2);
    printf("%6d idle fds: poll %8.1f us/wake-up   epoll %6.2f us/wake-up   ratio %5.0fx\n", n, p, e,
           p / e);
    for (int i = 0; i < n; i++)
        close(pfd[i].fd);
    free(pfd);
}

int main(int argc, char **argv)
{
    static const int dflt[] = {1000, 5000, 10000, 19000};
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (argc > 1) {
        for (int i = 1; i < argc; i++)
            measure(atoi(argv[i]));
    } else {
        for (size_t i = 0; i < sizeof(dflt) / sizeof(dflt[0]); i++)
            measure(dflt[i]);
    }
    return 0;
}
