/* cfg: the experiment config (INI, read with inih) validated against one declared schema.
 * Unknown sections/keys are refused with file:line and the closest valid name; lists
 * ("2,3,4") and ranges ("0:32:4" = start:stop:step, stop exclusive) are parsed once into the
 * typed structs below. docs/config.md documents every key. */
#ifndef SQEXP_CFG_H
#define SQEXP_CFG_H
#include <stdint.h>
#include "err.h"

#define CFG_MAX_LIST 64
#define CFG_NONE (-1)  /* the value `none` in an integer knob list (noise_bits = none,1,2) */
#define CFG_ALL_ITEM (-2) /* the item `all` in [stability] calib_tokens (= the whole calibration) */

typedef struct { int n; int v[CFG_MAX_LIST]; } cfg_ilist;     /* ints, CFG_NONE allowed where stated */
typedef struct { int n; double v[CFG_MAX_LIST]; } cfg_dlist;
typedef struct { int n; char v[CFG_MAX_LIST][32]; } cfg_slist;

enum { CFG_BACKEND_AUTO = 0, CFG_BACKEND_CPU = 1, CFG_BACKEND_CUDA = 2 };
enum { PROTO_ATTN = 1, PROTO_RANDQ = 2, PROTO_PROBS = 4 };

/* [run] */
typedef struct {
  char dump[1024];        /* path, relative to the current directory */
  char out[1024];         /* results directory */
  int backend;            /* CFG_BACKEND_* */
  uint64_t seed;          /* default 42 */
  cfg_ilist layers;       /* model layer indices; n == 0 means every layer in the dump */
  cfg_ilist heads;        /* KV heads; n == 0 means all */
  cfg_slist domains;      /* n == 0 means all */
  int64_t max_calib_tokens; /* 0 = all calibration tokens */
  int64_t max_eval_tokens;  /* 0 = all evaluation tokens (whole sequences are kept) */
  int protocols;          /* PROTO_* bit set; default attn|randq|probs */
  int randq_queries;      /* default 8 */
  int probs_last;         /* default 4 */
  int topk;               /* default 8 */
  int calib_normalize;    /* default 0 */
  int allow_nonfinite;    /* default 0 */
  int threads;            /* 0 = OpenMP default */
} cfg_run;

/* [sq] */
typedef struct {
  int enabled;
  cfg_ilist total_bits;       /* 1..5 (water-fill may give total_bits+3 value bits, <= 8) */
  cfg_ilist noise_bits;       /* CFG_NONE or 0..8; default none */
  cfg_ilist value_noise_bits; /* CFG_NONE (= follow noise_bits) or 0..8; default none */
  cfg_dlist d_eff_variance;   /* (0,1); default 0.90 */
  cfg_ilist use_water_fill;   /* 0/1; default 1 */
  cfg_ilist use_qjl;          /* 0/1; default 0 */
} cfg_sq;

enum { TQ_PROD = 0, TQ_MSE = 1 };
enum { TQ_HAAR = 0, TQ_HADAMARD = 1 };
enum { TQ_CB_BETA = 0, TQ_CB_GAUSSIAN = 1 };

/* [tq] */
typedef struct {
  int enabled;
  cfg_ilist total_bits;       /* 1..8 */
  cfg_ilist variant;          /* TQ_PROD | TQ_MSE; default prod */
  cfg_ilist rotation;         /* TQ_HAAR | TQ_HADAMARD; default haar */
  cfg_ilist codebook;         /* TQ_CB_BETA | TQ_CB_GAUSSIAN; default beta */
  cfg_ilist shared_rotation;  /* 0/1; default 0 */
} cfg_tq;

/* [sq_paper_v1]: keys normalised, key eigenbasis, (total_bits-1)-bit N(0,1/D) codebook on every
 * coordinate; values normalised, same key basis, total_bits bits. total_bits=3 is the paper's. */
typedef struct {
  int enabled;
  cfg_ilist total_bits;       /* 2..8 */
} cfg_sqv1;

/* [lowrank]: keep the top-r eigen-coordinates (keys and values, own bases) in fp16. */
typedef struct {
  int enabled;
  cfg_ilist rank;             /* 0..256 (<= D, checked by the run); 0 means "r = d_eff(tau)" for each tau below */
  cfg_dlist d_eff_variance;   /* used when rank contains 0; default 0.90 */
} cfg_lowrank;

/* [stability]: calibration budgets of the stability experiment (read only when
 * `[run] experiments` lists stability; printed and hashed only then). */
typedef struct {
  cfg_ilist calib_tokens;     /* token counts >= 1 and CFG_ALL_ITEM; default 128,256,512,1024,all */
} cfg_stability;

typedef struct {
  char path[1024];            /* the config file */
  char *text;                 /* its full text (owned), for provenance and hashing */
  cfg_run run;
  cfg_sq sq;
  cfg_tq tq;
  cfg_sqv1 sqv1;
  cfg_lowrank lowrank;
  cfg_slist experiments;      /* [run] experiments = grid,spectrum,...; default grid,spectrum */
  cfg_stability stability;    /* [stability] (added after the arms; see cfg_stability) */
} cfg_t;

/* Is experiment `name` listed in [run] experiments? */
int cfg_has_experiment(const cfg_t *c, const char *name);

/* Parse + validate. Relative `dump`/`out` paths are taken relative to the current directory. */
int cfg_load(cfg_t *c, const char *path, sq_err *e);
/* Apply "section.key=value" overrides (from --set on the command line), validated the same way. */
int cfg_override(cfg_t *c, const char *assignment, sq_err *e);
/* Print the resolved config as INI (every key, defaults filled in). */
void cfg_print(const cfg_t *c, void *file /* FILE* */);
void cfg_free(cfg_t *c);

/* Apply n overrides in order, then check the cross-key rules once, so that e.g.
 * {"run.arms=tq,sq", "sq.total_bits=2"} works in either order. c changes only if all are valid.
 * Errors name the assignment ("--set sq.total_bits: ..."). cfg_override(c, a, e) is the n = 1 case. */
int cfg_override_all(cfg_t *c, int n, const char *const *assignments, sq_err *e);
/* Markdown tables of every section and key (type, allowed values, default, meaning), generated
 * from the schema table; docs/config.md embeds this output and tests/test_cfg.c checks it. */
void cfg_print_schema_md(void *file /* FILE* */);

#endif
