/* conf.c -- the option table and its parsers (file, command line, --help).
 *
 * Adding an option means one field in struct conf and one row in `options` below; the file
 * parser, the command-line parser, --help, `wshub -T` and the documented example config
 * (conf/wshub.conf, checked by a test against this table) all follow from the row.
 */
#include "conf.h"

#include <ctype.h>
#include <stdarg.h>
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "log.h"

enum opt_type { OPT_STR, OPT_INT, OPT_SIZE32, OPT_SIZE64, OPT_MS, OPT_MODE, OPT_LIST };

struct option_def {
    const char *name;
    enum opt_type type;
    size_t offset;
    size_t size;      /* OPT_STR: buffer size */
    int64_t min, max; /* numeric range (in base units) */
    const char *dflt; /* default, in file syntax */
    const char *help;
};

#define F(field) offsetof(struct conf, field), sizeof(((struct conf *)0)->field)
#define KB       1024LL
#define MB       (1024LL * KB)
#define GB       (1024LL * MB)
#define HOUR_MS  3600000LL

static const struct option_def options[] = {
    {"instance", OPT_STR, F(instance), 0, 0, "default",
     "instance name; names the shared-memory segment /wshub-<instance>"},
    {"listen", OPT_STR, F(listen), 0, 0, "127.0.0.1:9001",
     "address and port WebSocket clients connect to (host:port, [v6]:port)"},
    {"backlog", OPT_INT, F(backlog), 1, 65535, "4096", "listen(2) backlog of the client socket"},
    {"workers", OPT_INT, F(workers), 0, CONF_MAX_WORKERS, "0",
     "worker processes; 0 = one per CPU core"},
    {"worker_binary", OPT_STR, F(worker_binary), 0, 0, "",
     "path of wshub-worker; empty = beside the wshub binary"},
    {"ws_path", OPT_STR, F(ws_path), 0, 0, "/ws", "URL path of the WebSocket endpoint"},
    {"max_connections", OPT_INT, F(max_connections), 1, 10000000, "100000",
     "connection table rows, shared by all workers"},
    {"worker_connections", OPT_INT, F(worker_connections), 0, 10000000, "0",
     "connections per worker; 0 = derived from the open-files limit"},
    {"max_message", OPT_SIZE32, F(max_message), 1, 256 * MB, "1m",
     "largest broadcast payload accepted"},
    {"ring_size", OPT_SIZE64, F(ring_size), 64 * KB, 64 * GB, "64m",
     "bytes of the shared broadcast ring (a power of two, at least 4 x max_message)"},
    {"worker_buffer", OPT_SIZE64, F(worker_buffer), 64 * KB, 16 * GB, "16m",
     "per-worker buffer of framed messages (power of two); a client further behind is dropped"},
    {"max_channels", OPT_INT, F(max_channels), 1, 1000000, "4096",
     "distinct channels a worker keeps subscribers for (each takes a presence entry)"},
    {"max_channels_per_connection", OPT_INT, F(max_channels_per_connection), 1,
     CONF_MAX_CHANNELS_PER_CONN, "16", "channels one connection may subscribe to"},
    {"max_channel_name", OPT_INT, F(max_channel_name), 1, 55, "55",
     "longest channel name, bytes (letters, digits and . _ - : only)"},
    {"slow_consumer", OPT_STR, F(slow_consumer), 0, 0, "close",
     "a client that falls worker_buffer behind: close (1013, it resumes) or skip (gap notice)"},
    {"client_send_buffer", OPT_SIZE32, F(client_send_buffer), 4 * KB, 64 * MB, "64k",
     "kernel send buffer per client socket (SO_SNDBUF); bounds the bytes queued per client"},
    {"client_max_message", OPT_SIZE32, F(client_max_message), 16, 64 * MB, "64k",
     "largest message a client may send (larger: close 1009)"},
    {"ping_interval", OPT_MS, F(ping_interval_ms), 1000, 24 * HOUR_MS, "30s",
     "ping a client that has been silent this long"},
    {"idle_timeout", OPT_MS, F(idle_timeout_ms), 2000, 48 * HOUR_MS, "75s",
     "close a client silent this long (it did not answer pings)"},
    /* strict RFC 6455 (ws-worker/worker_rfc6455.c, docs/rfc6455.md): each ping gets its pong */
    {"client_ping_rate", OPT_INT, F(client_ping_rate), 0, 1000000, "100",
     "pings per second a client gets answered on average (faster: close 1008); 0 = no cap"},
    {"client_ping_burst", OPT_INT, F(client_ping_burst), 1, 1000000, "1000",
     "pings a client gets answered at once before client_ping_rate applies"},
    /* permessage-deflate (ws-worker/worker_deflate.c, docs/deflate.md) */
    {"deflate", OPT_INT, F(deflate), 0, 1, "1",
     "1 = permessage-deflate for clients that offer it (one deflate per broadcast), 0 = never"},
    {"deflate_level", OPT_INT, F(deflate_level), 1, 9, "1",
     "zlib level of that deflate: 1 fastest .. 9 smallest"},
    {"deflate_threshold", OPT_SIZE32, F(deflate_threshold), 0, 256 * MB, "128",
     "broadcasts shorter than this (bytes) go out uncompressed"},
    {"shutdown_timeout", OPT_MS, F(shutdown_timeout_ms), 100, HOUR_MS, "10s",
     "on stop, how long workers may drain before they are killed"},
    {"restart_spread", OPT_MS, F(restart_spread_ms), 0, HOUR_MS, "2s",
     "rolling restart (SIGHUP): old workers close their clients (1012) spread over this long"},
    {"respawn_delay_max", OPT_MS, F(respawn_delay_max_ms), 100, HOUR_MS, "30s",
     "longest wait before respawning a worker that keeps crashing"},
    {"run_dir", OPT_STR, F(run_dir), 0, 0, "/run/wshub", "directory for sockets and the pid file"},
    {"admin_socket", OPT_STR, F(admin_socket), 0, 0, "",
     "FastCGI socket of wshub-admin; empty = <run_dir>/admin.sock"},
    {"admin_socket_mode", OPT_MODE, F(admin_socket_mode), 0, 0777, "0660",
     "permission bits of the admin socket"},
    {"admin_socket_group", OPT_STR, F(admin_socket_group), 0, 0, "",
     "group of the admin socket (the web server's), empty = unchanged"},
    {"shm_mode", OPT_MODE, F(shm_mode), 0, 0777, "0600",
     "permission bits of the shared-memory segment (0660 with shm_group for mod_fcgid)"},
    {"shm_group", OPT_STR, F(shm_group), 0, 0, "",
     "group of the shared-memory segment (a wshub-admin run as another user), empty = unchanged"},
    {"admin_threads", OPT_INT, F(admin_threads), 0, 256, "4",
     "request threads in the admin FastCGI process; 0 = do not start wshub-admin"},
    {"admin_binary", OPT_STR, F(admin_binary), 0, 0, "",
     "path of wshub-admin; empty = beside the wshub binary"},
    {"admin_token", OPT_STR, F(admin_token), 0, 0, "",
     "bearer token the admin API requires (Authorization: Bearer ...); empty = none"},
    {"metrics_public", OPT_INT, F(metrics_public), 0, 1, "1",
     "1 = /metrics needs no admin token, 0 = it does"},
    {"healthz_public", OPT_INT, F(healthz_public), 0, 1, "1",
     "1 = /healthz needs no admin token, 0 = it does"},
    {"log_level", OPT_STR, F(log_level), 0, 0, "info", "error, warn, notice, info or debug"},
    {"log_file", OPT_STR, F(log_file), 0, 0, "", "log file; empty = stderr"},
    {"pid_file", OPT_STR, F(pid_file), 0, 0, "", "write the hub's pid here; empty = none"},
    {"redis", OPT_STR, F(redis), 0, 0, "",
     "Redis for a cluster of instances (host:port, [v6]:port, /path.sock); empty = single node"},
    {"redis_user", OPT_STR, F(redis_user), 0, 0, "", "Redis ACL user; empty = password only"},
    {"redis_password", OPT_STR, F(redis_password), 0, 0, "", "Redis AUTH password; empty = none"},
    {"redis_prefix", OPT_STR, F(redis_prefix), 0, 0, "wshub:",
     "prefix of the Redis keys (stream, cursors); the same on every instance of a cluster"},
    {"redis_node", OPT_STR, F(redis_node), 0, 0, "",
     "this instance's node id in the cluster; empty = <hostname>:<instance>"},
    {"redis_maxlen", OPT_INT, F(redis_maxlen), 1000, 1000000000, "100000",
     "entries the cluster stream keeps (XADD MAXLEN ~)"},
    {"redis_backlog", OPT_SIZE64, F(redis_backlog), 64 * KB, 64 * GB, "64m",
     "memory for local messages waiting while Redis is unreachable; beyond it they stay local"},
    {"redis_timeout", OPT_MS, F(redis_timeout_ms), 10, 60000, "250ms",
     "Redis connect and command timeout; a slower Redis opens the circuit breaker"},
    {"redis_backoff_max", OPT_MS, F(redis_backoff_max_ms), 100, HOUR_MS, "5s",
     "longest wait between reconnection attempts to Redis (exponential, with jitter)"},
    /* security (docs/security.md): checked by ws-worker/worker_auth*.c before the upgrade */
    {"auth", OPT_STR, F(auth), 0, 0, "auto",
     "auto (tokens required when a jwt_key is set), on (refuse to start without one) or off"},
    {"jwt_key", OPT_LIST, F(jwt_keys), 0, 0, "",
     "repeatable: <kid> <alg> <secret | file:PATH> for HS256/384/512, <kid> <alg> <PEM file> "
     "for RS*/ES*"},
    {"jwt_issuer", OPT_STR, F(jwt_issuer), 0, 0, "", "required iss claim; empty = not checked"},
    {"jwt_audience", OPT_STR, F(jwt_audience), 0, 0, "",
     "value the aud claim (string or array) must hold; empty = not checked"},
    {"jwt_leeway", OPT_MS, F(jwt_leeway_ms), 0, HOUR_MS, "30s",
     "clock skew allowed when checking exp and nbf"},
    {"jwt_require_exp", OPT_INT, F(jwt_require_exp), 0, 1, "1",
     "1 = a token without exp is refused, 0 = accepted"},
    {"jwt_cookie", OPT_STR, F(jwt_cookie), 0, 0, "",
     "name of a cookie that may carry the token; empty = none"},
    {"allow_origin", OPT_LIST, F(allow_origins), 0, 0, "",
     "repeatable: an allowed Origin (https://app.example.com) or pattern (https://*.example.com); "
     "none = any origin"},
    {"origin_missing", OPT_STR, F(origin_missing), 0, 0, "allow",
     "a handshake without Origin (not a browser) when allow_origin is set: allow or deny"},
    {"trusted_proxy", OPT_LIST, F(trusted_proxies), 0, 0, "",
     "repeatable: address or CIDR of a proxy whose last X-Forwarded-For entry is the client"},
    {"max_connections_per_ip", OPT_INT, F(max_connections_per_ip), 0, 65535, "0",
     "connections one client address may hold across all workers (429 beyond); 0 = no limit"},
    {"max_connections_per_user", OPT_INT, F(max_connections_per_user), 0, 65535, "0",
     "connections one token subject may hold across all workers (429 beyond); 0 = no limit"},
    {"client_message_rate", OPT_INT, F(client_message_rate), 0, 1000000, "20",
     "messages per second a client may send on average (faster: close 1008); 0 = no limit"},
    {"client_message_burst", OPT_INT, F(client_message_burst), 1, 1000000, "50",
     "messages a client may send in a burst before client_message_rate applies"},
    {"max_header_size", OPT_SIZE32, F(max_header_size), 1 * KB, 64 * KB, "8k",
     "bytes of request line and headers a handshake may send (more: connection dropped)"},
    {"handshake_timeout", OPT_MS, F(handshake_timeout_ms), 1000, 300000, "10s",
     "time from accept to upgrade, TLS included (slow or idle handshakes are dropped)"},
    {"tls_cert", OPT_STR, F(tls_cert), 0, 0, "",
     "PEM certificate chain: workers speak TLS themselves (wss://); empty = plain ws://"},
    {"tls_key", OPT_STR, F(tls_key), 0, 0, "", "PEM private key of tls_cert"},
    {"tls_ciphers", OPT_STR, F(tls_ciphers), 0, 0,
     "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
     "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305",
     "OpenSSL cipher list for TLS 1.2 (TLS 1.3 uses OpenSSL's AEAD suites)"},
    {"tls_min_version", OPT_STR, F(tls_min_version), 0, 0, "1.2",
     "oldest TLS version accepted: 1.2 or 1.3"},
    {"admin_request_timeout", OPT_MS, F(admin_request_timeout_ms), 1000, 600000, "10s",
     "wshub-admin: longest wait for a FastCGI request's data or its reader (stalled: dropped)"},
};

