/* opts.c -- command-line parsing and the --help manual for wsbench (see opts.h).
 *
 * Every option is a long option parsed by getopt_long; the manual below lists each with its
 * default, and `make test` checks that every long option appears in it. Values that depend on
 * the machine (processes, source addresses) are resolved here, once, so the report can print
 * what was actually used.
 */
#include "opts.h"
#include "channels.h"
#include "deflate.h"
#include "proto.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define OPTS_PER_PROCESS_DEFAULT 15000 /* connections per client process when -p is auto */
#define OPTS_DEFAULT_URL         "ws://127.0.0.1:8080/ws"
#define OPTS_DEFAULT_PUBLISH_URL "http://127.0.0.1:8080/admin/broadcast"

static const char opts_manual[] =
    "NAME\n"
    "    wsbench - WebSocket load generator: idle-connection hold and broadcast fan-out\n"
    "\n"
    "SYNOPSIS\n"
    "    wsbench hold   [OPTIONS]\n"
    "    wsbench fanout [OPTIONS]\n"
    "\n"
    "DESCRIPTION\n"
    "    wsbench opens N WebSocket client connections to a ws:// URL from P forked processes\n"
    "    and K loopback source addresses, completes the RFC 6455 handshake on each (a random\n"
    "    Sec-WebSocket-Key; the status must be 101 and Sec-WebSocket-Accept must match),\n"
    "    answers every ping with a masked pong carrying the same payload and every close frame\n"
    "    with a masked close echo, and counts failures by reason. It prints one JSON object on\n"
    "    stdout; progress and errors go to stderr. Every run is bounded: each connection\n"
    "    attempt by --connect-timeout, the delivery wait by --drain-timeout, the whole run by\n"
    "    --timeout.\n"
    "\n"
    "    hold     Connect N clients, hold them --hold seconds, report how many survived and\n"
    "             the server's memory (RSS and PSS summed over its processes) before connecting\n"
    "             and after all connected, and PSS per connection.\n"
    "\n"
    "    fanout   Connect N clients, wait --settle, then publish --messages broadcasts at\n"
    "             --rate per second by HTTP POST to --publish-url, pipelined on keep-alive\n"
    "             HTTP/1.1 connections without waiting for answers (answers are checked as they\n"
    "             come; non-2xx are counted). Every subscriber parses each message, records its\n"
    "             latency and counts loss, duplicates and reordering per connection.\n"
    "\n"
    "CONNECTIONS\n"
    "    --url URL\n"
    "        ws://HOST[:PORT][/PATH] to connect to (IPv4). Default: ws://127.0.0.1:8080/ws\n"
    "    -n, --connections N\n"
    "        Client connections to open. Default: 1000.\n"
    "    -p, --processes P\n"
    "        Client processes; connections are split evenly. Each process raises its open-file\n"
    "        soft limit to the hard limit and must stay under it. Default: auto, ceil(N/15000)\n"
    "        and at least 2 (when N >= 2), so the client has a process per core here.\n"
    "    --source-addrs K\n"
    "        Bind connection i to source address BASE + (i mod K) before connecting, so that\n"
    "        ephemeral ports never run out (about 28,000 per source address with the default\n"
    "        net.ipv4.ip_local_port_range). Default: auto, enough addresses to keep each under\n"
    "        a quarter of the port range: connect() searches for a free port by probing the\n"
    "        kernel's established table, and that search grows with the ports already in use\n"
    "        (at 60% use, 50,000 connects cost ~0.6 ms of kernel time each).\n"
    "    --source-base ADDR\n"
    "        First source address. 0.0.0.0 disables binding (the kernel picks). Default:\n"
    "        127.0.0.1.\n"
    "    --connect-rate R\n"
    "        New connections per second over all processes; 0 = as fast as possible.\n"
    "        Default: 5000.\n"
    "    --max-pending N\n"
    "        Handshakes in flight per process; keeps the server's accept queue from\n"
    "        overflowing. Default: 500.\n"
    "    --connect-timeout DURATION\n"
    "        Limit for TCP connect plus handshake; a connection past it fails as \"timeout\".\n"
    "        Default: 10s.\n"
    "    --ws-header 'Name: value'\n"
    "        Extra header in the upgrade request (Origin, Authorization, ...). Repeatable, up to\n"
    "        16.\n"
    "    --close-timeout DURATION\n"
    "        At the end each connection sends a close frame and waits this long for the\n"
    "        server's close before the socket is closed anyway. Default: 2s.\n"
    "\n"
    "HOLD\n"
    "    --hold DURATION\n"
    "        How long to hold the connections once all are connected. Default: 10s.\n"
    "\n"
    "FANOUT\n"
    "    --publish-url URL\n"
    "        http://HOST[:PORT][/PATH] that broadcasts the POST body to every subscriber.\n"
    "        Default: http://127.0.0.1:8080/admin/broadcast\n"
    "    -m, --messages M\n"
    "        Broadcasts to publish. Default: 100.\n"
    "    -r, --rate R\n"
    "        Broadcasts per second (a late tick sends what is due at once). Default: 10.\n"
    "    --arrivals fixed|poisson\n"
    "        fixed: one broadcast every 1/R seconds. poisson: exponentially distributed gaps\n"
    "        of mean 1/R (a Poisson process, as independent publishers produce), drawn from\n"
    "        --seed. Default: fixed.\n"
    "    -s, --size S\n"
    "        Payload bytes. Payloads are ASCII JSON,\n"
    "            {\"r\":\"RUNID\",\"s\":SEQ,\"t\":NS,\"p\":\"xxxx...\"}\n"
    "        with the run id, the publisher's sequence number (0..M-1) and the CLOCK_MONOTONIC\n"
    "        time of the POST in nanoseconds, padded to S bytes; a smaller S gives the unpadded\n"
    "        minimum (about 55 bytes). Default: 64.\n"
    "    --size-max S2\n"
    "        Draw each payload's size uniformly from S..S2 instead. The size of broadcast SEQ\n"
    "        is a hash of --seed and SEQ, so every subscriber checks the exact size it must\n"
    "        receive (bad_size). Default: 0 (every payload S bytes).\n"
    "    --seed N\n"
    "        Seed of the Poisson gaps, the payload sizes and the churn choices; the same seed\n"
    "        gives the same schedule and sizes. Default: random (printed in params).\n"
    "    --settle DURATION\n"
    "        Pause between the last connection and the first POST. Default: 1s.\n"
    "    --drain-timeout DURATION\n"
    "        After the last POST is answered, how long to wait for every subscriber to receive\n"
    "        every accepted broadcast before counting the rest as lost. Default: 10s.\n"
    "    --pub-connections C\n"
    "        Keep-alive HTTP/1.1 connections the POSTs are spread over, round robin.\n"
    "        Default: 1.\n"
    "    --pub-max-requests N\n"
    "        Requests sent on one publishing connection before it is replaced by a new one (the\n"
    "        last carries Connection: close); stays under nginx's keepalive_requests (1000) and\n"
    "        Apache's MaxKeepAliveRequests (100). Default: 100.\n"
    "    --pub-content-type TYPE\n"
    "        Content-Type of the POSTs. Default: text/plain.\n"
    "    --pub-header 'Name: value'\n"
    "        Extra header on every POST (Authorization, ...). Repeatable, up to 16.\n"
    "\n"
    "CHURN (hold and fanout)\n"
    "    --churn R\n"
    "        During the measured phase (hold: the whole hold; fanout: until the last POST is\n"
    "        answered), R connections per second over all processes leave -- a close frame\n"
    "        with 1001, then the socket is closed when the server answers -- and each comes\n"
    "        back as a new connection --churn-away later. Leavers are drawn at random from the\n"
    "        churn pool. Default: 0 (no churn).\n"
    "    --churn-pool F\n"
    "        Share of the connections (0 < F <= 1, spread evenly) that come and go; the others\n"
    "        stay for the whole run and alone make up `deliveries` (subscribers, expected,\n"
    "        lost). Pool connections are accounted per session under `churn`. Default: 0.1.\n"
    "    --churn-away DURATION\n"
    "        Time between a leave and the new connection. A close the server has not answered\n"
    "        by then is cut (counted). Default: 1s.\n"
    "\n"
    "RESUME (hold and fanout; docs/protocol.md)\n"
    "    --resume\n"
    "        Speak wshub.v1: offer Sec-WebSocket-Protocol: wshub.v1 (the 101 must select it),\n"
    "        parse every message's header (w welcome, m <seq>, g gap) and keep, per client,\n"
    "        the epoch and the last sequence. A client whose connection ends for any reason\n"
    "        before the end of the run (close frame, EOF, reset, bad frame) reconnects to\n"
    "        --url with ?since=<last>&epoch=<epoch> and so on until it is welcomed again; the\n"
    "        -n connections are then logical clients, each checked across all its\n"
    "        connections: every broadcast the server acknowledged (the seq in each POST's\n"
    "        answer, {\"seq\":N}) exactly once, sequence numbers strictly increasing, every\n"
    "        welcome what was asked for. Gaps (g messages, welcomes saying expired or reset)\n"
    "        are counted apart from loss: a broadcast missing inside an announced gap is\n"
    "        `gapped`, one missing without notice is `lost`. In fanout mode a client is\n"
    "        complete when its position reaches the highest acknowledged seq. Initial\n"
    "        connections that fail are not retried (they count under connections.failed).\n"
    "    --reconnect-quick DURATION\n"
    "        After Close 1012 (rolling restart), wait uniformly 0..DURATION. Default: 100ms.\n"
    "    --reconnect-min DURATION, --reconnect-max DURATION\n"
    "        After any other end, and after each failed attempt: wait uniformly d/2..d with\n"
    "        d = min(max, min * 2^failed attempts) (exponential backoff, jittered).\n"
    "        Defaults: 250ms, 5s.\n"
    "    --events FILE\n"
    "        Append what each client went through to FILE as text lines, one per event,\n"
    "        times in CLOCK_MONOTONIC nanoseconds (comparable with other processes' clocks):\n"
    "          welcome CONN STATUS CAUSE CODE T_LOST T_ATTEMPT T_WELCOME ATTEMPTS\n"
    "          fail CONN REASON T          (a reconnect attempt that failed)\n"
    "          gap CONN FROM TO REASON T   (a g message, or an expired welcome: reason expired)\n"
    "          dup CONN SEQ INDEX T        (a broadcast received twice)\n"
    "          regress CONN POSITION SEQ T (a seq not above the client's position)\n"
    "          missing CONN SEQ INDEX      (an acknowledged broadcast never received)\n"
    "        CAUSE is restart (1012/1001), lost (no close frame) or other; CODE 1006 means no\n"
    "        close frame. dup, regress and missing lines stop at 1000 per process.\n"
    "\n"
    "SLOW CONSUMERS\n"
    "    --stalled F\n"
    "        Share of the connections (0 <= F < 1, spread evenly) that never read after the\n"
    "        handshake, with a 4 KiB receive buffer: clients that stopped reading. They are\n"
    "        left out of `deliveries` and latency, which then describe the readers only.\n"
    "        Default: 0.\n"
    "\n"
    "COMPRESSION (deflate.c)\n"
    "    --deflate\n"
    "        Offer permessage-deflate (RFC 7692) with server_no_context_takeover and\n"
    "        client_no_context_takeover. When the 101 accepts it, compressed messages (RSV1)\n"
    "        are inflated from their first bytes with one zlib stream per process (no state\n"
    "        per connection); their exact size is then unknown, so bad_size skips them. A\n"
    "        server answering without server_no_context_takeover fails the handshake\n"
    "        (malformed). Without --deflate an RSV1 frame is a protocol error, as before.\n"
    "    --pad json|x\n"
    "        What pads a payload to its size: x (the default, 'xxx...', which any compressor\n"
    "        squeezes to almost nothing) or json: an array of trade records with values drawn\n"
    "        from the sequence number, "
    "{\"r\":...,\"s\":...,\"t\":...,\"d\":[{\"id\":..,\"sym\":..,\n"
    "        \"px\":..,...},...],\"p\":\"x\"}, which compresses like real JSON (about 3x at\n"
    "        zlib level 1).\n"
    "\n"
    "CHANNELS (hold and fanout; channels.c)\n"
    "    --channels C\n"
    "        Spread the subscribers over C channels: connection i subscribes to channel\n"
    "        i mod C by connecting to --url with every {c} replaced by that number, and each\n"
    "        broadcast is POSTed to --publish-url with {c} replaced by its channel. Both URLs\n"
    "        must contain {c} (hold: --url only), e.g. wshub: --url ws://H/ws/ch{c} (or\n"
    "        /ws?channel=ch{c}) with --publish-url http://H/admin/broadcast?channel=ch{c};\n"
    "        Nchan: --url ws://H/sub/ch{c} with --publish-url http://H/pub/ch{c}. A subscriber\n"
    "        then expects exactly the accepted broadcasts of its channel: lost, duplicated and\n"
    "        out_of_order count within the channel, and a broadcast of another channel is\n"
    "        wrong_channel.\n"
    "        -r is the total rate over all channels. Not with --resume. Default: 0 (off).\n"
    "    --channel-pick round-robin|random\n"
    "        Which channel broadcast SEQ goes to: SEQ mod C, or a hash of --seed and SEQ\n"
    "        (uneven per-channel loads, repeatable). Default: round-robin.\n"
    "\n"
    "SERVER MEASUREMENTS\n"
    "    The server's processes are the union of the three options below, looked up again at\n"
    "    each sample (so respawned workers are found). Memory is Rss and Pss from\n"
    "    /proc/PID/smaps_rollup summed over them (PSS counts a shared segment once); CPU is\n"
    "    utime+stime from /proc/PID/stat. wsbench and its children are never included.\n"
    "    Measure memory per connection on a freshly started server: a heap that already held\n"
    "    connections is not given back to the kernel, so its \"before\" is already high.\n"
    "    --server-pids PID[,PID...]\n"
    "        These processes. Default: none.\n"
    "    --server-tree PID\n"
    "        PID and all its descendants (e.g. the hub). Default: none.\n"
    "    --server-pattern ERE\n"
    "        Every process whose command line (arguments joined by spaces) matches the\n"
    "        extended regular expression, e.g. 'wshub(-worker|-admin)? .*btest'. Default: none.\n"
    "\n"
    "GENERAL\n"
    "    --timeout DURATION\n"
    "        Hard cap on the whole run; when reached the run is aborted and reported as such.\n"
    "        Default: 15m.\n"
    "    --end-hold DURATION\n"
    "        Keep every connection open this long after the run (hold or fanout), before the\n"
    "        closing handshakes: a test can inspect the server meanwhile. SIGUSR1 ends it\n"
    "        early. With -v, \"end hold\" is logged when it starts. Default: 0.\n"
    "    --cdf\n"
    "        Add latency_ms.cdf to the output: [upper edge in ms, fraction of deliveries at\n"
    "        or below it] for every non-empty histogram bucket (buckets are 1/64 of their\n"
    "        power of two wide), for plotting the whole distribution.\n"
    "    -v, --verbose\n"
    "        Progress lines on stderr.\n"
    "    -h, --help\n"
    "        This manual.\n"
    "\n"
    "    DURATION is a number of seconds, optionally with a suffix: 500ms, 2s, 1.5m, 1h.\n"
    "\n"
    "OUTPUT\n"
    "    One JSON object (times in ms unless the key says _s):\n"
    "    params        the options in effect, auto values resolved.\n"
    "    connections   attempted, ok, failed {refused, timeout, reset, eof, status,\n"
    "                  bad_accept, bad_upgrade, malformed, subprotocol, protocol,\n"
    "                  no_address, other},\n"
    "                  connect_s, survived (open at the end), dropped {close_frame, reset,\n"
    "                  eof, protocol, other}, pings_answered, server_closes_echoed,\n"
    "                  data_after_server_close (data messages after the server's close\n"
    "                  frame: a protocol violation, ignored),\n"
    "                  closed_clean_at_end.\n"
    "    publish       (fanout) sent, ok (2xx), failed, unanswered, status classes,\n"
    "                  achieved_rate, answer_ms (POST to its HTTP answer).\n"
    "                  interval_ms {mean, cv}: gaps between consecutive POSTs as written\n"
    "                  (cv near 0 for fixed arrivals, near 1 for poisson).\n"
    "    deliveries    (fanout) subscribers, expected (ok x subscribers), received, unique,\n"
    "                  lost, duplicated, out_of_order, foreign (not our payload), bad_size,\n"
    "                  fragmented. With churn, only the connections outside the pool.\n"
    "                  With --channels: expected sums each subscriber's channel's accepted\n"
    "                  broadcasts, and wrong_channel counts broadcasts of another channel.\n"
    "    delivered_per_sec   unique deliveries (churn sessions included) / (last receipt -\n"
    "                  first POST).\n"
    "    latency_ms    p50, p90, p99, p999, max, min, mean of receive time minus the send\n"
    "                  time carried in the payload.\n"
    "    post_to_last_delivery_ms   per broadcast, its last receipt minus its POST: p50, p90,\n"
    "                  p99 and max over broadcasts (max = latency max).\n"
    "    last_delivery_ms   first POST to the last receipt of the run.\n"
    "    churn         (with --churn) pool, left, rejoined, rejoin_failed_total,\n"
    "                  rejoin_failed {by reason}, closes_answered, closes_cut, received and\n"
    "                  unique (fanout deliveries to pool connections), session_gaps (broadcasts\n"
    "                  missing between the first and the last one a session received),\n"
    "                  rejoin_ms (new connection: connect + handshake).\n"
    "    resume        (with --resume) clients, ended {restart, lost, other}, closes {by\n"
    "                  code; 1006 = no close frame}, attempts, attempts_failed_total,\n"
    "                  attempts_failed {by reason}, reconnects (welcomed again), welcome\n"
    "                  {resumed, expired, reset, fresh}, waiting_at_stop, bad_welcomes,\n"
    "                  bad_envelopes, unknown_types, gap_messages, gap_reasons, gap_seqs,\n"
    "                  gapped, unacknowledged_deliveries, mislabeled, regressed,\n"
    "                  recovery_ms (loss to the resumed welcome: count, p50, p90, p99, max)\n"
    "                  overall and by cause {restart, lost, other}.\n"
    "                  deliveries.lost then counts acknowledged broadcasts a client never got\n"
    "                  and was never told about; duplicated is exact (a bit per broadcast).\n"
    "    stalled       (with --stalled) connections, ended_by_server.\n"
    "    channels      (with --channels) count, pick, subscribers_per_channel {min, max},\n"
    "                  accepted_per_channel {min, max} (2xx broadcasts of one channel),\n"
    "                  accepted_per_sec (2xx broadcasts / send span: the sustained rate).\n"
    "    server        pids; memory before (connecting), after (all connected), end, each\n"
    "                  {processes, rss_kb, pss_kb}, per_connection_bytes (PSS delta / ok) and\n"
    "                  per_connection_rss_bytes; cpu_s {connect, phase, total,\n"
    "                  us_per_delivery}.\n"
    "    client        processes, cpu_s, phase_cpu_s, us_per_delivery,\n"
    "                  busiest_process_cpu_frac, publisher_cpu_frac,\n"
    "                  busiest_process_burst_cpu_frac, client_limited, note.\n"
    "    host          cores, cpu_busy_frac, busy_cpu_s, others_cpu_s, saturated, note.\n"
    "    client_limited is true when a client process used more than 0.9 of a core during the\n"
    "    measured phase, or more than 0.9 of the time over which broadcasts were arriving at\n"
    "    it (busiest_process_burst_cpu_frac: a client that cannot keep up with a burst\n"
    "    stretches it): the figures then describe the client, not the server. host reports\n"
    "    the machine's CPU use in that phase and the part used by neither the server nor\n"
    "    wsbench (others_cpu_s); host.saturated means client and server competed for CPU.\n"
    "\n"
    "EXIT STATUS\n"
    "    0 the run completed (failures are in the JSON); 1 runtime error or --timeout reached\n"
    "    (the JSON says \"aborted\"); 2 bad command line.\n"
    "\n"
    "EXAMPLES\n"
    "    wsbench hold --url ws://127.0.0.1:19500/ws -n 10000 --hold 30s \\\n"
    "        --server-tree $(cat /tmp/wsb-btest/hub.pid)\n"
    "    wsbench fanout --url ws://127.0.0.1:19500/ws -n 10000 -m 100 -r 10 -s 64 \\\n"
    "        --publish-url http://127.0.0.1:19501/admin/broadcast --server-pattern btest\n";

