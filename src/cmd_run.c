/* PLACEHOLDER: replaced by the module that owns `sqexp run`. */
#include "cmd.h"
int cmd_run(int argc, char **argv) {
  (void)argc; (void)argv;
  return cmd_error("run", 1, "not built yet");
}
