/* cfg: the experiment config. An INI file (read with inih) is validated against ONE declared
 * schema table, cfg_keys[] below. The same table drives parsing, validation, defaults (a
 * default is text parsed by the very code that parses the file), cfg_print and docs/config.md
 * (cfg_print_schema_md). inih as packaged by Debian does not report line numbers to the
 * handler, so the file is fed to ini_parse_stream through our own line reader, which counts
 * lines and also sees the raw [section] headers (inih never reports those). */
#include "cfg.h"
#include <ini.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

/* ---------------------------------------------------------------- the schema */

typedef enum {
  K_PATH,  /* char[1024], the whole value (commas allowed) */
  K_U64,   /* uint64_t */
  K_I64,   /* int64_t in lo..hi */
  K_INT,   /* int in lo..hi */
  K_BOOL,  /* int 0/1 */
  K_ENUM,  /* int = index into names */
  K_FLAGS, /* int bit set: names[i] sets bit 1<<i */
  K_ARMS,  /* sets the .enabled of each named arm (arm_enabled_off) */
  K_ILIST, /* cfg_ilist of integers in lo..hi (ranges a:b[:s]; `none` with F_NONE) */
  K_DLIST, /* cfg_dlist of numbers in the open interval (dlo, dhi) */
  K_BLIST, /* cfg_ilist of 0/1 */
  K_ELIST, /* cfg_ilist of indices into names */
  K_SLIST  /* cfg_slist: names from `names`, or free names when names == NULL */
} cfg_kind;

enum {
  F_REQ = 1,     /* required in the file */
  F_ARM_REQ = 2, /* required when the section's arm is enabled (no default) */
  F_ALL = 4,     /* the value `all` means "every one" and stores n = 0 */
  F_NONE = 8,    /* `none` is a list item, stored as CFG_NONE */
  F_STEM = 16,   /* default is results/<config file stem> */
  F_ALL_ITEM = 32 /* `all` is a list item, stored as CFG_ALL_ITEM */
};

typedef struct {
  const char *section, *key;
  cfg_kind kind;
  size_t off;               /* offset of the value inside cfg_t */
  long long lo, hi;         /* integer kinds: inclusive bounds */
  double dlo, dhi;          /* K_DLIST: open interval */
  const char *const *names; /* NULL-terminated names of enum/flag/arm/named-string values */
  const char *def;          /* default as text; NULL when required (see flags) */
  unsigned flags;
  const char *help;
} cfg_key;

static const char *const section_names[] = {"run", "tq", "sq", "sq_paper_v1", "lowrank", "stability", NULL};
static const char *const section_help[] = {
    "What to run on: the dump, the arms, the selection of layers/heads/tokens, the protocols.",
    "TurboQuant (Zandieh et al., Algorithm 2; methods.md section 5). Every value is a list; the "
    "grid is the product of all lists.",
    "SpectralQuant as the published engine computes it (methods.md section 4). Every value is a "
    "list; the grid is the product of all lists.",
    "The SpectralQuant paper's v1 arm (methods.md section 7): normalised keys in the key "
    "eigenbasis at total_bits-1 bits with the N(0,1/D) codebook, values at total_bits bits in "
    "the same basis, no QJL.",
    "Low-rank projection baseline: the top-r eigen-coordinates (keys and values in their own "
    "bases) kept in fp16, the rest dropped.",
    "The calibration-stability experiment (read, printed and hashed only when [run] experiments "
    "lists stability; otherwise the section is ignored). Each (layer, head) is calibrated on the "
    "first N calibration tokens for every N below and compared with the full calibration.",
};
/* arm i is section i+1; its .enabled lives at arm_enabled_off[i] */
static const char *const arm_names[] = {"tq", "sq", "sq_paper_v1", "lowrank", NULL};
enum { N_ARMS = 4, N_SECTIONS = 6 };
enum { SEC_STABILITY = 5 }; /* the first section after the arms' */
static const size_t arm_enabled_off[N_ARMS] = {
    offsetof(cfg_t, tq.enabled), offsetof(cfg_t, sq.enabled), offsetof(cfg_t, sqv1.enabled),
    offsetof(cfg_t, lowrank.enabled)};

static const char *const backend_names[] = {"auto", "cpu", "cuda", NULL};   /* CFG_BACKEND_* */
static const char *const proto_names[] = {"attn", "randq", "probs", NULL};  /* PROTO_* bits */
static const char *const variant_names[] = {"prod", "mse", NULL};           /* TQ_PROD, TQ_MSE */
static const char *const rotation_names[] = {"haar", "hadamard", NULL};     /* TQ_HAAR, ... */
static const char *const codebook_names[] = {"beta", "gaussian", NULL};     /* TQ_CB_* */
static const char *const experiment_names[] = {"grid", "spectrum", "shift", "stability", NULL};

#define OFF(f) offsetof(cfg_t, f)
#define KEY(sec, key, kind, field, lo, hi, names, def, flags, help) \
  {sec, key, kind, OFF(field), lo, hi, 0, 0, names, def, flags, help}
#define KEYD(sec, key, field, dlo, dhi, def, help) \
  {sec, key, K_DLIST, OFF(field), 0, 0, dlo, dhi, NULL, def, 0, help}