void opts_print_help(void)
{
    fputs(opts_manual, stdout);
}

enum {
    OPT_URL = 256,
    OPT_SOURCE_ADDRS,
    OPT_SOURCE_BASE,
    OPT_CONNECT_RATE,
    OPT_MAX_PENDING,
    OPT_CONNECT_TIMEOUT,
    OPT_WS_HEADER,
    OPT_CLOSE_TIMEOUT,
    OPT_HOLD,
    OPT_PUBLISH_URL,
    OPT_SETTLE,
    OPT_DRAIN_TIMEOUT,
    OPT_PUB_CONNECTIONS,
    OPT_PUB_MAX_REQUESTS,
    OPT_PUB_CONTENT_TYPE,
    OPT_PUB_HEADER,
    OPT_SERVER_PIDS,
    OPT_SERVER_TREE,
    OPT_SERVER_PATTERN,
    OPT_TIMEOUT,
    OPT_ARRIVALS,
    OPT_SIZE_MAX,
    OPT_SEED,
    OPT_CHURN,
    OPT_CHURN_POOL,
    OPT_CHURN_AWAY,
    OPT_CDF,
    OPT_RESUME,
    OPT_RECONNECT_QUICK,
    OPT_RECONNECT_MIN,
    OPT_RECONNECT_MAX,
    OPT_EVENTS,
    OPT_STALLED,
    OPT_END_HOLD,
    OPT_DEFLATE,
    OPT_PAD,
    OPT_CHANNELS,
    OPT_CHANNEL_PICK,
};

