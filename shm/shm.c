/* shm.c -- create, attach to and remove the instance's shared-memory segment.
 *
 * The hub creates the segment with O_EXCL; when the name already exists it looks at the old
 * header: a segment whose hub is alive is refused (two hubs for one instance would fight over
 * the ring and the doorbells), a segment whose hub is dead or whose header is not a wshub header
 * is unlinked and created afresh. Workers and admin-cgi attach and refuse any segment whose magic,
 * layout version or sizes differ from what this binary was compiled with: the layout is ABI, and
 * a mismatch means a half-upgraded installation, which must fail loudly rather than corrupt rows.
 *
 * Regions are placed at SHM_REGION_ALIGN offsets computed from the three sizes the hub chose, so
 * an attacher recomputes them from the header's own parameters and compares; nothing in the
 * segment is a pointer.
 *
 * Trap: shm_destroy() unlinks the name only if it still refers to this process's segment (same
 * epoch), so a hub that was wrongly declared dead cannot remove its successor's segment.
 */
#include "shm.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "connlimit.h"
#include "log.h"

#define SHM_NAME_PREFIX       "/wshub-"
#define SHM_MAX_CONN_CAPACITY (1u << 24)   /* 16M rows, 3 GiB of rows */
#define SHM_MAX_RING_CAPACITY (1ull << 32) /* PAD sizes must fit ring_record.size */
#define SHM_RING_SLACK        4096         /* ring >= 4 * (max_payload + slack) */
#define SHM_CREATE_ATTEMPTS   3            /* O_EXCL retries after removing a stale segment */

/* Region offsets derived from the sizing parameters. */
struct shm_geometry {
    uint64_t off_workers, off_conn_free, off_conns, off_ring, off_limits, off_channels, total_size;
    uint32_t limits_capacity; /* entries of the connection-limits table (layout 4) */
};

static void shm_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void shm_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* Fills err with "call(name): strerror" and leaves errno as it was. */
static void shm_err_sys(char *err, size_t errlen, const char *call, const char *name)
{
    int e = errno;
    shm_err(err, errlen, "%s(%s): %s", call, name, strerror(e));
    errno = e;
}

static uint64_t align_up(uint64_t v, uint64_t a)
{
    return (v + a - 1) & ~(a - 1);
}

static const char *instance_of(const char *name)
{
    size_t n = strlen(SHM_NAME_PREFIX);
    return strncmp(name, SHM_NAME_PREFIX, n) == 0 ? name + n : name;
}

int shm_name_for_instance(const char *instance, char *out, size_t outlen)
{
    size_t n = instance ? strlen(instance) : 0;

    if (n == 0 || strlen(SHM_NAME_PREFIX) + n + 1 > outlen ||
        strlen(SHM_NAME_PREFIX) + n + 1 > sizeof(((struct shm *)0)->name)) {
        errno = EINVAL;
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        char ch = instance[i];
        int ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                 ch == '.' || ch == '_' || ch == '-';
        if (!ok) {
            errno = EINVAL;
            return -1;
        }
    }
    snprintf(out, outlen, "%s%s", SHM_NAME_PREFIX, instance);
    return 0;
}

/* Checks the sizing parameters; on failure fills err and returns -1 (errno untouched). */
static int shm_params_check(const struct shm_params *p, char *err, size_t errlen)
{
    uint64_t ring = p->ring_capacity;

    if (p->conn_capacity < 1 || p->conn_capacity > SHM_MAX_CONN_CAPACITY) {
        shm_err(err, errlen, "connection capacity %" PRIu32 " out of range 1..%u", p->conn_capacity,
                SHM_MAX_CONN_CAPACITY);
        return -1;
    }
    if (p->channels_per_worker > SHM_MAX_CHANNELS) {
        shm_err(err, errlen, "channels per worker %" PRIu32 " out of range 0..%u",
                p->channels_per_worker, SHM_MAX_CHANNELS);
        return -1;
    }
    if (p->max_payload < 1) {
        shm_err(err, errlen, "max payload must be at least 1 byte");
        return -1;
    }
    if (ring == 0 || (ring & (ring - 1)) != 0 || ring > SHM_MAX_RING_CAPACITY) {
        shm_err(err, errlen, "ring capacity %" PRIu64 " is not a power of two up to 4 GiB", ring);
        return -1;
    }
    if (ring < 4 * ((uint64_t)p->max_payload + SHM_RING_SLACK)) {
        shm_err(err, errlen,
                "ring capacity %" PRIu64 " is below 4 x (max payload %" PRIu32 " + 4096)", ring,
                p->max_payload);
        return -1;
    }
    return 0;
}