static const cfg_key cfg_keys[] = {
    KEY("run", "dump", K_PATH, run.dump, 0, 0, NULL, NULL, F_REQ,
        "HDF5 activation dump (docs/dump-format.md). Kept as written: a relative path is "
        "relative to the current directory, not to the config file."),
    KEY("run", "out", K_PATH, run.out, 0, 0, NULL, "results/<config file stem>", F_STEM,
        "Results directory (relative to the current directory, like dump)."),
    KEY("run", "backend", K_ENUM, run.backend, 0, 0, backend_names, "auto", 0,
        "Compute backend: auto uses CUDA when a GPU is usable, else the CPU reference."),
    KEY("run", "seed", K_U64, run.seed, 0, 0, NULL, "42", 0,
        "Seed of every random draw (rotations, QJL sketches, random queries)."),
    KEY("run", "arms", K_ARMS, run, 0, 0, arm_names, NULL, F_REQ,
        "The methods to run; each listed arm reads its own section (defaults when absent). "
        "A section for an arm that is not listed is an error."),
    KEY("run", "layers", K_ILIST, run.layers, 0, 4095, NULL, "all", F_ALL,
        "Model layer indices, e.g. 0:32:4 or 0,5,31; all = every layer in the dump."),
    KEY("run", "heads", K_ILIST, run.heads, 0, 4095, NULL, "all", F_ALL,
        "KV head indices; all = every KV head."),
    KEY("run", "domains", K_SLIST, run.domains, 0, 0, NULL, "all", F_ALL,
        "Sequence domain labels to keep (the dump's domain attribute); all = every sequence."),
    KEY("run", "max_calib_tokens", K_I64, run.max_calib_tokens, 0, INT64_MAX, NULL, "0", 0,
        "Calibration tokens per layer: the split-0 tokens in order, truncated; 0 = all."),
    KEY("run", "max_eval_tokens", K_I64, run.max_eval_tokens, 0, INT64_MAX, NULL, "0", 0,
        "Evaluation tokens: whole split-1 sequences in order up to this many (at least one "
        "sequence); 0 = all."),
    KEY("run", "protocols", K_FLAGS, run.protocols, 0, 0, proto_names, "attn,randq,probs", 0,
        "Scoring protocols (methods.md section 6): attn = real queries, causal; randq = random "
        "N(0,I) queries; probs = softmax weights of the last query positions."),
    KEY("run", "randq_queries", K_INT, run.randq_queries, 1, 1024, NULL, "8", 0,
        "Random queries per (sequence, layer, head) for randq."),
    KEY("run", "probs_last", K_INT, run.probs_last, 1, 64, NULL, "4", 0,
        "Last query positions per sequence compared by probs."),
    KEY("run", "topk", K_INT, run.topk, 1, 64, NULL, "8", 0,
        "k of the top-k recall of the attention weights."),
    KEY("run", "calib_normalize", K_BOOL, run.calib_normalize, 0, 1, NULL, "false", 0,
        "Divide calibration rows by their norm before the second moment."),
    KEY("run", "allow_nonfinite", K_BOOL, run.allow_nonfinite, 0, 1, NULL, "false", 0,
        "Accept a dump with NaN/Inf values (refused by default)."),
    KEY("run", "threads", K_INT, run.threads, 0, 1024, NULL, "0", 0,
        "CPU threads; 0 = the OpenMP default."),
    KEY("run", "experiments", K_SLIST, experiments, 0, 0, experiment_names, "grid,spectrum", 0,
        "Experiments to run: grid = the sweep over the arms' grids (the main tables); "
        "spectrum = the d_eff/eigenvalue table; shift = calibrate on one domain, evaluate on "
        "another (every ordered pair of the selected domains); stability = calibration on the "
        "first N tokens vs all ([stability])."),

    KEY("tq", "total_bits", K_ILIST, tq.total_bits, 1, 8, NULL, NULL, F_ARM_REQ,
        "Bits per coordinate b (prod keys: b-1 MSE bits + 1 QJL bit)."),
    KEY("tq", "variant", K_ELIST, tq.variant, 0, 0, variant_names, "prod", 0,
        "Key quantizer: prod = MSE stage + QJL sketch (unbiased scores); mse = MSE only."),
    KEY("tq", "rotation", K_ELIST, tq.rotation, 0, 0, rotation_names, "haar", 0,
        "Random rotation: haar = QR of a Gaussian matrix; hadamard = signed Sylvester Hadamard "
        "(head_dim a power of two)."),
    KEY("tq", "codebook", K_ELIST, tq.codebook, 0, 0, codebook_names, "beta", 0,
        "Codebook: beta = exact for a coordinate of a rotated unit vector; gaussian = its "
        "N(0,1/D) limit."),
    KEY("tq", "shared_rotation", K_BLIST, tq.shared_rotation, 0, 1, NULL, "false", 0,
        "true = one rotation for every head (the SpectralQuant authors' baseline); false = one "
        "per (layer, head)."),

    KEY("sq", "total_bits", K_ILIST, sq.total_bits, 1, 5, NULL, NULL, F_ARM_REQ,
        "Bit budget; b_high = total_bits+1 with noise bits, and water-fill may give b_high+2 "
        "bits, which must stay <= 8, hence at most 5."),
    KEY("sq", "noise_bits", K_ILIST, sq.noise_bits, 0, 8, NULL, "none", F_NONE,
        "Bits of the key tail coordinates (max(1, n)); none = derive from total_bits and d_eff."),
    KEY("sq", "value_noise_bits", K_ILIST, sq.value_noise_bits, 0, 8, NULL, "none", F_NONE,
        "Bits of the value tail coordinates; none = follow noise_bits."),
    KEYD("sq", "d_eff_variance", sq.d_eff_variance, 0.0, 1.0, "0.9",
         "Variance-coverage threshold tau that sets d_eff (the semantic dimensions)."),
    KEY("sq", "use_water_fill", K_BLIST, sq.use_water_fill, 0, 1, NULL, "true", 0,
        "Water-fill the semantic bits by eigenvalue (false: equal bits at the mean scale)."),
    KEY("sq", "use_qjl", K_BLIST, sq.use_qjl, 0, 1, NULL, "false", 0,
        "Add a d_eff-row QJL sketch of the key residual to the scores."),

    KEY("sq_paper_v1", "total_bits", K_ILIST, sqv1.total_bits, 2, 8, NULL, "3", 0,
        "Value bits; keys get total_bits-1. 3 is the paper's setting."),

    KEY("lowrank", "rank", K_ILIST, lowrank.rank, 0, 256, NULL, "0", 0,
        "Coordinates kept (must not exceed head_dim); 0 = d_eff(tau) for each d_eff_variance."),
    KEYD("lowrank", "d_eff_variance", lowrank.d_eff_variance, 0.0, 1.0, "0.9",
         "Thresholds tau used when rank contains 0."),

    KEY("stability", "calib_tokens", K_ILIST, stability.calib_tokens, 1, 1000000000, NULL,
        "128,256,512,1024,all", F_ALL_ITEM,
        "Calibration budgets N: the first N calibration tokens (capped by [run] max_calib_tokens); "
        "all = the whole calibration, the reference every budget is compared with (computed "
        "whether listed or not)."),
};
enum { N_KEYS = sizeof cfg_keys / sizeof cfg_keys[0] };

/* ---------------------------------------------------------------- small helpers */

static int section_index(const char *s) {
  for (int i = 0; section_names[i]; i++)
    if (!strcmp(section_names[i], s)) return i;
  return -1;
}

static int key_index(const char *section, const char *key) {
  for (int i = 0; i < N_KEYS; i++)
    if (!strcmp(cfg_keys[i].section, section) && !strcmp(cfg_keys[i].key, key)) return i;
  return -1;
}

