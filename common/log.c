/* log.c -- formatting and writing log lines (see log.h for the format).
 *
 * Lines are assembled in a stack buffer and written with one write(2) to an O_APPEND fd, which
 * keeps concurrent writers from interleaving. A line longer than the buffer is truncated with
 * "..." rather than split. Write errors are ignored: there is nowhere left to report them.
 */
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_MAX 2048

static const char *log_role = "wshub";
static int log_slot = -1;
static enum log_level log_level = LOG_LEVEL_INFO;
static int log_fd = STDERR_FILENO;

static const char *const level_names[] = {"error", "warn", "notice", "info", "debug"};

void log_set_role(const char *role, int worker_slot)
{
    log_role = role;
    log_slot = worker_slot;
}

void log_set_level(enum log_level level)
{
    log_level = level;
}

enum log_level log_get_level(void)
{
    return log_level;
}

const char *log_level_name(enum log_level level)
{
    return level <= LOG_LEVEL_DEBUG ? level_names[level] : "?";
}

int log_level_parse(const char *name, enum log_level *out)
{
    for (int i = 0; i <= LOG_LEVEL_DEBUG; i++) {
        if (strcmp(name, level_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return -1;
}

int log_open_file(const char *path)
{
    if (path == NULL || path[0] == '\0') {
        if (log_fd != STDERR_FILENO)
            close(log_fd);
        log_fd = STDERR_FILENO;
        return 0;
    }
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0)
        return -1;
    if (log_fd != STDERR_FILENO)
        close(log_fd);
    log_fd = fd;
    return 0;
}

static size_t format_prefix(char *buf, size_t cap, enum log_level level)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(buf, cap, "%Y-%m-%dT%H:%M:%S", &tm);
    int m;
    if (log_slot >= 0)
        m = snprintf(buf + n, cap - n, ".%03ldZ %s %s#%d[%d]: ", ts.tv_nsec / 1000000,
                     log_level_name(level), log_role, log_slot, (int)getpid());
    else
        m = snprintf(buf + n, cap - n, ".%03ldZ %s %s[%d]: ", ts.tv_nsec / 1000000,
                     log_level_name(level), log_role, (int)getpid());
    return m > 0 ? n + (size_t)m : n;
}

void log_atv(enum log_level level, int err, const char *fmt, va_list ap)
{
    if (level > log_level)
        return;
    int saved_errno = errno;
    char line[LOG_LINE_MAX];
    const size_t room = sizeof(line) - 5; /* keep space for "...\n" and NUL */
    size_t n = format_prefix(line, room, level);
    int m = vsnprintf(line + n, room - n, fmt, ap);
    n = (m < 0) ? n : (n + (size_t)m < room ? n + (size_t)m : room);
    if (err != 0 && n < room) {
        m = snprintf(line + n, room - n, ": %s", strerror(err));
        n = (m < 0) ? n : (n + (size_t)m < room ? n + (size_t)m : room);
    }
    if (n >= room - 1)
        n = (size_t)stpcpy(line + room - 4, "...") - (size_t)line;
    line[n++] = '\n';
    ssize_t w = write(log_fd, line, n);
    (void)w;
    errno = saved_errno;
}

void log_at(enum log_level level, int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_atv(level, err, fmt, ap);
    va_end(ap);
}