/* Lays the regions out; params must have passed shm_params_check(), so nothing overflows. */
static void shm_geometry_of(const struct shm_params *p, struct shm_geometry *g)
{
    g->off_workers = align_up(sizeof(struct shm_header), SHM_REGION_ALIGN);
    g->off_conn_free = align_up(
        g->off_workers + (uint64_t)SHM_MAX_WORKERS * sizeof(struct shm_worker), SHM_REGION_ALIGN);
    g->off_conns = align_up(g->off_conn_free + (uint64_t)p->conn_capacity * sizeof(uint32_t),
                            SHM_REGION_ALIGN);
    g->off_ring = align_up(g->off_conns + (uint64_t)p->conn_capacity * sizeof(struct shm_conn),
                           SHM_REGION_ALIGN);
    g->off_limits = align_up(g->off_ring + p->ring_capacity, SHM_REGION_ALIGN);
    g->limits_capacity = connlimit_capacity_for(p->conn_capacity);
    g->off_channels =
        align_up(g->off_limits + connlimit_region_size(g->limits_capacity), SHM_REGION_ALIGN);
    g->total_size = align_up(g->off_channels + (uint64_t)SHM_MAX_WORKERS * p->channels_per_worker *
                                                   sizeof(struct shm_channel),
                             SHM_REGION_ALIGN);
}

/* ---- creation ---- */

/* Looks at an existing segment of this name. Returns 0 if it was stale (or vanished) and has
 * been unlinked, -1 with errno EEXIST if its hub is alive, -1 with errno for other failures. */
static int shm_remove_stale(const char *name, char *err, size_t errlen)
{
    struct shm_header *h = MAP_FAILED;
    struct stat st;
    int alive_pid = 0, fd;

    fd = shm_open(name, O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0) {
        if (errno == ENOENT)
            return 0;
        shm_err_sys(err, errlen, "shm_open", name);
        return -1;
    }
    if (fstat(fd, &st) < 0) {
        shm_err_sys(err, errlen, "fstat", name);
        close(fd);
        return -1;
    }
    if ((uint64_t)st.st_size >= sizeof(*h))
        h = mmap(NULL, sizeof(*h), PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (h != MAP_FAILED) {
        if (h->magic == SHM_MAGIC && h->version == SHM_LAYOUT_VERSION &&
            h->header_size == sizeof(*h)) {
            int pid = atomic_load(&h->hub_pid);
            if (pid > 0 && pid != getpid() && (kill(pid, 0) == 0 || errno == EPERM))
                alive_pid = pid;
        } else {
            log_warn(0, "segment %s has no wshub layout version %d header; replacing it", name,
                     SHM_LAYOUT_VERSION);
        }
        munmap(h, sizeof(*h));
    }
    if (alive_pid) {
        shm_err(err, errlen,
                "instance '%s' is already running (hub pid %d); if that process is not a wshub "
                "hub, remove /dev/shm%s",
                instance_of(name), alive_pid, name);
        errno = EEXIST;
        return -1;
    }
    if (shm_unlink(name) < 0 && errno != ENOENT) {
        shm_err_sys(err, errlen, "shm_unlink", name);
        return -1;
    }
    log_notice("removed stale shared-memory segment %s", name);
    return 0;
}

/* Opens the name with O_EXCL, removing a stale segment in the way. Returns the fd or -1. */
static int shm_open_exclusive(const char *name, unsigned mode, char *err, size_t errlen)
{
    for (int attempt = 0; attempt < SHM_CREATE_ATTEMPTS; attempt++) {
        int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, (mode_t)mode);
        if (fd >= 0)
            return fd;
        if (errno != EEXIST) {
            shm_err_sys(err, errlen, "shm_open", name);
            return -1;
        }
        if (shm_remove_stale(name, err, errlen) < 0)
            return -1;
    }
    shm_err(err, errlen, "shm_open(%s): still exists after removing it %d times", name,
            SHM_CREATE_ATTEMPTS);
    errno = EEXIST;
    return -1;
}

