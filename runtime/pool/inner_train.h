// One pool assignment's inner training, shared by the contributor (which
// runs it) and the coordinator (which replays it to check an upload). The
// work of a round depends only on (global model, rows, settings): the
// trainer's AdamW state is reset at the start of every round and its step
// counter set to the round's first global step (round x inner_steps), and the
// rows are slice `slot` of `slots` from global batch `batch_position`. So a
// replay on the same machine gives the contributor's local model bit for bit,
// and anywhere else up to float rounding.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "runtime/pool/job.h"
#include "runtime/pool/protocol.h"
#include "runtime/train/options.h"

namespace myelin {
class Trainer;
}

namespace myelin::pool {

// The inner-loop settings every assignment of a job carries.
TrainSettings train_settings(const JobSpec& s);

// The trainer options of an assignment's settings: model file, shard glob,
// data slice `slot` of `slots`.
TrainOptions inner_train_options(const TrainSettings& t, std::int64_t slot, std::int64_t slots,
                                 const std::string& model, const std::string& data_glob,
                                 const std::string& device, int threads);

struct InnerResult {
  std::vector<float> local; // the parameters after the inner steps
  double loss = 0;          // mean training loss over them
};

class InnerTrainer {
 public:
  explicit InnerTrainer(const TrainOptions& o);
  ~InnerTrainer();
  // Runs `steps` inner steps from `global` on the rows from global batch
  // `batch_position`, the schedule at step `start_step`; `each_step` runs
  // after every step (a stop check, a delay).
  InnerResult run(std::span<const float> global, std::uint64_t batch_position,
                  std::int64_t start_step, int steps, const std::function<void()>& each_step = {});

 private:
  std::unique_ptr<Trainer> trainer_;
  std::vector<std::uint64_t> batches_per_file_;
};

} // namespace myelin::pool
