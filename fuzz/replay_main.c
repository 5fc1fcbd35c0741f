/* replay_main.c -- runs a fuzz harness over files, without libFuzzer: the corpus as a unit test.
 *
 *   replay_<name> [FILE|DIR ...]
 *
 * Without arguments it replays the directories compiled in as FUZZ_DIRS (fuzz/corpus/<name> and
 * fuzz/regressions/<name>, see fuzz/fuzz.mk), which is what `make test` and `make test-asan` run:
 * every seed and every crash ever found goes through the harness on each build, with the
 * sanitizers in the asan build. The first directory (the seed corpus) must hold at least one
 * file, so a lost corpus fails instead of passing vacuously; the others may be missing.
 *
 * Each input is copied into a buffer of exactly its size, so a harness reading one byte too far
 * trips ASan as it would under libFuzzer. A watchdog (alarm) turns a hang into a failure that
 * names the file: libFuzzer's -timeout does the same while fuzzing. The handler only writes a
 * fixed message and _exit()s, both async-signal-safe.
 */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz.h"

#ifndef FUZZ_DIRS
#define FUZZ_DIRS ""
#endif
#define REPLAY_TIMEOUT_S 20

static char replay_current[4096]; /* the file being run, for the watchdog's message */

static void replay_on_alarm(int sig)
{
    static const char msg[] = "replay: timeout (hang?) on input ";
    (void)sig;
    ssize_t rc = write(2, msg, sizeof(msg) - 1);
    rc = write(2, replay_current, strlen(replay_current));
    rc = write(2, "\n", 1);
    (void)rc;
    _exit(1);
}

/* Runs one file through the harness. Returns 0, or -1 when it could not be read. */
static int replay_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "replay: fopen(%s) failed: %s\n", path, strerror(errno));
        return -1;
    }
    size_t cap = 4096, n = 0;
    uint8_t *buf = malloc(cap);
    for (size_t got; buf != NULL && (got = fread(buf + n, 1, cap - n, f)) > 0;) {
        n += got;
        if (n == cap) {
            uint8_t *p = realloc(buf, cap *= 2);
            if (p == NULL)
                free(buf);
            buf = p;
        }
    }
    int err = ferror(f);
    fclose(f);
    if (buf == NULL || err) {
        fprintf(stderr, "replay: reading %s failed\n", path);
        free(buf);
        return -1;
    }
    uint8_t *exact = malloc(n ? n : 1); /* exact size: an over-read hits the ASan redzone */
    if (exact == NULL) {
        free(buf);
        return -1;
    }
    memcpy(exact, buf, n);
    free(buf);
    snprintf(replay_current, sizeof(replay_current), "%s", path);
    alarm(REPLAY_TIMEOUT_S);
    LLVMFuzzerTestOneInput(exact, n);
    alarm(0);
    free(exact);
    return 0;
}

static int replay_regular(const struct dirent *e)
{
    return e->d_name[0] != '.';
}

/* Runs every file of a directory in name order. Returns the count, or -1 on an error. */
static long replay_dir(const char *dir, int must_exist)
{
    struct dirent **list;
    int n = scandir(dir, &list, replay_regular, alphasort);
    if (n < 0) {
        if (errno == ENOENT && !must_exist)
            return 0;
        fprintf(stderr, "replay: scandir(%s) failed: %s\n", dir, strerror(errno));
        return -1;
    }
    long done = 0;
    for (int i = 0; i < n; i++) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", dir, list[i]->d_name);
        if (done >= 0 && replay_file(path) == 0)
            done++;
        else
            done = -1;
        free(list[i]);
    }
    free(list);
    return done;
}

static long replay_path(const char *path, int must_exist)
{
    struct stat st;
    if (stat(path, &st) < 0) {
        if (errno == ENOENT && !must_exist)
            return 0;
        fprintf(stderr, "replay: stat(%s) failed: %s\n", path, strerror(errno));
        return -1;
    }
    if (S_ISDIR(st.st_mode))
        return replay_dir(path, must_exist);
    return replay_file(path) == 0 ? 1 : -1;
}

int main(int argc, char **argv)
{
    long total = 0;
    if (signal(SIGALRM, replay_on_alarm) == SIG_ERR) {
        perror("signal(SIGALRM)");
        return 1;
    }
    if (argc > 1) {
        for (int i = 1; i < argc; i++) {
            long n = replay_path(argv[i], 1);
            if (n < 0)
                return 1;
            total += n;
        }
        printf("%s: %ld input(s) replayed\n", argv[0], total);
        return 0;
    }
    char dirs[] = FUZZ_DIRS;
    int first = 1;
    for (char *save = NULL, *d = strtok_r(dirs, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        long n = replay_path(d, first);
        if (n < 0 || (first && n == 0)) {
            fprintf(stderr, "%s: no usable seed corpus in %s\n", argv[0], d);
            return 1;
        }
        total += n;
        first = 0;
    }
    if (total == 0) {
        fprintf(stderr, "%s: built without FUZZ_DIRS and given no files\n", argv[0]);
        return 1;
    }
    printf("%s: %ld input(s) replayed, no crash\n", argv[0], total);
    return 0;
}