static int shm_random_epoch(uint64_t *out)
{
    uint64_t v = 0;

    while (v == 0) {
        ssize_t n = getrandom(&v, sizeof(v), 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n != (ssize_t)sizeof(v))
            return -1;
    }
    *out = v;
    return 0;
}

/* Fills the fresh (zeroed) mapping. The magic is written last, after a release fence, so an
 * attacher racing with creation sees either no magic or a complete header. */
static int shm_init_segment(struct shm *s, const struct shm_params *p, const struct shm_geometry *g,
                            char *err, size_t errlen)
{
    struct shm_header *h = s->hdr;
    int rc;

    if (shm_random_epoch(&h->epoch) < 0) {
        shm_err_sys(err, errlen, "getrandom", s->name);
        return -1;
    }
    h->version = SHM_LAYOUT_VERSION;
    h->header_size = sizeof(*h);
    h->total_size = g->total_size;
    h->created_at_ms = shm_now_ms();
    h->max_workers = SHM_MAX_WORKERS;
    h->conn_capacity = p->conn_capacity;
    h->worker_size = sizeof(struct shm_worker);
    h->conn_size = sizeof(struct shm_conn);
    h->off_workers = g->off_workers;
    h->off_conn_free = g->off_conn_free;
    h->off_conns = g->off_conns;
    h->off_ring = g->off_ring;
    h->off_limits = g->off_limits;
    h->off_channels = g->off_channels;
    h->channels_per_worker = p->channels_per_worker;
    h->channel_size = sizeof(struct shm_channel);

    if ((rc = connlimit_init(s, g->limits_capacity)) != 0) {
        errno = rc;
        shm_err_sys(err, errlen, "connlimit_init", s->name);
        return -1;
    }
    if ((rc = shm_mutex_init(&h->ring.lock)) != 0 || (rc = shm_mutex_init(&h->conntab.lock)) != 0) {
        errno = rc;
        shm_err_sys(err, errlen, "pthread_mutex_init", s->name);
        return -1;
    }
    h->ring.capacity = p->ring_capacity;
    h->ring.max_payload = p->max_payload;
    atomic_store(&h->ring.next_seq, 1);
    atomic_store(&h->ring.head_seq, 1);

    /* Row 0 on top of the stack, so a fresh table fills from the front. */
    uint32_t *free_stack = shm_conn_free_stack(s);
    for (uint32_t i = 0; i < p->conn_capacity; i++)
        free_stack[i] = p->conn_capacity - 1 - i;
    h->conntab.capacity = p->conn_capacity;
    h->conntab.free_top = p->conn_capacity;
    atomic_store(&h->conntab.next_conn_id, 1);

    atomic_store(&h->hub_pid, (int32_t)getpid());
    atomic_store(&h->hub_state, SHM_HUB_STARTING);
    atomic_store(&h->hub_heartbeat_ms, shm_now_ms());
    atomic_thread_fence(memory_order_release);
    h->magic = SHM_MAGIC;
    return 0;
}

int shm_create(struct shm *s, const char *name, const struct shm_params *p, unsigned mode,
               char *err, size_t errlen)
{
    struct shm_geometry g;
    void *base;
    int fd;

    memset(s, 0, sizeof(*s));
    if (strlen(name) >= sizeof(s->name) || name[0] != '/') {
        shm_err(err, errlen, "bad segment name '%s'", name);
        errno = EINVAL;
        return -1;
    }
    if (shm_params_check(p, err, errlen) < 0) {
        errno = EINVAL;
        return -1;
    }
    shm_geometry_of(p, &g);
    if (mode == 0)
        mode = 0600;

    fd = shm_open_exclusive(name, mode, err, errlen);
    if (fd < 0)
        return -1;
    /* The umask must not narrow the mode the operator chose for admin-cgi's group access. */
    if (fchmod(fd, (mode_t)mode) < 0) {
        shm_err_sys(err, errlen, "fchmod", name);
        goto out_unlink;
    }
    if (ftruncate(fd, (off_t)g.total_size) < 0) {
        shm_err_sys(err, errlen, "ftruncate", name);
        goto out_unlink;
    }
    base = mmap(NULL, g.total_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) {
        shm_err_sys(err, errlen, "mmap", name);
        goto out_unlink;
    }
    close(fd);
    s->hdr = base;
    s->size = g.total_size;
    s->owner = 1;
    snprintf(s->name, sizeof(s->name), "%s", name);
    if (shm_init_segment(s, p, &g, err, errlen) < 0) {
        int e = errno;
        munmap(base, g.total_size);
        shm_unlink(name);
        memset(s, 0, sizeof(*s));
        errno = e;
        return -1;
    }
    return 0;

out_unlink : {
    int e = errno;
    close(fd);
    shm_unlink(name);
    errno = e;
    return -1;
}
}

