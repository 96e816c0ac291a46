/* tu_rows: a results store's JSONL file (rows.jsonl, spectra.jsonl, …) read back as JSON objects
 * for comparing runs: the timing field eval_s is dropped, every line must be whole. */
#ifndef TU_ROWS_H
#define TU_ROWS_H
#include <jansson.h>
#include <stddef.h>

typedef struct {
  json_t **v;
  size_t n;
} tu_rows;

/* Criterion-asserts that path exists and every line is a whole JSON object. sorted: order by
 * (key, layer, head) — a resumed run appends rows in a different order than an uninterrupted one. */
tu_rows tu_rows_load(const char *path, int sorted);
void tu_rows_free(tu_rows *r);
/* qsort comparator on (key, layer, head) for json_t * elements. */
int tu_rows_cmp(const void *a, const void *b);

#endif
