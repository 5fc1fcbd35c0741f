/* ctl.h -- wshubctl: the operator's command for a running wshub, over the admin FastCGI socket.
 *
 * wshub-admin speaks FastCGI, not HTTP, on its Unix socket, so wshubctl is a small FastCGI
 * *client* (libfcgi has only the application side): it sends the CGI variables a web server
 * would (REQUEST_METHOD, REQUEST_URI, CONTENT_TYPE, ...) and reads the CGI response back. Going
 * straight to the socket means an operator needs neither curl nor a web server in front, and
 * the socket's owner, group and mode (admin_socket_mode, admin_socket_group) decide who may use
 * it, exactly as for the web server.
 *
 *   wshubctl.c   main: command line, finding the socket, the verbs, exit codes
 *   ctl_fcgi.c   one FastCGI request/response over a Unix socket (records encoded by hand)
 *   ctl_json.c   a small read-only JSON walker for the answers (stats.json, {"error": ...})
 *   ctl_status.c the `status` summary printed from stats.json
 */
#ifndef WSHUB_CTL_H
#define WSHUB_CTL_H

#include <stddef.h>
#include <stdio.h>

#define CTL_VERSION "0.1.0" /* keep equal to WSHUB_VERSION (hub/hub.h) */

/* Exit codes (documented in wshubctl(8)). */
enum ctl_exit {
    CTL_EXIT_OK = 0,
    CTL_EXIT_REFUSED = 1,     /* the server answered with an error status, or is unhealthy */
    CTL_EXIT_USAGE = 2,       /* bad command line or configuration file */
    CTL_EXIT_UNREACHABLE = 3, /* the admin socket cannot be reached: not running, permissions */
    CTL_EXIT_UNSUPPORTED = 4  /* this wshub-admin does not have the endpoint (404) */
};

#define CTL_MAX_HEADERS 16

/* One request. Headers are "Name: value" strings, passed as HTTP_NAME CGI variables. */
struct ctl_request {
    const char *method;
    const char *uri; /* path and optional ?query */
    const char *content_type;
    const void *body;
    size_t body_len;
    const char *headers[CTL_MAX_HEADERS];
    int n_headers;
    int timeout_ms;
};

/* The CGI response: Status header (200 when absent), Content-Type, and the body. */
struct ctl_response {
    int status;
    char content_type[128];
    char *body; /* NUL-terminated, malloc'ed; free with ctl_response_free */
    size_t body_len;
    char *stderr_text; /* FCGI_STDERR output of the application, if any */
};

/* ctl_fcgi.c: sends `req` to the FastCGI socket at `path`. Returns 0, or -1 with a message in
 * err and *unreachable set when the socket could not be connected to at all. */
int ctl_fcgi_request(const char *path, const struct ctl_request *req, struct ctl_response *resp,
                     int *unreachable, char *err, size_t errlen);
void ctl_response_free(struct ctl_response *resp);

/* ctl_json.c: pointers into a JSON text, no allocation. `v` points at a value (leading
 * whitespace allowed). Each returns NULL when the shape does not match. */
const char *ctl_json_member(const char *v, const char *key); /* object member's value */
const char *ctl_json_item(const char *v, int index);         /* array element */
const char *ctl_json_path(const char *v, const char *path);  /* "hub.pid", "workers.0.state" */
/* Copies a scalar (string unescaped, number or literal as written) into out. Returns 0 or -1. */
int ctl_json_scalar(const char *v, char *out, size_t outlen);
/* The scalar at `path` as text, or `dflt` when absent. The text lives in one of 8 rotating
 * static buffers: use it at once (at most 8 per expression), copy it to keep it. */
const char *ctl_json_str(const char *v, const char *path, const char *dflt);
/* Copies any value's JSON text as written (objects and arrays included). Returns 0 or -1. */
int ctl_json_raw(const char *v, char *out, size_t outlen);
int ctl_json_is_null(const char *v);

/* ctl_status.c: prints the human summary of a stats.json body. Returns 0 or -1 (not stats). */
int ctl_status_print(FILE *out, const char *stats_json);

#endif /* WSHUB_CTL_H */
