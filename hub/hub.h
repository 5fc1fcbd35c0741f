/* hub.h -- the hub (master) process: its one state struct and the functions its files share.
 *
 * The hub owns everything that must outlive a worker: the configuration, the shared-memory
 * segment, the listening TCP socket, one doorbell socket per worker slot and the admin FastCGI
 * socket. It fork+execs the workers and the admin process, and then only supervises: it reaps,
 * respawns with a backoff, frees a dead worker's connection rows, beats the heartbeat and stops
 * everyone on SIGTERM. It never touches a WebSocket or a broadcast itself.
 *
 *   hub.c         main: command line, start-up, the poll loop, clean-up
 *   hub_signal.c  signalfd and the order in which pending signals are handled
 *   hub_child.c   the child table, fork+exec of one child
 *   hub_reap.c    waitpid, exit logging, row reclaim, respawn backoff
 *   hub_stop.c    graceful stop and its escalation to SIGKILL
 *   hub_listen.c  the listening TCP socket and the admin FastCGI socket
 *   hub_pidfile.c the pid file and run_dir
 *   hub_usage.c   --help and --version
 *   hub_notify.c  sd_notify readiness for systemd (Type=notify), without libsystemd
 *   hub_restart.c the rolling restart: reload the config, start a new generation, drain the old
 *   hub_upgrade.c the binary upgrade on SIGUSR2: a new hub beside this one, then the hand-over
 *
 * Everything is single-threaded and runs from the loop in hub.c; no signal handlers exist (all
 * handled signals are blocked and read from a signalfd), so no state here is touched
 * asynchronously. The one exception to "parent code" is the child between fork and exec in
 * hub_child.c, which may only make async-signal-safe calls on data prepared before fork.
 */
#ifndef WSHUB_HUB_H
#define WSHUB_HUB_H

#include <limits.h>
#include <stdint.h>
#include <sys/types.h>

#include "conf.h"
#include "shm.h"

#define WSHUB_VERSION "0.1.0"

#define HUB_TICK_MS          250             /* heartbeat, respawns, stop escalation, sweeps */
#define HUB_ADMIN_INDEX      SHM_MAX_WORKERS /* children[] index of the admin process */
#define HUB_ADMIN_OLD_INDEX  (SHM_MAX_WORKERS + 1) /* the admin a reload replaced, finishing */
#define HUB_MAX_CHILDREN     (SHM_MAX_WORKERS + 2)
#define HUB_STABLE_UPTIME_MS 5000  /* a child that lived this long was not crash-looping */
#define HUB_BACKOFF_MIN_MS   100   /* first delay of a crash loop; doubles to respawn_delay_max */
#define HUB_STOP_GRACE_MS    2000  /* added to shutdown_timeout before SIGKILL */
#define HUB_KILL_WAIT_MS     5000  /* how long to wait for SIGKILLed children to be reaped */
#define HUB_SWEEP_TICKS      4     /* ticks a dead worker slot's rows are re-swept */
#define HUB_RESTART_START_MS 10000 /* a new generation must serve by then (hub_restart.c) */
#define HUB_RESTART_POLL_MS  10    /* loop timeout while a new generation starts */
#define HUB_MAX_PINS         16    /* options a reload cannot change (hub_restart.c) */

/* Fixed descriptor numbers in the children (the numbers are also passed on the command line). */
#define HUB_CHILD_LISTEN_FD   3
#define HUB_CHILD_DOORBELL_FD 4

/* ... and in a new hub started by SIGUSR2 (also named in $WSHUB_UPGRADE). */
#define HUB_UPGRADE_LISTEN_FD 3
#define HUB_UPGRADE_ADMIN_FD  4
#define HUB_UPGRADE_CTL_FD    5
#define HUB_UPGRADE_START_MS  30000 /* the new hub must serve by then, or it is stopped */
#define HUB_EXEC_MAX_FDS      4

enum hub_role { HUB_ROLE_WORKER, HUB_ROLE_ADMIN };

/* One supervised process: a worker slot or the admin. The entry outlives the process; pid is 0
 * while nothing runs in it. */
struct hub_child {
    enum hub_role role;
    int slot;               /* worker slot (index into shm workers[]), -1 for the admin */
    int wanted;             /* should be running; cleared on stop and on a fatal exit */
    pid_t pid;              /* running process, 0 = none */
    uint32_t generation;    /* generation of the running (or last) process */
    uint64_t started_ms;    /* monotonic ms of the last fork */
    int exiting;            /* we sent it SIGTERM or SIGHUP: its exit is expected, no respawn */
    int fatal;              /* exited with code 2: never respawned */
    int ready_logged;       /* "serving" already logged for this process */
    uint32_t quick_deaths;  /* consecutive deaths within HUB_STABLE_UPTIME_MS of the start */
    uint32_t restarts;      /* respawns after unexpected exits */
    int respawn_pending;    /* respawn at respawn_at_ms */
    uint64_t respawn_at_ms; /* monotonic */
    int sweeps_left;        /* ticks left to re-sweep this dead slot's rows */
    int doorbell_fd;        /* workers: the slot's doorbell, kept across respawns; else -1 */
};

