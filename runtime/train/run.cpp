#include "runtime/train/run.h"

#include "runtime/train/trainer.h"

namespace myelin {

int run_training(const TrainOptions& o) {
  Trainer t(o);
  t.run();
  return 0;
}

} // namespace myelin
