// Entry point for a training job: a single-process Trainer, or — under mpirun
// with several ranks — the distributed runner. Returns the exit code.
#pragma once

#include "runtime/train/options.h"

namespace myelin {
int run_training(const TrainOptions& o);
}
