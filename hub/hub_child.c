/* hub_child.c -- the table of supervised children and fork+exec of one child.
 *
 * children[] has one entry per worker slot (index == slot, SHM_MAX_WORKERS of them) and two for
 * the admin process (HUB_ADMIN_INDEX, and HUB_ADMIN_OLD_INDEX for the one a reload replaced while
 * it finishes its requests). An entry outlives its process: it keeps the slot's doorbell, the
 * restart count and the crash-loop backoff. The first generation uses slots [0, workers); a
 * rolling restart (hub_restart.c) starts generation G+1 in free slots while G drains, which is
 * why slots, not processes, own doorbells and why every entry records its generation. The caller
 * of hub_child_spawn() sets the entry's generation; a respawn keeps it.
 *
 * Workers are exec'd, not merely forked, so that no library state crosses a fork. Everything the
 * child needs (argv strings, descriptor numbers, the empty signal mask) is prepared before fork;
 * between fork and exec the child makes only async-signal-safe calls:
 *
 *   reset dispositions and mask -> PR_SET_PDEATHSIG -> move fds to fixed numbers
 *   -> mark every other fd close-on-exec -> execv
 *
 * Descriptors given to a worker: 0 = /dev/null, 1 and 2 inherited (the log when log_file is
 * empty), 3 = listening socket, 4 = its doorbell. The admin gets its FastCGI socket as 0, and 1
 * and 2. Every hub descriptor is close-on-exec, and close_range(CLOSE_RANGE_CLOEXEC) in the
 * child makes sure nothing else (a library's fd) leaks. If execv fails, the child writes errno
 * into a close-on-exec pipe and exits 2; the parent reads the pipe after fork (EOF means exec
 * succeeded), so "No such file" is logged properly and the slot is not respawned in a loop.
 *
 * hub_exec_spawn() is that fork+exec for any struct hub_exec; the binary upgrade (hub_upgrade.c)
 * uses it too, for the new hub: descriptors 0 and 3..5, its own environment, no PR_SET_PDEATHSIG
 * (the new hub must outlive the old one) and `detach`: the child forks once more and leaves, so
 * the new hub is orphaned to systemd at once. systemd treats a main pid that is not its own
 * child as "alien" and then does not wait for it on stop (KillMode=mixed goes straight to
 * SIGKILL): the new hub must already be systemd's child when the old one names it MAINPID.
 * The pid comes back through the same pipe as an exec error, in tagged records.
 */
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <fcntl.h>

#include "doorbell.h"
#include "hub.h"
#include "log.h"

#define HUB_CHILD_TMP_FD   16 /* temporaries live above every fixed number (0..5) */
#define HUB_CHILD_MAX_ARGS (16 + CONF_MAX_OVERRIDES)

/* A worker's or the admin's exec, with the storage its argv points into. */
struct hub_child_exec {
    struct hub_exec x;
    char *argv[HUB_CHILD_MAX_ARGS];
    char slot_s[16], gen_s[16], listen_s[8], doorbell_s[8];
};

/* A record in the launch pipe: the detached child's pid (from the intermediate process) or the
 * errno of a failed exec. Each is one write() of 8 bytes, so they never interleave. */
struct hub_launch_rec {
    int kind; /* 'P' or 'E' */
    int value;
};

/* What the forked child needs besides the hub_exec, prepared before fork. */
struct hub_exec_env {
    const struct hub_exec *x;
    int err_fd; /* write end of the exec-error pipe */
    int max_fd; /* fallback when close_range() is unavailable */
    pid_t parent;
    sigset_t empty;
};

void hub_children_init(struct hub *h)
{
    for (int i = 0; i < HUB_MAX_CHILDREN; i++) {
        struct hub_child *c = &h->children[i];
        memset(c, 0, sizeof(*c));
        c->role = i >= HUB_ADMIN_INDEX ? HUB_ROLE_ADMIN : HUB_ROLE_WORKER;
        c->slot = i >= HUB_ADMIN_INDEX ? -1 : i;
        c->doorbell_fd = -1;
    }
}

const char *hub_child_name(const struct hub_child *c, char *buf, size_t len)
{
    if (c->role == HUB_ROLE_ADMIN)
        snprintf(buf, len, "admin");
    else
        snprintf(buf, len, "worker #%d", c->slot);
    return buf;
}

