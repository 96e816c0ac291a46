/* tu_plans: every plan kind (tu_plans.h). */
#include "tu_plans.h"

static plan_knobs knobs(int arm, int bits) { return plan_knobs_defaults(arm, bits); }

int tu_all_knobs(plan_knobs *out) {
  int n = 0;
  for (int v = 0; v < 2; v++)
    for (int r = 0; r < 2; r++)
      for (int c = 0; c < 2; c++) {
        plan_knobs k = knobs(ARM_TQ, 3);
        k.tq_variant = v ? TQ_MSE : TQ_PROD;
        k.tq_rotation = r ? TQ_HADAMARD : TQ_HAAR;
        k.tq_codebook = c ? TQ_CB_GAUSSIAN : TQ_CB_BETA;
        out[n++] = k;
      }
  out[n] = knobs(ARM_TQ, 1), n++;
  out[n] = knobs(ARM_TQ, 4), out[n].tq_shared_rotation = 1, n++;
  for (int wf = 0; wf < 2; wf++)
    for (int qjl = 0; qjl < 2; qjl++) {
      plan_knobs k = knobs(ARM_SQ, 3);
      k.use_water_fill = wf;
      k.use_qjl = qjl;
      out[n++] = k;
    }
  out[n] = knobs(ARM_SQ, 2), out[n].noise_bits = 1, out[n].use_qjl = 1, n++;
  out[n] = knobs(ARM_SQ, 4), out[n].noise_bits = 0, out[n].value_noise_bits = 2, n++;
  out[n++] = knobs(ARM_SQV1, 3);
  out[n] = knobs(ARM_LOWRANK, 0), out[n].rank = 8, n++;
  out[n] = knobs(ARM_LOWRANK, 0), out[n].rank = 0, n++;
  return n;
}
