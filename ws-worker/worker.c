/* worker.c -- wshub-worker's main: arguments, configuration, attach, lws context, the loop.
 *
 *   wshub-worker --slot N --generation G --listen-fd FD --doorbell-fd FD [-c FILE] [--opt=v ...]
 *
 * The hub exec's one worker per slot with the listening socket and the slot's doorbell already
 * open. Everything with state (libev loop, lws context, OpenSSL) is created here, after exec, so
 * nothing crosses a fork.
 *
 * Why libev (epoll) and not lws's default event loop: the default backend calls poll() over
 * every descriptor and then scans the whole table on each wake-up, O(connections) per event.
 * With tens of thousands of mostly idle clients and a broadcast every few milliseconds that
 * scan dominates. epoll reports only the ready descriptors. The loop is "foreign" (ours, passed
 * in info.foreign_loops) rather than one lws makes, so our own watchers (the inherited listening
 * socket, the doorbell, the pre-sleep ring check, signals, timers) live on the same loop without
 * wrapping them as lws raw-file wsis. With a foreign loop, the libev event-lib plugin does not
 * install its SIGINT watcher (lib/event-libs/libev/libev.c, elops_init_pt_ev); lws only sets
 * SIGPIPE to SIG_IGN at context creation, which we want too. Our ev_signal watchers are the only
 * handlers of TERM, INT, HUP and USR1.
 *
 * lws timers on a foreign libev loop (4.1.6): every lws timeout (handshake and close-ack
 * deadlines, lws_set_timeout; keepalive is ours, worker_keepalive.c) lives on one sorted list
 * driven by a single ev_timer in the plugin. The plugin re-arms it with ev_timer_set() +
 * ev_timer_start() while it is still active, which libev ignores, so a timeout scheduled earlier
 * than the armed one waits for it: measured, a 1 s ping interval pinged only after 30 s (lws's
 * periodic platform timer). A 1 s self-rescheduling lws timer (worker_lws_tick) means the ev_timer
 * is never armed further than 1 s ahead, so lws timeouts fire at most ~1 s late.
 *
 * Exit: after a graceful stop whose closes all completed, the context is destroyed normally;
 * when the drain deadline cut connections we _exit() instead, because lws_context_destroy() in
 * 4.1.6 has crash reports when it tears down live connections (upstream #2294, #2857), and the
 * hub frees any rows we could not (we free ours first anyway).
 */
#include "worker.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include "conntab.h"
#include "log.h"
#include "stats.h"

#define WORKER_VERSION "0.1.0" /* keep equal to WSHUB_VERSION (hub/hub.h) */

struct worker_args {
    long slot, generation, listen_fd, doorbell_fd;
};

static const char *const own_flags[] = {"--slot", "--generation", "--listen-fd", "--doorbell-fd"};
#define N_OWN_FLAGS (sizeof(own_flags) / sizeof(own_flags[0]))

/* Index of the own flag `a` names ("--slot" or "--slot=3"), or -1. Sets *value for '='. */
static int own_flag_index(const char *a, const char **value)
{
    for (size_t i = 0; i < N_OWN_FLAGS; i++) {
        size_t n = strlen(own_flags[i]);
        if (strncmp(a, own_flags[i], n) != 0)
            continue;
        if (a[n] == '\0') {
            *value = NULL;
            return (int)i;
        }
        if (a[n] == '=') {
            *value = a + n + 1;
            return (int)i;
        }
    }
    return -1;
}

/* conf_from_args callback: how many argv entries our own flag at i consumes (0: not ours). */
static int worker_is_own_arg(int argc, char **argv, int i)
{
    const char *value;
    if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)
        return 1;
    if (own_flag_index(argv[i], &value) < 0)
        return 0;
    return (value == NULL && i + 1 < argc) ? 2 : 1;
}

static void worker_usage(void)
{
    fprintf(stdout, "usage: wshub-worker --slot N --generation G --listen-fd FD --doorbell-fd FD "
                    "[-c FILE] [--option=value ...]\n"
                    "Started by the wshub hub, not by hand. Options:\n");
    conf_print_options(stdout);
}