struct hub_child *hub_child_by_pid(struct hub *h, pid_t pid)
{
    for (int i = 0; i < HUB_MAX_CHILDREN; i++) {
        if (h->children[i].pid == pid)
            return &h->children[i];
    }
    return NULL;
}

int hub_children_live(const struct hub *h)
{
    int n = 0;
    for (int i = 0; i < HUB_MAX_CHILDREN; i++)
        n += h->children[i].pid > 0;
    return n;
}

/* Sends `sig` to every running child; with log_each, names each one (used for SIGKILL). */
void hub_children_kill(struct hub *h, int sig, int log_each)
{
    char name[32];
    for (int i = 0; i < HUB_MAX_CHILDREN; i++) {
        struct hub_child *c = &h->children[i];
        if (c->pid <= 0)
            continue;
        if (log_each)
            log_warn(0, "sending SIG%s to %s (pid %d)", sigabbrev_np(sig),
                     hub_child_name(c, name, sizeof(name)), (int)c->pid);
        if (kill(c->pid, sig) < 0 && errno != ESRCH)
            log_error(errno, "kill(%d, SIG%s) failed", (int)c->pid, sigabbrev_np(sig));
    }
}

void hub_children_close(struct hub *h)
{
    for (int i = 0; i < HUB_MAX_CHILDREN; i++) {
        struct hub_child *c = &h->children[i];
        if (c->doorbell_fd >= 0)
            close(c->doorbell_fd);
        c->doorbell_fd = -1;
    }
}

/* Appends "[-c FILE] [overrides...]" and the terminating NULL. */
static void hub_exec_conf_args(const struct conf *cf, struct hub_child_exec *e, int n)
{
    if (cf->file[0] != '\0') {
        e->argv[n++] = "-c";
        e->argv[n++] = (char *)cf->file;
    }
    for (int i = 0; i < cf->n_overrides; i++)
        e->argv[n++] = (char *)cf->overrides[i];
    e->argv[n] = NULL;
}

static void hub_exec_prepare_worker(const struct hub *h, const struct hub_child *c,
                                    struct hub_child_exec *e)
{
    struct hub_exec *x = &e->x;
    int n = 0;
    snprintf(e->slot_s, sizeof(e->slot_s), "%d", c->slot);
    snprintf(e->gen_s, sizeof(e->gen_s), "%u", c->generation);
    snprintf(e->listen_s, sizeof(e->listen_s), "%d", HUB_CHILD_LISTEN_FD);
    snprintf(e->doorbell_s, sizeof(e->doorbell_s), "%d", HUB_CHILD_DOORBELL_FD);
    x->path = h->worker_binary;
    x->argv = e->argv;
    e->argv[n++] = (char *)h->worker_binary;
    e->argv[n++] = "--slot";
    e->argv[n++] = e->slot_s;
    e->argv[n++] = "--generation";
    e->argv[n++] = e->gen_s;
    e->argv[n++] = "--listen-fd";
    e->argv[n++] = e->listen_s;
    e->argv[n++] = "--doorbell-fd";
    e->argv[n++] = e->doorbell_s;
    hub_exec_conf_args(&h->conf, e, n);
    x->from[0] = h->devnull_fd, x->to[0] = STDIN_FILENO;
    x->from[1] = h->listen_fd, x->to[1] = HUB_CHILD_LISTEN_FD;
    x->from[2] = c->doorbell_fd, x->to[2] = HUB_CHILD_DOORBELL_FD;
    x->n_fds = 3;
    x->first_closed = HUB_CHILD_DOORBELL_FD + 1;
    x->pdeathsig = SIGTERM;
}

static void hub_exec_prepare_admin(const struct hub *h, struct hub_child_exec *e)
{
    struct hub_exec *x = &e->x;
    x->path = h->admin_binary;
    x->argv = e->argv;
    e->argv[0] = (char *)h->admin_binary;
    hub_exec_conf_args(&h->conf, e, 1);
    x->from[0] = h->admin_fd, x->to[0] = STDIN_FILENO;
    x->n_fds = 1;
    x->first_closed = STDERR_FILENO + 1;
    x->pdeathsig = SIGTERM;
}