/* The arm whose knobs section `section` holds, or -1 ([run], [stability]). */
static int arm_of_section(const char *section) {
  int a = section_index(section) - 1;
  return a < N_ARMS ? a : -1;
}

static int name_index(const char *const *names, const char *s) {
  for (int i = 0; names[i]; i++)
    if (!strcasecmp(names[i], s)) return i;
  return -1;
}

/* Optimal-string-alignment distance (edits + adjacent transpositions). */
static int edit_distance(const char *a, const char *b) {
  int m = (int)strlen(a), n = (int)strlen(b);
  if (m > 63 || n > 63) return 1000;
  int d[64][64];
  for (int i = 0; i <= m; i++) d[i][0] = i;
  for (int j = 0; j <= n; j++) d[0][j] = j;
  for (int i = 1; i <= m; i++)
    for (int j = 1; j <= n; j++) {
      int cost = tolower((unsigned char)a[i - 1]) != tolower((unsigned char)b[j - 1]);
      int best = d[i - 1][j] + 1;
      if (d[i][j - 1] + 1 < best) best = d[i][j - 1] + 1;
      if (d[i - 1][j - 1] + cost < best) best = d[i - 1][j - 1] + cost;
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
          d[i - 2][j - 2] + 1 < best)
        best = d[i - 2][j - 2] + 1;
      d[i][j] = best;
    }
  return d[m][n];
}

/* The closest candidate if it is plausibly what was meant, else NULL. */
static const char *closest(const char *s, const char *const *cands, int n) {
  const char *best = NULL;
  int bestd = 1000;
  for (int i = 0; i < n; i++) {
    int dist = edit_distance(s, cands[i]);
    if (dist < bestd) bestd = dist, best = cands[i];
  }
  if (!best) return NULL;
  int len = (int)strlen(best);
  /* short names (tq, sq) are all within 2 edits of each other: demand more of them */
  int near = bestd <= 1 || (bestd == 2 && len >= 5) || bestd * 3 <= len;
  int contained = strlen(s) >= 3 && (strstr(best, s) || strstr(s, best));
  return near || contained ? best : NULL;
}

static void append(char *buf, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void append(char *buf, size_t n, const char *fmt, ...) {
  size_t used = strlen(buf);
  if (used + 1 >= n) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf + used, n - used, fmt, ap);
  va_end(ap);
}

static int fail_why(char *why, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail_why(char *why, size_t n, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, n, fmt, ap);
  va_end(ap);
  return -1;
}

static void join_names(char *buf, size_t n, const char *const *names) {
  for (int i = 0; names[i]; i++) append(buf, n, "%s%s", i ? ", " : "", names[i]);
}

static void unknown_section_msg(char *buf, size_t n, const char *s) {
  snprintf(buf, n, "unknown section [%s]", s);
  const char *sug = closest(s, section_names, N_SECTIONS);
  if (sug) append(buf, n, " (did you mean [%s]?)", sug);
  else {
    append(buf, n, " (valid sections: ");
    join_names(buf, n, section_names);
    append(buf, n, ")");
  }
}

static void unknown_key_msg(char *buf, size_t n, const char *section, const char *key) {
  const char *cands[N_KEYS];
  int nc = 0;
  for (int i = 0; i < N_KEYS; i++)
    if (!strcmp(cfg_keys[i].section, section)) cands[nc++] = cfg_keys[i].key;
  snprintf(buf, n, "unknown key '%s' in [%s]", key, section);
  const char *sug = closest(key, cands, nc);
  if (sug) {
    append(buf, n, " (did you mean '%s'?)", sug);
    return;
  }
  for (int i = 0; i < N_KEYS; i++)
    if (!strcmp(cfg_keys[i].key, key)) {
      append(buf, n, " (it belongs in [%s])", cfg_keys[i].section);
      return;
    }
  append(buf, n, " (valid keys in [%s]:", section);
  for (int i = 0; i < nc; i++) append(buf, n, "%s %s", i ? "," : "", cands[i]);
  append(buf, n, ")");
}

/* What a key accepts, in words: used by every type/range message and by docs/config.md. */
static void describe_allowed(const cfg_key *k, char *buf, size_t n) {
  buf[0] = '\0';
  switch (k->kind) {
  case K_PATH: append(buf, n, "a path"); break;
  case K_U64: append(buf, n, "an integer 0..%" PRIu64, UINT64_MAX); break;
  case K_I64:
    if (k->hi == INT64_MAX) append(buf, n, "an integer >= %lld", k->lo);
    else append(buf, n, "an integer %lld..%lld", k->lo, k->hi);
    break;
  case K_INT: append(buf, n, "an integer %lld..%lld", k->lo, k->hi); break;
  case K_BOOL: append(buf, n, "true/false, yes/no or 1/0"); break;
  case K_ENUM: append(buf, n, "one of "), join_names(buf, n, k->names); break;
  case K_FLAGS:
  case K_ARMS:
  case K_ELIST: append(buf, n, "a list of "), join_names(buf, n, k->names); break;
  case K_ILIST:
    append(buf, n, "a list of integers %lld..%lld%s%s (ranges start:stop[:step], stop exclusive)%s",
           k->lo, k->hi, k->flags & F_NONE ? " or none" : "", k->flags & F_ALL_ITEM ? " or all" : "",
           k->flags & F_ALL ? ", or all" : "");
    break;
  case K_DLIST: append(buf, n, "a list of numbers in the open interval (%g, %g)", k->dlo, k->dhi); break;
  case K_BLIST: append(buf, n, "a list of booleans (true/false, yes/no, 1/0)"); break;
  case K_SLIST:
    if (k->names) append(buf, n, "a list of "), join_names(buf, n, k->names);
    else append(buf, n, "a list of names (letters, digits, _ - . + /; at most 31 characters)");
    if (k->flags & F_ALL) append(buf, n, ", or all");
    break;
  }
}

static int is_list_kind(cfg_kind k) { return k >= K_FLAGS; }

static char *trim(char *s) {
  while (isspace((unsigned char)*s)) s++;
  char *end = s + strlen(s);
  while (end > s && isspace((unsigned char)end[-1])) *--end = '\0';
  return s;
}

/* ---------------------------------------------------------------- value parsing */

/* Parsers fill `why` with what is wrong with the value and return -1; the caller adds
 * where (file:line or --set) and what is allowed. */

static int parse_ll(const char *s, long long *out) {
  if (!*s) return -1;
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (errno || *end) return -1;
  *out = v;
  return 0;
}

