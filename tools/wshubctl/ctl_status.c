/* ctl_status.c -- `wshubctl status`: a few lines an operator reads at a glance, from stats.json.
 *
 * Only fields that stats.json documents are used (admin-cgi/admin_stats.c); a field a future
 * version drops prints as "?" instead of failing, and `wshubctl status --json` prints the whole
 * document for anything not summarised here. Sizes are shown 1024-based like the configuration.
 */
#include "ctl.h"

#include <stdlib.h>
#include <string.h>

/* 1536 -> "1.5 KiB" into buf. */
static const char *human_bytes(const char *text, char *buf, size_t len)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    char *end;
    double v = strtod(text, &end);
    int u = 0;
    if (end == text)
        return "?";
    while (v >= 1024 && u < 4) {
        v /= 1024;
        u++;
    }
    snprintf(buf, len, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
    return buf;
}

/* 3725.2 -> "1h02m05s". */
static const char *human_duration(const char *text, char *buf, size_t len)
{
    char *end;
    double s = strtod(text, &end);
    if (end == text || s < 0)
        return "?";
    unsigned long t = (unsigned long)s;
    if (t < 60)
        snprintf(buf, len, "%.1fs", s);
    else if (t < 3600)
        snprintf(buf, len, "%lum%02lus", t / 60, t % 60);
    else if (t < 86400)
        snprintf(buf, len, "%luh%02lum%02lus", t / 3600, t / 60 % 60, t % 60);
    else
        snprintf(buf, len, "%lud%02luh%02lum", t / 86400, t / 3600 % 24, t / 60 % 60);
    return buf;
}

static void status_workers(FILE *out, const char *workers)
{
    char up[32];
    fprintf(out, "\n%-5s %-8s %-4s %-9s %8s %10s %12s %10s %8s  %s\n", "slot", "pid", "gen",
            "state", "conns", "accepted", "messages", "uptime", "restarts", "last exit");
    for (int i = 0;; i++) {
        const char *w = ctl_json_item(workers, i);
        if (w == NULL)
            break;
        const char *exit_v = ctl_json_member(w, "last_exit");
        fprintf(out, "%-5s %-8s %-4s %-9s %8s ", ctl_json_str(w, "slot", "?"),
                ctl_json_str(w, "pid", "?"), ctl_json_str(w, "generation", "?"),
                ctl_json_str(w, "state", "?"), ctl_json_str(w, "connections", "?"));
        fprintf(out, "%10s %12s %10s %8s  %s\n", ctl_json_str(w, "accepted", "?"),
                ctl_json_str(w, "messages_out", "?"),
                ctl_json_is_null(ctl_json_member(w, "uptime_s"))
                    ? "-"
                    : human_duration(ctl_json_str(w, "uptime_s", "?"), up, sizeof(up)),
                ctl_json_str(w, "restarts", "?"),
                exit_v == NULL || ctl_json_is_null(exit_v) ? "-"
                                                           : ctl_json_str(w, "last_exit", "?"));
    }
}

static int status_running_workers(const char *workers, const char *generation)
{
    int n = 0;
    for (int i = 0;; i++) {
        const char *w = ctl_json_item(workers, i);
        if (w == NULL)
            return n;
        n += strcmp(ctl_json_str(w, "state", ""), "running") == 0 &&
             strcmp(ctl_json_str(w, "generation", ""), generation) == 0;
    }
}

int ctl_status_print(FILE *out, const char *j)
{
    char b1[32], b2[32], up[32], gen[32];
    const char *workers = ctl_json_member(j, "workers");
    if (ctl_json_member(j, "hub") == NULL || workers == NULL)
        return -1;
    snprintf(gen, sizeof(gen), "%s", ctl_json_str(j, "hub.generation", "?"));

    fprintf(out, "instance:     %s\n", ctl_json_str(j, "instance", "?"));
    fprintf(out, "hub:          %s, pid %s, up %s, generation %s\n",
            ctl_json_str(j, "hub.state", "?"), ctl_json_str(j, "hub.pid", "?"),
            human_duration(ctl_json_str(j, "hub.uptime_s", "?"), up, sizeof(up)), gen);
    fprintf(out, "workers:      %d of %s running\n", status_running_workers(workers, gen),
            ctl_json_str(j, "hub.workers_configured", "?"));
    fprintf(out, "connections:  %s open (table %s of %s rows), %s accepted since start\n",
            ctl_json_str(j, "totals.connections", "?"), ctl_json_str(j, "connections.in_use", "?"),
            ctl_json_str(j, "connections.capacity", "?"), ctl_json_str(j, "totals.accepted", "?"));
    fprintf(out, "broadcasts:   %s published (%s), next seq %s, %s rejected\n",
            ctl_json_str(j, "ring.published", "?"),
            human_bytes(ctl_json_str(j, "ring.published_bytes", "?"), b1, sizeof(b1)),
            ctl_json_str(j, "ring.next_seq", "?"),
            ctl_json_str(j, "ring.broadcasts_rejected", "?"));
    fprintf(out, "delivered:    %s messages (%s) in %s writes\n",
            ctl_json_str(j, "totals.messages_out", "?"),
            human_bytes(ctl_json_str(j, "totals.bytes_out", "?"), b1, sizeof(b1)),
            ctl_json_str(j, "totals.writes", "?"));
    fprintf(out, "problems:     %s slow consumers closed, %s ring overruns\n",
            ctl_json_str(j, "totals.slow_consumers", "?"),
            ctl_json_str(j, "totals.ring_overruns", "?"));
    fprintf(out, "ring:         %s of %s in use\n",
            human_bytes(ctl_json_str(j, "ring.used_bytes", "?"), b1, sizeof(b1)),
            human_bytes(ctl_json_str(j, "ring.capacity", "?"), b2, sizeof(b2)));
    status_workers(out, workers);
    return 0;
}