/* Runs in the child: async-signal-safe calls only. Never returns. */
static void hub_exec_child(const struct hub_exec_env *env)
{
    const struct hub_exec *x = env->x;
    struct sigaction dfl;
    int tmp[HUB_EXEC_MAX_FDS];
    int err_fd = env->err_fd, fd;

    memset(&dfl, 0, sizeof(dfl));
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; sig++)
        sigaction(sig, &dfl, NULL); /* fails harmlessly for KILL, STOP and glibc's own */
    if (sigprocmask(SIG_SETMASK, &env->empty, NULL) < 0)
        goto fail;
    if (x->detach) {
        /* The intermediate process: fork the real child, report its pid, leave. The child is
         * then orphaned to the nearest subreaper (systemd for a service), not ours. */
        pid_t pid = _Fork();
        if (pid < 0)
            goto fail;
        if (pid > 0) {
            struct hub_launch_rec rec = {'P', (int)pid};
            ssize_t w = write(err_fd, &rec, sizeof(rec));
            (void)w;
            _exit(0);
        }
    }
    /* Die with the hub even if it is killed before the child's own setup runs (a new hub of
     * an upgrade is meant to outlive it, and takes over if it is gone). */
    if (x->pdeathsig != 0 && prctl(PR_SET_PDEATHSIG, x->pdeathsig) < 0)
        goto fail;
    if (x->pdeathsig != 0 && getppid() != env->parent) {
        errno = ESRCH;
        goto fail;
    }
    /* Copy every source above the fixed numbers first, so no dup2 clobbers a later source. */
    if ((fd = fcntl(env->err_fd, F_DUPFD_CLOEXEC, HUB_CHILD_TMP_FD)) < 0)
        goto fail;
    err_fd = fd;
    for (int i = 0; i < x->n_fds; i++) {
        if ((tmp[i] = fcntl(x->from[i], F_DUPFD, HUB_CHILD_TMP_FD)) < 0)
            goto fail;
    }
    for (int i = 0; i < x->n_fds; i++) {
        if (dup2(tmp[i], x->to[i]) < 0)
            goto fail;
    }
    if (close_range((unsigned)x->first_closed, ~0U, CLOSE_RANGE_CLOEXEC) < 0) {
        for (fd = x->first_closed; fd <= env->max_fd; fd++)
            fcntl(fd, F_SETFD, FD_CLOEXEC);
    }
    if (x->envp != NULL)
        execve(x->path, x->argv, x->envp);
    else
        execv(x->path, x->argv);
fail:;
    struct hub_launch_rec rec = {'E', errno};
    ssize_t w = write(err_fd, &rec, sizeof(rec));
    (void)w;
    _exit(2);
}

static int hub_max_fd(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > 1 << 20)
        return 1 << 20;
    return (int)rl.rlim_cur - 1;
}

/* Reads the launch pipe to its EOF (every copy of its write end closed: the child exec'd or
 * died, and a detached child's intermediate exited). Returns the child's exec errno, 0 when exec
 * succeeded; sets *detached_pid when the intermediate reported one. */
static int hub_exec_wait(int fd, pid_t *detached_pid)
{
    struct hub_launch_rec rec;
    int e = 0;
    for (;;) {
        ssize_t n = read(fd, &rec, sizeof(rec));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            log_error(errno, "read(exec pipe) failed");
        if (n != (ssize_t)sizeof(rec))
            return e;
        if (rec.kind == 'P')
            *detached_pid = (pid_t)rec.value;
        else
            e = rec.value;
    }
}

/* Worker slot bookkeeping in the segment, before fork: the worker itself moves the state on to
 * RUNNING, so the hub must not write the state after the child may be running. */
static void hub_slot_starting(struct hub *h, const struct hub_child *c)
{
    struct shm_worker *w = shm_worker(&h->shm, (unsigned)c->slot);
    w->generation = c->generation;
    atomic_store(&w->pid, 0);
    atomic_store(&w->ready_at_ms, 0);
    atomic_store(&w->doorbell_armed, 0);
    atomic_store(&w->started_at_ms, shm_now_ms());
    atomic_store(&w->state, SHM_WORKER_STARTING);
}

