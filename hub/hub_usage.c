/* hub_usage.c -- `wshub --help` and `wshub -v`.
 *
 * The help text is a short manual page. The option list is not written here: it is printed from
 * the option table in common/conf.c (conf_print_options), so names, defaults and descriptions can
 * never drift from what the parser accepts. Everything else (signals, exit codes, files) must be
 * kept true by hand when the hub's behaviour changes.
 *
 * -v also reports the libraries the server runs on. The hub links none of them (libwebsockets
 * and libev live in wshub-worker, libfcgi -- which has no version call -- in wshub-admin), so
 * rather than linking them here just to ask their versions, it runs `wshub-worker -v` and
 * `wshub-admin -v` from its own directory: what is printed is what the installed children
 * really run with.
 */
#include <errno.h>
#include <gnu/libc-version.h>
#include <libgen.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "hub.h"

extern char **environ;

static const char usage_head[] =
    "NAME\n"
    "  wshub - WebSocket broadcast server: the supervising (hub) process\n"
    "\n"
    "SYNOPSIS\n"
    "  wshub [-c FILE] [--option=value ...] [-t | -T] [-v] [-h]\n"
    "\n"
    "DESCRIPTION\n"
    "  wshub reads its configuration, creates the shared-memory segment /wshub-<instance>,\n"
    "  opens the listening socket once and starts `workers` wshub-worker processes that share\n"
    "  it, plus one wshub-admin FastCGI process on the admin socket. It then supervises them:\n"
    "  a worker that dies has its connection rows freed and is respawned (at once the first\n"
    "  time, then with a doubling delay while it keeps dying within 5 s of starting). A child\n"
    "  exiting with code 2 reports a fatal configuration error and is not respawned; when no\n"
    "  worker is left the hub stops. wshub stays in the foreground and logs to stderr (or\n"
    "  log_file); run it under systemd or another supervisor.\n"
    "\n"
    "  Settings come from built-in defaults, then the configuration file, then the command\n"
    "  line. The hub passes the same file and command-line options on to its children.\n"
    "\n"
    "COMMAND-LINE FLAGS\n"
    "  -c FILE, --config=FILE   read FILE (default: " CONF_DEFAULT_FILE " if it exists)\n"
    "  -t                       check the configuration (and that the child binaries are\n"
    "                           executable) and exit; starts nothing\n"
    "  -T                       check the configuration, print the effective one, and exit\n"
    "  -v, --version            print the version and exit\n"
    "  -h, --help               print this help and exit\n"
    "\n"
    "OPTIONS\n"
    "  Every option can be set in the file as `name value` or on the command line as\n"
    "  --name=value or --name value ('-' and '_' are interchangeable). Sizes take k, m, g\n"
    "  suffixes (1024-based); durations take ms, s, m, h (plain numbers are seconds).\n"
    "\n";

