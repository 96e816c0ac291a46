#define _XOPEN_SOURCE 700
#include "util/tu_tmp.h"
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>

char *tu_mkdtemp(char *buf, size_t n, const char *tag) {
  if (snprintf(buf, n, "/tmp/sqexp_test_%s_XXXXXX", tag) >= (int)n) return NULL;
  return mkdtemp(buf);
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st, (void)flag, (void)ftw;
  return remove(path);
}

int tu_rmtree(const char *dir) { return nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS); }