static int hub_doorbell_ensure(struct hub *h, struct hub_child *c)
{
    if (c->doorbell_fd >= 0)
        return 0;
    c->doorbell_fd = doorbell_open(&h->shm, (unsigned)c->slot); /* logs its own failure */
    return c->doorbell_fd < 0 ? -1 : 0;
}

/* Forks and execs `x`. Returns the pid with *exec_err 0 when exec succeeded, the pid with
 * *exec_err set when the child could not exec (it exits 2), or -1 when pipe2 or fork failed
 * (logged). With x->detach, the pid is of a grandchild that is not our child. */
pid_t hub_exec_spawn(const struct hub_exec *x, int *exec_err)
{
    struct hub_exec_env env;
    int pipefd[2];

    *exec_err = 0;
    if (pipe2(pipefd, O_CLOEXEC) < 0) {
        log_error(errno, "pipe2() failed");
        return -1;
    }
    env.x = x;
    env.err_fd = pipefd[1];
    env.parent = getpid();
    env.max_fd = hub_max_fd();
    sigemptyset(&env.empty);

    pid_t pid = fork(), detached = -1;
    if (pid == 0)
        hub_exec_child(&env);
    if (pid < 0)
        log_error(errno, "fork() failed");
    close(pipefd[1]);
    if (pid < 0) {
        close(pipefd[0]);
        return -1;
    }
    *exec_err = hub_exec_wait(pipefd[0], &detached);
    if (x->detach) { /* reap the intermediate; the child is not ours */
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;
        if (detached < 0) {
            log_error(*exec_err, "fork() of the detached child failed");
            close(pipefd[0]);
            return -1;
        }
        pid = detached;
    }
    close(pipefd[0]);
    return pid;
}

/* Forks and execs the process for entry `c`. Returns 0 when a process was started (it may still
 * fail to exec: then it is marked fatal), -1 when fork or setup failed (the caller schedules a
 * retry). */
int hub_child_spawn(struct hub *h, struct hub_child *c)
{
    struct hub_child_exec e;
    char name[32];
    int err;

    memset(&e, 0, sizeof(e));
    hub_child_name(c, name, sizeof(name));
    if (c->role == HUB_ROLE_WORKER) {
        if (hub_doorbell_ensure(h, c) < 0)
            return -1;
        hub_exec_prepare_worker(h, c, &e);
        hub_slot_starting(h, c);
    } else {
        hub_exec_prepare_admin(h, &e);
    }
    pid_t pid = hub_exec_spawn(&e.x, &err);
    if (pid < 0) {
        log_error(0, "could not start %s", name);
        return -1;
    }
    c->pid = pid;
    c->started_ms = hub_now_ms();
    c->exiting = 0;
    c->ready_logged = 0;
    c->sweeps_left = 0;
    if (c->role == HUB_ROLE_WORKER)
        atomic_store(&shm_worker(&h->shm, (unsigned)c->slot)->pid, (int32_t)pid);
    if (err != 0) {
        log_error(err, "%s: execv(%s) failed; not respawning it", name, e.x.path);
        c->fatal = 1;
        return 0;
    }
    if (c->role == HUB_ROLE_WORKER)
        log_info("started %s (pid %d, generation %u)", name, (int)pid, c->generation);
    else
        log_info("started %s (pid %d)", name, (int)pid);
    return 0;
}

/* Starts `workers` workers of the current generation in slots[] (NULL: slots 0, 1, ...) and the
 * admin (unless admin_threads is 0). Returns 0, or -1 if a fork failed or no worker could be
 * exec'd at all. */
int hub_children_start(struct hub *h, const int *slots)
{
    int rc = 0, execd = 0;
    for (int i = 0; i < h->conf.workers; i++) {
        struct hub_child *c = &h->children[slots != NULL ? slots[i] : i];
        c->wanted = 1;
        c->generation = h->generation;
        if (hub_child_spawn(h, c) < 0)
            rc = -1;
        execd += c->pid > 0 && !c->fatal;
    }
    if (execd == 0) {
        log_error(0, "no worker could be started");
        rc = -1;
    }
    if (rc == 0 && h->admin_fd >= 0) {
        h->children[HUB_ADMIN_INDEX].wanted = 1;
        if (hub_child_spawn(h, &h->children[HUB_ADMIN_INDEX]) < 0)
            rc = -1;
    }
    return rc;
}
