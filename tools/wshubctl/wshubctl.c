/* wshubctl.c -- main: command line, finding the admin socket, the verbs and their exit codes.
 *
 *   wshubctl [-c FILE | -s SOCKET] [-t SECONDS] [-H 'Name: value'] COMMAND [ARGS]
 *
 * The socket is found the way every wshub program finds it: --socket if given, else admin_socket
 * (or <run_dir>/admin.sock) from the configuration file, read with the same parser the hub uses
 * (common/conf.c), so an operator who changed run_dir need not repeat it here.
 *
 * Each verb is one request and one answer; what the server says is printed as it said it (its
 * answers are short JSON documents), except `status`, which summarises stats.json for a human.
 * An error answer is reported on stderr as "wshubctl: VERB: STATUS ERROR (DETAIL)". Exit codes
 * separate "the server said no" (1) from "bad command line" (2), "cannot reach the server" (3)
 * and "this server does not have that endpoint" (4), so scripts can tell them apart.
 */
#include "ctl.h"

#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "conf.h"

#define CTL_MAX_STDIN (64u << 20) /* wshub-admin refuses anything above max_message anyway */

struct ctl_opts {
    const char *config;
    const char *socket;
    const char *channel;
    int binary;
    int json;
    int timeout_ms;
    const char *headers[CTL_MAX_HEADERS];
    int n_headers;
    char socket_buf[CONF_PATH_MAX];
    char conf_note[256]; /* why the configuration could not be used, "" if it could */
    char auth_buf[sizeof("Authorization: Bearer ") + sizeof(((struct conf *)0)->admin_token)];
};

static void ctl_usage(FILE *out)
{
    fprintf(out,
            "Usage: wshubctl [OPTIONS] COMMAND [ARGS]\n"
            "\n"
            "Controls a running wshub through its admin FastCGI socket.\n"
            "\n"
            "Commands:\n"
            "  status [--json]        summary of the server's state (GET /admin/stats.json)\n"
            "  health                 exit 0 when the hub and every worker are serving\n"
            "  broadcast [MESSAGE]    send MESSAGE (or standard input) to every client\n"
            "      --channel NAME     only to clients subscribed to channel NAME\n"
            "      --binary           send a binary message (default: UTF-8 text)\n"
            "  restart                rolling restart of the workers\n"
            "  connections            list the open connections\n"
            "\n"
            "Options:\n"
            "  -c, --config FILE      configuration to find the socket in (default %s)\n"
            "  -s, --socket PATH      the admin socket itself (overrides the configuration)\n"
            "  -t, --timeout SECONDS  give up waiting for an answer after SECONDS (default 10)\n"
            "  -H, --header 'N: V'    add a request header (repeatable), e.g. Authorization\n"
            "  -h, --help             print this help\n"
            "  -v, --version          print the version\n"
            "\n"
            "Exit status: 0 success, 1 the server refused or is unhealthy, 2 usage or\n"
            "configuration error, 3 admin socket unreachable, 4 endpoint not supported.\n",
            CONF_DEFAULT_FILE);
}

static int ctl_parse_timeout(const char *s, int *ms)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end != '\0' || v <= 0 || v > 3600)
        return -1;
    *ms = (int)(v * 1000);
    return 0;
}

/* Parses options (anywhere on the line, until "--"). Returns optind, or -1 after printing why,
 * or 0 when --help/--version was handled. */
