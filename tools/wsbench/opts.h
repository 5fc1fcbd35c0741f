/* opts.h -- wsbench's command line: one struct filled once in the parent before any fork, then
 * read (never written) by every process. --help prints the manual kept in opts.c beside the
 * parser, so the two are edited together. */
#ifndef WSBENCH_OPTS_H
#define WSBENCH_OPTS_H

#include <netinet/in.h>
#include <stdint.h>
#include <sys/types.h>

#define OPTS_MAX_HEADERS         16
#define OPTS_MAX_PIDS            64
#define OPTS_RESUME_MAX_MESSAGES (1u << 20) /* --resume keeps a bit per broadcast per client */

enum opts_mode { OPTS_MODE_HOLD = 0, OPTS_MODE_FANOUT };

/* When broadcasts are due: every 1/rate seconds, or a Poisson process of the same mean rate. */
enum opts_arrivals { OPTS_ARRIVALS_FIXED = 0, OPTS_ARRIVALS_POISSON };

/* --channel-pick: which channel each broadcast goes to (channels.c). */
enum opts_channel_pick { OPTS_CHANNEL_PICK_ROUND_ROBIN = 0, OPTS_CHANNEL_PICK_RANDOM };

/* A parsed ws:// or http:// URL; only IPv4 literal or resolvable hosts. */
struct opts_endpoint {
    char url[512];           /* as given */
    char host_header[300];   /* host[:port] as written, for the Host header */
    char path[512];          /* path and query, "/" when absent */
    struct sockaddr_in addr; /* resolved address */
};

struct opts {
    enum opts_mode mode;
    struct opts_endpoint ws;    /* --url */
    struct opts_endpoint pub;   /* --publish-url */
    uint32_t connections;       /* -n */
    uint32_t processes;         /* -p, resolved from auto */
    uint32_t source_addrs;      /* --source-addrs, resolved from auto */
    struct in_addr source_base; /* --source-base; INADDR_ANY = do not bind */
    double connect_rate;        /* --connect-rate, per second over all processes; 0 = unlimited */
    uint32_t max_pending;       /* --max-pending per process */
    int64_t connect_timeout_ns;
    int64_t hold_ns;
    uint32_t messages; /* -m */
    double rate;       /* -r */
    uint32_t size;     /* -s; the smallest size when size_max is set */
    uint32_t size_max; /* --size-max; 0 = every payload is `size` bytes */
    enum opts_arrivals arrivals;
    uint64_t seed; /* --seed, resolved from random when not given */
    int seed_given;
    double churn;      /* --churn: leaves per second over all processes; 0 = none */
    double churn_pool; /* --churn-pool: share of the connections that come and go */
    int64_t churn_away_ns;
    int64_t settle_ns;
    int64_t drain_timeout_ns;
    int64_t close_timeout_ns;
    int64_t timeout_ns; /* whole-run cap */
    uint32_t pub_connections;
    uint32_t pub_max_requests;
    char pub_content_type[128];
    int n_ws_headers;
    const char *ws_headers[OPTS_MAX_HEADERS];
    int n_pub_headers;
    const char *pub_headers[OPTS_MAX_HEADERS];
    int n_server_pids;
    pid_t server_pids[OPTS_MAX_PIDS];
    pid_t server_tree;          /* 0 = none */
    const char *server_pattern; /* NULL = none */
    int verbose;
    int cdf;    /* --cdf: print the latency distribution */
    int resume; /* --resume: wshub.v1, reconnect and resume (client_resume.c) */
    int64_t reconnect_quick_ns;
    int64_t reconnect_min_ns, reconnect_max_ns;
    const char *events_path; /* --events; NULL = none */
    double stalled;          /* --stalled: share of connections that never read */
    int64_t end_hold_ns;     /* --end-hold */
    int deflate;             /* --deflate: offer permessage-deflate (deflate.c) */
    int pad_json;            /* --pad json: payloads padded with JSON records (deflate.c) */
    uint32_t channels;       /* --channels: subscribers spread over C channels; 0 = off */
    enum opts_channel_pick channel_pick; /* --channel-pick (channels.c) */
    /* derived */
    uint32_t port_range; /* ephemeral ports per source address, from the sysctl */
    uint64_t fd_limit;   /* RLIMIT_NOFILE hard limit */
};

/* Parses argv into o (defaults first). Prints the reason and returns -1 on a bad command line;
 * prints the manual and exits 0 for --help. */
int opts_parse(struct opts *o, int argc, char **argv);

void opts_print_help(void);

#endif /* WSBENCH_OPTS_H */
