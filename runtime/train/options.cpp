#include "runtime/train/options.h"

#include <cmath>
#include <cstdint>

#include "runtime/util/error.h"

namespace myelin {

namespace {
// Upper bounds of the counts (steps, batches, ranks) a run may ask for.
constexpr long long kMaxSteps = 1'000'000'000;
constexpr long long kMaxRanks = 1 << 16;
constexpr long long kMaxStages = 4096;
constexpr long long kMaxThreads = 4096;

void in_range(long long v, long long lo, long long hi, const char* flag) {
  require(v >= lo && v <= hi, flag,
          "expected " + std::to_string(lo) + ".." + std::to_string(hi) + ", got " +
              std::to_string(v));
}
void positive(double v, const char* flag) {
  require(std::isfinite(v) && v > 0, flag, "expected a positive number, got " + std::to_string(v));
}
void non_negative(double v, const char* flag) {
  require(std::isfinite(v) && v >= 0, flag,
          "expected a non-negative number, got " + std::to_string(v));
}
} // namespace

void validate_train_options(const TrainOptions& o, bool plan_only) {
  in_range(o.batch_size, 1, static_cast<long long>(kMaxBatchTokens), "--batch-size");
  in_range(o.seq_len, 1, kMaxSeqLen, "--seq-len");
  in_range(o.grad_accum, 1, 1 << 16, "--grad-accum");
  in_range(o.steps, 1, kMaxSteps, "--steps");
  positive(o.lr, "--lr");
  in_range(o.warmup_steps, 0, kMaxSteps, "--warmup-steps");
  non_negative(o.weight_decay, "--weight-decay");
  non_negative(o.grad_clip, "--grad-clip");
  require(o.beta1 >= 0 && o.beta1 < 1, "--beta1", "expected a value in [0, 1)");
  require(o.beta2 >= 0 && o.beta2 < 1, "--beta2", "expected a value in [0, 1)");
  positive(o.eps, "--eps");
  require(o.final_lr_frac >= 0 && o.final_lr_frac <= 1, "--final-lr-frac",
          "expected a value in [0, 1]");
  require(o.lr_schedule == "constant" || o.lr_schedule == "cosine", "--lr-schedule",
          "expected constant or cosine, got '" + o.lr_schedule + "'");
  require(o.device == "cpu" || o.device == "cuda", "--device",
          "expected cpu or cuda, got '" + o.device + "'");
  require(o.dtype == "fp32" || o.dtype == "bf16", "--dtype",
          "expected fp32 or bf16, got '" + o.dtype + "'");
  require(plan_only || !(o.device == "cpu" && o.dtype == "bf16"), "--dtype",
          "bf16 needs --device cuda");
  require(o.recompute >= 0 && o.recompute <= 2, "--recompute",
          "expected 0 (store all), 1 (recompute GeLU) or 2 (GeLU and LayerNorm), got " +
              std::to_string(o.recompute));
  require(plan_only || !o.train_data.empty(), "--train-data", "required (a shard file or glob)");
  in_range(o.threads, 0, kMaxThreads, "--threads");
  in_range(o.checkpoint_every, 0, kMaxSteps, "--checkpoint-every");
  in_range(o.keep_checkpoints, 0, kMaxSteps, "--keep-checkpoints");
  in_range(o.val_every, 0, kMaxSteps, "--val-every");
  in_range(o.val_batches, 1, kMaxSteps, "--val-batches");
  in_range(o.sample_every, 0, kMaxSteps, "--sample-every");
  in_range(o.sample_len, 1, kMaxSeqLen, "--sample-len");
  in_range(o.log_every, 1, kMaxSteps, "--log-every");
  require(o.eval_task.empty() || o.eval_task == "addition", "--eval-task",
          "expected addition, got '" + o.eval_task + "'");
  in_range(o.eval_digits, 1, 9, "--eval-digits");
  in_range(o.eval_examples, 1, 1'000'000, "--eval-examples");
  // "\n" + "a+b=" + all answer digits but the last: the window one problem needs.
  require(o.eval_task.empty() || o.seq_len >= 3 * o.eval_digits + 3, "--eval-digits",
          std::to_string(o.eval_digits) +
              "-digit problems need --seq-len >= " + std::to_string(3 * o.eval_digits + 3));
  require(o.eval_task.empty() || o.pp == 1, "--eval-task", "needs --pp 1 (a whole model)");
  require(o.data_ranks > 0 && o.data_ranks <= kMaxRanks && o.data_rank >= 0 &&
              o.data_rank < o.data_ranks,
          "--data-slice", "expected 0 <= rank < ranks <= " + std::to_string(kMaxRanks));
  require(o.data_start_batch >= -1 && o.data_start_batch <= (std::int64_t(1) << 40),
          "--data-start-batch", "expected 0..2^40");
  in_range(o.run_steps, 0, kMaxSteps, "--run-steps");
  in_range(o.start_step, -1, kMaxSteps, "--start-step");
  in_range(o.restart_warmup, 0, kMaxSteps, "--restart-warmup");
  require(o.start_step < 0 || !o.resume, "--start-step", "cannot be combined with --resume");
  in_range(o.dp, 1, kMaxRanks, "--dp");
  in_range(o.pp, 1, kMaxStages, "--pp");
  require(static_cast<long long>(o.dp) * o.pp <= kMaxRanks, "--dp/--pp",
          "dp x pp = " + std::to_string(static_cast<long long>(o.dp) * o.pp) +
              " ranks, above the limit of " + std::to_string(kMaxRanks));
  require(o.zero == 0 || o.zero == 1, "--zero", "expected 0 or 1");
  require(o.pp_schedule == "gpipe" || o.pp_schedule == "1f1b", "--pp-schedule",
          "expected gpipe or 1f1b, got '" + o.pp_schedule + "'");
  require(std::isfinite(o.comm_timeout_s) && o.comm_timeout_s > 0 && o.comm_timeout_s <= 1e6,
          "--comm-timeout", "expected a number of seconds in (0, 1e6]");
  require(o.save_version == 3 || o.save_version == 5, "--save-dtype", "expected fp32 or bf16");
  require(!((o.checkpoint_every > 0 || (o.resume && o.resume_from.empty())) &&
            o.checkpoint_dir.empty()),
          "--checkpoint-dir", "required with --checkpoint-every or --resume");
  if (o.model_path.empty()) {
    o.shape.validate(flag_names());
    validate_micro_batch(o.shape, o.batch_size, o.seq_len, flag_names());
  }
}

} // namespace myelin