static int ctl_parse(int argc, char **argv, struct ctl_opts *o)
{
    enum { OPT_CHANNEL = 256, OPT_BINARY, OPT_JSON };
    static const struct option longs[] = {{"config", required_argument, NULL, 'c'},
                                          {"socket", required_argument, NULL, 's'},
                                          {"timeout", required_argument, NULL, 't'},
                                          {"header", required_argument, NULL, 'H'},
                                          {"help", no_argument, NULL, 'h'},
                                          {"version", no_argument, NULL, 'v'},
                                          {"channel", required_argument, NULL, OPT_CHANNEL},
                                          {"binary", no_argument, NULL, OPT_BINARY},
                                          {"json", no_argument, NULL, OPT_JSON},
                                          {NULL, 0, NULL, 0}};
    int c;
    o->timeout_ms = 10000;
    while ((c = getopt_long(argc, argv, "c:s:t:H:hv", longs, NULL)) != -1) {
        switch (c) {
        case 'c':
            o->config = optarg;
            break;
        case 's':
            o->socket = optarg;
            break;
        case 't':
            if (ctl_parse_timeout(optarg, &o->timeout_ms) < 0) {
                fprintf(stderr, "wshubctl: --timeout: expected seconds, got '%s'\n", optarg);
                return -1;
            }
            break;
        case 'H':
            if (o->n_headers == CTL_MAX_HEADERS || strchr(optarg, ':') == NULL) {
                fprintf(stderr, "wshubctl: --header: expected 'Name: value' (at most %d)\n",
                        CTL_MAX_HEADERS);
                return -1;
            }
            o->headers[o->n_headers++] = optarg;
            break;
        case 'h':
            ctl_usage(stdout);
            return 0;
        case 'v':
            printf("wshubctl %s\n", CTL_VERSION);
            return 0;
        case OPT_CHANNEL:
            o->channel = optarg;
            break;
        case OPT_BINARY:
            o->binary = 1;
            break;
        case OPT_JSON:
            o->json = 1;
            break;
        default:
            fprintf(stderr, "Try 'wshubctl --help'.\n");
            return -1;
        }
    }
    return optind;
}

/* 1 when a header named `name` was given with -H. */
static int ctl_has_header(const struct ctl_opts *o, const char *name)
{
    size_t n = strlen(name);
    for (int i = 0; i < o->n_headers; i++)
        if (strncasecmp(o->headers[i], name, n) == 0 && o->headers[i][n] == ':')
            return 1;
    return 0;
}

/* The configured admin_token as an Authorization header, unless -H gave one. */
static void ctl_add_token(struct ctl_opts *o, const struct conf *c)
{
    if (c->admin_token[0] == '\0' || ctl_has_header(o, "Authorization") ||
        o->n_headers == CTL_MAX_HEADERS)
        return;
    snprintf(o->auth_buf, sizeof(o->auth_buf), "Authorization: Bearer %s", c->admin_token);
    o->headers[o->n_headers++] = o->auth_buf;
}

/* Sets o->socket from the configuration unless --socket was given, and the token from it.
 * Returns 0 or -1. */
static int ctl_load_conf(struct ctl_opts *o)
{
    static struct conf c;
    char err[512];
    const char *file = o->config;
    if (o->socket != NULL && o->config == NULL)
        return 0;
    if (file == NULL && access(CONF_DEFAULT_FILE, F_OK) == 0) {
        if (access(CONF_DEFAULT_FILE, R_OK) == 0)
            file = CONF_DEFAULT_FILE;
        else /* said only if the default socket then fails too (ctl_do) */
            snprintf(o->conf_note, sizeof(o->conf_note),
                     "%s was not readable (%s), so the default socket was tried; use -s or -c",
                     CONF_DEFAULT_FILE, strerror(errno));
    }
    conf_defaults(&c);
    if ((file != NULL && conf_load_file(&c, file, err, sizeof(err)) < 0) ||
        conf_finalize(&c, err, sizeof(err)) < 0) {
        fprintf(stderr, "wshubctl: %s\n", err);
        return -1;
    }
    if (o->socket == NULL) {
        snprintf(o->socket_buf, sizeof(o->socket_buf), "%s", c.admin_socket);
        o->socket = o->socket_buf;
    }
    ctl_add_token(o, &c);
    return 0;
}

