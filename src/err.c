#include "err.h"
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int sq_fail(sq_err *e, int code, const char *fmt, ...) {
  if (!e) return code;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(e->msg, sizeof e->msg, fmt, ap);
  va_end(ap);
  e->code = code;
  return code;
}

int sq_wrap(sq_err *e, const char *fmt, ...) {
  if (!e) return SQ_EFAIL;
  char prefix[1024], old[sizeof e->msg];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(prefix, sizeof prefix, fmt, ap);
  va_end(ap);
  memcpy(old, e->msg, sizeof old);
  size_t np = strlen(prefix), room = sizeof e->msg - 1;
  if (np > room) np = room;
  memcpy(e->msg, prefix, np);
  size_t no = strnlen(old, sizeof old - 1);
  if (no > room - np) no = room - np; /* truncate the old message, never the new context */
  memcpy(e->msg + np, old, no);
  e->msg[np + no] = '\0';
  return e->code;
}

void sq_err_clear(sq_err *e) {
  if (!e) return;
  e->code = SQ_OK;
  e->msg[0] = '\0';
}

void *sq_xmalloc_at(size_t n, const char *file, int line) {
  void *p = malloc(n ? n : 1);
  if (!p) {
    fprintf(stderr, "%s:%d: out of memory allocating %zu bytes\n", file, line, n);
    abort();
  }
  return p;
}

void *sq_xcalloc_at(size_t n, size_t size, const char *file, int line) {
  void *p = calloc(n ? n : 1, size ? size : 1);
  if (!p) {
    fprintf(stderr, "%s:%d: out of memory allocating %zu x %zu bytes\n", file, line, n, size);
    abort();
  }
  return p;
}