#define N_OPTIONS (sizeof(options) / sizeof(options[0]))
_Static_assert(N_OPTIONS <= CONF_MAX_OPTIONS, "struct conf records an origin per option");

static const struct option_def *option_find(const char *name, size_t len)
{
    for (size_t i = 0; i < N_OPTIONS; i++) {
        const char *o = options[i].name;
        if (strlen(o) != len)
            continue;
        size_t k = 0;
        while (k < len && (o[k] == name[k] || (o[k] == '_' && name[k] == '-')))
            k++;
        if (k == len)
            return &options[i];
    }
    return NULL;
}

/* Parses an unsigned number with an optional unit suffix; `units` maps suffixes to
 * multipliers. Returns 0 or -1. */
struct unit {
    const char *suffix;
    int64_t mult;
};

static int parse_scaled(const char *s, const struct unit *units, int64_t *out)
{
    if (!isdigit((unsigned char)s[0]))
        return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0)
        return -1;
    for (const struct unit *u = units; u->suffix; u++) {
        if (strcmp(end, u->suffix) == 0) {
            if (u->mult != 0 && v > (unsigned long long)INT64_MAX / (unsigned long long)u->mult)
                return -1;
            *out = (int64_t)v * u->mult;
            return 0;
        }
    }
    return -1;
}

