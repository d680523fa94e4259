#include "runtime/train/options.h"

#include <cmath>

#include "runtime/util/error.h"

namespace myelin {

void validate_train_options(const TrainOptions& o) {
  auto positive = [](double v, const char* flag) {
    require(std::isfinite(v) && v > 0, flag,
            "expected a positive number, got " + std::to_string(v));
  };
  auto non_negative = [](double v, const char* flag) {
    require(std::isfinite(v) && v >= 0, flag,
            "expected a non-negative number, got " + std::to_string(v));
  };
  positive(o.batch_size, "--batch-size");
  positive(o.seq_len, "--seq-len");
  positive(o.grad_accum, "--grad-accum");
  positive(o.steps, "--steps");
  positive(o.lr, "--lr");
  non_negative(o.warmup_steps, "--warmup-steps");
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
  require(!(o.device == "cpu" && o.dtype == "bf16"), "--dtype", "bf16 needs --device cuda");
  require(o.recompute >= 0 && o.recompute <= 2, "--recompute",
          "expected 0 (store all), 1 (recompute GeLU) or 2 (GeLU and LayerNorm), got " +
              std::to_string(o.recompute));
  require(!o.train_data.empty(), "--train-data", "required (a shard file or glob)");
  non_negative(o.threads, "--threads");
  non_negative(o.checkpoint_every, "--checkpoint-every");
  non_negative(o.val_every, "--val-every");
  positive(o.val_batches, "--val-batches");
  non_negative(o.sample_every, "--sample-every");
  positive(o.sample_len, "--sample-len");
  positive(o.log_every, "--log-every");
  require(o.data_ranks > 0 && o.data_rank >= 0 && o.data_rank < o.data_ranks, "data slice",
          "expected 0 <= rank < ranks");
  require(o.data_start_batch >= -1, "--data-start-batch", "expected a non-negative number");
  non_negative(o.run_steps, "--run-steps");
  require(!o.resume_optimizer_only || (o.resume && !o.model_path.empty()),
          "--resume-optimizer-only", "needs --resume and --model");
  positive(o.dp, "--dp");
  positive(o.pp, "--pp");
  require(o.zero == 0 || o.zero == 1, "--zero", "expected 0 or 1");
  require(o.pp_schedule == "gpipe" || o.pp_schedule == "1f1b", "--pp-schedule",
          "expected gpipe or 1f1b, got '" + o.pp_schedule + "'");
  positive(o.comm_timeout_s, "--comm-timeout");
  require(o.save_version == 3 || o.save_version == 5, "--save-dtype", "expected fp32 or bf16");
  require(!((o.checkpoint_every > 0 || (o.resume && o.resume_from.empty())) &&
            o.checkpoint_dir.empty()),
          "--checkpoint-dir", "required with --checkpoint-every or --resume");
  if (o.model_path.empty()) {
    require(o.shape.num_layers > 0 && o.shape.num_layers <= 4096, "--layers", "expected 1..4096");
    require(o.shape.num_heads > 0, "--heads", "expected a positive number");
    require(o.shape.channels > 0 && o.shape.channels % o.shape.num_heads == 0, "--channels",
            "expected a positive multiple of --heads");
    require(o.shape.vocab_size > 0 && o.shape.vocab_size <= 65536, "--vocab",
            "expected 1..65536 (tokens are uint16)");
    require(o.shape.padded_vocab_size >= o.shape.vocab_size, "--padded-vocab",
            "expected >= --vocab");
    require(o.shape.max_seq_len > 0, "--max-seq-len", "expected a positive number");
    require(o.seq_len <= o.shape.max_seq_len, "--seq-len",
            std::to_string(o.seq_len) + " exceeds the model's max sequence length " +
                std::to_string(o.shape.max_seq_len));
  }
}

} // namespace myelin