static int parse_bool(const char *s) {
  static const char *const yes[] = {"true", "yes", "1", NULL}, *const no[] = {"false", "no", "0", NULL};
  if (name_index(yes, s) >= 0) return 1;
  if (name_index(no, s) >= 0) return 0;
  return -1;
}

static int bad_item(char *why, size_t n, const char *what, const char *item) {
  snprintf(why, n, "%s '%s'", what, item);
  if (strchr(item, '#'))
    append(why, n, " (an inline comment starts with ';' after a space; '#' only starts a "
                   "comment at the beginning of a line)");
  return -1;
}

static int unknown_name(char *why, size_t n, const char *item, const char *const *names) {
  int count = 0;
  while (names[count]) count++;
  bad_item(why, n, "unknown value", item);
  const char *sug = closest(item, names, count);
  if (sug) append(why, n, " (did you mean '%s'?)", sug);
  return -1;
}

/* Append v (or `none` when is_none) after the range, duplicate and length checks. */
static int ilist_add(cfg_ilist *l, long long v, int is_none, const cfg_key *k, char *why, size_t n) {
  if (is_none) v = CFG_NONE;
  else if (v < k->lo || v > k->hi) return fail_why(why, n, "%lld is out of range", v);
  for (int i = 0; i < l->n; i++)
    if (l->v[i] == v) {
      if (is_none) return fail_why(why, n, "none appears twice");
      return fail_why(why, n, "%lld appears twice", v);
    }
  if (l->n >= CFG_MAX_LIST) return fail_why(why, n, "more than %d values", CFG_MAX_LIST);
  l->v[l->n++] = (int)v;
  return 0;
}

/* The item `all` of an F_ALL_ITEM list. */
static int ilist_add_all(cfg_ilist *l, char *why, size_t n) {
  for (int i = 0; i < l->n; i++)
    if (l->v[i] == CFG_ALL_ITEM) return fail_why(why, n, "all appears twice");
  if (l->n >= CFG_MAX_LIST) return fail_why(why, n, "more than %d values", CFG_MAX_LIST);
  l->v[l->n++] = CFG_ALL_ITEM;
  return 0;
}

/* "start:stop[:step]", stop exclusive, step > 0. */
static int ilist_add_range(cfg_ilist *l, char *item, const cfg_key *k, char *why, size_t n) {
  long long part[3] = {0, 0, 1};
  int np = 0;
  char *save = NULL, *copy = item;
  char orig[256];
  snprintf(orig, sizeof orig, "%s", item);
  for (char *p = strtok_r(copy, ":", &save); p; p = strtok_r(NULL, ":", &save)) {
    if (np == 3 || parse_ll(trim(p), &part[np])) return bad_item(why, n, "invalid range", orig);
    np++;
  }
  int colons = 0;
  for (const char *p = orig; *p; p++) colons += *p == ':';
  if (np < 2 || np != colons + 1) return bad_item(why, n, "invalid range (start:stop[:step])", orig);
  if (part[2] <= 0) return bad_item(why, n, "range step must be positive in", orig);
  if (part[0] >= part[1]) return bad_item(why, n, "empty range (stop is exclusive)", orig);
  if (part[0] < k->lo || part[0] > k->hi) return fail_why(why, n, "%lld is out of range", part[0]);
  /* start >= lo >= 0 (true of every K_ILIST key) and stop > start: nothing below overflows */
  long long count = (part[1] - part[0] - 1) / part[2] + 1;
  if (count > CFG_MAX_LIST - l->n)
    return fail_why(why, n, "more than %d values (range '%s' alone has %lld)", CFG_MAX_LIST, orig, count);
  for (long long i = 0; i < count; i++)
    if (ilist_add(l, part[0] + i * part[2], 0, k, why, n)) return -1;
  return 0;
}


/* The scratch a value is parsed into before it is committed to the cfg_t. */
typedef union {
  cfg_ilist il;
  cfg_dlist dl;
  cfg_slist sl;
  char path[1024];
  uint64_t u64;
  int64_t i64;
  int i; /* K_INT, K_BOOL, K_ENUM, and the bit sets of K_FLAGS / K_ARMS */
} cfg_scratch;

static size_t value_size(const cfg_key *k) {
  switch (k->kind) {
  case K_PATH: return sizeof(char[1024]);
  case K_U64: return sizeof(uint64_t);
  case K_I64: return sizeof(int64_t);
  case K_ILIST:
  case K_BLIST:
  case K_ELIST: return sizeof(cfg_ilist);
  case K_DLIST: return sizeof(cfg_dlist);
  case K_SLIST: return sizeof(cfg_slist);
  default: return sizeof(int);
  }
}

static int parse_double_item(cfg_dlist *l, const cfg_key *k, const char *item, char *why, size_t n) {
  char *end;
  errno = 0;
  double d = strtod(item, &end);
  if (errno || *end || !isfinite(d)) return bad_item(why, n, "not a number:", item);
  if (!(d > k->dlo && d < k->dhi)) return bad_item(why, n, "out of range:", item);
  for (int i = 0; i < l->n; i++)
    if (l->v[i] == d) return bad_item(why, n, "appears twice:", item);
  if (l->n >= CFG_MAX_LIST) return fail_why(why, n, "more than %d values", CFG_MAX_LIST);
  l->v[l->n++] = d;
  return 0;
}

static int parse_name_item(cfg_slist *l, const cfg_key *k, const char *item, char *why, size_t n) {
  const char *name = item;
  if (k->names) {
    int e = name_index(k->names, item);
    if (e < 0) return unknown_name(why, n, item, k->names);
    name = k->names[e];
  } else {
    if (strlen(item) > 31) return bad_item(why, n, "name longer than 31 characters:", item);
    for (const char *p = item; *p; p++)
      if (!isalnum((unsigned char)*p) && !strchr("_-.+/", *p))
        return bad_item(why, n, "invalid character in name", item);
  }
  for (int i = 0; i < l->n; i++)
    if (!strcmp(l->v[i], name)) return bad_item(why, n, "appears twice:", item);
  if (l->n >= CFG_MAX_LIST) return fail_why(why, n, "more than %d values", CFG_MAX_LIST);
  snprintf(l->v[l->n++], sizeof l->v[0], "%s", name);
  return 0;
}

