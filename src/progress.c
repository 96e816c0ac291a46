/* progress: see progress.h. */
#include "progress.h"
#include <string.h>
#include <unistd.h>
#include "prov.h"

void progress_init(progress *p, FILE *f, int enabled, int64_t total, int64_t done_already) {
  memset(p, 0, sizeof *p);
  p->f = f;
  p->enabled = enabled;
  p->tty = enabled && isatty(fileno(f));
  p->total = total;
  p->done = p->done_start = done_already;
  p->t_start = prov_mono();
}

void progress_fmt_duration(double s, char *buf, size_t n) {
  if (!(s >= 0) || s > 1e7) { snprintf(buf, n, "?"); return; }
  long t = (long)(s + 0.5);
  if (t >= 3600) snprintf(buf, n, "%ldh%02ldm", t / 3600, (t % 3600) / 60);
  else if (t >= 60) snprintf(buf, n, "%ldm%02lds", t / 60, t % 60);
  else snprintf(buf, n, "%lds", t);
}

/* Rows per second over this session, and the time left at that rate. */
static void progress_rate(const progress *p, double *rate, double *eta) {
  double dt = prov_mono() - p->t_start;
  int64_t n = p->done - p->done_start;
  *rate = dt > 0 && n > 0 ? n / dt : 0;
  *eta = *rate > 0 ? (p->total - p->done) / *rate : -1;
}

static void progress_draw(progress *p) {
  double rate, eta;
  progress_rate(p, &rate, &eta);
  char eta_s[32];
  progress_fmt_duration(eta, eta_s, sizeof eta_s);
  double frac = p->total > 0 ? (double)p->done / p->total : 1;
  enum { WIDTH = 30 };
  char bar[WIDTH + 1];
  int fill = (int)(frac * WIDTH + 0.5);
  for (int i = 0; i < WIDTH; i++) bar[i] = i < fill ? '#' : '.';
  bar[WIDTH] = '\0';
  fprintf(p->f, "\r\033[K[%s] %5.1f%% %lld/%lld rows  %.1f rows/s  ETA %s  %s", bar, 100 * frac,
          (long long)p->done, (long long)p->total, rate, eta_s, p->what);
  fflush(p->f);
  p->drawn = 1;
}

void progress_set(progress *p, int64_t done, const char *what) {
  p->done = done;
  if (what) snprintf(p->what, sizeof p->what, "%s", what);
  if (!p->tty) return;
  double now = prov_mono();
  if (p->drawn && now - p->t_last_draw < 0.1 && p->done < p->total) return; /* at most 10 redraws/s */
  p->t_last_draw = now;
  progress_draw(p);
}

void progress_layer(progress *p, int layer, int i_layer, int n_layers) {
  if (!p->enabled || p->tty) return;
  double rate, eta;
  progress_rate(p, &rate, &eta);
  char eta_s[32], el[32];
  progress_fmt_duration(eta, eta_s, sizeof eta_s);
  progress_fmt_duration(prov_mono() - p->t_start, el, sizeof el);
  fprintf(p->f, "progress: layer %d done (%d/%d), %lld/%lld rows, %.1f rows/s, elapsed %s, ETA %s\n", layer,
          i_layer + 1, n_layers, (long long)p->done, (long long)p->total, rate, el, eta_s);
  fflush(p->f);
}

void progress_clear(progress *p) {
  if (p->tty && p->drawn) {
    fprintf(p->f, "\r\033[K");
    fflush(p->f);
    p->drawn = 0;
  }
}

void progress_finish(progress *p) {
  if (p->tty && p->drawn) {
    progress_draw(p);
    fputc('\n', p->f);
    p->drawn = 0;
  }
}