static int parse_long(const char *s, long *out)
{
    char *end;
    if (s == NULL || *s == '\0')
        return -1;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < 0)
        return -1;
    *out = v;
    return 0;
}

/* Second pass over argv for our four flags. Returns 0, 1 after --help, or -1. */
static int worker_parse_own_args(int argc, char **argv, struct worker_args *a)
{
    long *slots[] = {&a->slot, &a->generation, &a->listen_fd, &a->doorbell_fd};
    a->slot = a->generation = a->listen_fd = a->doorbell_fd = -1;
    for (int i = 1; i < argc; i++) {
        const char *value;
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)
            return 1;
        int k = own_flag_index(argv[i], &value);
        if (k < 0)
            continue;
        if (value == NULL)
            value = i + 1 < argc ? argv[++i] : NULL;
        if (parse_long(value, slots[k]) < 0) {
            log_error(0, "%s: expected a non-negative number", own_flags[k]);
            return -1;
        }
    }
    for (size_t k = 0; k < N_OWN_FLAGS; k++) {
        if (*slots[k] < 0) {
            log_error(0, "missing %s (wshub-worker is started by the hub)", own_flags[k]);
            return -1;
        }
    }
    if (a->slot >= SHM_MAX_WORKERS || a->generation > UINT32_MAX) {
        log_error(0, "--slot must be below %d, --generation below 2^32", SHM_MAX_WORKERS);
        return -1;
    }
    return 0;
}

/* The soft open-files limit up to the hard one, before the configuration derives
 * worker_connections from it. */
static void worker_raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
        log_warn(errno, "getrlimit(RLIMIT_NOFILE) failed");
        return;
    }
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            log_warn(errno, "setrlimit(RLIMIT_NOFILE, %llu) failed",
                     (unsigned long long)rl.rlim_max);
    }
}

static int worker_check_fd(int fd, const char *what)
{
    if (fd > INT32_MAX || fcntl(fd, F_GETFD) < 0) {
        log_error(errno, "%s %d is not an open descriptor", what, fd);
        return -1;
    }
    return 0;
}

/* Arguments and configuration. Returns 0, or an exit code (-1 for --help: exit 0). */
static int worker_configure(struct worker *w, int argc, char **argv)
{
    struct worker_args a;
    char err[512];
    enum log_level lvl;

    if (conf_from_args(&w->conf, argc, argv, worker_is_own_arg, err, sizeof(err)) < 0) {
        log_error(0, "configuration: %s", err);
        return WORKER_EXIT_FATAL;
    }
    int k = worker_parse_own_args(argc, argv, &a);
    if (k == 1)
        return -1;
    if (k < 0)
        return WORKER_EXIT_FATAL;
    w->slot = (unsigned)a.slot;
    w->generation = (uint32_t)a.generation;
    w->listen_fd = (int)a.listen_fd;
    w->doorbell_fd = (int)a.doorbell_fd;
    log_set_role("worker", (int)w->slot);
    if (log_level_parse(w->conf.log_level, &lvl) == 0)
        log_set_level(lvl);
    if (log_open_file(w->conf.log_file) < 0) {
        log_error(errno, "open(%s) failed for the log file", w->conf.log_file);
        return WORKER_EXIT_FATAL;
    }
    if (worker_check_fd(w->listen_fd, "--listen-fd") < 0 ||
        worker_check_fd(w->doorbell_fd, "--doorbell-fd") < 0)
        return WORKER_EXIT_FATAL;
    return 0;
}

