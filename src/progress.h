/* progress: a live bar with rate and ETA on a terminal (redrawn at most 10 times a second), one
 * plain line per layer when stderr is not a terminal (logs). Counts work items (rows). */
#ifndef SQEXP_PROGRESS_H
#define SQEXP_PROGRESS_H
#include <stdint.h>
#include <stdio.h>

typedef struct {
  FILE *f;            /* stderr */
  int tty;            /* live bar when 1 */
  int enabled;        /* 0: print nothing (--quiet) */
  int64_t total;      /* items in the whole run */
  int64_t done;       /* items finished, including those found finished at start */
  int64_t done_start; /* items already finished when this session started */
  double t_start, t_last_draw;
  char what[128];     /* current stage, e.g. "layer 12 head 3" */
  int drawn;          /* a bar is on screen (needs clearing before other output) */
} progress;

void progress_init(progress *p, FILE *f, int enabled, int64_t total, int64_t done_already);
void progress_set(progress *p, int64_t done, const char *what);  /* redraws if due */
/* End of a layer: on a terminal nothing extra; otherwise one line with counts, rate and ETA. */
void progress_layer(progress *p, int layer, int i_layer, int n_layers);
/* Erase the bar (before printing other lines to the same terminal). */
void progress_clear(progress *p);
void progress_finish(progress *p);
/* "1h02m", "3m05s", "12s" */
void progress_fmt_duration(double s, char *buf, size_t n);

#endif
