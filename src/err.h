/* err: error reporting with context. Library code fills an sq_err and returns its code;
 * only main() prints and picks the exit status (0 ok, 1 failure during work, 2 bad input). */
#ifndef SQEXP_ERR_H
#define SQEXP_ERR_H
#include <stddef.h>

enum { SQ_OK = 0, SQ_EFAIL = 1, SQ_EINPUT = 2 };

typedef struct {
  int code;        /* SQ_OK, SQ_EFAIL or SQ_EINPUT */
  char msg[2048];  /* "file:line: what was wrong (what was expected)" */
} sq_err;

/* Set e (if non-NULL) to code + formatted message; returns code so callers can `return sq_fail(...)`. */
int sq_fail(sq_err *e, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Prefix the existing message with more context ("reading layer 3: " + old msg). */
int sq_wrap(sq_err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sq_err_clear(sq_err *e);

/* Allocation that reports file:line on failure and aborts: an OOM is not recoverable here. */
void *sq_xmalloc_at(size_t n, const char *file, int line);
void *sq_xcalloc_at(size_t n, size_t size, const char *file, int line);
#define sq_xmalloc(n) sq_xmalloc_at((n), __FILE__, __LINE__)
#define sq_xcalloc(n, s) sq_xcalloc_at((n), (s), __FILE__, __LINE__)

#endif