static const struct option opts_long[] = {
    {"url", required_argument, NULL, OPT_URL},
    {"connections", required_argument, NULL, 'n'},
    {"processes", required_argument, NULL, 'p'},
    {"source-addrs", required_argument, NULL, OPT_SOURCE_ADDRS},
    {"source-base", required_argument, NULL, OPT_SOURCE_BASE},
    {"connect-rate", required_argument, NULL, OPT_CONNECT_RATE},
    {"max-pending", required_argument, NULL, OPT_MAX_PENDING},
    {"connect-timeout", required_argument, NULL, OPT_CONNECT_TIMEOUT},
    {"ws-header", required_argument, NULL, OPT_WS_HEADER},
    {"close-timeout", required_argument, NULL, OPT_CLOSE_TIMEOUT},
    {"hold", required_argument, NULL, OPT_HOLD},
    {"publish-url", required_argument, NULL, OPT_PUBLISH_URL},
    {"messages", required_argument, NULL, 'm'},
    {"rate", required_argument, NULL, 'r'},
    {"size", required_argument, NULL, 's'},
    {"settle", required_argument, NULL, OPT_SETTLE},
    {"drain-timeout", required_argument, NULL, OPT_DRAIN_TIMEOUT},
    {"pub-connections", required_argument, NULL, OPT_PUB_CONNECTIONS},
    {"pub-max-requests", required_argument, NULL, OPT_PUB_MAX_REQUESTS},
    {"pub-content-type", required_argument, NULL, OPT_PUB_CONTENT_TYPE},
    {"pub-header", required_argument, NULL, OPT_PUB_HEADER},
    {"server-pids", required_argument, NULL, OPT_SERVER_PIDS},
    {"server-tree", required_argument, NULL, OPT_SERVER_TREE},
    {"server-pattern", required_argument, NULL, OPT_SERVER_PATTERN},
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {"arrivals", required_argument, NULL, OPT_ARRIVALS},
    {"size-max", required_argument, NULL, OPT_SIZE_MAX},
    {"seed", required_argument, NULL, OPT_SEED},
    {"churn", required_argument, NULL, OPT_CHURN},
    {"churn-pool", required_argument, NULL, OPT_CHURN_POOL},
    {"churn-away", required_argument, NULL, OPT_CHURN_AWAY},
    {"cdf", no_argument, NULL, OPT_CDF},
    {"resume", no_argument, NULL, OPT_RESUME},
    {"reconnect-quick", required_argument, NULL, OPT_RECONNECT_QUICK},
    {"reconnect-min", required_argument, NULL, OPT_RECONNECT_MIN},
    {"reconnect-max", required_argument, NULL, OPT_RECONNECT_MAX},
    {"events", required_argument, NULL, OPT_EVENTS},
    {"stalled", required_argument, NULL, OPT_STALLED},
    {"end-hold", required_argument, NULL, OPT_END_HOLD},
    {"deflate", no_argument, NULL, OPT_DEFLATE},
    {"pad", required_argument, NULL, OPT_PAD},
    {"channels", required_argument, NULL, OPT_CHANNELS},
    {"channel-pick", required_argument, NULL, OPT_CHANNEL_PICK},
    {"verbose", no_argument, NULL, 'v'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static int opts_bad(const char *name, const char *value, const char *why)
{
    fprintf(stderr, "wsbench: --%s '%s': %s (see wsbench --help)\n", name, value, why);
    return -1;
}

static int opts_u32(const char *name, const char *s, uint32_t min, uint32_t max, uint32_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || s[0] == '-' || v < min || v > max) {
        char why[64];
        snprintf(why, sizeof(why), "expected an integer in %u..%u", min, max);
        return opts_bad(name, s, why);
    }
    *out = (uint32_t)v;
    return 0;
}

static int opts_double(const char *name, const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !(v >= 0) || isinf(v))
        return opts_bad(name, s, "expected a non-negative number");
    *out = v;
    return 0;
}