/* One comma-separated item of a list value. */
static int parse_item(cfg_scratch *dst, const cfg_key *k, char *item, char *why, size_t n) {
  long long v;
  int e;
  switch (k->kind) {
  case K_ILIST:
    if ((k->flags & F_NONE) && !strcasecmp(item, "none")) return ilist_add(&dst->il, 0, 1, k, why, n);
    if ((k->flags & F_ALL_ITEM) && !strcasecmp(item, "all")) return ilist_add_all(&dst->il, why, n);
    if (strchr(item, ':')) return ilist_add_range(&dst->il, item, k, why, n);
    if (parse_ll(item, &v)) return bad_item(why, n, "not an integer:", item);
    return ilist_add(&dst->il, v, 0, k, why, n);
  case K_BLIST:
    if ((e = parse_bool(item)) < 0) return bad_item(why, n, "not a boolean:", item);
    for (int i = 0; i < dst->il.n; i++)
      if (dst->il.v[i] == e) return fail_why(why, n, "%s appears twice", e ? "true" : "false");
    dst->il.v[dst->il.n++] = e; /* at most 2 distinct values: cannot overflow */
    return 0;
  case K_ELIST:
    if ((e = name_index(k->names, item)) < 0) return unknown_name(why, n, item, k->names);
    for (int i = 0; i < dst->il.n; i++)
      if (dst->il.v[i] == e) return bad_item(why, n, "appears twice:", item);
    dst->il.v[dst->il.n++] = e; /* distinct names: never more than CFG_MAX_LIST */
    return 0;
  case K_DLIST: return parse_double_item(&dst->dl, k, item, why, n);
  case K_FLAGS:
  case K_ARMS:
    if ((e = name_index(k->names, item)) < 0) return unknown_name(why, n, item, k->names);
    if (dst->i & (1 << e)) return bad_item(why, n, "appears twice:", item);
    dst->i |= 1 << e;
    return 0;
  case K_SLIST: return parse_name_item(&dst->sl, k, item, why, n);
  default: return -1;
  }
}

static int parse_scalar(cfg_scratch *dst, const cfg_key *k, const char *val, char *why, size_t n) {
  long long v;
  switch (k->kind) {
  case K_PATH:
    if (strlen(val) >= sizeof dst->path) return fail_why(why, n, "path longer than 1023 characters");
    for (const char *p = val; *p; p++) {
      if (iscntrl((unsigned char)*p)) return fail_why(why, n, "control character in the path");
      if (*p == ';' && p > val && isspace((unsigned char)p[-1]))
        return fail_why(why, n, "' ;' in a path would start a comment");
    }
    snprintf(dst->path, sizeof dst->path, "%s", val);
    return 0;
  case K_U64: {
    char *end;
    errno = 0;
    unsigned long long u = strtoull(val, &end, 10);
    if (errno || *end || !isdigit((unsigned char)val[0])) return bad_item(why, n, "not an integer in range:", val);
    dst->u64 = u;
    return 0;
  }
  case K_I64:
  case K_INT:
    if (parse_ll(val, &v)) return bad_item(why, n, "not an integer:", val);
    if (v < k->lo || v > k->hi) return fail_why(why, n, "%lld is out of range", v);
    if (k->kind == K_I64) dst->i64 = v;
    else dst->i = (int)v;
    return 0;
  case K_BOOL:
    if ((dst->i = parse_bool(val)) < 0) return bad_item(why, n, "not a boolean:", val);
    return 0;
  case K_ENUM:
    if ((dst->i = name_index(k->names, val)) < 0) return unknown_name(why, n, val, k->names);
    return 0;
  default: return -1;
  }
}

static int parse_list(cfg_scratch *dst, const cfg_key *k, char *buf, char *why, size_t n) {
  if ((k->flags & F_ALL) && !strcasecmp(buf, "all")) return 0; /* n = 0: every one */
  for (char *p = buf;;) {
    char *comma = strchr(p, ',');
    if (comma) *comma = '\0';
    char *item = trim(p);
    if (!*item) return fail_why(why, n, "empty item in the list");
    if ((k->flags & F_ALL) && !strcasecmp(item, "all"))
      return fail_why(why, n, "'all' cannot be combined with other values");
    if (parse_item(dst, k, item, why, n)) return -1;
    if (!comma) return 0;
    p = comma + 1;
  }
}

/* Parse `val` for key k into c; c is modified only when the whole value is valid. */
static int parse_value(cfg_t *c, const cfg_key *k, const char *val, char *why, size_t n) {
  char *buf = sq_xmalloc(strlen(val) + 1);
  char *v = trim(strcpy(buf, val));
  cfg_scratch *tmp = sq_xcalloc(1, sizeof *tmp);
  int rc;
  if (!*v) rc = fail_why(why, n, "empty value");
  else if (!is_list_kind(k->kind) && k->kind != K_PATH && strchr(v, ','))
    rc = fail_why(why, n, "takes a single value, not a list");
  else rc = is_list_kind(k->kind) ? parse_list(tmp, k, v, why, n) : parse_scalar(tmp, k, v, why, n);
  if (!rc && k->kind == K_ARMS) {
    for (int a = 0; a < N_ARMS; a++) *(int *)((char *)c + arm_enabled_off[a]) = (tmp->i >> a) & 1;
  } else if (!rc) {
    memcpy((char *)c + k->off, tmp, value_size(k));
  }
  free(tmp);
  free(buf);
  return rc;
}

/* "<where>: <why> (allowed: <...>)" */
static int value_error(sq_err *e, const char *where, const cfg_key *k, const char *why) {
  char allowed[512];
  describe_allowed(k, allowed, sizeof allowed);
  return sq_fail(e, SQ_EINPUT, "%s: %s (allowed: %s)", where, why, allowed);
}

/* ---------------------------------------------------------------- loading a file */

typedef struct {
  cfg_t *c;
  sq_err *e;
  size_t pos;               /* reader position in c->text */
  size_t len;
  int line;                 /* number of the line the reader returned last */
  int line_cont;            /* inih will read that line as a continuation of prev_key */
  char prev_key[128];       /* the last key inih reported (inih's own prev_name) */
  int sec_line[N_SECTIONS]; /* line of each [section] header; 0 = absent */
  int key_line[N_KEYS];     /* line of each key given; 0 = absent */
  int err_line;             /* line of the first error; 0 = none yet */
} parse_ctx;

