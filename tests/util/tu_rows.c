#include "tu_rows.h"
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int tu_rows_cmp(const void *a, const void *b) {
  const json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
  const char *kx = json_string_value(json_object_get(x, "key")), *ky = json_string_value(json_object_get(y, "key"));
  int c = strcmp(kx ? kx : "", ky ? ky : "");
  if (c) return c;
  json_int_t lx = json_integer_value(json_object_get(x, "layer")), ly = json_integer_value(json_object_get(y, "layer"));
  if (lx != ly) return lx < ly ? -1 : 1;
  json_int_t hx = json_integer_value(json_object_get(x, "head")), hy = json_integer_value(json_object_get(y, "head"));
  return (hx > hy) - (hx < hy);
}

tu_rows tu_rows_load(const char *path, int sorted) {
  static char line[1 << 16]; /* a row is a few hundred bytes; tests run one per process */
  FILE *f = fopen(path, "r");
  cr_assert_not_null(f, "%s missing", path);
  tu_rows r = {0};
  size_t cap = 0;
  while (fgets(line, sizeof line, f)) {
    cr_assert(strchr(line, '\n') != NULL, "%s: a line without newline", path);
    json_error_t je;
    json_t *o = json_loads(line, 0, &je);
    cr_assert(json_is_object(o), "%s: %s", path, je.text);
    json_object_del(o, "eval_s");
    if (r.n == cap) {
      cap = cap ? 2 * cap : 64;
      r.v = realloc(r.v, cap * sizeof *r.v);
      cr_assert_not_null(r.v);
    }
    r.v[r.n++] = o;
  }
  fclose(f);
  if (sorted) qsort(r.v, r.n, sizeof *r.v, tu_rows_cmp);
  return r;
}

void tu_rows_free(tu_rows *r) {
  for (size_t i = 0; i < r->n; i++) json_decref(r->v[i]);
  free(r->v);
  r->v = NULL;
  r->n = 0;
}