static const struct unit size_units[] = {{"", 1},   {"k", KB}, {"K", KB}, {"m", MB},
                                         {"M", MB}, {"g", GB}, {"G", GB}, {NULL, 0}};
static const struct unit ms_units[] = {{"", 1000},   {"ms", 1},      {"s", 1000},
                                       {"m", 60000}, {"h", HOUR_MS}, {NULL, 0}};
static const struct unit int_units[] = {{"", 1}, {NULL, 0}};

static int parse_value(const struct option_def *o, const char *value, int64_t *out)
{
    switch (o->type) {
    case OPT_INT:
        return parse_scaled(value, int_units, out);
    case OPT_SIZE32:
    case OPT_SIZE64:
        return parse_scaled(value, size_units, out);
    case OPT_MS:
        return parse_scaled(value, ms_units, out);
    case OPT_MODE: {
        char *end;
        errno = 0;
        long v = strtol(value, &end, 8);
        if (errno != 0 || *end != '\0' || end == value)
            return -1;
        *out = v;
        return 0;
    }
    case OPT_STR:
    case OPT_LIST:
        break;
    }
    return -1;
}

static void store_number(struct conf *c, const struct option_def *o, int64_t v)
{
    char *field = (char *)c + o->offset;
    if (o->size == sizeof(uint64_t))
        *(uint64_t *)field = (uint64_t)v;
    else if (o->type == OPT_INT)
        *(int *)field = (int)v;
    else
        *(uint32_t *)field = (uint32_t)v;
}

