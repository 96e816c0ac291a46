#include "tu_proc.h"
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

const char *tu_sqexp_bin(void) {
  const char *b = getenv("SQEXP_BIN");
  cr_assert_not_null(b, "SQEXP_BIN is not set (run through ctest)");
  return b;
}

pid_t tu_sqexp_start(const tu_proc_opts *o, const char *const *args) {
  const char *bin = tu_sqexp_bin();
  fflush(NULL);
  pid_t pid = fork();
  cr_assert_geq(pid, 0);
  if (pid == 0) {
    int fd = open(o->log, O_WRONLY | O_CREAT | (o->truncate_log ? O_TRUNC : O_APPEND), 0666);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
      close(fd);
    }
    if (o->cwd && chdir(o->cwd) != 0) _exit(126);
    if (o->omp) setenv("OMP_NUM_THREADS", o->omp, 1);
    if (o->prefetch) setenv("SQEXP_PREFETCH", o->prefetch, 1);
    else unsetenv("SQEXP_PREFETCH");
    if (o->plan_ahead) setenv("SQEXP_PLAN_AHEAD", o->plan_ahead, 1);
    else unsetenv("SQEXP_PLAN_AHEAD");
    const char *argv[32];
    int n = 0;
    argv[n++] = "sqexp";
    for (; args[n - 1] && n < 31; n++) argv[n] = args[n - 1];
    argv[n] = NULL;
    execv(bin, (char *const *)argv);
    _exit(127);
  }
  return pid;
}

int tu_wait_status(pid_t pid) {
  int st;
  while (waitpid(pid, &st, 0) < 0)
    if (errno != EINTR) return -1;
  return st;
}

int tu_exit_code(int status) {
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int tu_sqexp_run(const tu_proc_opts *o, const char *const *args) {
  return tu_exit_code(tu_wait_status(tu_sqexp_start(o, args)));
}
