/* dump_select.c: layer-selection strings ("0:32:4", "0,4,8") for the commands that pick layers. */
#include <stdlib.h>
#include <string.h>
#include "dump.h"

static int parse_int(const char *s, const char *end, int *out) {
  if (s == end) return -1;
  char *stop;
  long v = strtol(s, &stop, 10);
  if (stop != end || v < -1000000 || v > 1000000) return -1;
  *out = (int)v;
  return 0;
}

/* Marks the layers of one item ("a", "a:b", "a:b:s") in keep[0..n_model). */
static int parse_item(const char *s, const char *end, int n_model, const char *what, char *keep, sq_err *e) {
  int v[3] = {0, 0, 1}, nv = 0;
  const char *p = s;
  while (nv < 3) {
    const char *c = memchr(p, ':', (size_t)(end - p));
    const char *stop = c ? c : end;
    if (parse_int(p, stop, &v[nv++])) break;
    if (!c) { nv = -nv; break; }
    p = c + 1;
  }
  int n = -nv;
  if (n < 1 || (n == 1 && v[0] < 0))
    return sq_fail(e, SQ_EINPUT, "%s: '%.*s' is not a layer, a range start:stop[:step] or a list of those", what,
                   (int)(end - s), s);
  if (n == 1) v[1] = v[0] + 1;
  if (v[2] < 1 || v[0] < 0 || v[1] <= v[0])
    return sq_fail(e, SQ_EINPUT, "%s: range '%.*s' is empty or has a step < 1", what, (int)(end - s), s);
  for (int l = v[0]; l < v[1]; l += v[2]) {
    if (l >= n_model)
      return sq_fail(e, SQ_EINPUT, "%s: layer %d is outside [0, %d)", what, l, n_model);
    keep[l] = 1;
  }
  return SQ_OK;
}

int dump_parse_layers(const char *spec, int n_model_layers, const char *what, int **layers, int *n, sq_err *e) {
  *layers = NULL;
  *n = 0;
  if (n_model_layers < 1) return sq_fail(e, SQ_EINPUT, "%s: the model has no layers", what);
  char *keep = sq_xcalloc((size_t)n_model_layers, 1);
  const char *p = spec;
  int rc = SQ_OK;
  while (!rc) {
    const char *c = strchr(p, ',');
    const char *end = c ? c : p + strlen(p);
    rc = parse_item(p, end, n_model_layers, what, keep, e);
    if (!c) break;
    p = c + 1;
  }
  if (!rc) {
    *layers = sq_xmalloc((size_t)n_model_layers * sizeof(int));
    for (int l = 0; l < n_model_layers; l++)
      if (keep[l]) (*layers)[(*n)++] = l;
  }
  free(keep);
  return rc;
}
