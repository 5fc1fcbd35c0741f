/* conf.h -- wshub's configuration: one table of options shared by every binary.
 *
 * Every option has a name, a type, a default and a one-line description in conf.c's table; the
 * config file (conf/wshub.conf documents each), the command line (--name=value or --name value)
 * and --help are all driven by that table, so they cannot disagree. Precedence: built-in
 * defaults, then the file, then the command line.
 *
 * File syntax, one option per line:   name value   # comment
 * Sizes take k/m/g suffixes (1024-based), durations ms/s/m/h (default seconds), modes are octal.
 * Errors name the file, line and option: "wshub.conf:12: unknown option 'wokers'".
 */
#ifndef WSHUB_CONF_H
#define WSHUB_CONF_H

#include <limits.h>
#include <stdint.h>
#include <stdio.h>

#define CONF_DEFAULT_FILE          "/etc/wshub/wshub.conf"
#define CONF_MAX_OVERRIDES         64
#define CONF_MAX_OPTIONS           128
#define CONF_MAX_WORKERS           32 /* per generation; a rolling restart runs two */
#define CONF_PATH_MAX              256
#define CONF_WRITE_BUDGET          65536 /* bytes of whole frames a worker gathers into one write */
#define CONF_MAX_CHANNELS_PER_CONN 24    /* fits the connection row's channel list (shm_layout.h) */
#define CONF_LIST_MAX              16    /* entries of a list option (one line each, see below) */
#define CONF_LIST_ITEM             512   /* longest entry of a list option */

/* A list option: each line (or --name=value) naming it appends one entry; an empty value ("")
 * clears the list. Used by the security options (jwt_key, allow_origin, trusted_proxy). */
struct conf_list {
    int n;
    char item[CONF_LIST_MAX][CONF_LIST_ITEM];
};

struct conf {
    /* instance and processes */
    char instance[32];                 /* names the shared-memory segment and doorbells */
    char listen[128];                  /* host:port for WebSocket clients */
    int backlog;                       /* listen(2) backlog */
    int workers;                       /* worker processes; 0 = one per CPU core */
    char worker_binary[CONF_PATH_MAX]; /* "" = wshub-worker beside the wshub binary */
    /* WebSocket service */
    char ws_path[64];                /* URL path clients connect to */
    uint32_t max_connections;        /* rows in the connection table (all workers) */
    uint32_t worker_connections;     /* per worker; 0 = derived from RLIMIT_NOFILE */
    uint32_t max_message;            /* largest broadcast payload, bytes */
    uint64_t ring_size;              /* broadcast ring bytes (power of two) */
    uint64_t worker_buffer;          /* per-worker outgoing frame buffer, bytes (power of two) */
    int max_channels;                /* distinct channels per worker */
    int max_channels_per_connection; /* subscriptions per connection */
    int max_channel_name;            /* longest channel name */
    char slow_consumer[8];           /* "close" (1013) or "skip" (gap notice) when a client lags */
    uint32_t client_send_buffer;     /* SO_SNDBUF of each client socket */
    uint32_t client_max_message;     /* largest message a client may send, bytes */
    uint32_t ping_interval_ms;       /* ping a connection silent for this long */
    uint32_t idle_timeout_ms;        /* close a connection silent for this long */
    uint32_t client_ping_rate;       /* pings per second answered per client (0 = no cap) */
    uint32_t client_ping_burst;      /* pings answered at once before the rate applies */
    int deflate;                     /* 1: permessage-deflate for clients that offer it */
    int deflate_level;               /* zlib level of the one deflate per broadcast, 1-9 */
    uint32_t deflate_threshold;      /* broadcasts shorter than this go out uncompressed */
    uint32_t shutdown_timeout_ms;    /* drain deadline on stop before workers are killed */
    uint32_t restart_spread_ms;    /* rolling restart: old workers' 1012 closes spread over this */
    uint32_t respawn_delay_max_ms; /* cap of the crash-loop backoff */
    /* admin FastCGI */
    char run_dir[CONF_PATH_MAX];      /* sockets and pid file */
    char admin_socket[CONF_PATH_MAX]; /* "" = <run_dir>/admin.sock */
    unsigned admin_socket_mode;       /* permission bits of the admin socket */
    char admin_socket_group[32];      /* group owning the admin socket, "" = unchanged */
    unsigned shm_mode;                /* permission bits of the shared-memory segment */
    char shm_group[32];               /* group owning the segment, "" = unchanged */
    int admin_threads;                /* request threads in the admin FastCGI process; 0 = none */
    char admin_binary[CONF_PATH_MAX]; /* "" = wshub-admin beside the wshub binary */
    char admin_token[128];            /* bearer token for the admin API, "" = none */
    int metrics_public;               /* 1: /metrics needs no token */
    int healthz_public;               /* 1: /healthz needs no token */
    /* logging */
    char log_level[16];           /* error, warn, notice, info, debug */
    char log_file[CONF_PATH_MAX]; /* "" = stderr */
    char pid_file[CONF_PATH_MAX]; /* "" = none */
    /* cluster: the Redis bridge (hub/hub_redis.c, docs/redis-bridge.md) */
    char redis[CONF_PATH_MAX];     /* "" = single node; host:port, [v6]:port, /path, unix:/path */
    char redis_user[64];           /* ACL user for AUTH, "" = password only (or none) */
    char redis_password[128];      /* AUTH password, "" = none */
    char redis_prefix[64];         /* prefix of every key the bridge uses */
    char redis_node[64];           /* this instance's node id; "" = <hostname>:<instance> */
    int redis_maxlen;              /* XADD MAXLEN ~ bound of the cluster stream */
    uint64_t redis_backlog;        /* bytes of local messages kept while Redis is unreachable */
    uint32_t redis_timeout_ms;     /* connect and command timeout; slower trips the breaker */
    uint32_t redis_backoff_max_ms; /* cap of the reconnect backoff */
    /* security: admission before the upgrade, limits, TLS (docs/security.md) */
    char auth[8];                      /* auto (on iff jwt_key is set), on, off */
    struct conf_list jwt_keys;         /* "<kid> <alg> <secret | file:PATH | PEM path>" */
    char jwt_issuer[256];              /* required iss, "" = not checked */
    char jwt_audience[256];            /* required in aud, "" = not checked */
    uint32_t jwt_leeway_ms;            /* clock skew allowed on exp and nbf */
    int jwt_require_exp;               /* 1: a token without exp is refused */
    char jwt_cookie[64];               /* cookie carrying the token, "" = none */
    struct conf_list allow_origins;    /* Origin allowlist, exact or *.domain; empty = any */
    char origin_missing[8];            /* allow or deny a handshake without Origin */
    struct conf_list trusted_proxies;  /* addresses/CIDRs whose X-Forwarded-For is believed */
    int max_connections_per_ip;        /* 0 = unlimited */
    int max_connections_per_user;      /* 0 = unlimited */
    int client_message_rate;           /* messages per second a client may send, 0 = unlimited */
    int client_message_burst;          /* messages a client may send at once */
    uint32_t max_header_size;          /* bytes of request headers in a handshake */
    uint32_t handshake_timeout_ms;     /* from accept to upgrade (TLS included) */
    char tls_cert[CONF_PATH_MAX];      /* PEM certificate chain; "" = plain ws:// */
    char tls_key[CONF_PATH_MAX];       /* its PEM private key */
    char tls_ciphers[512];             /* OpenSSL cipher list for TLS 1.2 */
    char tls_min_version[8];           /* 1.2 or 1.3 */
    uint32_t admin_request_timeout_ms; /* wshub-admin: read/write timeout, body deadline */

