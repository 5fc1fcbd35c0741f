/* log.h -- one log format for every wshub process.
 *
 *   2026-11-27T21:40:41.123Z notice hub[1234]: listening on 127.0.0.1:9001
 *   2026-11-27T21:40:41.456Z error worker#2[1240]: accept4() failed: Too many open files
 *
 * One line per event, written with a single write(2) so lines from several processes sharing
 * stderr or a file never interleave. The role and worker id are set once per process. Messages
 * name the attempted call and pass errno separately; never log from a signal handler.
 */
#ifndef WSHUB_LOG_H
#define WSHUB_LOG_H

#include <stdarg.h>

enum log_level {
    LOG_LEVEL_ERROR = 0,
    LOG_LEVEL_WARN,
    LOG_LEVEL_NOTICE,
    LOG_LEVEL_INFO,
    LOG_LEVEL_DEBUG
};

/* Sets the process role ("hub", "worker", "admin") and worker slot (-1 for none). */
void log_set_role(const char *role, int worker_slot);
void log_set_level(enum log_level level);
enum log_level log_get_level(void);

/* Opens `path` for appending and sends log lines there instead of stderr; "" means stderr.
 * Calling it again with the same path reopens the file (for logrotate). Returns 0 or -1. */
int log_open_file(const char *path);

/* Parses "error", "warn", "notice", "info", "debug". Returns 0 or -1. */
int log_level_parse(const char *name, enum log_level *out);
const char *log_level_name(enum log_level level);

/* Writes one line at `level`; when err is non-zero appends ": <strerror(err)>". */
void log_at(enum log_level level, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void log_atv(enum log_level level, int err, const char *fmt, va_list ap);

#define log_error(err, ...) log_at(LOG_LEVEL_ERROR, (err), __VA_ARGS__)
#define log_warn(err, ...)  log_at(LOG_LEVEL_WARN, (err), __VA_ARGS__)
#define log_notice(...)     log_at(LOG_LEVEL_NOTICE, 0, __VA_ARGS__)
#define log_info(...)       log_at(LOG_LEVEL_INFO, 0, __VA_ARGS__)
#define log_debug(...)      log_at(LOG_LEVEL_DEBUG, 0, __VA_ARGS__)

#endif /* WSHUB_LOG_H */