/* "10", "1.5", "500ms", "2s", "1.5m", "1h" -> nanoseconds. */
static int opts_duration(const char *name, const char *s, int64_t *ns)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    double unit = 1e9;
    if (errno != 0 || end == s || !(v >= 0))
        return opts_bad(name, s, "expected a duration such as 10, 500ms, 2s, 1m");
    if (strcmp(end, "ms") == 0)
        unit = 1e6;
    else if (strcmp(end, "m") == 0)
        unit = 60e9;
    else if (strcmp(end, "h") == 0)
        unit = 3600e9;
    else if (strcmp(end, "s") != 0 && *end != '\0')
        return opts_bad(name, s, "unknown duration suffix (use ms, s, m or h)");
    if (v * unit > 1e18)
        return opts_bad(name, s, "duration too long");
    *ns = (int64_t)(v * unit);
    return 0;
}

/* Splits SCHEME://HOST[:PORT][/PATH] and resolves HOST to an IPv4 address. */
static int opts_endpoint(const char *name, const char *url, const char *scheme,
                         struct opts_endpoint *ep)
{
    size_t sl = strlen(scheme);
    char host[256];
    int port = strcmp(scheme, "http://") == 0 || strcmp(scheme, "ws://") == 0 ? 80 : 0;

    if (strlen(url) >= sizeof(ep->url) || strncmp(url, scheme, sl) != 0)
        return opts_bad(name, url,
                        strcmp(scheme, "ws://") == 0 ? "expected ws://HOST[:PORT]/PATH"
                                                     : "expected http://HOST[:PORT]/PATH");
    strcpy(ep->url, url);
    const char *hp = url + sl;
    const char *slash = strchr(hp, '/');
    size_t hpl = slash ? (size_t)(slash - hp) : strlen(hp);
    if (hpl == 0 || hpl >= sizeof(host) || hpl >= sizeof(ep->host_header))
        return opts_bad(name, url, "missing or overlong host");
    memcpy(ep->host_header, hp, hpl);
    ep->host_header[hpl] = '\0';
    snprintf(ep->path, sizeof(ep->path), "%s", slash ? slash : "/");
    memcpy(host, hp, hpl);
    host[hpl] = '\0';
    char *colon = strrchr(host, ':');
    if (colon != NULL) {
        uint32_t p;
        *colon = '\0';
        if (opts_u32(name, colon + 1, 1, 65535, &p) < 0)
            return -1;
        port = (int)p;
    }
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res = NULL;
    int rc = getaddrinfo(host, NULL, &hints, &res);
    if (rc != 0)
        return opts_bad(name, url, gai_strerror(rc));
    memcpy(&ep->addr, res->ai_addr, sizeof(ep->addr));
    ep->addr.sin_port = htons((uint16_t)port);
    freeaddrinfo(res);
    return 0;
}