/* A list option: appends one entry, or clears the list for "". */
static int option_list_add(struct conf *c, const struct option_def *o, const char *value, char *err,
                           size_t errlen)
{
    struct conf_list *l = (struct conf_list *)((char *)c + o->offset);
    if (value[0] == '\0') {
        l->n = 0;
        return 0;
    }
    if (l->n >= CONF_LIST_MAX || strlen(value) >= CONF_LIST_ITEM) {
        snprintf(err, errlen, "option '%s': at most %d entries of up to %d characters", o->name,
                 CONF_LIST_MAX, CONF_LIST_ITEM - 1);
        return -1;
    }
    memcpy(l->item[l->n++], value, strlen(value) + 1);
    return 0;
}

static int option_set(struct conf *c, const struct option_def *o, const char *value, char *err,
                      size_t errlen)
{
    if (o->type == OPT_LIST)
        return option_list_add(c, o, value, err, errlen);
    if (o->type == OPT_STR) {
        if (strlen(value) >= o->size) {
            snprintf(err, errlen, "option '%s': value longer than %zu characters", o->name,
                     o->size - 1);
            return -1;
        }
        memcpy((char *)c + o->offset, value, strlen(value) + 1);
        return 0;
    }
    int64_t v;
    if (parse_value(o, value, &v) < 0) {
        snprintf(err, errlen, "option '%s': invalid value '%s'", o->name, value);
        return -1;
    }
    if (v < o->min || v > o->max) {
        snprintf(err, errlen, "option '%s': %s is out of range", o->name, value);
        return -1;
    }
    store_number(c, o, v);
    return 0;
}

/* Sets an option and remembers where the value came from (see conf_finalize's errors). */
static int conf_set_from(struct conf *c, const char *name, const char *value, int origin, char *err,
                         size_t errlen)
{
    const struct option_def *o = option_find(name, strlen(name));
    if (o == NULL) {
        snprintf(err, errlen, "unknown option '%s'", name);
        return -1;
    }
    if (option_set(c, o, value, err, errlen) < 0)
        return -1;
    c->origin[o - options] = origin;
    return 0;
}

int conf_set(struct conf *c, const char *name, const char *value, char *err, size_t errlen)
{
    return conf_set_from(c, name, value, -1, err, errlen);
}

void conf_defaults(struct conf *c)
{
    char err[256];
    memset(c, 0, sizeof(*c));
    for (size_t i = 0; i < N_OPTIONS; i++) {
        if (option_set(c, &options[i], options[i].dflt, err, sizeof(err)) < 0)
            abort(); /* a broken default is a programming error */
    }
}

