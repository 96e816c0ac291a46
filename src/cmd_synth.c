/* PLACEHOLDER: replaced by the module that owns `sqexp synth`. */
#include "cmd.h"
int cmd_synth(int argc, char **argv) {
  (void)argc; (void)argv;
  return cmd_error("synth", 1, "not built yet");
}
