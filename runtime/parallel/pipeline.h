// Pipeline parallelism: which layers each stage holds, and the micro-batch
// schedules (GPipe: all forwards, then all backwards; 1F1B: after a warm-up of
// stages-1-s forwards, stage s alternates one forward and one backward, so at
// most stages-s micro-batches hold activations at once).
//
// Activations leave a stage with a non-blocking send (tag = micro-batch) and
// are received blocking by the next; gradients travel back the same way.
// A send's buffer (the slot's activation or input gradient) is not reused
// until that send has completed.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "runtime/comm/communicator.h"
#include "runtime/model/engine.h"

namespace myelin {

// Layer ranges per stage: balanced (the first L % pp stages get one more), or
// from "--pp-layers a,b,c" (must have pp entries >= 1 summing to L).
std::vector<StageSpec> split_stages(int num_layers, int pp, const std::string& pp_layers);

enum class PipeSchedule { kGPipe, k1F1B };

// Activation slots a stage needs for K micro-batches.
int pipeline_slots(PipeSchedule s, int stages, int K);

struct PipeTiming {
  double busy_s = 0;  // forward + backward compute on this stage (queueing time when a
                      // device engine does not wait: Engine::begin_step)
  double total_s = 0; // wall time of the whole schedule
};

// Runs K micro-batches of B x T through this stage. `load(m, tokens, targets)`
// fills micro-batch m's inputs (first stage) and targets (last stage).
// `before_last_backward` is called right before the backward of the last
// micro-batch (to arm overlapped gradient reduction). Returns the sum of the
// micro-batch losses on the last stage, 0 elsewhere.
double run_pipeline(Engine& e, Communicator& pp, PipeSchedule sched, int K, int B, int T,
                    const std::function<void(int, int*, int*)>& load,
                    const std::function<void()>& before_last_backward,
                    PipeTiming* timing = nullptr);

// Forward only (validation): returns the micro-batch loss on the last stage.
double pipeline_forward(Engine& e, Communicator& pp, int B, int T, const int* tokens,
                        const int* targets);

} // namespace myelin
