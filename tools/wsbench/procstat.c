/* procstat.c -- server process discovery, memory and CPU from /proc (see procstat.h).
 *
 * Discovery walks /proc once per sample: for --server-tree it reads every process's parent to
 * build the descendant set (a few hundred stat files; a sample is taken three or four times a
 * run, never on a hot path). wsbench's own processes are excluded so a pattern that happens to
 * match our command line cannot count the client as the server.
 */
#include "procstat.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

int procstat_enabled(const struct opts *o)
{
    return o->n_server_pids > 0 || o->server_tree > 0 || o->server_pattern != NULL;
}

static ssize_t procstat_read(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t len = 0;
    for (;;) {
        ssize_t n = read(fd, buf + len, cap - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
        if (len == cap - 1)
            break;
    }
    close(fd);
    buf[len] = '\0';
    return (ssize_t)len;
}

/* Fields of /proc/PID/stat after the parenthesised command (which may contain spaces). */
static int procstat_stat(pid_t pid, pid_t *ppid, uint64_t *ticks)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    if (procstat_read(path, buf, sizeof(buf)) <= 0)
        return -1;
    char *p = strrchr(buf, ')');
    int pp;
    unsigned long long ut, st;
    /* state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime */
    if (p == NULL ||
        sscanf(p + 2, "%*c %d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &pp, &ut, &st) != 3)
        return -1;
    *ppid = pp;
    *ticks = ut + st;
    return 0;
}

static void procstat_memory(pid_t pid, uint64_t *rss, uint64_t *pss)
{
    char path[64], buf[4096];
    snprintf(path, sizeof(path), "/proc/%d/smaps_rollup", (int)pid);
    if (procstat_read(path, buf, sizeof(buf)) <= 0)
        return;
    for (char *line = buf; line != NULL && *line; line = strchr(line, '\n')) {
        unsigned long long kb;
        if (*line == '\n')
            line++;
        if (sscanf(line, "Rss: %llu kB", &kb) == 1)
            *rss += kb;
        else if (sscanf(line, "Pss: %llu kB", &kb) == 1)
            *pss += kb;
    }
}

static int procstat_cmdline_matches(pid_t pid, const regex_t *re)
{
    char path[64], buf[4096];
    snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
    ssize_t n = procstat_read(path, buf, sizeof(buf));
    if (n <= 0)
        return 0; /* kernel threads have none */
    for (ssize_t i = 0; i < n; i++)
        if (buf[i] == '\0')
            buf[i] = ' ';
    while (n > 0 && buf[n - 1] == ' ')
        buf[--n] = '\0';
    return regexec(re, buf, 0, NULL, 0) == 0;
}

struct procstat_proc {
    pid_t pid, ppid;
    uint64_t ticks;
    int chosen;  /* selected by any option */
    int in_tree; /* the --server-tree root or one of its descendants */
};

/* Every process on the machine with its parent and CPU ticks. Returns how many (<= cap). */
static int procstat_list(struct procstat_proc *all, int cap)
{
    DIR *d = opendir("/proc");
    int n = 0;
    if (d == NULL) {
        log_error(errno, "opendir(/proc) failed");
        return 0;
    }
    for (struct dirent *e; (e = readdir(d)) != NULL && n < cap;) {
        if (!isdigit((unsigned char)e->d_name[0]))
            continue;
        struct procstat_proc *p = &all[n];
        p->pid = (pid_t)atoi(e->d_name);
        p->chosen = 0;
        p->in_tree = 0;
        if (procstat_stat(p->pid, &p->ppid, &p->ticks) == 0)
            n++;
    }
    closedir(d);
    return n;
}

static void procstat_choose(const struct opts *o, struct procstat_proc *all, int n,
                            const regex_t *re)
{
    pid_t self = getpid();

    for (int i = 0; i < n; i++) {
        all[i].in_tree = o->server_tree > 0 && all[i].pid == o->server_tree;
        for (int k = 0; k < o->n_server_pids; k++)
            if (all[i].pid == o->server_pids[k])
                all[i].chosen = 1;
        if (re != NULL && procstat_cmdline_matches(all[i].pid, re))
            all[i].chosen = 1;
    }
    /* Descendants of the tree root: add children of members until none joins. O(n^2) per
     * level over a few hundred processes, a few levels deep. */
    for (int changed = o->server_tree > 0; changed;) {
        changed = 0;
        for (int i = 0; i < n; i++) {
            for (int k = 0; k < n && !all[i].in_tree; k++) {
                if (all[k].in_tree && all[k].pid == all[i].ppid) {
                    all[i].in_tree = 1;
                    changed = 1;
                }
            }
        }
    }
    for (int i = 0; i < n; i++) {
        all[i].chosen |= all[i].in_tree;
        if (all[i].pid == self || all[i].ppid == self)
            all[i].chosen = 0;
    }
}

int procstat_sample(const struct opts *o, struct procstat_sample *s)
{
    static struct procstat_proc all[32768];
    regex_t re;
    struct timespec ts;

    memset(s, 0, sizeof(*s));
    clock_gettime(CLOCK_MONOTONIC, &ts);
    s->at_ns = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
    if (!procstat_enabled(o))
        return 0;
    if (o->server_pattern != NULL) {
        int rc = regcomp(&re, o->server_pattern, REG_EXTENDED | REG_NOSUB);
        if (rc != 0) {
            char why[128];
            regerror(rc, &re, why, sizeof(why));
            fprintf(stderr, "wsbench: --server-pattern '%s': %s\n", o->server_pattern, why);
            return -1;
        }
    }
    int n = procstat_list(all, (int)(sizeof(all) / sizeof(all[0])));
    procstat_choose(o, all, n, o->server_pattern != NULL ? &re : NULL);
    if (o->server_pattern != NULL)
        regfree(&re);
    for (int i = 0; i < n && s->n < PROCSTAT_MAX; i++) {
        if (!all[i].chosen)
            continue;
        s->pid[s->n] = all[i].pid;
        s->ticks[s->n] = all[i].ticks;
        s->n++;
        procstat_memory(all[i].pid, &s->rss_kb, &s->pss_kb);
    }
    return 0;
}

double procstat_cpu_delta(const struct procstat_sample *a, const struct procstat_sample *b)
{
    uint64_t ticks = 0;
    long hz = sysconf(_SC_CLK_TCK);

    for (int i = 0; i < b->n; i++) {
        uint64_t before = 0;
        for (int k = 0; k < a->n; k++)
            if (a->pid[k] == b->pid[i])
                before = a->ticks[k];
        ticks += b->ticks[i] >= before ? b->ticks[i] - before : 0;
    }
    return (double)ticks / (double)(hz > 0 ? hz : 100);
}

int procstat_host(uint64_t *busy, uint64_t *total)
{
    char buf[1024];
    unsigned long long v[10] = {0};
    if (procstat_read("/proc/stat", buf, sizeof(buf)) <= 0 ||
        sscanf(buf, "cpu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2],
               &v[3], &v[4], &v[5], &v[6], &v[7], &v[8], &v[9]) < 8)
        return -1;
    /* user nice system idle iowait irq softirq steal (guest is inside user) */
    *total = v[0] + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7];
    *busy = *total - v[3] - v[4];
    return 0;
}
