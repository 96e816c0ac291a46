/* rng: the one deterministic generator (splitmix64-seeded xoshiro256**, Box-Muller normals in
 * double). Every random matrix (Haar rotations, QJL sketches, randq queries) is drawn on the host
 * from this, so the CPU and CUDA backends see bit-identical plans. Seeds follow methods.md:
 * seed + 1000*layer + head. */
#ifndef SQEXP_RNG_H
#define SQEXP_RNG_H
#include <math.h>
#include <stdint.h>

typedef struct {
  uint64_t s[4];
  int have_spare;
  double spare;
} rng_t;

static inline uint64_t rng_splitmix64(uint64_t *x) {
  uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

static inline void rng_seed(rng_t *r, uint64_t seed) {
  uint64_t x = seed;
  for (int i = 0; i < 4; i++) r->s[i] = rng_splitmix64(&x);
  r->have_spare = 0;
  r->spare = 0.0;
}

static inline uint64_t rng_rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static inline uint64_t rng_next(rng_t *r) {
  uint64_t *s = r->s;
  uint64_t result = rng_rotl(s[1] * 5, 7) * 9;
  uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rng_rotl(s[3], 45);
  return result;
}

/* Uniform in (0, 1): never 0, so log() below is safe. */
static inline double rng_uniform(rng_t *r) { return ((double)(rng_next(r) >> 11) + 0.5) * 0x1.0p-53; }

static inline double rng_normal(rng_t *r) {
  if (r->have_spare) {
    r->have_spare = 0;
    return r->spare;
  }
  double u1 = rng_uniform(r), u2 = rng_uniform(r);
  double rad = sqrt(-2.0 * log(u1)), th = 6.283185307179586476925 * u2;
  r->spare = rad * sin(th);
  r->have_spare = 1;
  return rad * cos(th);
}

/* The randq protocol's queries are drawn from the head seed XOR this salt. methods.md seeds both
 * them and SpectralQuant's QJL sketch S_sem (and TurboQuant's pre-QR Gaussian) with
 * seed + 1000*layer + head; taken literally the 8 queries of sequence i ARE rows 8i..8i+7 of
 * S_sem, and the QJL estimator, unbiased only for q independent of S, is biased under randq. */
#define RNG_RANDQ_SALT 0xD1B54A32D192ED03ull

/* The per-(layer, head) seed of methods.md. */
static inline uint64_t rng_head_seed(uint64_t seed, int layer, int head) {
  return seed + 1000ull * (uint64_t)layer + (uint64_t)head;
}
#endif
