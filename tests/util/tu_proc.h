/* tu_proc: run $SQEXP_BIN (set by ctest) as a child process, for the end-to-end tests. */
#ifndef TU_PROC_H
#define TU_PROC_H
#include <sys/types.h>

typedef struct {
  const char *log;        /* stdout + stderr of the child go to this file */
  int truncate_log;       /* 0: append to it */
  const char *cwd;        /* the child's working directory; NULL: the test's */
  const char *omp;        /* OMP_NUM_THREADS for the child; NULL: inherited */
  const char *prefetch;   /* SQEXP_PREFETCH for the child; NULL: unset (prefetch on) */
  const char *plan_ahead; /* SQEXP_PLAN_AHEAD for the child; NULL: unset (the backend's default) */
} tu_proc_opts;

/* Criterion-asserts that SQEXP_BIN is set. */
const char *tu_sqexp_bin(void);
/* Start `sqexp args...` (args NULL-terminated, at most 30); returns the pid. */
pid_t tu_sqexp_start(const tu_proc_opts *o, const char *const *args);
/* Raw wait status of pid (retries on EINTR; -1 on error). */
int tu_wait_status(pid_t pid);
/* The exit code a shell would report: the status, or 128 + signal. */
int tu_exit_code(int status);
/* Start and wait: the exit code. */
int tu_sqexp_run(const tu_proc_opts *o, const char *const *args);

#endif
