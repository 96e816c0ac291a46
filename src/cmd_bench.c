/* PLACEHOLDER: replaced by the module that owns `sqexp bench`. */
#include "cmd.h"
int cmd_bench(int argc, char **argv) {
  (void)argc; (void)argv;
  return cmd_error("bench", 1, "not built yet");
}
