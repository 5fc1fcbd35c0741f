/* admin_segment.c -- attach lazily to the hub's segment and follow it across hub restarts.
 *
 * wshub-admin may start before the hub (spawn-fcgi, mod_fcgid) and outlive it, so it never
 * assumes the segment exists: each request asks admin_segment_get() for a mapping whose hub is
 * alive (RUNNING, heartbeat younger than ADMIN_HUB_MAX_AGE_MS). While the current mapping's hub
 * looks alive that costs one mutex round trip and the liveness check. When it does not, the
 * segment is opened again by name: a different epoch means a new hub recreated it, and the new
 * mapping replaces the old one; the same epoch means the old hub is simply down (or stopping).
 *
 * Mappings are reference counted. ss->cur holds one reference; every request holding the
 * mapping holds another, so replacing cur never unmaps memory a request is still reading: the
 * last reference unmaps. The mutex guards only the cur pointer and the attach itself.
 *
 * Attach failures are logged once per distinct errno (a dead hub would otherwise log on every
 * request); EPROTO, a layout mismatch with this binary, is an error an operator must fix. A hub
 * creating its segment exposes it for a moment with size 0 or no magic yet, which shm_attach()
 * also reports as EPROTO: seg_is_being_created() tells the two apart, so a hub start is a plain
 * "hub not running" and not a layout alarm.
 */
#include "admin.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

int admin_segments_init(struct admin_segments *ss, const char *instance)
{
    memset(ss, 0, sizeof(*ss));
    if (shm_name_for_instance(instance, ss->name, sizeof(ss->name)) < 0)
        return -1;
    int rc = pthread_mutex_init(&ss->lock, NULL);
    if (rc != 0) {
        errno = rc;
        return -1;
    }
    return 0;
}

static void seg_ref(struct admin_seg *seg)
{
    atomic_fetch_add_explicit(&seg->refs, 1, memory_order_relaxed);
}

void admin_segment_put(struct admin_seg *seg)
{
    if (seg == NULL)
        return;
    if (atomic_fetch_sub_explicit(&seg->refs, 1, memory_order_acq_rel) == 1) {
        shm_detach(&seg->shm);
        free(seg);
    }
}

void admin_segments_destroy(struct admin_segments *ss)
{
    pthread_mutex_lock(&ss->lock);
    admin_segment_put(ss->cur);
    ss->cur = NULL;
    pthread_mutex_unlock(&ss->lock);
    pthread_mutex_destroy(&ss->lock);
}

/* Classifies a mapping's hub; fills why when it is not usable. */
static enum admin_seg_status seg_status(const struct admin_seg *seg, char *why, size_t whylen)
{
    const struct shm_header *h = seg->shm.hdr;
    if (shm_hub_is_alive(&seg->shm, ADMIN_HUB_MAX_AGE_MS))
        return ADMIN_SEG_OK;
    uint32_t state = atomic_load_explicit(&h->hub_state, memory_order_relaxed);
    uint64_t beat = atomic_load_explicit(&h->hub_heartbeat_ms, memory_order_relaxed);
    uint64_t now = shm_now_ms();
    uint64_t age = now > beat ? now - beat : 0;
    snprintf(why, whylen, "hub pid %d, state %u, heartbeat %llu ms old",
             (int)atomic_load_explicit(&h->hub_pid, memory_order_relaxed), state,
             (unsigned long long)age);
    if (state == SHM_HUB_STOPPING && age <= ADMIN_HUB_MAX_AGE_MS)
        return ADMIN_SEG_STOPPING;
    return ADMIN_SEG_NO_HUB;
}