static int opts_pids(const char *name, const char *list, struct opts *o)
{
    char buf[1024];
    snprintf(buf, sizeof(buf), "%s", list);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok != NULL;
         tok = strtok_r(NULL, ",", &save)) {
        uint32_t pid;
        if (o->n_server_pids >= OPTS_MAX_PIDS)
            return opts_bad(name, list, "too many pids");
        if (opts_u32(name, tok, 1, 0x7fffffff, &pid) < 0)
            return -1;
        o->server_pids[o->n_server_pids++] = (pid_t)pid;
    }
    return 0;
}

static int opts_header(const char *name, const char *value, const char **list, int *n)
{
    if (*n >= OPTS_MAX_HEADERS)
        return opts_bad(name, value, "too many headers");
    if (strchr(value, ':') == NULL || strpbrk(value, "\r\n") != NULL)
        return opts_bad(name, value, "expected 'Name: value' on one line");
    list[(*n)++] = value;
    return 0;
}

static int opts_seed(const char *name, const char *s, struct opts *o)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno != 0 || end == s || *end != '\0' || s[0] == '-')
        return opts_bad(name, s, "expected a non-negative integer");
    o->seed = v;
    o->seed_given = 1;
    return 0;
}

static void opts_defaults(struct opts *o)
{
    memset(o, 0, sizeof(*o));
    o->connections = 1000;
    o->connect_rate = 5000;
    o->max_pending = 500;
    o->connect_timeout_ns = 10 * 1000000000LL;
    o->close_timeout_ns = 2 * 1000000000LL;
    o->hold_ns = 10 * 1000000000LL;
    o->messages = 100;
    o->rate = 10;
    o->size = 64;
    o->settle_ns = 1000000000LL;
    o->drain_timeout_ns = 10 * 1000000000LL;
    o->timeout_ns = 15 * 60 * 1000000000LL;
    o->pub_connections = 1;
    o->pub_max_requests = 100;
    strcpy(o->pub_content_type, "text/plain");
    o->churn_pool = 0.1;
    o->churn_away_ns = 1000000000LL;
    o->reconnect_quick_ns = 100 * 1000000LL;
    o->reconnect_min_ns = 250 * 1000000LL;
    o->reconnect_max_ns = 5 * 1000000000LL;
    inet_pton(AF_INET, "127.0.0.1", &o->source_base);
}