/* Splits one config line into name and value in place. Returns 0 for a blank or comment line,
 * 1 for name+value, -1 for a line with a name but no value. */
static int split_line(char *line, char **name, char **value)
{
    char *hash = strchr(line, '#');
    if (hash)
        *hash = '\0';
    char *p = line;
    while (isspace((unsigned char)*p))
        p++;
    if (*p == '\0')
        return 0;
    *name = p;
    while (*p && !isspace((unsigned char)*p))
        p++;
    if (*p == '\0')
        return -1;
    *p++ = '\0';
    while (isspace((unsigned char)*p))
        p++;
    char *end = p + strlen(p);
    while (end > p && isspace((unsigned char)end[-1]))
        *--end = '\0';
    if (*p == '\0')
        return -1;
    if (end - p >= 2 && *p == '"' && end[-1] == '"') {
        end[-1] = '\0';
        p++;
    }
    *value = p;
    return 1;
}

int conf_load_file(struct conf *c, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "re");
    if (f == NULL) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    char line[1024], why[256];
    int lineno = 0, rc = 0;
    snprintf(c->file, sizeof(c->file), "%s", path);
    while (rc == 0 && fgets(line, sizeof(line), f)) {
        lineno++;
        char *name, *value;
        if (strchr(line, '\n') == NULL && !feof(f)) {
            snprintf(err, errlen, "%s:%d: line too long", path, lineno);
            rc = -1;
            break;
        }
        int k = split_line(line, &name, &value);
        if (k < 0) {
            snprintf(err, errlen, "%s:%d: option '%s' has no value", path, lineno, name);
            rc = -1;
        } else if (k > 0 && conf_set_from(c, name, value, lineno, why, sizeof(why)) < 0) {
            snprintf(err, errlen, "%s:%d: %s", path, lineno, why);
            rc = -1;
        }
    }
    if (rc == 0 && ferror(f)) {
        snprintf(err, errlen, "%s: read error", path);
        rc = -1;
    }
    fclose(f);
    return rc;
}

static int is_config_flag(const char *a)
{
    return strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0;
}

/* First pass: finds the config file and collects --option=value overrides. */
static int collect_args(struct conf *c, int argc, char **argv, conf_own_arg_fn is_own,
                        const char **file, char *err, size_t errlen)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int own = is_own ? is_own(argc, argv, i) : 0;
        if (own > 0) {
            i += own - 1;
        } else if (is_config_flag(a)) {
            if (i + 1 >= argc) {
                snprintf(err, errlen, "%s needs a file name", a);
                return -1;
            }
            *file = argv[++i];
        } else if (strncmp(a, "--config=", 9) == 0) {
            *file = a + 9;
        } else if (strncmp(a, "--", 2) == 0 && a[2] != '\0') {
            if (c->n_overrides >= CONF_MAX_OVERRIDES) {
                snprintf(err, errlen, "too many command-line options");
                return -1;
            }
            if (strchr(a, '=') == NULL) {
                /* "--name value": keep both words, joined later */
                if (i + 1 >= argc) {
                    snprintf(err, errlen, "%s needs a value", a);
                    return -1;
                }
                c->overrides[c->n_overrides++] = a;
                if (c->n_overrides >= CONF_MAX_OVERRIDES) {
                    snprintf(err, errlen, "too many command-line options");
                    return -1;
                }
                c->overrides[c->n_overrides++] = argv[++i];
            } else {
                c->overrides[c->n_overrides++] = a;
            }
        } else {
            snprintf(err, errlen, "unexpected argument '%s' (see --help)", a);
            return -1;
        }
    }
    return 0;
}

static int apply_overrides(struct conf *c, char *err, size_t errlen)
{
    char why[256];
    for (int i = 0; i < c->n_overrides; i++) {
        const char *a = c->overrides[i] + 2;
        const char *eq = strchr(a, '=');
        const char *value = eq ? eq + 1 : c->overrides[++i];
        size_t nlen = eq ? (size_t)(eq - a) : strlen(a);
        const struct option_def *o = option_find(a, nlen);
        if (o == NULL) {
            snprintf(err, errlen, "unknown option '--%.*s' (see --help)", (int)nlen, a);
            return -1;
        }
        if (option_set(c, o, value, why, sizeof(why)) < 0) {
            snprintf(err, errlen, "command line: %s", why);
            return -1;
        }
        c->origin[o - options] = -1;
    }
    return 0;
}

