/* plot: write gnuplot scripts and run them (see plot.h). */
#include "plot.h"
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

int plot_available(void) {
  const char *path = getenv("PATH");
  if (!path) return 0;
  char buf[4096];
  for (const char *p = path; *p;) {
    size_t len = strcspn(p, ":");
    snprintf(buf, sizeof buf, "%.*s/gnuplot", (int)len, p);
    if (len && access(buf, X_OK) == 0) return 1;
    p += len + (p[len] == ':');
  }
  return 0;
}

FILE *plot_open_dat(const char *dir, const char *file, rep_outputs *made, sq_err *e) {
  char path[1200];
  snprintf(path, sizeof path, "%s/%s", dir, file);
  FILE *f = fopen(path, "w");
  if (!f) {
    sq_fail(e, SQ_EFAIL, "cannot write %s: %s", path, strerror(errno));
    return NULL;
  }
  rep_outputs_add(made, path);
  return f;
}

int plot_arm_style(const char *arm) { return rep_arm_rank(arm) + 1; }

/* Colours: Okabe-Ito (colour-blind safe); one per arm, in rep_arm_rank order. */
static const char plot_preamble[] =
    "# Written by `sqexp report`; edit freely and rerun with:  gnuplot %s.gp   (in this directory)\n"
    "# Draws %s.png (pngcairo) and %s.pdf (pdfcairo) from the .dat files beside it.\n"
    "set encoding utf8\n"
    "set grid lc rgb '#dddddd' lw 1\n"
    "set border lw 1.2\n"
    "set key box opaque samplen 2 spacing 1.1\n"
    "do for [fmt in \"png pdf\"] {\n"
    "  # fscale: font sizes in the body are PDF points times fscale, so both outputs look alike\n"
    "  fscale = (fmt eq \"png\") ? 2.0 : 1.0\n"
    "  psc = (fmt eq \"png\") ? 1.0 : 0.5   # point sizes: cairo draws PDF points larger\n"
    "  set style line 1 lc rgb '#0072B2' lw 2 pt 7 ps 1.3*psc   # tq\n"
    "  set style line 2 lc rgb '#D55E00' lw 2 pt 5 ps 1.3*psc   # sq\n"
    "  set style line 3 lc rgb '#009E73' lw 2 pt 9 ps 1.5*psc   # sq_paper_v1\n"
    "  set style line 4 lc rgb '#CC79A7' lw 2 pt 13 ps 1.5*psc  # lowrank\n"
    "  set style line 5 lc rgb '#E69F00' lw 2 pt 11 ps 1.3*psc\n"
    "  set style line 6 lc rgb '#56B4E9' lw 2 pt 3 ps 1.3*psc\n"
    "  set style line 7 lc rgb '#000000' lw 1.5 dt 2 pt 6 ps 2.2*psc  # frontier\n"
    "  set style line 8 lc rgb '#999999' lw 1 pt 1 ps 1*psc\n"

    "  if (fmt eq \"png\") {\n"
    "    set terminal pngcairo size 1400,900 enhanced font \"DejaVu Sans,20\" linewidth 1.5\n"
    "  } else {\n"
    "    set terminal pdfcairo size 10in,6.43in enhanced font \"DejaVu Sans,10\" fontscale 1.0 linewidth 1\n"
    "  }\n"
    "  set output \"%s.\".fmt\n";

int plot_render(const char *dir, const char *name, const char *body, int run, rep_outputs *made, sq_err *e) {
  char path[1200];
  snprintf(path, sizeof path, "%s/%s.gp", dir, name);
  FILE *f = fopen(path, "w");
  if (!f) return sq_fail(e, SQ_EFAIL, "cannot write %s: %s", path, strerror(errno));
  fprintf(f, plot_preamble, name, name, name, name);
  /* indent the body inside the loop */
  for (const char *p = body; *p;) {
    size_t len = strcspn(p, "\n");
    fprintf(f, "  %.*s\n", (int)len, p);
    p += len + (p[len] == '\n');
  }
  fputs("  unset output\n}\n", f);
  if (fclose(f) != 0) return sq_fail(e, SQ_EFAIL, "cannot write %s: %s", path, strerror(errno));
  rep_outputs_add(made, path);
  if (!run) return SQ_OK;
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0) return sq_fail(e, SQ_EFAIL, "cannot start gnuplot: %s", strerror(errno));
  if (pid == 0) {
    char script[300];
    snprintf(script, sizeof script, "%s.gp", name);
    if (chdir(dir) != 0) _exit(126);
    int log = open("gnuplot.log", O_WRONLY | O_CREAT | O_APPEND, 0666);
    if (log >= 0) {
      dup2(log, 1);
      dup2(log, 2);
      close(log);
    }
    execlp("gnuplot", "gnuplot", script, (char *)NULL);
    _exit(127);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) return sq_fail(e, SQ_EFAIL, "waiting for gnuplot: %s", strerror(errno));
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    rep_outputs_warn(made, "gnuplot failed on %s (see %s/gnuplot.log)", path, dir);
    return SQ_OK;
  }
  static const char *const ext[] = {"png", "pdf"};
  for (int k = 0; k < 2; k++) {
    snprintf(path, sizeof path, "%s/%s.%s", dir, name, ext[k]);
    rep_outputs_add(made, path);
  }
  return SQ_OK;
}

void plot_bprintf(plot_buf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int need = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (need < 0) return;
  if (b->n + (size_t)need + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < b->n + (size_t)need + 1) cap *= 2;
    char *ns = realloc(b->s, cap);
    if (!ns) { fprintf(stderr, "out of memory building a plot\n"); abort(); }
    b->s = ns;
    b->cap = cap;
  }
  va_start(ap, fmt);
  vsnprintf(b->s + b->n, b->cap - b->n, fmt, ap);
  va_end(ap);
  b->n += (size_t)need;
}

void plot_buf_free(plot_buf *b) {
  free(b->s);
  memset(b, 0, sizeof *b);
}

void plot_quote(const char *in, char *out, size_t n) {
  size_t k = 0;
  for (; *in && k + 3 < n; in++) {
    if (*in == '"' || *in == '\\') out[k++] = '\\';
    if (*in == '_' || *in == '^' || *in == '@' || *in == '{' || *in == '}') { out[k++] = '\\'; out[k++] = '\\'; }
    out[k++] = *in;
  }
  out[k] = '\0';
}