/* One option. Returns 0 or -1. */
static int opts_apply(struct opts *o, int c, const char *name, const char *v)
{
    switch (c) {
    case OPT_URL:
        return opts_endpoint(name, v, "ws://", &o->ws);
    case 'n':
        return opts_u32(name, v, 1, 10000000, &o->connections);
    case 'p':
        return opts_u32(name, v, 1, 1024, &o->processes);
    case OPT_SOURCE_ADDRS:
        return opts_u32(name, v, 1, 250, &o->source_addrs);
    case OPT_SOURCE_BASE:
        return inet_pton(AF_INET, v, &o->source_base) == 1
                   ? 0
                   : opts_bad(name, v, "expected an IPv4 address");
    case OPT_CONNECT_RATE:
        return opts_double(name, v, &o->connect_rate);
    case OPT_MAX_PENDING:
        return opts_u32(name, v, 1, 1000000, &o->max_pending);
    case OPT_CONNECT_TIMEOUT:
        return opts_duration(name, v, &o->connect_timeout_ns);
    case OPT_WS_HEADER:
        return opts_header(name, v, o->ws_headers, &o->n_ws_headers);
    case OPT_CLOSE_TIMEOUT:
        return opts_duration(name, v, &o->close_timeout_ns);
    case OPT_HOLD:
        return opts_duration(name, v, &o->hold_ns);
    case OPT_PUBLISH_URL:
        return opts_endpoint(name, v, "http://", &o->pub);
    case 'm':
        return opts_u32(name, v, 1, 100000000, &o->messages);
    case 'r':
        return opts_double(name, v, &o->rate);
    case 's':
        return opts_u32(name, v, 1, 64 * 1024 * 1024, &o->size);
    case OPT_SETTLE:
        return opts_duration(name, v, &o->settle_ns);
    case OPT_DRAIN_TIMEOUT:
        return opts_duration(name, v, &o->drain_timeout_ns);
    case OPT_PUB_CONNECTIONS:
        return opts_u32(name, v, 1, 32, &o->pub_connections);
    case OPT_PUB_MAX_REQUESTS:
        return opts_u32(name, v, 1, 1000000, &o->pub_max_requests);
    case OPT_PUB_CONTENT_TYPE:
        if (strlen(v) >= sizeof(o->pub_content_type) || strpbrk(v, "\r\n") != NULL)
            return opts_bad(name, v, "too long or not one line");
        strcpy(o->pub_content_type, v);
        return 0;
    case OPT_PUB_HEADER:
        return opts_header(name, v, o->pub_headers, &o->n_pub_headers);
    case OPT_SERVER_PIDS:
        return opts_pids(name, v, o);
    case OPT_SERVER_TREE: {
        uint32_t pid;
        if (opts_u32(name, v, 1, 0x7fffffff, &pid) < 0)
            return -1;
        o->server_tree = (pid_t)pid;
        return 0;
    }
    case OPT_SERVER_PATTERN:
        o->server_pattern = v;
        return 0;
    case OPT_TIMEOUT:
        return opts_duration(name, v, &o->timeout_ns);
    case OPT_ARRIVALS:
        if (strcmp(v, "fixed") == 0)
            o->arrivals = OPTS_ARRIVALS_FIXED;
        else if (strcmp(v, "poisson") == 0)
            o->arrivals = OPTS_ARRIVALS_POISSON;
        else
            return opts_bad(name, v, "expected fixed or poisson");
        return 0;
    case OPT_SIZE_MAX:
        return opts_u32(name, v, 1, 64 * 1024 * 1024, &o->size_max);
    case OPT_SEED:
        return opts_seed(name, v, o);
    case OPT_CHURN:
        return opts_double(name, v, &o->churn);
    case OPT_CHURN_POOL:
        if (opts_double(name, v, &o->churn_pool) < 0)
            return -1;
        return o->churn_pool > 0 && o->churn_pool <= 1 ? 0
                                                       : opts_bad(name, v, "expected 0 < F <= 1");
    case OPT_CHURN_AWAY:
        return opts_duration(name, v, &o->churn_away_ns);
    case 'v':
        o->verbose = 1;
        return 0;
    case OPT_CDF:
        o->cdf = 1;
        return 0;
    case OPT_RESUME:
        o->resume = 1;
        return 0;
    case OPT_RECONNECT_QUICK:
        return opts_duration(name, v, &o->reconnect_quick_ns);
    case OPT_RECONNECT_MIN:
        return opts_duration(name, v, &o->reconnect_min_ns);
    case OPT_RECONNECT_MAX:
        return opts_duration(name, v, &o->reconnect_max_ns);
    case OPT_EVENTS:
        o->events_path = v;
        return 0;
    case OPT_STALLED:
        if (opts_double(name, v, &o->stalled) < 0)
            return -1;
        return o->stalled < 1 ? 0 : opts_bad(name, v, "expected 0 <= F < 1");
    case OPT_END_HOLD:
        return opts_duration(name, v, &o->end_hold_ns);
    case OPT_DEFLATE:
        o->deflate = 1;
        return opts_header(name, DEFLATE_OFFER, o->ws_headers, &o->n_ws_headers);
    case OPT_PAD:
        if (strcmp(v, "json") != 0 && strcmp(v, "x") != 0)
            return opts_bad(name, v, "expected json or x");
        o->pad_json = strcmp(v, "json") == 0;
        return 0;
    case OPT_CHANNELS:
        return opts_u32(name, v, 0, CHAN_MAX, &o->channels);
    case OPT_CHANNEL_PICK:
        if (strcmp(v, "round-robin") == 0)
            o->channel_pick = OPTS_CHANNEL_PICK_ROUND_ROBIN;
        else if (strcmp(v, "random") == 0)
            o->channel_pick = OPTS_CHANNEL_PICK_RANDOM;
        else
            return opts_bad(name, v, "expected round-robin or random");
        return 0;
    default:
        return -1;
    }
}

