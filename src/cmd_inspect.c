/* PLACEHOLDER: replaced by the module that owns `sqexp inspect`. */
#include "cmd.h"
int cmd_inspect(int argc, char **argv) {
  (void)argc; (void)argv;
  return cmd_error("inspect", 1, "not built yet");
}