int conf_from_args(struct conf *c, int argc, char **argv, conf_own_arg_fn is_own, char *err,
                   size_t errlen)
{
    const char *file = NULL;
    conf_defaults(c);
    if (collect_args(c, argc, argv, is_own, &file, err, errlen) < 0)
        return -1;
    if (file == NULL && access(CONF_DEFAULT_FILE, R_OK) == 0)
        file = CONF_DEFAULT_FILE;
    if (file != NULL && conf_load_file(c, file, err, errlen) < 0)
        return -1;
    if (apply_overrides(c, err, errlen) < 0)
        return -1;
    return conf_finalize(c, err, errlen);
}

static int is_power_of_two(uint64_t v)
{
    return v != 0 && (v & (v - 1)) == 0;
}

static uint32_t connections_from_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY)
        return 19000;
    /* Keep room for the listening socket, doorbell, log, libev and libraries. */
    return rl.rlim_cur > 128 ? (uint32_t)(rl.rlim_cur - 64) : 64;
}

static int check_instance_name(const char *s)
{
    if (*s == '\0')
        return -1;
    for (; *s; s++) {
        if (!isalnum((unsigned char)*s) && *s != '.' && *s != '_' && *s != '-')
            return -1;
    }
    return 0;
}

/* Reports a rule broken by option `name`, prefixed with where its value came from:
 * "wshub.conf:12: option 'ring_size': ...", "command line: option ...", or nothing for a
 * default. Always returns -1. */