static uint32_t opts_read_port_range(void)
{
    unsigned lo = 32768, hi = 60999;
    FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
    if (f != NULL) {
        if (fscanf(f, "%u %u", &lo, &hi) != 2 || hi < lo)
            lo = 32768, hi = 60999;
        fclose(f);
    }
    return hi - lo + 1;
}

/* --ws-header lines that already name a subprotocol. */
static int n_ws_protocol_headers(const struct opts *o)
{
    int n = 0;
    for (int i = 0; i < o->n_ws_headers; i++)
        n += strncasecmp(o->ws_headers[i], "Sec-WebSocket-Protocol:", 23) == 0;
    return n;
}

/* Fills the automatic values and checks limits that need the machine. */
static int opts_resolve(struct opts *o)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
        perror("wsbench: getrlimit(RLIMIT_NOFILE)");
        return -1;
    }
    o->fd_limit = rl.rlim_max;
    o->port_range = opts_read_port_range();
    if (o->processes == 0) {
        o->processes = (o->connections + OPTS_PER_PROCESS_DEFAULT - 1) / OPTS_PER_PROCESS_DEFAULT;
        if (o->processes < 2 && o->connections >= 2)
            o->processes = 2;
        if (o->processes < 1)
            o->processes = 1;
    }
    if (o->processes > o->connections)
        o->processes = o->connections;
    uint64_t per = (o->connections + o->processes - 1) / o->processes;
    if (per + 64 > o->fd_limit) {
        fprintf(stderr,
                "wsbench: %llu connections per process exceed the open-file hard limit %llu "
                "(less 64 for other files); raise -p\n",
                (unsigned long long)per, (unsigned long long)o->fd_limit);
        return -1;
    }
    if (o->source_addrs == 0) {
        uint64_t per_addr = (uint64_t)o->port_range / 4;
        o->source_addrs = (uint32_t)((o->connections + per_addr - 1) / per_addr);
        if (o->source_addrs == 0)
            o->source_addrs = 1;
    }
    if (o->source_base.s_addr == htonl(INADDR_ANY))
        o->source_addrs = 1;
    if (!o->seed_given && getrandom(&o->seed, sizeof(o->seed), 0) != sizeof(o->seed))
        o->seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    if (o->resume && o->churn > 0) {
        fprintf(stderr, "wsbench: --resume and --churn do not combine (a resuming client "
                        "comes back by itself)\n");
        return -1;
    }
    if (o->resume && o->messages > OPTS_RESUME_MAX_MESSAGES) {
        fprintf(stderr, "wsbench: --resume tracks every broadcast per client: at most %u\n",
                OPTS_RESUME_MAX_MESSAGES);
        return -1;
    }
    if (o->reconnect_min_ns <= 0 || o->reconnect_max_ns < o->reconnect_min_ns) {
        fprintf(stderr, "wsbench: need 0 < --reconnect-min <= --reconnect-max\n");
        return -1;
    }
    if (o->resume && n_ws_protocol_headers(o) == 0) {
        if (o->n_ws_headers >= OPTS_MAX_HEADERS) {
            fprintf(stderr, "wsbench: too many --ws-header for --resume's own\n");
            return -1;
        }
        o->ws_headers[o->n_ws_headers++] = "Sec-WebSocket-Protocol: " PROTO_NAME;
    }
    if (o->size_max != 0 && o->size_max < o->size) {
        fprintf(stderr, "wsbench: --size-max %u is below --size %u\n", o->size_max, o->size);
        return -1;
    }
    return chan_resolve(o);
}

