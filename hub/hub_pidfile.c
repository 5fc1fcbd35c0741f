/* hub_pidfile.c -- run_dir creation and the hub's pid file.
 *
 * The pid file is held with an flock() for the hub's lifetime (close-on-exec, so children never
 * inherit the lock). The lock, not the number in the file, decides whether another hub is alive:
 * a pid left by a hub killed with SIGKILL may since have been reused by an unrelated process, and
 * then kill(pid, 0) would wrongly report a live owner. The file is truncated and rewritten only
 * once the lock is ours, and removed (before the lock is released) at a clean exit.
 *
 * A binary upgrade (SIGUSR2, hub_upgrade.c) works like nginx's: the old hub renames its file to
 * <pid_file>.oldbin (the lock moves with the file), the new hub creates and locks a fresh
 * <pid_file>, and if the new hub fails the old one renames .oldbin back. A hub only ever removes
 * the file it holds, checked by inode, so neither can delete the other's.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hub.h"
#include "log.h"

/* mkdir -p. Returns 0 or -1 with errno set (logged). */
int hub_mkdir_p(const char *path, unsigned mode)
{
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf)) {
        log_error(ENAMETOOLONG, "mkdir(%s) failed", path);
        return -1;
    }
    for (char *p = buf + 1;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char saved = *p;
        *p = '\0';
        if (mkdir(buf, (mode_t)mode) < 0 && errno != EEXIST) {
            log_error(errno, "mkdir(%s) failed", buf);
            return -1;
        }
        *p = saved;
        if (saved == '\0')
            break;
    }
    struct stat st;
    if (stat(path, &st) < 0) {
        log_error(errno, "stat(%s) failed", path);
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) {
        log_error(ENOTDIR, "mkdir(%s) failed", path);
        return -1;
    }
    return 0;
}

/* Reads the pid currently written in the file, 0 if none. */
static long hub_pidfile_read(int fd)
{
    char buf[32];
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    return strtol(buf, NULL, 10);
}

static int hub_pidfile_write(int fd, const char *path)
{
    char buf[32];
    int len = snprintf(buf, sizeof(buf), "%d\n", (int)getpid());
    if (ftruncate(fd, 0) < 0 || pwrite(fd, buf, (size_t)len, 0) != len) {
        log_error(errno, "writing pid file %s failed", path);
        return -1;
    }
    return 0;
}

/* Creates, locks and fills the pid file. Returns the locked fd, or -1 (logged) if it cannot be
 * written or another live hub holds it. */
int hub_pidfile_open(const char *path)
{
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        log_error(errno, "open(%s) failed", path);
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        int e = errno;
        if (e == EWOULDBLOCK)
            log_error(0, "pid file %s is held by a running hub (pid %ld)", path,
                      hub_pidfile_read(fd));
        else
            log_error(e, "flock(%s) failed", path);
        close(fd);
        return -1;
    }
    long old = hub_pidfile_read(fd);
    if (old > 0)
        log_notice("pid file %s: replacing stale pid %ld", path, old);
    if (hub_pidfile_write(fd, path) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Removes the file at `path` if it is still the one we hold locked (during a binary upgrade the
 * other hub may have put its own file there), then releases the lock. */
void hub_pidfile_remove(const char *path, int fd)
{
    struct stat ours, there;
    if (fd < 0)
        return;
    if (fstat(fd, &ours) < 0)
        log_warn(errno, "fstat(%s) failed", path);
    else if (stat(path, &there) < 0)
        log_warn(errno, "stat(%s) failed; not removing it", path);
    else if (ours.st_dev != there.st_dev || ours.st_ino != there.st_ino)
        log_info("pid file %s is another process's now; leaving it", path);
    else if (unlink(path) < 0)
        log_warn(errno, "unlink(%s) failed", path);
    close(fd);
}

/* Moves our (locked) pid file: the lock belongs to the file, not the name. Returns 0 or -1. */
int hub_pidfile_rename(const char *from, const char *to)
{
    if (rename(from, to) < 0) {
        log_error(errno, "rename(%s, %s) failed", from, to);
        return -1;
    }
    return 0;
}
