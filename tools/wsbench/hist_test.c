/* hist_test.c -- quantiles within the histogram's 1/64 precision, merging, and the clamps. */
#include "hist.h"
#include "check.h"

#include <stdio.h>
#include <stdlib.h>

static int failures; /* counted by CHECK (check.h) */

static int near(int64_t got, int64_t want)
{
    double err = (double)llabs(got - want) / (double)want;
    if (err > 1.0 / 64) {
        fprintf(stderr, "got %lld want %lld (%.2f%%)\n", (long long)got, (long long)want,
                err * 100);
        return 0;
    }
    return 1;
}

int main(void)
{
    static struct hist a, b;
    hist_init(&a);
    hist_init(&b);
    CHECK(hist_quantile(&a, 0.5) == 0);
    /* 1..100000 us: half in a, half in b */
    for (int64_t us = 1; us <= 100000; us++)
        hist_record(us % 2 ? &a : &b, us * 1000);
    hist_merge(&a, &b);
    CHECK(a.count == 100000 && a.min_ns == 1000 && a.max_ns == 100000000);
    CHECK(near(hist_quantile(&a, 0.50), 50000000));
    CHECK(near(hist_quantile(&a, 0.90), 90000000));
    CHECK(near(hist_quantile(&a, 0.99), 99000000));
    CHECK(near(hist_quantile(&a, 0.999), 99900000));
    CHECK(hist_quantile(&a, 1.0) == 100000000);
    CHECK(hist_quantile(&a, 0.0) >= 1000);

    hist_init(&b); /* clamps: below 1 us, negative, above 137 s */
    hist_record(&b, -5);
    hist_record(&b, 10);
    hist_record(&b, 500LL * 1000000000);
    CHECK(b.count == 3 && b.min_ns == 0 && b.max_ns == 500LL * 1000000000);
    CHECK(hist_quantile(&b, 1.0) == 500LL * 1000000000);
    CHECK(hist_quantile(&b, 0.3) <= 1100);

    hist_init(&b); /* a single value comes back exactly (clamped to min/max) */
    hist_record(&b, 123456789);
    CHECK(hist_quantile(&b, 0.5) == 123456789);

    /* bucket edges (the --cdf output): each value lies below its bucket's upper edge and at
     * or above the previous bucket's */
    static const int64_t vals[] = {1024, 1500, 65535, 65536, 999999, 123456789, 100000000000LL};
    for (size_t k = 0; k < sizeof(vals) / sizeof(vals[0]); k++) {
        hist_init(&b);
        hist_record(&b, vals[k]);
        unsigned i = 0;
        while (i < HIST_BUCKETS && b.bucket[i] == 0)
            i++;
        CHECK(i < HIST_BUCKETS && hist_bucket_upper(i) > vals[k]);
        CHECK(i == 0 || hist_bucket_upper(i - 1) <= vals[k]);
        CHECK(hist_bucket_upper(i) - vals[k] <= vals[k] / 64 + 1);
    }
    if (failures) {
        fprintf(stderr, "hist_test: %d failures\n", failures);
        return 1;
    }
    printf("hist_test: ok\n");
    return 0;
}