/* ---- attaching ---- */

/* Compares the header with what this binary expects. Returns 0, or -1 with a reason in err. */
static int shm_header_check(const struct shm_header *h, uint64_t mapped, const char *name,
                            char *err, size_t errlen)
{
    struct shm_params p;
    struct shm_geometry g;

    if (h->magic != SHM_MAGIC) {
        shm_err(err, errlen, "%s: not a wshub segment (bad magic)", name);
        return -1;
    }
    if (h->version != SHM_LAYOUT_VERSION) {
        shm_err(err, errlen, "%s: layout version %" PRIu32 ", this binary speaks %d", name,
                h->version, SHM_LAYOUT_VERSION);
        return -1;
    }
    if (h->header_size != sizeof(*h) || h->worker_size != sizeof(struct shm_worker) ||
        h->conn_size != sizeof(struct shm_conn) || h->max_workers != SHM_MAX_WORKERS ||
        h->channel_size != sizeof(struct shm_channel)) {
        shm_err(err, errlen,
                "%s: structure sizes differ (header %" PRIu32 "/%zu, worker %" PRIu32
                "/%zu, conn %" PRIu32 "/%zu, workers %" PRIu32 "/%d; segment/binary)",
                name, h->header_size, sizeof(*h), h->worker_size, sizeof(struct shm_worker),
                h->conn_size, sizeof(struct shm_conn), h->max_workers, SHM_MAX_WORKERS);
        return -1;
    }
    p.conn_capacity = h->conn_capacity;
    p.ring_capacity = h->ring.capacity;
    p.max_payload = h->ring.max_payload;
    p.channels_per_worker = h->channels_per_worker;
    if (h->conntab.capacity != h->conn_capacity || shm_params_check(&p, NULL, 0) < 0) {
        shm_err(err, errlen, "%s: corrupt sizing parameters in the header", name);
        return -1;
    }
    shm_geometry_of(&p, &g);
    if (h->off_workers != g.off_workers || h->off_conn_free != g.off_conn_free ||
        h->off_conns != g.off_conns || h->off_ring != g.off_ring || h->off_limits != g.off_limits ||
        h->limits.capacity != g.limits_capacity || h->off_channels != g.off_channels ||
        h->total_size != g.total_size || mapped != g.total_size) {
        shm_err(err, errlen,
                "%s: region offsets or total size differ (total %" PRIu64 " in header, %" PRIu64
                " mapped, %" PRIu64 " expected)",
                name, h->total_size, mapped, g.total_size);
        return -1;
    }
    return 0;
}

int shm_attach(struct shm *s, const char *name, char *err, size_t errlen)
{
    struct stat st;
    void *base;
    int fd;

    memset(s, 0, sizeof(*s));
    if (strlen(name) >= sizeof(s->name)) {
        shm_err(err, errlen, "bad segment name '%s'", name);
        errno = EINVAL;
        return -1;
    }
    fd = shm_open(name, O_RDWR | O_CLOEXEC, 0);
    if (fd < 0) {
        shm_err_sys(err, errlen, "shm_open", name);
        return -1;
    }
    if (fstat(fd, &st) < 0) {
        shm_err_sys(err, errlen, "fstat", name);
        goto out_close;
    }
    if ((uint64_t)st.st_size < sizeof(struct shm_header)) {
        shm_err(err, errlen, "%s: segment too small (%lld bytes)", name, (long long)st.st_size);
        errno = EPROTO;
        goto out_close;
    }
    base = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) {
        shm_err_sys(err, errlen, "mmap", name);
        goto out_close;
    }
    close(fd);
    if (shm_header_check(base, (uint64_t)st.st_size, name, err, errlen) < 0) {
        munmap(base, (size_t)st.st_size);
        errno = EPROTO;
        return -1;
    }
    s->hdr = base;
    s->size = (size_t)st.st_size;
    s->owner = 0;
    snprintf(s->name, sizeof(s->name), "%s", name);
    return 0;