    /* Not options: where values came from, for forwarding to child processes. */
    char file[CONF_PATH_MAX];     /* config file read, "" if none */
    int origin[CONF_MAX_OPTIONS]; /* per option: file line that set it, 0 default, -1 command line
                                   */
    int n_overrides;
    const char *overrides[CONF_MAX_OVERRIDES]; /* "--name=value" strings, in order */
};

/* Fills every option with its default. */
void conf_defaults(struct conf *c);

/* Reads a config file over the current values. Returns 0, or -1 with "file:line: reason" in err. */
int conf_load_file(struct conf *c, const char *path, char *err, size_t errlen);

/* Sets one option by name ('-' and '_' are interchangeable). Returns 0, or -1 with a reason. */
int conf_set(struct conf *c, const char *name, const char *value, char *err, size_t errlen);

/* Command line. Recognises -c FILE / --config=FILE / --config FILE and --<option>=VALUE /
 * --<option> VALUE. Arguments for which `is_own(arg)` returns true are left for the caller (it
 * returns how many argv entries the caller's flag consumes: 1 or 2). Loads the file (the one
 * given, else CONF_DEFAULT_FILE if it exists), applies the overrides in order, then finalises.
 * Returns 0, or -1 with a reason in err. */
typedef int (*conf_own_arg_fn)(int argc, char **argv, int i);
int conf_from_args(struct conf *c, int argc, char **argv, conf_own_arg_fn is_own, char *err,
                   size_t errlen);

/* Derives the defaults that depend on others or on the machine, and checks cross-option rules
 * (ring_size a power of two and at least 4 x max_message, ...). Returns 0 or -1 with a reason. */
int conf_finalize(struct conf *c, char *err, size_t errlen);

/* Prints every option with its default and description, as --help does. */
void conf_print_options(FILE *out);

/* Prints the effective configuration in file syntax (for `wshub -T`). */
void conf_dump(const struct conf *c, FILE *out);

/* Writes option `name`'s value as conf_set() accepts it back (strings unquoted, durations in ms,
 * sizes in bytes, modes in octal): for comparing two configurations option by option (the hub's
 * reload). Returns 0, or -1 for an unknown name or a value that does not fit in outlen. */
int conf_format_value(const struct conf *c, const char *name, char *out, size_t outlen);

/* Splits "host:port" / "[v6]:port". Returns 0 or -1. */
int conf_split_hostport(const char *hp, char *host, size_t hostlen, int *port);

#endif /* WSHUB_CONF_H */
