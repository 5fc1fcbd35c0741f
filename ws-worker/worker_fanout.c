/* worker_fanout.c -- the worker's local buffers of ready-made frames, fed from the shared ring.
 *
 * Each ring entry is copied once per worker, by ring_read() straight into the RAW buffer at the
 * spot after room for its WebSocket header; the header (unmasked server frame: 0x81 text or
 * 0x82 binary, then a 7-, 16- or 64-bit length) is written in front of it and the frame is
 * final. Every other encoding a client may need (enum worker_variant: V1 adds the wshub.v1
 * envelope "m <seq>\n"; RAW_DEFLATE and V1_DEFLATE are their permessage-deflate twins, one
 * deflate per broadcast for both, built only while a connection reads them -- else an alias
 * of the base encoding: fanout_append_deflated, docs/deflate.md) is built from that copy into
 * its own buffer, once per worker too. A connection only keeps a frame number and writes runs
 * of whole frames from its encoding's buffer, so a broadcast costs one copy per worker and
 * encoding, not one per client. After a
 * pump that brought new frames, worker_deliver_all() (worker_deliver.c) writes them to every
 * idle connection at once.
 *
 * A starting worker begins at the oldest entry the ring holds, not at its tail: the first pump
 * frames the ring's whole retained history (nobody is connected yet, so nothing is sent). That
 * is what lets a client of a dead or retired worker resume (worker_v1.c) on whichever worker it
 * reaches next. base_seq records how far back that history is whole: it moves past every frame
 * pushed out of the buffers and past a hole left by an overrun.
 *
 * Header size depends on the payload length, which ring_read() only reports afterwards. We peek
 * at the next record's header in the segment (layout in shm_layout.h) to guess it; the guess is
 * validated by ring_read() and, if a racing producer made it wrong, the payload is moved into
 * place (rare, and still correct). Frames never straddle the buffer end: when less than
 * WORKER_FRAME_HDR_MAX + max_payload bytes remain before the end, the next frame starts at 0.
 *
 * Overwrite rule: a frame is dropped from the index (head advances) as soon as a write touches
 * its bytes in any encoding, or when the index itself is full (nframes entries,
 * worker_buffer / 128). A connection whose cursor is below head has lost data: it is closed with
 * 1013 (slow_consumer close) or moved to head with a gap notice (slow_consumer skip,
 * worker_fanout_lapped); every write path checks this, and a scan of all connections after each
 * buffer lap (or each half lap of the index) catches the ones that are not writable at all. A
 * lapped cursor is never read.
 * The pump drains the shared ring eagerly, so worker_buffer (plus the kernel's socket buffers)
 * is the backlog a client may have: a burst larger than that, published faster than a client
 * reads, drops it even though the shared ring might still hold the entries.
 *
 * Wake-ups: the doorbell datagram wakes a sleeping worker; before every sleep an ev_prepare
 * watcher pumps the ring, arms the doorbell and checks the ring once more, so an entry published
 * between the last pump and the arm is never left waiting (doorbell.h explains the protocol).
 *
 * Admin kicks (DELETE /admin/connections/{id}) arrive the same way: wshub-admin sets a row's
 * kick_code, bumps our kicks_pending and rings the doorbell (conntab_kick). Each pump compares
 * kicks_pending with the value it last saw, one load, and only when it changed walks our
 * connections and closes those whose row carries a code, with that code (reason "admin").
 *
 * If this worker itself is lapped by the ring (RING_OVERRUN), the lost entries cannot be
 * delivered to anyone: every current connection is closed with 1013 once it has been sent the
 * frames before the gap (or, under slow_consumer skip, a GAP frame goes into the stream: wshub.v1
 * clients read "g <from> <to> overrun"), so no client ever sees a silent hole in the stream.
 */
#include "worker.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>

#include "conntab.h"
#include "doorbell.h"
#include "log.h"
#include "stats.h"