/* True when the segment exists but its creator has not sized it or written the magic yet. */
static int seg_is_being_created(const char *name)
{
    uint64_t magic = 0;
    struct stat st;
    int fd = shm_open(name, O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    int creating = fstat(fd, &st) == 0 &&
                   (st.st_size < (off_t)sizeof(magic) ||
                    (pread(fd, &magic, sizeof(magic), 0) == (ssize_t)sizeof(magic) && magic == 0));
    close(fd);
    return creating;
}

static void seg_log_attach_failure(struct admin_segments *ss, int err, const char *reason)
{
    if (err == ss->logged_errno)
        return;
    ss->logged_errno = err;
    if (err == ENOENT)
        log_info("no segment %s yet (hub not started?): %s", ss->name, reason);
    else if (err == EPROTO)
        log_error(0, "segment %s has an incompatible layout, refusing it: %s", ss->name, reason);
    else
        log_error(err, "shm_attach(%s) failed: %s", ss->name, reason);
}

/* Maps the segment afresh and makes it current unless it is the one already mapped. Returns
 * ss->cur (no reference taken) or NULL with *status and why set. Caller holds ss->lock. */
static struct admin_seg *seg_reattach_locked(struct admin_segments *ss,
                                             enum admin_seg_status *status, char *why,
                                             size_t whylen)
{
    char err[256] = "";
    struct admin_seg *fresh = calloc(1, sizeof(*fresh));
    if (fresh == NULL) {
        log_error(errno, "calloc() failed");
        *status = ADMIN_SEG_ERROR;
        snprintf(why, whylen, "out of memory");
        return NULL;
    }
    if (shm_attach(&fresh->shm, ss->name, err, sizeof(err)) < 0) {
        int e = errno;
        free(fresh);
        if (e == EPROTO && seg_is_being_created(ss->name)) {
            *status = ADMIN_SEG_NO_HUB;
            snprintf(why, whylen, "segment %s is being created", ss->name);
            return NULL;
        }
        seg_log_attach_failure(ss, e, err);
        *status = e == EPROTO ? ADMIN_SEG_LAYOUT : e == ENOENT ? ADMIN_SEG_NO_HUB : ADMIN_SEG_ERROR;
        snprintf(why, whylen, "%s", err);
        if (e == ENOENT && ss->cur != NULL) { /* the hub removed it: let the old mapping go */
            admin_segment_put(ss->cur);
            ss->cur = NULL;
        }
        return NULL;
    }
    ss->logged_errno = 0;
    fresh->epoch = fresh->shm.hdr->epoch;
    atomic_init(&fresh->refs, 1);
    if (ss->cur != NULL && ss->cur->epoch == fresh->epoch) {
        shm_detach(&fresh->shm); /* same segment, its hub is just not alive */
        free(fresh);
        return ss->cur;
    }
    if (ss->cur != NULL)
        log_notice("segment %s was recreated (epoch %016llx -> %016llx), re-attached", ss->name,
                   (unsigned long long)ss->cur->epoch, (unsigned long long)fresh->epoch);
    else
        log_notice("attached to segment %s (epoch %016llx)", ss->name,
                   (unsigned long long)fresh->epoch);
    admin_segment_put(ss->cur);
    ss->cur = fresh;
    return fresh;
}

struct admin_seg *admin_segment_get(struct admin_segments *ss, enum admin_seg_status *status,
                                    char *why, size_t whylen)
{
    pthread_mutex_lock(&ss->lock);
    struct admin_seg *seg = ss->cur;
    if (seg != NULL)
        seg_ref(seg);
    pthread_mutex_unlock(&ss->lock);

    /* Fast path: the mapping we have belongs to a live hub. */
    if (seg != NULL && (*status = seg_status(seg, why, whylen)) == ADMIN_SEG_OK)
        return seg;
    admin_segment_put(seg);

    pthread_mutex_lock(&ss->lock);
    seg = seg_reattach_locked(ss, status, why, whylen);
    if (seg != NULL)
        seg_ref(seg);
    pthread_mutex_unlock(&ss->lock);
    if (seg == NULL)
        return NULL;
    *status = seg_status(seg, why, whylen);
    if (*status == ADMIN_SEG_OK)
        return seg;
    admin_segment_put(seg);
    return NULL;
}