out_close : {
    int e = errno;
    close(fd);
    errno = e;
    return -1;
}
}

void shm_detach(struct shm *s)
{
    if (s->hdr != NULL && munmap(s->hdr, s->size) < 0)
        log_warn(errno, "munmap(%s) failed", s->name);
    s->hdr = NULL;
    s->size = 0;
}

/* True when `name` still refers to the segment with this epoch. */
static int shm_name_is_ours(const char *name, uint64_t epoch)
{
    struct shm_header *h;
    struct stat st;
    int fd, ours = 0;

    fd = shm_open(name, O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    if (fstat(fd, &st) == 0 && (uint64_t)st.st_size >= sizeof(*h)) {
        h = mmap(NULL, sizeof(*h), PROT_READ, MAP_SHARED, fd, 0);
        if (h != MAP_FAILED) {
            ours = h->magic == SHM_MAGIC && h->epoch == epoch;
            munmap(h, sizeof(*h));
        }
    }
    close(fd);
    return ours;
}

void shm_destroy(struct shm *s)
{
    if (s->hdr != NULL && s->owner && shm_name_is_ours(s->name, s->hdr->epoch)) {
        if (shm_unlink(s->name) < 0)
            log_warn(errno, "shm_unlink(%s) failed", s->name);
    }
    shm_detach(s);
    s->owner = 0;
}

int shm_hub_is_alive(const struct shm *s, uint64_t max_age_ms)
{
    const struct shm_header *h = s->hdr;
    int pid = atomic_load(&h->hub_pid);
    uint64_t beat = atomic_load(&h->hub_heartbeat_ms), now = shm_now_ms();

    if (atomic_load(&h->hub_state) != SHM_HUB_RUNNING || pid <= 0)
        return 0;
    if (kill(pid, 0) < 0 && errno != EPERM)
        return 0;
    /* A heartbeat from the future (clock stepped back) counts as fresh. */
    return beat >= now || now - beat <= max_age_ms;
}

/* ---- accessors ---- */

struct shm_worker *shm_worker(const struct shm *s, unsigned slot)
{
    if (slot >= SHM_MAX_WORKERS)
        return NULL;
    return (struct shm_worker *)((char *)s->hdr + s->hdr->off_workers) + slot;
}

struct shm_conn *shm_conn(const struct shm *s, uint32_t index)
{
    if (index >= s->hdr->conn_capacity)
        return NULL;
    return (struct shm_conn *)((char *)s->hdr + s->hdr->off_conns) + index;
}

uint32_t *shm_conn_free_stack(const struct shm *s)
{
    return (uint32_t *)((char *)s->hdr + s->hdr->off_conn_free);
}

uint8_t *shm_ring_data(const struct shm *s)
{
    return (uint8_t *)s->hdr + s->hdr->off_ring;
}

struct shm_channel *shm_channel(const struct shm *s, unsigned slot, uint32_t i)
{
    struct shm_channel *t = (struct shm_channel *)((char *)s->hdr + s->hdr->off_channels);
    return &t[(uint64_t)slot * s->hdr->channels_per_worker + i];
}

uint64_t shm_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t shm_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int shm_mutex_init(pthread_mutex_t *m)
{
    pthread_mutexattr_t a;
    int rc;

    if ((rc = pthread_mutexattr_init(&a)) != 0)
        return rc;
    if ((rc = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED)) == 0 &&
        (rc = pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST)) == 0)
        rc = pthread_mutex_init(m, &a);
    pthread_mutexattr_destroy(&a);
    return rc;
}

int shm_mutex_lock(struct shm *s, pthread_mutex_t *m, const struct timespec *deadline,
                   void (*repair)(struct shm *s), const char *what)
{
    int rc = deadline != NULL ? pthread_mutex_clocklock(m, CLOCK_MONOTONIC, deadline)
                              : pthread_mutex_lock(m);

    if (rc == EOWNERDEAD) {
        repair(s);
        rc = pthread_mutex_consistent(m);
        if (rc != 0) {
            log_error(rc, "pthread_mutex_consistent(%s) failed", what);
            pthread_mutex_unlock(m);
        }
    }
    if (rc != 0) {
        errno = rc;
        return -1;
    }
    return 0;
}
