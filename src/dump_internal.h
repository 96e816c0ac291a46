/* dump_internal: helpers shared by the dump reader (dump.c) and writer (dump_write.c). Private to
 * the dump module; other modules use dump.h only. */
#ifndef SQEXP_DUMP_INTERNAL_H
#define SQEXP_DUMP_INTERNAL_H
#include <hdf5.h>
#include <stddef.h>
#include "dump.h"

/* Silence HDF5's automatic error-stack printing (idempotent; it is process state of the library,
 * so both the reader and the writer call it before touching a file). */
void dump_h5_quiet(void);
/* Summarise the current HDF5 error stack into buf: the innermost description ("truncated file:
 * eof = ...", "file signature not found"). Returns 1 when the stack holds an I/O-class error
 * (H5E_IO: a genuine read/write failure rather than bad content). */
int dump_h5_summary(char *buf, size_t n);
/* The IEEE binary16 little-endian type (HDF5 1.10 predefines none; h5py maps this to float16).
 * Caller closes it with H5Tclose. */
hid_t dump_h5_half_type(void);
/* Consistency of the header fields shared by reader and writer: model shape, rope, dtype, layer
 * list, sequence tables (offsets, q_offsets, split, domain). Messages start with d->path. */
int dump_check_header(const dump_t *d, sq_err *e);

#endif