/* Reads standard input whole. Returns a malloc'ed buffer or NULL (message printed). */
static char *ctl_read_stdin(size_t *len)
{
    size_t cap = 65536;
    char *buf = malloc(cap);
    *len = 0;
    for (;;) {
        if (buf == NULL) {
            fprintf(stderr, "wshubctl: out of memory reading standard input\n");
            return NULL;
        }
        ssize_t n = read(STDIN_FILENO, buf + *len, cap - *len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            fprintf(stderr, "wshubctl: read(stdin) failed: %s\n", strerror(errno));
            free(buf);
            return NULL;
        }
        if (n == 0)
            return buf;
        *len += (size_t)n;
        if (*len == cap) {
            if (cap >= CTL_MAX_STDIN) {
                fprintf(stderr, "wshubctl: standard input larger than %u bytes\n", CTL_MAX_STDIN);
                free(buf);
                return NULL;
            }
            char *bigger = realloc(buf, cap * 2);
            if (bigger == NULL)
                free(buf);
            buf = bigger;
            cap *= 2;
        }
    }
}

/* Reports an error answer: "wshubctl: broadcast: 413 payload too large (...)". */
static void ctl_report_error(const char *verb, const struct ctl_response *r)
{
    const char *error = ctl_json_str(r->body, "error", NULL);
    const char *detail_v = ctl_json_member(r->body, "detail");
    char detail[512] = "";
    if (detail_v != NULL && !ctl_json_is_null(detail_v) &&
        ctl_json_scalar(detail_v, detail, sizeof(detail)) < 0 &&
        ctl_json_raw(detail_v, detail, sizeof(detail)) < 0) /* an object: as written */
        detail[0] = '\0';
    if (error != NULL)
        fprintf(stderr, "wshubctl: %s: %d %s%s%s%s\n", verb, r->status, error,
                detail[0] ? " (" : "", detail, detail[0] ? ")" : "");
    else
        fprintf(stderr, "wshubctl: %s: status %d: %.*s\n", verb, r->status,
                (int)strcspn(r->body, "\n"), r->body);
}

/* Prints an answer's body, ending it with a newline. */
static void ctl_print_body(const struct ctl_response *r)
{
    fwrite(r->body, 1, r->body_len, stdout);
    if (r->body_len > 0 && r->body[r->body_len - 1] != '\n')
        putchar('\n');
}

/* One request; maps the outcome to an exit code. `print` receives 2xx answers. */
static int ctl_do(const struct ctl_opts *o, const char *verb, struct ctl_request *req,
                  int (*print)(const struct ctl_opts *, const struct ctl_response *))
{
    struct ctl_response r;
    char err[512];
    int unreachable, rc;
    req->timeout_ms = o->timeout_ms;
    memcpy(req->headers, o->headers, sizeof(o->headers[0]) * (size_t)o->n_headers);
    req->n_headers = o->n_headers;
    if (ctl_fcgi_request(o->socket, req, &r, &unreachable, err, sizeof(err)) < 0) {
        fprintf(stderr, "wshubctl: %s: %s\n", verb, err);
        if (unreachable && o->conf_note[0] != '\0')
            fprintf(stderr, "wshubctl: %s\n", o->conf_note);
        return unreachable ? CTL_EXIT_UNREACHABLE : CTL_EXIT_REFUSED;
    }
    if (r.stderr_text != NULL)
        fprintf(stderr, "wshubctl: %s: wshub-admin wrote to stderr: %s\n", verb, r.stderr_text);
    if (r.status >= 200 && r.status < 300) {
        rc = print(o, &r);
    } else if (r.status == 404 && strncmp(req->uri, "/admin/broadcast", 16) != 0) {
        fprintf(stderr,
                "wshubctl: %s: this wshub-admin does not support %s %s (404): it is older "
                "than this wshubctl\n",
                verb, req->method, req->uri);
        rc = CTL_EXIT_UNSUPPORTED;
    } else {
        ctl_report_error(verb, &r);
        rc = CTL_EXIT_REFUSED;
    }
    ctl_response_free(&r);
    return rc;
}

static int print_body(const struct ctl_opts *o, const struct ctl_response *r)
{
    (void)o;
    ctl_print_body(r);
    return CTL_EXIT_OK;
}

static int print_status(const struct ctl_opts *o, const struct ctl_response *r)
{
    if (o->json || ctl_status_print(stdout, r->body) < 0)
        ctl_print_body(r);
    return CTL_EXIT_OK;
}