static void ctx_fail(parse_ctx *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void ctx_fail(parse_ctx *x, const char *fmt, ...) {
  if (x->err_line) return; /* only the first error is reported */
  char msg[1536];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  sq_fail(x->e, SQ_EINPUT, "%s:%d: %s", x->c->path, x->line, msg);
  x->err_line = x->line;
}

/* What inih will make of the raw line: note section headers (inih never reports them) and
 * indented lines, which inih glues to the previous key as a multi-line value. */
static void scan_line(parse_ctx *x, const char *s, size_t n) {
  if (x->line == 1 && n >= 3 && !memcmp(s, "\xEF\xBB\xBF", 3)) s += 3, n -= 3; /* BOM */
  size_t i = 0;
  while (i < n && (s[i] == ' ' || s[i] == '\t')) i++;
  x->line_cont = 0;
  if (i == n || s[i] == '\n' || s[i] == '\r' || s[i] == ';' || s[i] == '#') return;
  if (i > 0 && x->prev_key[0]) {
    x->line_cont = 1;
    return;
  }
  if (s[i] != '[') return;
  const char *close = memchr(s + i, ']', n - i);
  if (!close) return; /* inih reports the syntax error */
  char name[128];
  snprintf(name, sizeof name, "%.*s", (int)(close - s - i - 1), s + i + 1);
  x->prev_key[0] = '\0';
  int sec = section_index(name);
  char msg[1024];
  if (sec < 0) {
    unknown_section_msg(msg, sizeof msg, name);
    ctx_fail(x, "%s", msg);
  } else if (x->sec_line[sec]) {
    ctx_fail(x, "section [%s] appears twice (first at line %d)", name, x->sec_line[sec]);
  } else {
    x->sec_line[sec] = x->line;
  }
}

/* fgets-style reader over c->text, one line per call, so our line count is inih's. */
static char *ctx_reader(char *str, int num, void *stream) {
  parse_ctx *x = stream;
  if (x->pos >= x->len || num < 2) return NULL;
  const char *s = x->c->text + x->pos;
  const char *nl = memchr(s, '\n', x->len - x->pos);
  size_t n = nl ? (size_t)(nl - s) + 1 : x->len - x->pos;
  x->pos += n;
  x->line++;
  scan_line(x, s, n);
  size_t content = n;
  while (content > 0 && (s[content - 1] == '\n' || s[content - 1] == '\r')) content--;
  if (content + 3 > (size_t)num) { /* inih needs room for "\r\n\0" */
    ctx_fail(x, "line longer than %d characters (the INI reader's limit)", num - 3);
    n = (size_t)num - 1;
  }
  memcpy(str, s, n);
  str[n] = '\0';
  return str;
}

static int ctx_handler(void *user, const char *section, const char *name, const char *value) {
  parse_ctx *x = user;
  char msg[1400], why[512];
  if (x->line_cont) {
    ctx_fail(x, "indented line would continue the value of '%s' from a line above (multi-line "
                "values are not supported; remove the indentation)", name);
    return 1;
  }
  snprintf(x->prev_key, sizeof x->prev_key, "%s", name);
  if (!*section) {
    int k = -1;
    for (int i = 0; i < N_KEYS && k < 0; i++)
      if (!strcmp(cfg_keys[i].key, name)) k = i;
    if (k >= 0) ctx_fail(x, "key '%s' is outside any section (it belongs in [%s])", name, cfg_keys[k].section);
    else ctx_fail(x, "key '%s' is outside any section (start with [run])", name);
    return 1;
  }
  if (section_index(section) < 0) return 1; /* reported at its header */
  int k = key_index(section, name);
  if (k < 0) {
    unknown_key_msg(msg, sizeof msg, section, name);
    ctx_fail(x, "%s", msg);
    return 1;
  }
  if (x->key_line[k]) {
    ctx_fail(x, "duplicate key '%s' in [%s] (first given at line %d)", name, section, x->key_line[k]);
    return 1;
  }
  x->key_line[k] = x->line;
  if (!x->err_line && parse_value(x->c, &cfg_keys[k], value, why, sizeof why)) {
    snprintf(msg, sizeof msg, "%s:%d: [%s] %s", x->c->path, x->line, section, name);
    value_error(x->e, msg, &cfg_keys[k], why);
    x->err_line = x->line;
  }
  return 1;
}

/* The text of line `lineno` (1-based) of s, for syntax-error messages. */
static void text_line(const char *s, int lineno, char *buf, size_t n) {
  for (int l = 1; l < lineno && *s; l++) {
    const char *nl = strchr(s, '\n');
    s = nl ? nl + 1 : s + strlen(s);
  }
  size_t len = strcspn(s, "\r\n");
  if (len > 60) len = 60;
  snprintf(buf, n, "%.*s", (int)len, s);
}

static int syntax_error(parse_ctx *x, int lineno) {
  char raw[64];
  text_line(x->c->text, lineno, raw, sizeof raw);
  const char *t = raw;
  while (isspace((unsigned char)*t)) t++;
  if (*t == '[')
    return sq_fail(x->e, SQ_EINPUT, "%s:%d: syntax error: section header without ']': '%s'",
                   x->c->path, lineno, t);
  return sq_fail(x->e, SQ_EINPUT, "%s:%d: syntax error: expected 'key = value', '[section]' or "
                 "a comment, got '%s'", x->c->path, lineno, t);
}

static int read_text(cfg_t *c, sq_err *e) {
  struct stat st;
  if (stat(c->path, &st))
    return sq_fail(e, SQ_EINPUT, "%s: cannot open config: %s", c->path, strerror(errno));
  if (!S_ISREG(st.st_mode))
    return sq_fail(e, SQ_EINPUT, "%s: not a regular file", c->path);
  if (st.st_size > (1 << 20))
    return sq_fail(e, SQ_EINPUT, "%s: %lld bytes is too large for a config (max 1 MiB)",
                   c->path, (long long)st.st_size);
  FILE *f = fopen(c->path, "rb");
  if (!f) return sq_fail(e, SQ_EINPUT, "%s: cannot open config: %s", c->path, strerror(errno));
  c->text = sq_xmalloc((size_t)st.st_size + 1);
  size_t got = fread(c->text, 1, (size_t)st.st_size, f);
  int bad = ferror(f);
  int err = errno;
  fclose(f);
  if (bad || got != (size_t)st.st_size)
    return sq_fail(e, SQ_EINPUT, "%s: cannot read config: %s", c->path, bad ? strerror(err) : "short read");
  c->text[got] = '\0';
  if (strlen(c->text) != got) {
    int line = 1;
    for (const char *p = c->text; *p; p++) line += *p == '\n';
    return sq_fail(e, SQ_EINPUT, "%s:%d: NUL byte in the config (not a text file?)", c->path, line);
  }
  return SQ_OK;
}

/* results/<file name without directory and extension> */
static void default_out(const cfg_t *c, char *buf, size_t n) {
  const char *base = strrchr(c->path, '/');
  base = base ? base + 1 : c->path;
  const char *dot = strrchr(base, '.');
  int len = dot && dot != base ? (int)(dot - base) : (int)strlen(base);
  snprintf(buf, n, "results/%.*s", len, base);
}

/* Fill every key the file did not give with its default (parsed by the same code). */
static int apply_defaults(parse_ctx *x) {
  char why[768], stem[1100];
  for (int k = 0; k < N_KEYS; k++) {
    const cfg_key *key = &cfg_keys[k];
    if (x->key_line[k] || !key->def) continue;
    const char *def = key->def;
    if (key->flags & F_STEM) default_out(x->c, stem, sizeof stem), def = stem;
    if (parse_value(x->c, key, def, why, sizeof why))
      return sq_fail(x->e, SQ_EINPUT, "%s: default of [%s] %s = %s: %s", x->c->path,
                     key->section, key->key, def, why);
  }
  return SQ_OK;
}

static int arm_enabled(const cfg_t *c, int arm) {
  return *(const int *)((const char *)c + arm_enabled_off[arm]);
}

/* A key's list is empty only when nobody gave it (given lists are never empty). */
static int list_missing(const cfg_t *c, const cfg_key *k) {
  return ((const cfg_ilist *)(const void *)((const char *)c + k->off))->n == 0;
}

/* Cross-key rules of a loaded file, with the line that is at fault. */
static int check_file(parse_ctx *x) {
  const cfg_t *c = x->c;
  char allowed[512];
  if (!x->sec_line[0])
    return sq_fail(x->e, SQ_EINPUT, "%s: no [run] section (it needs at least dump = ... and arms = ...)", c->path);
  for (int k = 0; k < N_KEYS; k++) {
    const cfg_key *key = &cfg_keys[k];
    if (!(key->flags & F_REQ) || x->key_line[k]) continue;
    describe_allowed(key, allowed, sizeof allowed);
    return sq_fail(x->e, SQ_EINPUT, "%s:%d: [%s] is missing the required key '%s' (%s)", c->path,
                   x->sec_line[section_index(key->section)], key->section, key->key, allowed);
  }
  int arms_line = x->key_line[key_index("run", "arms")];
  for (int a = 0; a < N_ARMS; a++)
    if (x->sec_line[a + 1] && !arm_enabled(c, a))
      return sq_fail(x->e, SQ_EINPUT, "%s:%d: section [%s] is given but '%s' is not in [run] arms "
                     "(line %d); add it there or remove the section", c->path, x->sec_line[a + 1],
                     arm_names[a], arm_names[a], arms_line);
  for (int k = 0; k < N_KEYS; k++) {
    const cfg_key *key = &cfg_keys[k];
    int arm = arm_of_section(key->section);
    if (!(key->flags & F_ARM_REQ) || arm < 0 || !arm_enabled(c, arm) || !list_missing(c, key)) continue;
    describe_allowed(key, allowed, sizeof allowed);
    int line = x->sec_line[arm + 1] ? x->sec_line[arm + 1] : arms_line;
    return sq_fail(x->e, SQ_EINPUT, "%s:%d: arm '%s' is enabled but [%s] %s is not given (it has no "
                   "default; %s)", c->path, line, arm_names[arm], key->section, key->key, allowed);
  }
  return SQ_OK;
}

static int load_parsed(cfg_t *c, sq_err *e) {
  parse_ctx *x = sq_xcalloc(1, sizeof *x);
  x->c = c;
  x->e = e;
  x->len = strlen(c->text);
  int rc = ini_parse_stream(ctx_reader, x, ctx_handler, x);
  int st = SQ_OK;
  if (rc > 0 && (!x->err_line || rc < x->err_line)) st = syntax_error(x, rc);
  else if (x->err_line) st = SQ_EINPUT;
  else if (rc < 0) st = sq_fail(e, SQ_EFAIL, "%s: the INI reader failed (%d)", c->path, rc);
  if (!st) st = apply_defaults(x);
  if (!st) st = check_file(x);
  free(x);
  return st;
}

int cfg_load(cfg_t *c, const char *path, sq_err *e) {
  memset(c, 0, sizeof *c);
  if (!path || !*path) return sq_fail(e, SQ_EINPUT, "no config file given");
  if (strlen(path) >= sizeof c->path)
    return sq_fail(e, SQ_EINPUT, "%.64s...: config path longer than %zu characters", path, sizeof c->path - 1);
  snprintf(c->path, sizeof c->path, "%s", path);
  int st = read_text(c, e);
  if (!st) st = load_parsed(c, e);
  if (st) cfg_free(c);
  return st;
}

void cfg_free(cfg_t *c) {
  if (!c) return;
  free(c->text);
  c->text = NULL;
}

/* ---------------------------------------------------------------- overrides */

/* Apply one "section.key=value"; *arm_touched = the arm whose knob it set, or -1. */
static int override_one(cfg_t *c, const char *assignment, int *arm_touched, sq_err *e) {
  char buf[2048], where[300], msg[1024], why[512];
  *arm_touched = -1;
  if (strlen(assignment) >= sizeof buf)
    return sq_fail(e, SQ_EINPUT, "--set: assignment longer than %zu characters", sizeof buf - 1);
  strcpy(buf, assignment);
  char *eq = strchr(buf, '='), *dot = strchr(buf, '.');
  if (!eq || !dot || dot > eq)
    return sq_fail(e, SQ_EINPUT, "--set %s: expected section.key=value (e.g. sq.total_bits=2,3)", assignment);
  *eq = *dot = '\0';
  char *section = trim(buf), *key = trim(dot + 1), *value = trim(eq + 1);
  snprintf(where, sizeof where, "--set %.100s.%.100s", section, key);
  if (section_index(section) < 0) {
    unknown_section_msg(msg, sizeof msg, section);
    return sq_fail(e, SQ_EINPUT, "%s: %s", where, msg);
  }
  int k = key_index(section, key);
  if (k < 0) {
    unknown_key_msg(msg, sizeof msg, section, key);
    return sq_fail(e, SQ_EINPUT, "%s: %s", where, msg);
  }
  if (parse_value(c, &cfg_keys[k], value, why, sizeof why)) return value_error(e, where, &cfg_keys[k], why);
  *arm_touched = arm_of_section(section);
  return SQ_OK;
}

int cfg_override_all(cfg_t *c, int n, const char *const *assignments, sq_err *e) {
  cfg_t *work = sq_xmalloc(sizeof *work); /* c changes only when every assignment is valid */
  memcpy(work, c, sizeof *work);
  int touched_by[N_ARMS]; /* index of the last assignment that set a knob of arm a, or -1 */
  for (int a = 0; a < N_ARMS; a++) touched_by[a] = -1;
  int st = SQ_OK;
  for (int i = 0; i < n && !st; i++) {
    int arm;
    st = override_one(work, assignments[i], &arm, e);
    if (!st && arm >= 0) touched_by[arm] = i;
  }
  for (int a = 0; a < N_ARMS && !st; a++)
    if (touched_by[a] >= 0 && !arm_enabled(work, a))
      st = sq_fail(e, SQ_EINPUT, "--set %s: arm '%s' is not in run.arms (add it with --set run.arms=...)",
                   assignments[touched_by[a]], arm_names[a]);
  for (int k = 0; k < N_KEYS && !st; k++) {
    const cfg_key *key = &cfg_keys[k];
    int arm = arm_of_section(key->section);
    if ((key->flags & F_ARM_REQ) && arm >= 0 && arm_enabled(work, arm) && list_missing(work, key))
      st = sq_fail(e, SQ_EINPUT, "--set run.arms: arm '%s' is enabled but %s.%s has no value (it has no "
                   "default; add --set %s.%s=...)", arm_names[arm], key->section, key->key,
                   key->section, key->key);
  }
  if (!st) memcpy(c, work, sizeof *c);
  free(work);
  return st;
}

int cfg_override(cfg_t *c, const char *assignment, sq_err *e) {
  return cfg_override_all(c, 1, &assignment, e);
}

int cfg_has_experiment(const cfg_t *c, const char *name) {
  for (int i = 0; i < c->experiments.n; i++)
    if (!strcmp(c->experiments.v[i], name)) return 1;
  return 0;
}

/* ---------------------------------------------------------------- printing */

/* Shortest %g form that reads back as the same double. */
static void format_double(double d, char *buf, size_t n) {
  for (int prec = 15; prec <= 17; prec++) {
    snprintf(buf, n, "%.*g", prec, d);
    if (strtod(buf, NULL) == d) return;
  }
}

static void format_value(const cfg_t *c, const cfg_key *k, char *buf, size_t n) {
  const void *p = (const char *)c + k->off;
  const cfg_ilist *il = p;
  buf[0] = '\0';
  switch (k->kind) {
  case K_PATH: append(buf, n, "%s", (const char *)p); break;
  case K_U64: append(buf, n, "%" PRIu64, *(const uint64_t *)p); break;
  case K_I64: append(buf, n, "%" PRId64, *(const int64_t *)p); break;
  case K_INT: append(buf, n, "%d", *(const int *)p); break;
  case K_BOOL: append(buf, n, "%s", *(const int *)p ? "true" : "false"); break;
  case K_ENUM: append(buf, n, "%s", k->names[*(const int *)p]); break;
  case K_FLAGS:
    for (int i = 0, first = 1; k->names[i]; i++)
      if (*(const int *)p & (1 << i)) append(buf, n, "%s%s", first ? "" : ",", k->names[i]), first = 0;
    break;
  case K_ARMS:
    for (int a = 0, first = 1; a < N_ARMS; a++)
      if (arm_enabled(c, a)) append(buf, n, "%s%s", first ? "" : ",", arm_names[a]), first = 0;
    break;
  case K_ILIST:
  case K_BLIST:
  case K_ELIST:
    for (int i = 0; i < il->n; i++) {
      int v = il->v[i];
      if (i) append(buf, n, ",");
      if (k->kind == K_BLIST) append(buf, n, "%s", v ? "true" : "false");
      else if (k->kind == K_ELIST) append(buf, n, "%s", k->names[v]);
      else if (v == CFG_NONE && (k->flags & F_NONE)) append(buf, n, "none");
      else if (v == CFG_ALL_ITEM && (k->flags & F_ALL_ITEM)) append(buf, n, "all");
      else append(buf, n, "%d", v);
    }
    if (il->n == 0) append(buf, n, "%s", k->flags & F_ALL ? "all" : "");
    break;
  case K_DLIST: {
    const cfg_dlist *dl = p;
    char num[40];
    for (int i = 0; i < dl->n; i++) format_double(dl->v[i], num, sizeof num), append(buf, n, "%s%s", i ? "," : "", num);
    break;
  }
  case K_SLIST: {
    const cfg_slist *sl = p;
    for (int i = 0; i < sl->n; i++) append(buf, n, "%s%s", i ? "," : "", sl->v[i]);
    if (sl->n == 0) append(buf, n, "%s", k->flags & F_ALL ? "all" : "");
    break;
  }
  }
}

/* Every key, defaults filled in; sections of arms not enabled are left out (they would be an
 * error). The output is a config cfg_load accepts and that resolves to the same values. */
void cfg_print(const cfg_t *c, void *file) {
  FILE *f = file;
  char val[4096];
  fprintf(f, "; sqexp config, fully resolved (every key, defaults filled in)\n; source: %s\n", c->path);
  for (int s = 0; section_names[s]; s++) {
    if (s > 0 && s <= N_ARMS && !arm_enabled(c, s - 1)) continue;
    /* printed (and so hashed) only when it matters: configs without the experiment keep
     * their identity */
    if (s == SEC_STABILITY && !cfg_has_experiment(c, "stability")) continue;
    fprintf(f, "\n[%s]\n", section_names[s]);
    for (int k = 0; k < N_KEYS; k++) {
      if (strcmp(cfg_keys[k].section, section_names[s])) continue;
      format_value(c, &cfg_keys[k], val, sizeof val);
      fprintf(f, "%-17s = %s\n", cfg_keys[k].key, val);
    }
  }
}

/* docs/config.md's tables, from the schema (tests/test_cfg.c checks the doc against it). */
void cfg_print_schema_md(void *file) {
  FILE *f = file;
  char allowed[512];
  for (int s = 0; section_names[s]; s++) {
    fprintf(f, "### [%s]\n\n%s\n\n", section_names[s], section_help[s]);
    fprintf(f, "| key | allowed values | default | meaning |\n|---|---|---|---|\n");
    for (int k = 0; k < N_KEYS; k++) {
      const cfg_key *key = &cfg_keys[k];
      if (strcmp(key->section, section_names[s])) continue;
      describe_allowed(key, allowed, sizeof allowed);
      const char *def = key->def ? key->def : key->flags & F_REQ ? "**required**" : "**required when the arm is enabled**";
      fprintf(f, "| `%s` | %s | %s%s%s | %s |\n", key->key, allowed, key->def ? "`" : "", def,
              key->def ? "`" : "", key->help);
    }
    fprintf(f, "\n");
  }
}