static int conf_fail(const struct conf *c, const char *name, char *err, size_t errlen,
                     const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static int conf_fail(const struct conf *c, const char *name, char *err, size_t errlen,
                     const char *fmt, ...)
{
    const struct option_def *o = option_find(name, strlen(name));
    int origin = o ? c->origin[o - options] : 0;
    char why[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    if (origin > 0)
        snprintf(err, errlen, "%s:%d: option '%s': %s", c->file, origin, name, why);
    else if (origin < 0)
        snprintf(err, errlen, "command line: option '%s': %s", name, why);
    else
        snprintf(err, errlen, "option '%s': %s", name, why);
    return -1;
}

/* Redis bridge: an address hiredis can connect to, and ids that are safe inside key names. */
static int check_redis_word(const char *s, int empty_ok)
{
    if (*s == '\0')
        return empty_ok ? 0 : -1;
    for (; *s; s++) {
        if (!isgraph((unsigned char)*s))
            return -1;
    }
    return 0;
}

static int check_redis(const struct conf *c, char *err, size_t errlen)
{
    char host[128];
    int port;
    const char *path = strncmp(c->redis, "unix:", 5) == 0 ? c->redis + 5 : c->redis;
    if (c->redis[0] != '\0' && path[0] != '/' &&
        conf_split_hostport(c->redis, host, sizeof(host), &port) < 0)
        return conf_fail(c, "redis", err, errlen,
                         "expected host:port, [v6]:port or a socket path, got '%s'", c->redis);
    if (check_redis_word(c->redis_prefix, 1) < 0)
        return conf_fail(c, "redis_prefix", err, errlen, "no spaces or control characters");
    if (check_redis_word(c->redis_node, 1) < 0)
        return conf_fail(c, "redis_node", err, errlen, "no spaces or control characters");
    return 0;
}

/* Security options (docs/security.md): the syntax here, so `wshub -t` names the line; the
 * worker loads the key files and parses origins fully at start (ws-worker/worker_auth.c). */
static int check_word(const char *s, size_t min, size_t max, const char *extra)
{
    size_t n = strlen(s);
    if (n < min || n > max)
        return -1;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && strchr(extra, *s) == NULL)
            return -1;
    return 0;
}

static int check_jwt_key(const struct conf *c, int i, char *err, size_t errlen)
{
    static const char *const algs[] = {"HS256", "HS384", "HS512", "RS256", "RS384",
                                       "RS512", "ES256", "ES384", "ES512"};
    char kid[CONF_LIST_ITEM], alg[CONF_LIST_ITEM], rest[CONF_LIST_ITEM];
    int ok = 0;
    if (sscanf(c->jwt_keys.item[i], "%511s %511s %511[^\n]", kid, alg, rest) != 3)
        return conf_fail(c, "jwt_key", err, errlen, "expected <kid> <alg> <secret or PEM file>");
    if (check_word(kid, 1, 64, "._:-") < 0)
        return conf_fail(c, "jwt_key", err, errlen, "kid '%.64s': 1..64 of [A-Za-z0-9._:-]", kid);
    for (size_t k = 0; k < sizeof(algs) / sizeof(algs[0]); k++)
        ok |= strcmp(alg, algs[k]) == 0;
    if (!ok)
        return conf_fail(c, "jwt_key", err, errlen,
                         "algorithm '%.16s': use HS256/384/512, RS256/384/512, ES256/384/512", alg);
    for (int j = 0; j < i; j++) {
        char other[CONF_LIST_ITEM];
        if (sscanf(c->jwt_keys.item[j], "%511s", other) == 1 && strcmp(other, kid) == 0)
            return conf_fail(c, "jwt_key", err, errlen, "kid '%s' is given twice", kid);
    }
    return 0;
}

static int check_security(const struct conf *c, char *err, size_t errlen)
{
    if (strcmp(c->auth, "auto") != 0 && strcmp(c->auth, "on") != 0 && strcmp(c->auth, "off") != 0)
        return conf_fail(c, "auth", err, errlen, "expected auto, on or off, got '%s'", c->auth);
    if (strcmp(c->auth, "on") == 0 && c->jwt_keys.n == 0)
        return conf_fail(c, "auth", err, errlen, "auth on needs at least one jwt_key");
    for (int i = 0; i < c->jwt_keys.n; i++)
        if (check_jwt_key(c, i, err, errlen) < 0)
            return -1;
    for (int i = 0; i < c->allow_origins.n; i++)
        if (check_word(c->allow_origins.item[i], 1, 255, ":/.*-[]_") < 0)
            return conf_fail(c, "allow_origin", err, errlen, "'%.64s' is not an origin",
                             c->allow_origins.item[i]);
    if (strcmp(c->origin_missing, "allow") != 0 && strcmp(c->origin_missing, "deny") != 0)
        return conf_fail(c, "origin_missing", err, errlen, "expected allow or deny");
    for (int i = 0; i < c->trusted_proxies.n; i++)
        if (check_word(c->trusted_proxies.item[i], 2, 64, ":./") < 0)
            return conf_fail(c, "trusted_proxy", err, errlen, "'%.64s' is not an address or CIDR",
                             c->trusted_proxies.item[i]);
    if (c->jwt_cookie[0] != '\0' && check_word(c->jwt_cookie, 1, 63, "!#$%&'*+-.^_`|~") < 0)
        return conf_fail(c, "jwt_cookie", err, errlen, "not a cookie name");
    if ((c->tls_cert[0] == '\0') != (c->tls_key[0] == '\0'))
        return conf_fail(c, c->tls_cert[0] ? "tls_cert" : "tls_key", err, errlen,
                         "tls_cert and tls_key go together");
    if (strcmp(c->tls_min_version, "1.2") != 0 && strcmp(c->tls_min_version, "1.3") != 0)
        return conf_fail(c, "tls_min_version", err, errlen, "expected 1.2 or 1.3");
    return 0;
}

int conf_finalize(struct conf *c, char *err, size_t errlen)
{
    char host[128];
    int port;
    enum log_level lvl;
    if (check_instance_name(c->instance) < 0) {
        return conf_fail(c, "instance", err, errlen, "use letters, digits, '.', '_' or '-'");
    }
    if (conf_split_hostport(c->listen, host, sizeof(host), &port) < 0) {
        return conf_fail(c, "listen", err, errlen, "expected host:port, got '%s'", c->listen);
    }
    if (c->ws_path[0] != '/') {
        return conf_fail(c, "ws_path", err, errlen, "must start with '/'");
    }
    if (!is_power_of_two(c->ring_size) || c->ring_size < 4ULL * (c->max_message + 4096))
        return conf_fail(c, "ring_size", err, errlen,
                         "must be a power of two and at least 4 x (max_message + 4k)");
    if (!is_power_of_two(c->worker_buffer) || c->worker_buffer < 2ULL * (c->max_message + 4096))
        return conf_fail(c, "worker_buffer", err, errlen,
                         "must be a power of two and at least 2 x (max_message + 4k)");
    if (c->idle_timeout_ms <= c->ping_interval_ms) {
        return conf_fail(c, "idle_timeout", err, errlen, "must be longer than ping_interval");
    }
    if (strcmp(c->slow_consumer, "close") != 0 && strcmp(c->slow_consumer, "skip") != 0)
        return conf_fail(c, "slow_consumer", err, errlen, "expected close or skip, got '%s'",
                         c->slow_consumer);
    if (log_level_parse(c->log_level, &lvl) < 0) {
        return conf_fail(c, "log_level", err, errlen,
                         "expected error, warn, notice, info or debug");
    }
    /* The hub's own processes map the segment read-write; nobody outside its group may. */
    if ((c->shm_mode & 0600) != 0600 || (c->shm_mode & ~0660u) != 0) {
        return conf_fail(c, "shm_mode", err, errlen,
                         "must include 0600 and nothing beyond 0660, got %04o", c->shm_mode);
    }
    if (check_redis(c, err, errlen) < 0)
        return -1;
    if (check_security(c, err, errlen) < 0)
        return -1;
    if (c->workers == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        c->workers = n < 1 ? 1 : (n > CONF_MAX_WORKERS ? CONF_MAX_WORKERS : (int)n);
    }
    if (c->worker_connections == 0)
        c->worker_connections = connections_from_fd_limit();
    if (c->admin_socket[0] == '\0' &&
        snprintf(c->admin_socket, sizeof(c->admin_socket), "%s/admin.sock", c->run_dir) >=
            (int)sizeof(c->admin_socket)) {
        return conf_fail(c, "run_dir", err, errlen, "path too long");
    }
    return 0;
}

void conf_print_options(FILE *out)
{
    for (size_t i = 0; i < N_OPTIONS; i++) {
        const struct option_def *o = &options[i];
        char flag[64];
        snprintf(flag, sizeof(flag), "--%s", o->name);
        for (char *p = flag + 2; *p; p++)
            if (*p == '_')
                *p = '-';
        fprintf(out, "  %-24s %s\n  %-24s (default: %s)\n", flag, o->help, "",
                o->dflt[0] ? o->dflt : "\"\"");
    }
}

/* One option's value in file syntax, strings without their quotes. Returns 0 or -1. */
static int format_value(const struct conf *c, const struct option_def *o, char *out, size_t outlen)
{
    const char *field = (const char *)c + o->offset;
    int n = -1;
    switch (o->type) {
    case OPT_STR:
        n = snprintf(out, outlen, "%s", field);
        break;
    case OPT_INT:
        n = snprintf(out, outlen, "%d", *(const int *)field);
        break;
    case OPT_MODE:
        n = snprintf(out, outlen, "%04o", *(const unsigned *)field);
        break;
    case OPT_MS:
        n = snprintf(out, outlen, "%ums", *(const uint32_t *)field);
        break;
    case OPT_SIZE32:
        n = snprintf(out, outlen, "%u", *(const uint32_t *)field);
        break;
    case OPT_SIZE64:
        n = snprintf(out, outlen, "%llu", (unsigned long long)*(const uint64_t *)field);
        break;
    case OPT_LIST: { /* entries one per line */
        const struct conf_list *l = (const struct conf_list *)field;
        size_t used = 0;
        out[0] = '\0';
        for (int i = 0; i < l->n && used < outlen; i++) {
            n = snprintf(out + used, outlen - used, "%s%s", i ? "\n" : "", l->item[i]);
            used += n < 0 ? outlen : (size_t)n;
        }
        n = (int)used;
        break;
    }
    }
    return n < 0 || (size_t)n >= outlen ? -1 : 0;
}

void conf_dump(const struct conf *c, FILE *out)
{
    char value[CONF_PATH_MAX + 1];
    for (size_t i = 0; i < N_OPTIONS; i++) {
        const struct option_def *o = &options[i];
        if (o->type == OPT_LIST) {
            const struct conf_list *l = (const struct conf_list *)((const char *)c + o->offset);
            for (int k = 0; k < l->n; k++)
                fprintf(out, "%-22s \"%s\"\n", o->name, l->item[k]);
            continue;
        }
        if (format_value(c, o, value, sizeof(value)) < 0)
            continue; /* cannot happen: every field fits CONF_PATH_MAX */
        if (o->type == OPT_STR)
            fprintf(out, "%-22s \"%s\"\n", o->name, value);
        else
            fprintf(out, "%-22s %s\n", o->name, value);
    }
}

int conf_format_value(const struct conf *c, const char *name, char *out, size_t outlen)
{
    const struct option_def *o = option_find(name, strlen(name));
    return o == NULL ? -1 : format_value(c, o, out, outlen);
}

int conf_split_hostport(const char *hp, char *host, size_t hostlen, int *port)
{
    const char *colon;
    const char *h = hp;
    size_t hl;
    if (hp[0] == '[') {
        const char *rb = strchr(hp, ']');
        if (rb == NULL || rb[1] != ':')
            return -1;
        h = hp + 1;
        hl = (size_t)(rb - h);
        colon = rb + 1;
    } else {
        colon = strrchr(hp, ':');
        if (colon == NULL)
            return -1;
        hl = (size_t)(colon - hp);
    }
    if (hl == 0 || hl >= hostlen)
        return -1;
    char *end;
    errno = 0;
    long p = strtol(colon + 1, &end, 10);
    if (errno != 0 || *end != '\0' || end == colon + 1 || p < 1 || p > 65535)
        return -1;
    memcpy(host, h, hl);
    host[hl] = '\0';
    *port = (int)p;
    return 0;
}