/* "/admin/broadcast?channel=<NAME, percent-encoded>" into buf. */
static void ctl_broadcast_uri(const char *channel, char *buf, size_t len)
{
    size_t n = (size_t)snprintf(buf, len, "/admin/broadcast%s", channel ? "?channel=" : "");
    for (const char *p = channel; p != NULL && *p != '\0' && n + 4 < len; p++) {
        unsigned char c = (unsigned char)*p;
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            strchr("-._~:", c) != NULL)
            buf[n++] = (char)c;
        else
            n += (size_t)snprintf(buf + n, len - n, "%%%02X", c);
    }
    buf[n] = '\0';
}

static int ctl_broadcast(const struct ctl_opts *o, int argc, char **argv)
{
    char uri[512];
    size_t len;
    char *stdin_buf = NULL;
    const char *msg;
    if (argc > 1) {
        fprintf(stderr, "wshubctl: broadcast: one MESSAGE argument at most (quote it)\n");
        return CTL_EXIT_USAGE;
    }
    if (argc == 1 && strcmp(argv[0], "-") != 0) {
        msg = argv[0];
        len = strlen(msg);
    } else if (isatty(STDIN_FILENO)) {
        fprintf(stderr, "wshubctl: broadcast: give the message as an argument or on standard "
                        "input\n");
        return CTL_EXIT_USAGE;
    } else if ((msg = stdin_buf = ctl_read_stdin(&len)) == NULL) {
        return CTL_EXIT_USAGE;
    }
    ctl_broadcast_uri(o->channel, uri, sizeof(uri));
    struct ctl_request req = {
        .method = "POST",
        .uri = uri,
        .content_type = o->binary ? "application/octet-stream" : "text/plain; charset=utf-8",
        .body = msg,
        .body_len = len,
    };
    int rc = ctl_do(o, "broadcast", &req, print_body);
    free(stdin_buf);
    return rc;
}

/* Runs one verb. argv[0] is the verb. */
static int ctl_run(const struct ctl_opts *o, int argc, char **argv)
{
    const char *verb = argv[0];
    struct ctl_request req = {.method = "GET"};
    if (strcmp(verb, "broadcast") == 0)
        return ctl_broadcast(o, argc - 1, argv + 1);
    if (argc > 1) {
        fprintf(stderr, "wshubctl: %s takes no arguments\n", verb);
        return CTL_EXIT_USAGE;
    }
    if (strcmp(verb, "status") == 0) {
        req.uri = "/admin/stats.json";
        return ctl_do(o, verb, &req, print_status);
    }
    if (strcmp(verb, "health") == 0) {
        req.uri = "/healthz";
        return ctl_do(o, verb, &req, print_body);
    }
    if (strcmp(verb, "restart") == 0) {
        req.method = "POST";
        req.uri = "/admin/workers/restart";
        req.body = "";
        req.body_len = 0;
        return ctl_do(o, verb, &req, print_body);
    }
    if (strcmp(verb, "connections") == 0) {
        req.uri = "/admin/connections";
        return ctl_do(o, verb, &req, print_body);
    }
    fprintf(stderr, "wshubctl: unknown command '%s'. Try 'wshubctl --help'.\n", verb);
    return CTL_EXIT_USAGE;
}

int main(int argc, char **argv)
{
    static struct ctl_opts o;
    int first = ctl_parse(argc, argv, &o);
    if (first <= 0)
        return first == 0 ? CTL_EXIT_OK : CTL_EXIT_USAGE;
    if (first >= argc) {
        ctl_usage(stderr);
        return CTL_EXIT_USAGE;
    }
    if (o.channel != NULL && strcmp(argv[first], "broadcast") != 0) {
        fprintf(stderr, "wshubctl: --channel belongs to broadcast\n");
        return CTL_EXIT_USAGE;
    }
    if (ctl_load_conf(&o) < 0)
        return CTL_EXIT_USAGE;
    return ctl_run(&o, argc - first, argv + first);
}
