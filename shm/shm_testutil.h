/* shm_testutil.h -- helpers shared by the shm/..._test.c programs (tests only, never linked in).
 *
 * Each test is its own program: CHECK() records a failure and goes on, REQUIRE() stops the test.
 * Segments are named "/wshub-shmtest-<tag>-<pid>". test_init() forks: the test runs in the child
 * while the parent waits (with a watchdog) and then removes every segment carrying the child's
 * pid, so nothing is left in /dev/shm even when the test crashes or a sanitizer aborts it.
 * Children are forked with PR_SET_PDEATHSIG so a dying test leaves no processes behind.
 */
#ifndef WSHUB_SHM_TESTUTIL_H
#define WSHUB_SHM_TESTUTIL_H

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shm.h"

static int test_failures;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: FAILED: %s -- ", __FILE__, __LINE__, #cond);                   \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            test_failures++;                                                                       \
        }                                                                                          \
    } while (0)

#define REQUIRE(cond, ...)                                                                         \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: FATAL: %s -- ", __FILE__, __LINE__, #cond);                    \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

/* Removes /dev/shm/wshub-shmtest-*-<pid>; returns how many there were. */
static inline int test_unlink_segments_of(pid_t pid)
{
    char suffix[24];
    struct dirent *e;
    int n = 0;
    DIR *d = opendir("/dev/shm");

    if (d == NULL)
        return 0;
    snprintf(suffix, sizeof(suffix), "-%d", (int)pid);
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name), sl = strlen(suffix);
        if (strncmp(e->d_name, "wshub-shmtest-", 14) != 0 || len <= sl ||
            strcmp(e->d_name + len - sl, suffix) != 0)
            continue;
        char name[300];
        snprintf(name, sizeof(name), "/%s", e->d_name);
        if (shm_unlink(name) == 0)
            n++;
    }
    closedir(d);
    return n;
}

/* Runs the rest of main() in a child with a watchdog of `seconds`; the parent waits, cleans up
 * the child's segments and exits with its status. */
static inline void test_init(unsigned seconds)
{
    int status;
    pid_t child = fork();

    if (child < 0) {
        perror("fork");
        exit(1);
    }
    if (child == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        return;
    }
    signal(SIGINT, SIG_IGN); /* ^C reaches the child; we still clean up after it */
    uint64_t waited_ms = 0;
    while (waitpid(child, &status, WNOHANG) == 0) {
        struct timespec ts = {0, 10 * 1000000};
        nanosleep(&ts, NULL);
        if ((waited_ms += 10) == (uint64_t)seconds * 1000) {
            fprintf(stderr, "test watchdog: no result after %u s, killing pid %d\n", seconds,
                    (int)child);
            kill(child, SIGKILL);
        }
    }
    int left = test_unlink_segments_of(child);
    if (left > 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        fprintf(stderr, "test left %d shared-memory segment(s) behind\n", left);
        exit(1);
    }
    if (WIFSIGNALED(status)) {
        fprintf(stderr, "test died from signal %d\n", WTERMSIG(status));
        exit(128 + WTERMSIG(status));
    }
    exit(WIFEXITED(status) ? WEXITSTATUS(status) : 1);
}

/* Builds a unique segment name ("/wshub-shmtest-<tag>-<pid>"). */
static inline const char *test_name(const char *tag)
{
    static char names[32][64];
    static int n;
    REQUIRE(n < 32, "too many test segments");
    snprintf(names[n], 64, "/wshub-shmtest-%s-%d", tag, (int)getpid());
    return names[n++];
}

/* Creates a segment with the given sizes or stops the test. */
static inline void test_create(struct shm *s, const char *name, uint32_t conns, uint64_t ring,
                               uint32_t max_payload)
{
    struct shm_params p = {
        .conn_capacity = conns, .ring_capacity = ring, .max_payload = max_payload};
    char err[256] = "";
    shm_unlink(name);
    REQUIRE(shm_create(s, name, &p, 0600, err, sizeof(err)) == 0, "shm_create(%s): %s", name, err);
}

/* fork() whose child dies with the parent. */
static inline pid_t test_fork(void)
{
    pid_t parent = getpid();
    pid_t pid = fork();
    REQUIRE(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(3);
    }
    return pid;
}

static inline uint64_t test_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Waits up to timeout_ms for pid; returns its status, or -1 (and kills it) on timeout. */
static inline int test_wait(pid_t pid, unsigned timeout_ms)
{
    uint64_t deadline = test_now_ms() + timeout_ms;
    int status;

    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            return status;
        if (r < 0 && errno != EINTR)
            return -1;
        if (test_now_ms() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return -1;
        }
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
}

/* Anonymous memory shared with forked children, zeroed. */
static inline void *test_shared_alloc(size_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    REQUIRE(p != MAP_FAILED, "mmap(%zu): %s", size, strerror(errno));
    return p;
}

static inline int test_report(const char *prog)
{
    if (test_failures) {
        fprintf(stderr, "%s: %d check(s) FAILED\n", prog, test_failures);
        return 1;
    }
    printf("%s: all checks passed\n", prog);
    return 0;
}

/* 32-bit FNV-1a. */
static inline uint32_t test_fnv1a(const void *p, size_t n)
{
    const uint8_t *b = p;
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 16777619u;
    }
    return h;
}

static inline uint64_t test_xorshift(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *state = x;
}

#endif /* WSHUB_SHM_TESTUTIL_H */