/* Maps the segment and checks we are the hub's child. Returns 0 or an exit code. */
static int worker_attach(struct worker *w)
{
    char name[64], err[256];
    if (shm_name_for_instance(w->conf.instance, name, sizeof(name)) < 0) {
        log_error(errno, "bad instance name '%s'", w->conf.instance);
        return WORKER_EXIT_FATAL;
    }
    if (shm_attach(&w->shm, name, err, sizeof(err)) < 0) {
        int e = errno;
        log_error(0, "shm_attach(%s) failed: %s", name, err); /* err names the call and errno */
        return e == EPROTO ? WORKER_EXIT_FATAL : WORKER_EXIT_RUNTIME;
    }
    w->self = shm_worker(&w->shm, w->slot);
    w->stats = &w->self->stats;
    w->hub_pid = atomic_load(&w->shm.hdr->hub_pid);
    if (getppid() != w->hub_pid) {
        log_error(0, "parent is pid %d, not the hub (pid %d): exiting", (int)getppid(),
                  (int)w->hub_pid);
        return WORKER_EXIT_RUNTIME;
    }
    if (w->self->generation != w->generation)
        log_warn(0, "slot %u has generation %u in the segment, we were started as %u", w->slot,
                 w->self->generation, w->generation);
    return 0;
}

/* lws log lines go to our log; lws NOTICE and below are off (the libev plugin logs every
 * watcher change at NOTICE). */
static void worker_lws_log(int level, const char *line)
{
    size_t n = strlen(line);
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        n--;
    log_at(level == LLL_ERR ? LOG_LEVEL_ERROR : LOG_LEVEL_WARN, 0, "lws: %.*s", (int)n, line);
}

/* The protocols, sized from the configuration, and lws's keepalive policy (off). Both share
 * one callback and one per-session struct: index 0 serves clients that ask for no subprotocol
 * (raw payloads), index 1 is wshub.v1 (docs/protocol.md: sequence numbers, resume, gaps). */
static void worker_setup_protocol(struct worker *w)
{
    memset(w->protocols, 0, sizeof(w->protocols));
    for (int i = 0; i < WORKER_PROTO_COUNT; i++) {
        struct lws_protocols *p = &w->protocols[i];
        p->name = i == WORKER_PROTO_V1 ? WORKER_SUBPROTOCOL_V1 : "wshub.raw";
        p->callback = worker_proto_callback;
        p->per_session_data_size = sizeof(struct worker_conn);
        p->rx_buffer_size = WORKER_RX_BUFFER;
        /* One send() attempt for a whole write: a gathered batch or one maximal frame. With 0,
         * lws caps each send at rx_buffer_size and copies the rest of every write to the heap. */
        p->tx_packet_size = w->fan.max_payload + WORKER_FRAME_HDR_MAX > WORKER_WRITE_BUDGET
                                ? w->fan.max_payload + WORKER_FRAME_HDR_MAX
                                : WORKER_WRITE_BUDGET;
    }

    /* All zero: lws's validity timers are off (secs_since_valid_hangup 0); a NULL policy would
     * get lws's default one. worker_keepalive.c pings and hangs up instead, and says why. */
    memset(&w->keepalive, 0, sizeof(w->keepalive));
}

/* See the top of this file: bounds how late any lws timeout can fire. */
static void worker_lws_tick(lws_sorted_usec_list_t *sul)
{
    struct worker *w = (struct worker *)(void *)((char *)sul - offsetof(struct worker, lws_tick));
    lws_sul_schedule(w->ctx, 0, &w->lws_tick, worker_lws_tick, LWS_US_PER_SEC);
}

static int worker_create_context(struct worker *w)
{
    struct lws_context_creation_info info;
    void *loops[1] = {w->loop};

    lws_set_log_level(LLL_ERR | LLL_WARN, worker_lws_log);
    worker_setup_protocol(w);
    memset(&info, 0, sizeof(info));
    /* VALIDATE_UTF8: text messages, also across fragments -> 1007 (docs/rfc6455.md) */
    info.options = LWS_SERVER_OPTION_LIBEV | LWS_SERVER_OPTION_VALIDATE_UTF8;
    info.foreign_loops = loops;
    info.port = CONTEXT_PORT_NO_LISTEN_SERVER;
    info.protocols = w->protocols;
    info.user = w;
    info.retry_and_idle_policy = &w->keepalive;
    info.max_http_header_pool = 256;                /* ~4.5 KB each, only while handshaking */
    info.timeout_secs = 10;                         /* handshake deadline */
    worker_tls_context_info(w, &info);              /* TLS, handshake_timeout, max_header_size */
    info.extensions = worker_deflate_extensions(w); /* permessage-deflate, or NULL */
    w->ctx = lws_create_context(&info);
    if (w->ctx == NULL) {
        log_error(0, "lws_create_context() failed (is libwebsockets-evlib-ev installed?)");
        return -1;
    }
    w->vhost = lws_get_vhost_by_name(w->ctx, "default");
    if (w->vhost == NULL) {
        log_error(0, "lws_get_vhost_by_name(default) failed");
        return -1;
    }
    lws_sul_schedule(w->ctx, 0, &w->lws_tick, worker_lws_tick, LWS_US_PER_SEC);
    return 0;
}

