// Pipeline bubble benchmark (`mpirun -np M myelin bench --pipeline`): trains a
// small model split into M stages (one per rank) on generated data and
// reports, per stage and overall, the measured idle share of each step
// (1 - compute time / step time) beside the schedule's theoretical bubble
// (M-1)/(K+M-1) for K micro-batches.
#pragma once

#include <memory>
#include <string>

#include "runtime/comm/communicator.h"

namespace myelin {

struct PipelineBenchOptions {
  int micro_batches = 8;
  std::string schedule = "1f1b";
  int steps = 6; // the first step is a warm-up and not counted
  int layers_per_stage = 2;
  int channels = 128;
  int batch = 4, seq = 64;
};

int run_pipeline_bench(std::unique_ptr<Communicator> world, const PipelineBenchOptions& o);

} // namespace myelin