#define FRAMES_PER_BYTE_SHIFT 7 /* index entries: one per 128 buffer bytes */
#define MIN_FRAMES            1024

static uint32_t frame_hdr_len(uint32_t payload_len)
{
    if (payload_len < 126)
        return 2;
    return payload_len <= 0xffff ? 4 : 10;
}

static void frame_write_hdr(uint8_t *p, uint32_t hdr_len, uint32_t payload_len, int binary)
{
    p[0] = binary ? 0x82 : 0x81; /* FIN + opcode */
    if (hdr_len == 2) {
        p[1] = (uint8_t)payload_len;
    } else if (hdr_len == 4) {
        p[1] = 126;
        p[2] = (uint8_t)(payload_len >> 8);
        p[3] = (uint8_t)payload_len;
    } else {
        p[1] = 127;
        for (int i = 0; i < 8; i++)
            p[2 + i] = (uint8_t)((uint64_t)payload_len >> (56 - 8 * i));
    }
}

int worker_fanout_init(struct worker *w)
{
    struct worker_fanout *f = &w->fan;
    f->max_payload = w->shm.hdr->ring.max_payload;
    f->buf_size = w->conf.worker_buffer;
    if (f->buf_size < 2ULL * (f->max_payload + WORKER_FRAME_HDR_MAX + WORKER_V1_PREFIX_MAX)) {
        log_error(0,
                  "worker_buffer (%llu) is smaller than two of the segment's largest frames "
                  "(max payload %u)",
                  (unsigned long long)f->buf_size, f->max_payload);
        return -1;
    }
    f->nframes = f->buf_size >> FRAMES_PER_BYTE_SHIFT;
    if (f->nframes < MIN_FRAMES)
        f->nframes = MIN_FRAMES;
    /* Anonymous mappings: pages are only backed once touched. */
    for (int v = 0; v < WORKER_VARIANTS; v++) {
        if (v >= WORKER_VARIANT_RAW_DEFLATE && !w->conf.deflate)
            continue; /* permessage-deflate off: never built nor read */
        f->vb[v].buf =
            mmap(NULL, f->buf_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (f->vb[v].buf == MAP_FAILED) {
            log_error(errno, "mmap(%llu) failed for a frame buffer",
                      (unsigned long long)f->buf_size);
            return -1;
        }
    }
    size_t isz = f->nframes * sizeof(struct worker_frame);
    f->frames = mmap(NULL, isz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (f->frames == MAP_FAILED) {
        log_error(errno, "mmap(%zu) failed for the frame index", isz);
        return -1;
    }
    /* Start at the oldest entry the ring still holds: the first pump frames them all (there is
     * nobody to send them to yet), so a client of a dead or retired worker can resume here. */
    memset(&f->cursor, 0, sizeof(f->cursor));
    ring_cursor_recover(&w->shm, &f->cursor);
    f->base_seq = f->cursor.seq;
    return 0;
}

/* Payload length of the record at the cursor, read racily from the segment: only a guess that
 * ring_read() confirms. Skips one PAD record (the writer's wrap filler). */
static uint32_t fanout_peek_payload_len(const struct worker *w)
{
    const struct shm_ring_ctl *rc = &w->shm.hdr->ring;
    const uint8_t *data = shm_ring_data(&w->shm);
    uint64_t pos = w->fan.cursor.pos;
    struct ring_record rec;
    for (int i = 0; i < 2; i++) {
        memcpy(&rec, data + (pos & (rc->capacity - 1)), sizeof(rec));
        if (rec.type != RING_REC_PAD || rec.size < RING_ALIGN)
            break;
        pos += rec.size;
    }
    return rec.type == RING_REC_MSG ? rec.payload_len : 0;
}

/* Drops the oldest frame; resume can no longer reach back before what it carried. */
static void fanout_drop_head(struct worker_fanout *f)
{
    const struct worker_frame *fr = worker_fanout_frame(f, f->head);
    uint64_t last = fr->kind == WORKER_FRAME_GAP ? fr->gap_to : fr->seq;
    if (last + 1 > f->base_seq)
        f->base_seq = last + 1;
    f->head++;
}

/* Drops every frame whose bytes in encoding v lie before `end - buf_size`: a write reaching
 * position `end` of that buffer has overwritten (or is about to overwrite) them. */
static void fanout_invalidate_until(struct worker_fanout *f, int v, uint64_t end)
{
    if (end <= f->buf_size)
        return;
    uint64_t limit = end - f->buf_size;
    while (f->head < f->tail && worker_fanout_frame(f, f->head)->v[v].pos < limit)
        fanout_drop_head(f);
}

/* Where a frame of at most `need` bytes starts in encoding v's buffer: frames never straddle the
 * end, the tail end stays unused. */
static uint64_t fanout_frame_start(const struct worker_fanout *f, int v, uint64_t need)
{
    uint64_t wpos = f->vb[v].write_pos;
    uint64_t off = wpos & (f->buf_size - 1);
    return off + need > f->buf_size ? wpos + (f->buf_size - off) : wpos;
}

/* A new index entry (pushing the oldest out when the index is full). */
static struct worker_frame *fanout_new_frame(struct worker_fanout *f)
{
    if (f->tail - f->head == f->nframes)
        fanout_drop_head(f);
    return &f->frames[f->tail & (f->nframes - 1)];
}

static void fanout_place(struct worker_fanout *f, struct worker_frame *fr, int v, uint64_t pos,
                         uint32_t len, uint32_t hdr_len)
{
    fr->v[v].pos = pos;
    fr->v[v].len = len;
    fr->v[v].hdr_len = (uint16_t)hdr_len;
    fr->v[v].alias = 0;
    f->vb[v].write_pos = pos + len;
}

/* A DEFLATE encoding not built for this frame: readers take it from the base encoding. */
static void fanout_alias(struct worker_fanout *f, struct worker_frame *fr, int v)
{
    fr->v[v].pos = f->vb[v].write_pos; /* keeps the buffer's positions in frame order */
    fr->v[v].len = 0;
    fr->v[v].hdr_len = 0;
    fr->v[v].alias = 1;
}

/* The newest frame is already in [head, tail) when its twins are built: its slot's old position
 * in encoding v must not make the invalidation below take it for an overwritten frame. */
static void fanout_claim(struct worker_frame *fr, int v, uint64_t pos)
{
    fr->v[v].pos = pos;
    fr->v[v].alias = 0;
}

static uint8_t *fanout_at(const struct worker_fanout *f, int v, uint64_t pos)
{
    return f->vb[v].buf + (pos & (f->buf_size - 1));
}

/* Copies frame fr of encoding `from` as is into encoding v (RSV1 clear). */
static void fanout_copy_plain(struct worker_fanout *f, struct worker_frame *fr, int v, int from,
                              uint64_t pos)
{
    const struct worker_frame_copy *src = &fr->v[from];
    memcpy(fanout_at(f, v, pos), fanout_at(f, from, src->pos), src->len);
    fanout_place(f, fr, v, pos, src->len, src->hdr_len);
}

/* Finishes a compressed frame whose body was written `guess` bytes into the reservation at pos
 * (the header of the shorter body may be shorter: the body moves up). */
static void fanout_place_deflated(struct worker_fanout *f, struct worker_frame *fr, int v,
                                  uint64_t pos, uint32_t guess, uint32_t body, uint32_t env,
                                  int binary)
{
    uint8_t *p = fanout_at(f, v, pos);
    uint32_t hdr = frame_hdr_len(body);
    if (hdr != guess)
        memmove(p + hdr, p + guess, body);
    frame_write_hdr(p, hdr, body, binary);
    p[0] |= 0x40; /* RSV1: "Per-Message Compressed" (RFC 7692 6) */
    fanout_place(f, fr, v, pos, hdr + body, hdr + env);
}

/* RAW_DEFLATE of the newest frame: the payload deflated (limit: shorter than itself), else as
 * is. Points *z at the compressed bytes (*zlen of them) when there are some. */
static void fanout_deflate_raw(struct worker *w, struct worker_frame *fr, const struct ring_msg *m,
                               const uint8_t **z, size_t *zlen)
{
    struct worker_fanout *f = &w->fan;
    const int v = WORKER_VARIANT_RAW_DEFLATE;
    const struct worker_frame_copy *raw = &fr->v[WORKER_VARIANT_RAW];
    uint32_t n = m->payload_len, hdr = frame_hdr_len(n);
    uint64_t pos = fanout_frame_start(f, v, hdr + n + 4);
    fanout_claim(fr, v, pos);
    fanout_invalidate_until(f, v, pos + hdr + n + 4);
    uint8_t *p = fanout_at(f, v, pos);
    size_t c =
        n >= w->conf.deflate_threshold
            ? worker_deflate_compress(w, fanout_at(f, WORKER_VARIANT_RAW, raw->pos + raw->hdr_len),
                                      n, p + hdr, n)
            : 0;
    if (c == 0) {
        fanout_copy_plain(f, fr, v, WORKER_VARIANT_RAW, pos);
        return;
    }
    fanout_place_deflated(f, fr, v, pos, hdr, (uint32_t)c, 0, m->flags & RING_F_BINARY);
    *z = fanout_at(f, v, pos + fr->v[v].hdr_len);
    *zlen = c;
}

/* V1_DEFLATE of the newest frame: a stored deflate block (RFC 1951 3.2.4: BFINAL 0, BTYPE 00,
 * LEN, NLEN) carrying "m <seq>\n", then the deflated payload -- RAW's bytes when they exist,
 * else deflated here. Both end byte-aligned, so the two concatenate into one stream the client
 * inflates in one go; the payload's back-references never reach into the envelope. Else as is.
 * `tried`: RAW's deflate did not pay, do not try again. */
static void fanout_deflate_v1(struct worker *w, struct worker_frame *fr, const struct ring_msg *m,
                              const uint8_t *z, size_t zlen, int tried)
{
    struct worker_fanout *f = &w->fan;
    const int v = WORKER_VARIANT_V1_DEFLATE;
    const struct worker_frame_copy *raw = &fr->v[WORKER_VARIANT_RAW];
    uint8_t env[WORKER_V1_PREFIX_MAX];
    uint32_t elen = worker_v1_prefix(m->seq, m->channel, env);
    uint32_t n = m->payload_len, hdr = frame_hdr_len(elen + n);
    uint64_t need = hdr + 5 + elen + n + 4;
    uint64_t pos = fanout_frame_start(f, v, need);
    fanout_claim(fr, v, pos);
    fanout_invalidate_until(f, v, pos + need);
    uint8_t *p = fanout_at(f, v, pos), *zdst = p + hdr + 5 + elen;
    if (z != NULL && zlen + 5 < n)
        memcpy(zdst, z, zlen);
    else if (z == NULL && !tried && n >= w->conf.deflate_threshold && n > 5)
        zlen = worker_deflate_compress(w, fanout_at(f, WORKER_VARIANT_RAW, raw->pos + raw->hdr_len),
                                       n, zdst, n - 5);
    else
        zlen = 0;
    if (zlen == 0) {
        fanout_copy_plain(f, fr, v, WORKER_VARIANT_V1, pos);
        return;
    }
    uint8_t *s = p + hdr;
    s[0] = 0x00;
    s[1] = (uint8_t)elen;
    s[2] = (uint8_t)(elen >> 8);
    s[3] = (uint8_t)~elen;
    s[4] = (uint8_t)(~elen >> 8);
    memcpy(s + 5, env, elen);
    fanout_place_deflated(f, fr, v, pos, hdr, (uint32_t)(5 + elen + zlen), 5 + elen,
                          m->flags & RING_F_BINARY);
}

/* The compressed twins of the newest frame (a broadcast), for connections that negotiated
 * permessage-deflate (worker_deflate.c): one deflate for both. A twin nobody reads right now is
 * not built (an alias of its base encoding): a client that later resumes into such a frame gets
 * it uncompressed, which RFC 7692 allows for any message. */
static void fanout_append_deflated(struct worker *w, const struct ring_msg *m)
{
    struct worker_fanout *f = &w->fan;
    struct worker_frame *fr = &f->frames[(f->tail - 1) & (f->nframes - 1)];
    const uint8_t *z = NULL;
    size_t zlen = 0;
    int raw = worker_deflate_readers(w, WORKER_VARIANT_RAW_DEFLATE) > 0;
    if (raw)
        fanout_deflate_raw(w, fr, m, &z, &zlen);
    else
        fanout_alias(f, fr, WORKER_VARIANT_RAW_DEFLATE);
    if (worker_deflate_readers(w, WORKER_VARIANT_V1_DEFLATE) > 0)
        fanout_deflate_v1(w, fr, m, z, zlen, raw && z == NULL);
    else
        fanout_alias(f, fr, WORKER_VARIANT_V1_DEFLATE);
}

/* The V1 encoding of a broadcast: header + "m <seq>\n" + the payload copied from RAW. */
static void fanout_append_v1(struct worker_fanout *f, struct worker_frame *fr,
                             const uint8_t *payload, const struct ring_msg *m)
{
    uint8_t prefix[WORKER_V1_PREFIX_MAX];
    uint32_t plen = worker_v1_prefix(m->seq, m->channel, prefix);
    uint32_t body = plen + m->payload_len;
    uint32_t hdr = frame_hdr_len(body);
    uint64_t pos = fanout_frame_start(f, WORKER_VARIANT_V1, hdr + body);
    fanout_invalidate_until(f, WORKER_VARIANT_V1, pos + hdr + body);
    uint8_t *p = f->vb[WORKER_VARIANT_V1].buf + (pos & (f->buf_size - 1));
    frame_write_hdr(p, hdr, body, m->flags & RING_F_BINARY);
    memcpy(p + hdr, prefix, plen);
    memcpy(p + hdr + plen, payload, m->payload_len);
    fanout_place(f, fr, WORKER_VARIANT_V1, pos, hdr + body, hdr + plen);
}

/* Indexes the broadcast ring_read() just copied to RAW position `wpos` + guess_hdr, and builds
 * its other encodings. */
static void fanout_append(struct worker_fanout *f, uint64_t wpos, uint32_t guess_hdr,
                          const struct ring_msg *m)
{
    uint8_t *base = f->vb[WORKER_VARIANT_RAW].buf + (wpos & (f->buf_size - 1));
    uint32_t hdr = frame_hdr_len(m->payload_len);
    uint64_t end = wpos + (hdr > guess_hdr ? hdr : guess_hdr) + m->payload_len;
    if (hdr != guess_hdr)
        memmove(base + hdr, base + guess_hdr, m->payload_len); /* lost the race to a producer */
    fanout_invalidate_until(f, WORKER_VARIANT_RAW, end);
    frame_write_hdr(base, hdr, m->payload_len, m->flags & RING_F_BINARY);
    struct worker_frame *fr = fanout_new_frame(f);
    fr->seq = m->seq;
    fr->published_ns = m->published_ns;
    fr->gap_to = 0;
    fr->chan_key = WORKER_CHAN_ALL; /* fanout_read_one() sets it */
    fr->payload_len = m->payload_len;
    fr->kind = WORKER_FRAME_MSG;
    fanout_place(f, fr, WORKER_VARIANT_RAW, wpos, hdr + m->payload_len, hdr);
    fanout_append_v1(f, fr, base + hdr, m);
    f->tail++;
}

/* A gap notice in the stream (slow_consumer skip, after this worker was lapped): V1 clients
 * read "g <from> <to> overrun", RAW clients nothing. */
static void fanout_append_gap(struct worker_fanout *f, uint64_t from, uint64_t to)
{
    uint8_t text[WORKER_V1_CONTROL_MAX];
    uint32_t tlen = worker_v1_gap_text(from, to, WORKER_GAP_OVERRUN, text);
    uint32_t hdr = frame_hdr_len(tlen);
    uint64_t pos = fanout_frame_start(f, WORKER_VARIANT_V1, hdr + tlen);
    fanout_invalidate_until(f, WORKER_VARIANT_V1, pos + hdr + tlen);
    struct worker_frame *fr = fanout_new_frame(f);
    fr->seq = from;
    fr->gap_to = to;
    fr->chan_key = WORKER_CHAN_ALL;
    fr->published_ns = shm_mono_ns();
    fr->payload_len = 0;
    fr->kind = WORKER_FRAME_GAP;
    uint8_t *p = f->vb[WORKER_VARIANT_V1].buf + (pos & (f->buf_size - 1));
    frame_write_hdr(p, hdr, tlen, 0);
    memcpy(p + hdr, text, tlen);
    fanout_place(f, fr, WORKER_VARIANT_V1, pos, hdr + tlen, hdr + tlen);
    fanout_place(f, fr, WORKER_VARIANT_RAW, f->vb[WORKER_VARIANT_RAW].write_pos, 0, 0);
    fanout_alias(f, fr, WORKER_VARIANT_RAW_DEFLATE); /* the notice goes out uncompressed */
    fanout_alias(f, fr, WORKER_VARIANT_V1_DEFLATE);
    f->tail++;
}

/* This worker was lapped by the ring: the skipped entries cannot be delivered to anyone. */
static void fanout_overrun(struct worker *w, uint64_t reserve_end)
{
    struct worker_fanout *f = &w->fan;
    fanout_invalidate_until(f, WORKER_VARIANT_RAW, reserve_end); /* ring_read wrote up to it */
    uint64_t expected = f->cursor.seq;
    uint64_t skipped = ring_cursor_recover(&w->shm, &f->cursor);
    stats_add(&w->stats->ring_overruns, 1);
    f->base_seq = f->cursor.seq; /* a resume from before the hole would not be whole */
    if (strcmp(w->conf.slow_consumer, "skip") == 0) {
        log_warn(0, "lapped by the ring: %llu broadcasts from seq %llu lost; gap notice sent",
                 (unsigned long long)skipped, (unsigned long long)expected);
        fanout_append_gap(f, expected, f->cursor.seq - 1);
        return;
    }
    log_warn(0,
             "lapped by the ring: %llu broadcasts from seq %llu lost; closing %u connections "
             "with 1013",
             (unsigned long long)skipped, (unsigned long long)expected, w->nconns);
    for (struct worker_conn *c = w->conns.next; c != &w->conns; c = c->next)
        worker_conn_schedule_close(c, f->tail, WORKER_CLOSE_TRY_AGAIN_LATER,
                                   SHM_CLOSE_SLOW_CONSUMER);
}

/* Marks the newest frame with its channel's key and counts it for the channel. */
static void fanout_tag_channel(struct worker *w, const struct ring_msg *m)
{
    struct worker_frame *fr = &w->fan.frames[(w->fan.tail - 1) & (w->fan.nframes - 1)];
    fr->chan_key = worker_channel_key(w, m->channel, m->channel_len);
    if (fr->chan_key != WORKER_CHAN_ALL) {
        struct worker_chan *ch = worker_channel_find(w, fr->chan_key);
        if (ch != NULL && ++ch->messages && ch->shm_index >= 0)
            atomic_store_explicit(&shm_channel(&w->shm, w->slot, (uint32_t)ch->shm_index)->messages,
                                  ch->messages, memory_order_relaxed);
    }
}

/* Reads one ring entry into the RAW buffer (and builds its other encodings). */
static enum ring_status fanout_read_one(struct worker *w, struct ring_msg *m)
{
    struct worker_fanout *f = &w->fan;
    uint64_t wpos =
        fanout_frame_start(f, WORKER_VARIANT_RAW, WORKER_FRAME_HDR_MAX + f->max_payload);
    uint64_t off = wpos & (f->buf_size - 1);
    uint32_t guess = frame_hdr_len(fanout_peek_payload_len(w));
    enum ring_status st = ring_read(&w->shm, &f->cursor, m,
                                    f->vb[WORKER_VARIANT_RAW].buf + off + guess, f->max_payload);
    if (st == RING_OK) {
        fanout_append(f, wpos, guess, m);
        fanout_append_deflated(w, m);
        fanout_tag_channel(w, m);
    } else if (st == RING_OVERRUN)
        fanout_overrun(w, wpos + guess + f->max_payload);
    return st;
}

int worker_fanout_lapped(struct worker *w, struct worker_conn *c)
{
    struct worker_fanout *f = &w->fan;
    if (!c->busy) {
        c->cursor = f->tail; /* it wants nothing that was buffered: nothing was lost */
        return 0;
    }
    if (strcmp(w->conf.slow_consumer, "skip") != 0 || f->head >= f->tail) {
        worker_conn_schedule_close(c, c->cursor, WORKER_CLOSE_TRY_AGAIN_LATER,
                                   SHM_CLOSE_SLOW_CONSUMER);
        return -1;
    }
    uint64_t to = worker_fanout_frame(f, f->head)->seq - 1;
    if (c->variant == WORKER_VARIANT_V1) {
        if (!(c->pending & WORKER_PENDING_GAP))
            c->gap_from = c->last_seq + 1;
        c->gap_to = to;
        c->gap_reason = WORKER_GAP_SKIPPED;
        c->pending |= WORKER_PENDING_GAP;
    }
    c->cursor = f->head;
    c->last_seq = to;
    if (!c->skipped) /* counts connections that fell behind, not how often */
        stats_add(&w->stats->slow_consumers, 1);
    c->skipped = 1;
    return 0;
}

/* Finds the connections whose cursor fell below head. Called once per buffer lap (in any
 * encoding) or half an index lap, so its O(connections) cost is paid per worker_buffer bytes,
 * not per message. */
static void fanout_scan_lapped(struct worker *w)
{
    struct worker_fanout *f = &w->fan;
    int lapped = f->head - f->scan_head >= f->nframes / 2;
    for (int v = 0; v < WORKER_VARIANTS; v++) {
        uint64_t lap = f->vb[v].write_pos / f->buf_size;
        if (lap != f->vb[v].scan_lap)
            lapped = 1;
        f->vb[v].scan_lap = lap;
    }
    if (!lapped)
        return;
    f->scan_head = f->head;
    for (struct worker_conn *c = w->conns.next; c != &w->conns; c = c->next) {
        if (c->cursor >= f->head)
            continue;
        if (!c->busy)
            c->cursor = f->tail; /* wants nothing buffered: a stale cursor, not a loss */
        else if (c->close_at > c->cursor && worker_fanout_lapped(w, c) == 0)
            lws_callback_on_writable(c->wsi);
    }
}

uint64_t worker_fanout_after(const struct worker_fanout *f, uint64_t seq)
{
    uint64_t lo = f->head, hi = f->tail; /* sequences grow with frame numbers */
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        if (worker_fanout_frame(f, mid)->seq > seq)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

/* True when the admin asked for a close since the last scan (acquire: kick_codes visible). */
static int fanout_kicks_pending(const struct worker *w)
{
    return atomic_load_explicit(&w->self->kicks_pending, memory_order_acquire) != w->kicks_seen;
}

/* Closes the connections whose row has a kick_code, at their cursor (nothing more is sent). */
static void fanout_kicks(struct worker *w)
{
    w->kicks_seen = atomic_load_explicit(&w->self->kicks_pending, memory_order_acquire);
    for (struct worker_conn *c = w->conns.next; c != &w->conns; c = c->next) {
        if (c->row == CONNTAB_NONE)
            continue;
        uint16_t code =
            atomic_load_explicit(&shm_conn(&w->shm, c->row)->kick_code, memory_order_relaxed);
        if (code != 0)
            worker_conn_schedule_close(c, c->cursor, code, SHM_CLOSE_ADMIN);
    }
}

void worker_fanout_pump(struct worker *w)
{
    struct ring_msg m;
    uint64_t entries = 0, last_seq = 0, from = w->fan.tail;
    enum ring_status st;

    if (fanout_kicks_pending(w))
        fanout_kicks(w);

    while ((st = fanout_read_one(w, &m)) != RING_EMPTY) {
        if (st == RING_OK) {
            entries++;
            last_seq = m.seq;
        }
    }
    if (entries == 0)
        return; /* an overrun alone already asked its victims for a writable callback */
    stats_add(&w->stats->ring_entries, entries);
    if (entries)
        atomic_store_explicit(&w->stats->last_seq, last_seq, memory_order_relaxed);
    fanout_scan_lapped(w);
    worker_deliver_all(w, from);
}

/* The buffer frame fr is read from in encoding `want`: its own, or the base encoding's when a
 * DEFLATE twin was not built (fanout_alias). */
static int fanout_source(const struct worker_frame *fr, enum worker_variant want)
{
    return fr->v[want].alias ? (int)want - WORKER_VARIANT_RAW_DEFLATE : (int)want;
}

uint64_t worker_fanout_gather(const struct worker_fanout *f, const struct worker_conn *c,
                              uint64_t cursor, uint64_t limit, size_t budget, const uint8_t **ptr,
                              size_t *len)
{
    enum worker_variant want = worker_conn_encoding(c);
    int v = fanout_source(worker_fanout_frame(f, cursor), want);
    const struct worker_frame_copy *fc = &worker_fanout_frame(f, cursor)->v[v];
    uint64_t start = fc->pos, n = 1;
    size_t bytes = fc->len;
    for (uint64_t k = cursor + 1; k < limit; k++, n++) {
        const struct worker_frame *fr = worker_fanout_frame(f, k);
        if (fanout_source(fr, want) != v)
            break; /* the run goes on in the other buffer: next write */
        fc = &fr->v[v];
        if (fc->pos != start + bytes || bytes + fc->len > budget ||
            !worker_conn_wants(c, k, fr->chan_key))
            break;
        bytes += fc->len;
    }
    *ptr = f->vb[v].buf + (start & (f->buf_size - 1));
    *len = bytes;
    return n;
}

static void fanout_doorbell_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    struct worker *w = ev_userdata(loop);
    (void)io;
    (void)revents;
    doorbell_drain(w->doorbell_fd);
    worker_fanout_pump(w);
}

/* Before every sleep: pump, arm the doorbell, then look once more so an entry (or a kick)
 * published between the pump and the arm (whose producer saw the doorbell unarmed) is not
 * missed. */
static void fanout_prepare_cb(struct ev_loop *loop, ev_prepare *p, int revents)
{
    struct worker *w = ev_userdata(loop);
    (void)p;
    (void)revents;
    worker_fanout_pump(w);
    doorbell_arm(&w->shm, w->slot);
    if (ring_next_seq(&w->shm) != w->fan.cursor.seq || fanout_kicks_pending(w))
        worker_fanout_pump(w);
}

void worker_fanout_start(struct worker *w)
{
    ev_io_init(&w->doorbell_io, fanout_doorbell_cb, w->doorbell_fd, EV_READ);
    ev_io_start(w->loop, &w->doorbell_io);
    ev_prepare_init(&w->prepare, fanout_prepare_cb);
    ev_prepare_start(w->loop, &w->prepare);
}