/* A rolling restart (hub_restart.c): IDLE -> STARTING (new generation forked beside the old one)
 * -> DRAINING (old generation told to close its clients and exit) -> IDLE. */
enum hub_restart_phase { HUB_RESTART_IDLE = 0, HUB_RESTART_STARTING, HUB_RESTART_DRAINING };

struct hub_restart {
    enum hub_restart_phase phase;
    int queued;                   /* another request came during this one: run it afterwards */
    char why[48], queued_why[48]; /* what asked for it: "SIGHUP", "admin request 3" */
    uint64_t requests_seen;       /* shm hdr->restart_requested last acted on */
    uint32_t old_generation;      /* the generation being replaced (h->generation until handover) */
    uint32_t new_generation;
    int new_workers;       /* workers of the new generation */
    uint32_t old_drain_ms; /* restart_spread + shutdown_timeout the old workers run with */
    uint64_t begun_ms;     /* monotonic */
    uint64_t deadline_ms;  /* STARTING: start timeout; DRAINING: SIGKILL for the old workers */
    int killed;            /* DRAINING: the old workers left at the deadline were SIGKILLed */
    struct conf old_conf;  /* to go back to if the new generation cannot start */
    char old_worker_binary[PATH_MAX];
    char old_admin_binary[PATH_MAX];
    int n_pins;                                  /* options a reload cannot change, */
    char pins[HUB_MAX_PINS][CONF_PATH_MAX + 40]; /* as "--name=value" at start-up */
};

/* One fork+exec (hub_child.c): everything the child needs, prepared before fork. */
struct hub_exec {
    const char *path;
    char **argv;
    char **envp; /* NULL: the hub's own environment */
    int from[HUB_EXEC_MAX_FDS], to[HUB_EXEC_MAX_FDS];
    int n_fds;
    int first_closed; /* fds >= this become close-on-exec */
    int pdeathsig;    /* PR_SET_PDEATHSIG signal, 0 for none (the new hub of an upgrade) */
    int detach;       /* fork twice: the process is orphaned at once, not our child */
};

/* The binary upgrade (hub_upgrade.c). The old hub goes NONE -> SPAWNED -> RETIRING -> exit, or
 * back to NONE when the new one fails; the new hub starts as CANDIDATE, becomes the owner at the
 * hand-over (SUCCESSOR while the old hub still drains its workers) and then NONE. */
enum hub_upgrade_phase {
    HUB_UPGRADE_NONE = 0,
    HUB_UPGRADE_SPAWNED,   /* old hub: the new hub runs and starts its workers; we still own */
    HUB_UPGRADE_RETIRING,  /* old hub: handed over; our workers drain, then we exit 0 */
    HUB_UPGRADE_CANDIDATE, /* new hub: our workers start beside the old hub's; not the owner */
    HUB_UPGRADE_SUCCESSOR  /* new hub: the owner; the old hub is still draining its workers */
};

struct hub_upgrade {
    enum hub_upgrade_phase phase;
    int ctl_fd;            /* SOCK_SEQPACKET to the other hub, -1 when none */
    int pidfd;             /* old hub: pidfd of the new hub (not our child), -1 when none */
    pid_t peer;            /* the other hub's pid */
    uint64_t begun_ms;     /* monotonic */
    uint64_t deadline_ms;  /* SPAWNED: start deadline, then kill deadlines; RETIRING: SIGKILL */
    int stage;             /* SPAWNED: 0 waiting, 1 SIGTERM sent, 2 SIGKILL sent; RETIRING: 1 */
    uint32_t generation;   /* the new hub's worker generation */
    int hup_deferred;      /* SIGHUP came while SPAWNED: run it if the upgrade fails */
    int sweep;             /* the other hub is gone: reclaim its dead workers' slots */
    int oldbin_ticks;      /* new hub: ticks left to remove a .oldbin the old hub left */
    int pid_renamed;       /* old hub: our pid file is at oldbin */
    char oldbin[PATH_MAX]; /* "<pid_file>.oldbin" */
    int n_slots;           /* CANDIDATE: the free slots the old hub offered */
    int slots[SHM_MAX_WORKERS];
    uint64_t requests_seen;                         /* CANDIDATE: the old hub's restart_requested */
    uint64_t epoch;                                 /* CANDIDATE: the segment's epoch */
    char pins[HUB_MAX_PINS * (CONF_PATH_MAX + 48)]; /* CANDIDATE: running fixed options */
    char self_path[PATH_MAX]; /* the binary to exec on SIGUSR2: the path we were started as */
};

enum hub_phase {
    HUB_PHASE_RUNNING = 0, /* supervising */
    HUB_PHASE_DRAINING,    /* SIGTERM sent to every child, waiting for them */
    HUB_PHASE_KILLING      /* SIGKILL sent, waiting for the reaps */
};