static int worker_start(struct worker *w)
{
    w->conns.next = w->conns.prev = &w->conns;
    if (worker_fanout_init(w) < 0 || worker_channels_init(w) < 0)
        return WORKER_EXIT_FATAL;
    w->loop = ev_loop_new(EVBACKEND_EPOLL);
    if (w->loop == NULL) {
        log_error(errno, "ev_loop_new(EVBACKEND_EPOLL) failed");
        return WORKER_EXIT_RUNTIME;
    }
    ev_set_userdata(w->loop, w);
    if (worker_auth_init(w) < 0) /* keys, origins, TLS files: a bad one is fatal (exit 2) */
        return WORKER_EXIT_FATAL;
    if (worker_deflate_init(w) < 0)
        return WORKER_EXIT_RUNTIME;
    if (worker_create_context(w) < 0)
        return WORKER_EXIT_RUNTIME;
    if (worker_signal_start(w) < 0 || worker_accept_start(w) < 0)
        return WORKER_EXIT_RUNTIME;
    worker_fanout_start(w);
    worker_keepalive_start(w);
    atomic_store(&w->self->ready_at_ms, shm_now_ms());
    atomic_store(&w->self->state, SHM_WORKER_RUNNING);
    log_notice("serving %s on fd %d (generation %u, worker_connections %u, buffer %llu bytes)",
               w->conf.ws_path, w->listen_fd, w->generation, w->conf.worker_connections,
               (unsigned long long)w->fan.buf_size);
    return 0;
}

/* TERM, INT, USR1 and HUP stay blocked until their ev_signal watchers exist (worker_signal_start
 * unblocks them), so a stop or a restart requested during start-up is acted on, not fatal. */
static void worker_block_signals(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGHUP);
    if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
        log_warn(errno, "sigprocmask(SIG_BLOCK) failed");
}

/* `wshub-worker -v`: the versions of the libraries actually loaded (`wshub -v` shows this). */
static int worker_print_version(void)
{
    const char *lws = lws_get_library_version(); /* "4.1.6-<git hash>", hash often empty */
    printf("wshub-worker %s (libwebsockets %.*s, libev %d.%d)\n", WORKER_VERSION,
           (int)strcspn(lws, "- "), lws, ev_version_major(), ev_version_minor());
    return 0;
}

int main(int argc, char **argv)
{
    static struct worker w; /* static: big, and zeroed */
    int rc;

    if (argc == 2 && (strcmp(argv[1], "-v") == 0 || strcmp(argv[1], "--version") == 0))
        return worker_print_version();
    log_set_role("worker", -1);
    worker_block_signals();
    if (prctl(PR_SET_PDEATHSIG, SIGTERM) < 0)
        log_warn(errno, "prctl(PR_SET_PDEATHSIG) failed");
    signal(SIGPIPE, SIG_IGN);
    worker_raise_nofile();
    rc = worker_configure(&w, argc, argv);
    if (rc != 0) {
        if (rc < 0)
            worker_usage();
        return rc < 0 ? 0 : rc;
    }
    rc = worker_attach(&w);
    if (rc == 0)
        rc = worker_start(&w);
    if (rc != 0)
        return rc;

    ev_run(w.loop, 0);

    if (w.cut > 0) {
        log_notice("stopped: %u connections cut at the drain deadline", w.cut);
        _exit(WORKER_EXIT_OK);
    }
    log_notice("stopped: all connections closed");
    lws_context_destroy(w.ctx);
    ev_loop_destroy(w.loop);
    shm_detach(&w.shm);
    return WORKER_EXIT_OK;
}
