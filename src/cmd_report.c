/* PLACEHOLDER: replaced by the module that owns `sqexp report`. */
#include "cmd.h"
int cmd_report(int argc, char **argv) {
  (void)argc; (void)argv;
  return cmd_error("report", 1, "not built yet");
}
