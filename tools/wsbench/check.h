/* check.h -- the one assertion macro wsbench's unit tests share.
 *
 * CHECK(cond) reports a failed condition with its file and line and counts it in the test's
 * own `failures` (each *_test.c defines `static int failures`), so a test runs every check and
 * exits non-zero at the end instead of stopping at the first.
 */
#ifndef WSBENCH_CHECK_H
#define WSBENCH_CHECK_H

#include <stdio.h>

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond);               \
            failures++;                                                                            \
        }                                                                                          \
    } while (0)

#endif /* WSBENCH_CHECK_H */
