#include "runtime/pool/inner_train.h"

#include <algorithm>
#include <climits>

#include "runtime/data/loader.h"
#include "runtime/data/shard.h"
#include "runtime/io/file_util.h"
#include "runtime/train/trainer.h"
#include "runtime/util/checked.h"
#include "runtime/util/error.h"

namespace myelin::pool {

TrainSettings train_settings(const JobSpec& s) {
  TrainSettings t;
  t.batch_size = s.batch_size, t.seq_len = s.seq_len, t.grad_accum = s.grad_accum;
  t.lr = s.inner_lr, t.lr_schedule = s.lr_schedule, t.warmup_steps = s.warmup_steps;
  t.weight_decay = s.weight_decay, t.grad_clip = s.grad_clip, t.beta1 = s.beta1;
  t.beta2 = s.beta2, t.seed = s.seed;
  t.total_steps = std::int64_t(s.rounds) * s.inner_steps;
  t.round_warmup = s.round_warmup();
  return t;
}

TrainOptions inner_train_options(const TrainSettings& t, std::int64_t slot, std::int64_t slots,
                                 const std::string& model, const std::string& data_glob,
                                 const std::string& device, int threads) {
  TrainOptions to;
  to.model_path = model;
  to.train_data = data_glob;
  to.batch_size = int(t.batch_size);
  to.seq_len = int(t.seq_len);
  to.grad_accum = int(t.grad_accum);
  to.steps = int(std::clamp<std::int64_t>(t.total_steps, 1, INT32_MAX));
  to.lr = float(t.lr);
  to.lr_schedule = t.lr_schedule;
  to.warmup_steps = int(t.warmup_steps);
  to.restart_warmup = int(t.round_warmup);
  to.weight_decay = float(t.weight_decay);
  to.grad_clip = float(t.grad_clip);
  to.beta1 = float(t.beta1);
  to.beta2 = float(t.beta2);
  to.seed = t.seed;
  to.device = device;
  to.threads = threads;
  to.quiet = true;
  to.data_rank = int(slot);
  to.data_ranks = int(slots);
  return to;
}

InnerTrainer::InnerTrainer(const TrainOptions& o) : trainer_(std::make_unique<Trainer>(o)) {
  const auto G =
      checked_mul({std::size_t(o.data_ranks), std::size_t(o.batch_size), std::size_t(o.seq_len)});
  require(G && *G > 0, "batch_size", "the global batch's token count overflows");
  for (const auto& f : glob_files(o.train_data, "shards"))
    batches_per_file_.push_back((shard_token_count(f) - 1) / *G);
}

InnerTrainer::~InnerTrainer() = default;

InnerResult InnerTrainer::run(std::span<const float> global, std::uint64_t batch_position,
                              std::int64_t start_step, int steps,
                              const std::function<void()>& each_step) {
  trainer_->set_params(global);
  trainer_->restart_optimizer(int(std::clamp<std::int64_t>(start_step, 0, INT32_MAX)));
  trainer_->set_data_position(position_after(batches_per_file_, batch_position));
  InnerResult r;
  for (int h = 0; h < steps; ++h) {
    r.loss += trainer_->step().loss;
    if (each_step) each_step();
  }
  if (steps > 0) r.loss /= steps;
  r.local = trainer_->params();
  return r;
}

} // namespace myelin::pool
