/* tu_tmp: a scratch directory per test (mkdtemp under /tmp) and its removal, for the tests that
 * write dumps, stores or run directories. */
#ifndef SQEXP_TU_TMP_H
#define SQEXP_TU_TMP_H
#include <stddef.h>

/* Create /tmp/sqexp_test_<tag>_XXXXXX into buf[n]; buf, or NULL on failure. */
char *tu_mkdtemp(char *buf, size_t n, const char *tag);
/* Remove dir and everything under it (no shell); 0 on success. */
int tu_rmtree(const char *dir);

#endif