int opts_parse(struct opts *o, int argc, char **argv)
{
    int c, idx;

    opts_defaults(o);
    if (opts_endpoint("url", OPTS_DEFAULT_URL, "ws://", &o->ws) < 0)
        return -1;
    if (opts_endpoint("publish-url", OPTS_DEFAULT_PUBLISH_URL, "http://", &o->pub) < 0)
        return -1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":n:p:m:r:s:vh", opts_long, &idx)) != -1) {
        if (c == 'h') {
            opts_print_help();
            exit(0);
        }
        if (c == '?' || c == ':') {
            fprintf(stderr, "wsbench: %s option '%s' (see wsbench --help)\n",
                    c == '?' ? "unknown" : "missing value for", argv[optind - 1]);
            return -1;
        }
        const char *name = "?";
        for (const struct option *lo = opts_long; lo->name != NULL; lo++)
            if (lo->val == c)
                name = lo->name;
        if (opts_apply(o, c, name, optarg) < 0)
            return -1;
    }
    if (optind != argc - 1) {
        fprintf(stderr, "wsbench: expected one mode, hold or fanout (see wsbench --help)\n");
        return -1;
    }
    if (strcmp(argv[optind], "hold") == 0) {
        o->mode = OPTS_MODE_HOLD;
    } else if (strcmp(argv[optind], "fanout") == 0) {
        o->mode = OPTS_MODE_FANOUT;
    } else {
        fprintf(stderr, "wsbench: unknown mode '%s': hold or fanout\n", argv[optind]);
        return -1;
    }
    if (o->mode == OPTS_MODE_FANOUT && !(o->rate > 0))
        return opts_bad("rate", "0", "fanout needs a positive rate");
    return opts_resolve(o);
}
