/* fuzz_resume.c -- resume_parse() (ws-worker/worker_resume.c), the client's since/epoch values.
 *
 * Input: one flag byte (bit 0: `since` present, bit 1: `epoch` present), then the since value,
 * a NUL, the epoch value. The query decoder may hand the parser any byte but NUL, hence NUL as
 * the separator. Oracle: a second, independent reading of the documented grammar (since = 1..20
 * decimal digits up to UINT64_MAX - 1, epoch = exactly 16 hex digits), computed with strtoull on
 * strings already known to be digits only. resume_parse() must agree on accept or reject, on the
 * values, and give a reason when it rejects.
 */
#include <ctype.h>
#include <errno.h>

#include "fuzz.h"
#include "worker_resume.h"

/* Reference for `since`: returns 1 with *v, or 0. */
static int ref_since(const char *s, uint64_t *v)
{
    size_t n = strlen(s);
    if (n == 0 || n > 20 || strspn(s, "0123456789") != n)
        return 0;
    errno = 0;
    unsigned long long x = strtoull(s, NULL, 10);
    if (errno == ERANGE || x == UINT64_MAX)
        return 0;
    *v = x;
    return 1;
}

/* Reference for `epoch`: returns 1 with *v, or 0. */
static int ref_epoch(const char *s, uint64_t *v)
{
    if (strlen(s) != 16 || strspn(s, "0123456789abcdefABCDEF") != 16)
        return 0;
    *v = strtoull(s, NULL, 16);
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int has_since = data[0] & 1, has_epoch = (data[0] & 2) != 0;
    char *since = fuzz_strndup(data + 1, size - 1);
    size_t slen = strlen(since);
    const char *epoch = slen < size - 1 ? since + slen + 1 : ""; /* after the NUL, if any */

    struct resume_point rp;
    const char *why = NULL;
    int rc = resume_parse(has_since ? since : NULL, has_epoch ? epoch : NULL, &rp, &why);

    uint64_t want_since = 0, want_epoch = 0;
    int ok = (!has_since || ref_since(since, &want_since)) &&
             (!has_epoch || ref_epoch(epoch, &want_epoch));
    FUZZ_CHECK((rc == 0) == ok, "since '%s' epoch '%s': resume_parse %d, reference %d",
               has_since ? since : "(none)", has_epoch ? epoch : "(none)", rc, ok);
    if (rc == 0) {
        FUZZ_CHECK(rp.has_since == has_since && rp.has_epoch == has_epoch, "presence flags");
        FUZZ_CHECK(!has_since || rp.since == want_since, "since '%s' parsed as %llu", since,
                   (unsigned long long)rp.since);
        FUZZ_CHECK(!has_epoch || rp.epoch == want_epoch, "epoch '%s' parsed as %016llx", epoch,
                   (unsigned long long)rp.epoch);
        FUZZ_CHECK(!has_since || rp.since < UINT64_MAX, "since + 1 must stay a sequence");
    } else {
        FUZZ_CHECK(why != NULL && why[0] != '\0', "a rejection without a reason");
    }
    free(since);
    return 0;
}
