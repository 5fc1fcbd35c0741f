/* wire.c -- blocking whole-message IO on the parent/child pipes (see wire.h). */
#include "wire.h"

#include <errno.h>
#include <unistd.h>

const char *const wire_fail_names[WIRE_FAIL_COUNT] = {
    "refused",     "timeout",   "reset",       "eof",      "status",     "bad_accept",
    "bad_upgrade", "malformed", "subprotocol", "protocol", "no_address", "other",
};

/* 1006 stands for "no close frame" (RFC 6455 7.1.5); 1005 for a close frame without a code. */
const uint16_t wire_close_codes[WIRE_CLOSE_CODES - 1] = {1000, 1001, 1005, 1006, 1008, 1012, 1013};
const char *const wire_close_names[WIRE_CLOSE_CODES] = {"1000", "1001", "1005", "1006",
                                                        "1008", "1012", "1013", "other"};
const char *const wire_cause_names[WIRE_CAUSES] = {"restart", "lost", "other"};

unsigned wire_close_slot(uint16_t code)
{
    for (unsigned i = 0; i < WIRE_CLOSE_CODES - 1; i++)
        if (wire_close_codes[i] == code)
            return i;
    return WIRE_CLOSE_CODES - 1;
}

const char *const wire_drop_names[WIRE_DROP_COUNT] = {
    "close_frame", "reset", "eof", "protocol", "other",
};

int wire_write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int wire_read_all(int fd, void *buf, size_t len)
{
    char *p = buf;
    while (len > 0) {
        ssize_t n = read(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n == 0) {
            errno = EPIPE;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int wire_send(int fd, uint32_t kind, uint32_t child, const void *body, size_t size)
{
    struct wire_hdr h = {.kind = kind, .child = child, .size = size};
    if (wire_write_all(fd, &h, sizeof(h)) < 0)
        return -1;
    return size > 0 ? wire_write_all(fd, body, size) : 0;
}
