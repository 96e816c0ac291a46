/* sha256: FIPS 180-4 SHA-256, used for run identity (config hash, dump fingerprint) and
 * provenance. Small and dependency-free so the identity does not hinge on a crypto library. */
#ifndef SQEXP_SHA256_H
#define SQEXP_SHA256_H
#include <stddef.h>
#include <stdint.h>

typedef struct {
  uint32_t h[8];
  uint64_t n_bytes;
  uint8_t block[64];
  size_t fill;
} sha256_ctx;

void sha256_init(sha256_ctx *c);
void sha256_update(sha256_ctx *c, const void *data, size_t n);
void sha256_final(sha256_ctx *c, uint8_t out[32]);
/* Lowercase hex of the digest into hex[65]. */
void sha256_hex(const uint8_t digest[32], char hex[65]);
/* One call: hex digest of a buffer. */
void sha256_buf_hex(const void *data, size_t n, char hex[65]);

#endif