struct hub {
    struct conf conf;
    struct shm shm;
    int shm_created;              /* shm is ours to destroy */
    char worker_binary[PATH_MAX]; /* resolved paths */
    char admin_binary[PATH_MAX];
    int listen_fd;            /* TCP, O_NONBLOCK, shared by every worker */
    int admin_fd;             /* FastCGI unix socket, -1 when admin_threads == 0 */
    int admin_socket_created; /* we bound conf.admin_socket: unlink at exit */
    int devnull_fd;           /* stdin of the workers */
    int signal_fd;
    int timer_fd;
    int pid_fd;          /* locked pid file, -1 if none */
    uint32_t generation; /* serving worker generation (1, 2, ...); shm hdr->generation */
    struct hub_child children[HUB_MAX_CHILDREN];
    enum hub_phase phase;
    uint64_t phase_deadline_ms; /* monotonic: end of the current stop phase */
    int exit_code;              /* 0, or 1 once something went wrong at run time */
    struct hub_restart restart;
    int owner; /* this hub owns the instance: heartbeat, segment state, bridge, clean-up */
    struct hub_upgrade upgrade;
    int argc; /* the command line, re-read on every reload */
    char **argv;
};

/* hub.c */
uint64_t hub_now_ms(void); /* CLOCK_MONOTONIC */
void hub_admin_close(struct hub *h);
int hub_is_own_arg(int argc, char **argv, int i);
int hub_resolve_binaries(struct hub *h, char *err, size_t errlen);

/* hub_signal.c */
int hub_signal_open(void);
void hub_signal_dispatch(struct hub *h);

/* hub_child.c */
void hub_children_init(struct hub *h);
int hub_children_start(struct hub *h, const int *slots);
pid_t hub_exec_spawn(const struct hub_exec *x, int *exec_err);
int hub_child_spawn(struct hub *h, struct hub_child *c);
struct hub_child *hub_child_by_pid(struct hub *h, pid_t pid);
const char *hub_child_name(const struct hub_child *c, char *buf, size_t len);
int hub_children_live(const struct hub *h);
void hub_children_kill(struct hub *h, int sig, int log_each);
void hub_children_close(struct hub *h);

/* hub_reap.c */
void hub_reap(struct hub *h);
void hub_reap_tick(struct hub *h, uint64_t now);
void hub_respawn_due(struct hub *h, uint64_t now);
int hub_respawn_next_ms(const struct hub *h, uint64_t now);
int hub_slot_is_free(const struct hub *h, int slot);
int hub_sweep_foreign_slots(struct hub *h);

/* hub_stop.c */
void hub_stop_begin(struct hub *h, const char *why);
void hub_stop_force(struct hub *h);
void hub_stop_tick(struct hub *h, uint64_t now);
int hub_stop_is_done(const struct hub *h);

/* hub_listen.c */
int hub_listen_tcp(const struct conf *c);
int hub_listen_admin(const struct conf *c);

/* hub_pidfile.c */
int hub_mkdir_p(const char *path, unsigned mode);
int hub_pidfile_open(const char *path);
void hub_pidfile_remove(const char *path, int fd);
int hub_pidfile_rename(const char *from, const char *to);

/* hub_usage.c */
void hub_usage(FILE *out);
void hub_version(FILE *out);

/* hub_restart.c */
void hub_restart_init(struct hub *h);
int hub_restart_pin(struct hub *h, struct conf *nc, const char *what, char *err, size_t errlen);
void hub_restart_adopt_pins(struct hub *h, const char *lines);
void hub_restart_request(struct hub *h, const char *why);
void hub_restart_tick(struct hub *h, uint64_t now);
int hub_restart_next_ms(const struct hub *h);

/* hub_notify.c */
void hub_notify_init(void);
void hub_notify_tick(const struct hub *h);
void hub_notify_reloading(void);
void hub_notify_reloaded(void);
void hub_notify_stopping(void);
void hub_notify_mainpid(pid_t pid, const char *status);
const char *hub_notify_socket(void);

/* hub_upgrade.c */
void hub_upgrade_init(struct hub *h, const char *argv0);
int hub_upgrade_from_env(struct hub *h, char *err, size_t errlen);
int hub_upgrade_pin_conf(struct hub *h, char *err, size_t errlen);
int hub_upgrade_adopt(struct hub *h);
void hub_upgrade_started(struct hub *h);
void hub_upgrade_request(struct hub *h);
int hub_upgrade_defer_restart(struct hub *h, const char *why);
void hub_upgrade_ctl_event(struct hub *h);
void hub_upgrade_peer_event(struct hub *h);
void hub_upgrade_tick(struct hub *h, uint64_t now);
int hub_upgrade_next_ms(const struct hub *h);
void hub_upgrade_stop(struct hub *h, int sig);
int hub_upgrade_child_live(const struct hub *h);
int hub_upgrade_retired(const struct hub *h);
const char *hub_pidfile_path(const struct hub *h);

#endif /* WSHUB_HUB_H */
