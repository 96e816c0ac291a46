/* plot: gnuplot figures. Every figure is DIR/<name>.gp plus its .dat files, written so that
 * `cd DIR && gnuplot <name>.gp` redraws <name>.png (pngcairo) and <name>.pdf (pdfcairo) after
 * any edit; scripts/plots.sh (make plots) does that for every results directory. */
#ifndef SQEXP_PLOT_H
#define SQEXP_PLOT_H
#include <stdio.h>
#include "err.h"
#include "report.h"

/* 1 when a `gnuplot` executable is on PATH. */
int plot_available(void);
/* Open DIR/<file> for writing a data file (recorded in made). */
FILE *plot_open_dat(const char *dir, const char *file, rep_outputs *made, sq_err *e);
/* Write DIR/<name>.gp: the common preamble (fonts, grid, line styles 1-8 per arm), then `body`
 * drawn once per output format (set output is done by the preamble loop), then run gnuplot in DIR
 * when `run`. A gnuplot failure is a warning in made (the log is DIR/gnuplot.log). */
int plot_render(const char *dir, const char *name, const char *body, int run, rep_outputs *made, sq_err *e);
/* The line style number of an arm (tq 1, sq 2, sq_paper_v1 3, lowrank 4). */
int plot_arm_style(const char *arm);


/* A growing text buffer for building gnuplot bodies. */
typedef struct {
  char *s;
  size_t n, cap;
} plot_buf;
void plot_bprintf(plot_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void plot_buf_free(plot_buf *b);
/* Quote a label for a gnuplot double-quoted string (escapes " and \, and '_' so that the
 * enhanced-text terminals do not subscript). */
void plot_quote(const char *in, char *out, size_t n);

#endif