static const char usage_tail[] =
    "\n"
    "SIGNALS\n"
    "  TERM, INT   graceful stop: broadcasts are refused (503), workers close their clients\n"
    "              with 1001 and exit; any child still running shutdown_timeout + 2 s later is\n"
    "              killed. A second TERM, INT or QUIT kills every child at once.\n"
    "  QUIT        the same graceful stop (nginx's \"graceful quit\"; TERM is graceful too,\n"
    "              because workers always deliver what is already in the ring).\n"
    "  HUP         rolling restart: re-read the configuration (same file and overrides; if it\n"
    "              is invalid, the error is logged and nothing changes), start a new generation\n"
    "              of workers (a freshly exec'd wshub-worker binary, so an upgraded one is picked\n"
    "              up) and, once it serves, tell the old workers to drain: they stop accepting,\n"
    "              deliver what is queued and close their clients with 1012 spread over\n"
    "              restart_spread. The listening socket stays open: no connection is refused.\n"
    "              The admin process is replaced too. Options that shape the segment or the\n"
    "              sockets (instance, listen, max_connections, max_message, ring_size, shm_*,\n"
    "              run_dir, admin_socket*, admin_threads, pid_file) keep their running value,\n"
    "              with a warning. POST /admin/workers/restart does the same.\n"
    "  USR1        reopen log_file (after logrotate) and forward USR1 to every child.\n"
    "  USR2        binary upgrade in place: exec the wshub binary at the path this hub was\n"
    "              started as (a package upgrade replaced it), handing it the listening\n"
    "              socket, the admin socket and the shared-memory segment. The new hub starts\n"
    "              its own workers (wshub-worker beside the new wshub); once they serve it\n"
    "              owns the instance, the old workers close their clients with 1012 over\n"
    "              restart_spread and the old hub exits. The pid file is <pid_file>.oldbin\n"
    "              meanwhile. If the new binary fails before it serves, the old hub serves\n"
    "              on unchanged. Same segment layout required. See docs/upgrade.md.\n"
    "  CHLD        handled internally (reaping, respawning).\n"
    "\n"
    "EXIT STATUS\n"
    "  0  clean stop (or -t/-T/-v/-h succeeded)\n"
    "  1  run-time failure: a child had to be killed on stop, or every worker exited fatally\n"
    "  2  bad configuration or start-up failure (port in use, segment, sockets, binaries)\n"
    "\n"
    "FILES\n"
    "  " CONF_DEFAULT_FILE "      default configuration file\n"
    "  /dev/shm/wshub-<instance>  the shared-memory segment (removed at a clean stop)\n"
    "  <pid_file>.oldbin          the old hub's pid file during a binary upgrade (USR2)\n"
    "  <run_dir>/admin.sock       admin FastCGI socket (admin_socket)\n"
    "  wshub-worker, wshub-admin  child binaries, looked up beside wshub unless worker_binary /\n"
    "                             admin_binary say otherwise\n"
    "\n"
    "EXAMPLE\n"
    "  wshub -c /etc/wshub/wshub.conf -t\n"
    "  wshub -c /etc/wshub/wshub.conf --workers=4 --pid-file=/run/wshub/wshub.pid\n"
    "  kill -USR1 $(cat /run/wshub/wshub.pid)     # after rotating the log\n"
    "  kill -HUP $(cat /run/wshub/wshub.pid)      # reload: rolling restart of the workers\n"
    "  kill -USR2 $(cat /run/wshub/wshub.pid)     # after installing a new wshub: upgrade\n";

void hub_usage(FILE *out)
{
    fputs(usage_head, out);
    conf_print_options(out);
    fputs(usage_tail, out);
}

/* Runs `<dir of wshub>/name -v` with our stdout; says so when it cannot. */
static void hub_version_of(FILE *out, const char *name)
{
    char self[PATH_MAX], path[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n < 0) {
        fprintf(out, "%s: version unknown: readlink(/proc/self/exe) failed: %s\n", name,
                strerror(errno));
        return;
    }
    self[n] = '\0';
    snprintf(path, sizeof(path), "%s/%s", dirname(self), name);
    char *argv[] = {path, "-v", NULL};
    pid_t pid;
    int status = 0;
    fflush(out);
    int rc = posix_spawn(&pid, path, NULL, NULL, argv, environ);
    if (rc != 0) {
        fprintf(out, "%s: version unknown: cannot run %s: %s\n", name, path, strerror(rc));
        return;
    }
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fprintf(out, "%s: version unknown: %s -v failed (wait status 0x%x)\n", name, path,
                (unsigned)status);
}

void hub_version(FILE *out)
{
    fprintf(out, "wshub %s (shared-memory layout %d, glibc %s)\n", WSHUB_VERSION,
            SHM_LAYOUT_VERSION, gnu_get_libc_version());
    hub_version_of(out, "wshub-worker");
    hub_version_of(out, "wshub-admin");
}
