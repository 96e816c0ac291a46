#include <stdio.h>
#include <string.h>
#include "cmd.h"

int cmd_error(const char *cmd, int code, const char *msg) {
  fprintf(stderr, "sqexp %s: %s\n", cmd, msg);
  return code;
}

int cmd_wants_help(int argc, char **argv) {
  for (int i = 1; i < argc; i++)
    if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) return 1;
  return 0;
}
