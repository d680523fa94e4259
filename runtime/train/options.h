// Everything `myelin train` can be told, as plain data. launch/ fills it from
// the command line; the pool's contributor fills it from a job description.
#pragma once

#include <cstdint>
#include <string>

#include "runtime/model/config.h"

namespace myelin {

struct TrainOptions {
  // model: a checkpoint, or a shape + seed
  std::string model_path;
  ModelConfig shape{256, 256, 256, 4, 4, 128};
  std::uint64_t seed = 1337;

  // data
  std::string train_data, val_data;
  bool shuffle = false;
  int batch_size = 4; // rows of one micro-batch on one rank
  int seq_len = 64;
  int grad_accum = 1; // micro-batches per step
  // This process's share of each global batch when it is not set by the
  // data-parallel mesh (the pool assigns contributors disjoint row slices).
  // Under mpirun this process group is slice data_rank of data_ranks and its
  // data-parallel ranks split that slice further (`--data-slice R/N`).
  int data_rank = 0, data_ranks = 1;
  // Start the loader at this global batch (-1 = the start, or the resumed
  // position); `--data-start-batch`.
  std::int64_t data_start_batch = -1;

  // optimisation
  int steps = 100; // total steps of the run (resume continues up to this)
  float lr = 3e-4f;
  int warmup_steps = 0;
  std::string lr_schedule = "cosine";
  float final_lr_frac = 0.0f;
  float weight_decay = 0.0f;
  float beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f;
  float grad_clip = 1.0f; // 0 = off

  // device
  std::string device = "cpu";
  std::string dtype = "fp32";
  int threads = 0; // 0 = all cores
  // GPU to use; under mpirun the launcher sets it from the node-local rank
  // (the CUDA engine takes it modulo the number of devices).
  int device_index = 0;
  int recompute = 0;

  // parallel layout (distributed runtime)
  int dp = 1, pp = 1;
  std::string pp_schedule = "1f1b";
  std::string pp_layers; // e.g. "3,3,2,2"; empty = balanced
  int zero = 0;
  double comm_timeout_s = 300.0;

  // checkpoints and outputs
  std::string checkpoint_dir;
  int checkpoint_every = 0;
  int keep_checkpoints = 0;
  bool resume = false;
  // Resume from this checkpoint folder instead of the newest in checkpoint_dir
  // (`--resume-from`, with resume set; checkpoint_dir then only takes new ones).
  std::string resume_from;
  // The pool's multi-rank contributors (hidden flags): stop after this many
  // steps in this invocation, the schedule still spanning `steps`
  // (`--run-steps`, 0 = run to `steps`).
  int run_steps = 0;
  // The pool's round start (hidden `--start-step S`, -1 = off): a fresh run
  // that counts its steps (the LR schedule) from S, AdamW's bias correction
  // from 1, as Trainer::restart_optimizer(S) does in process.
  int start_step = -1;
  // With a fresh AdamW (start_step, or each pool round in process): the
  // learning rate ramps linearly over this many steps from the restart
  // (hidden `--restart-warmup`, 0 = none). A fresh AdamW's first steps move
  // every parameter by about the learning rate, which throws a trained model
  // far off; the ramp keeps them small.
  int restart_warmup = 0;
  std::string save_path;
  int save_version = 3; // 3 = fp32, 5 = bf16
  std::string metrics_out;

  // evaluation and logging
  int val_every = 0;
  int val_batches = 8;
  int sample_every = 0;
  int sample_len = 64;
  std::string sample_prompt = "";
  // Exact-match accuracy on held-out problems of a synthetic task
  // (runtime/train/addition_eval.h), printed at each validation and at the
  // end: "" = off, "addition" with operands of eval_digits digits.
  std::string eval_task;
  int eval_digits = 3;
  int eval_examples = 500;
  int log_every = 1;
  bool quiet = false;
};

// Checks values and combinations; throws InputError naming the flag. Every
// number has a range; a shape given by flags goes through ModelConfig::validate
// and validate_micro_batch (a --model file's shape is checked when it is read).
// plan_only: for `--memory-plan`, which needs no data and plans any dtype.
void validate_train_options(const TrainOptions& o, bool plan_only = false);

} // namespace myelin
