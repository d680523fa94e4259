// The training loop: builds an engine and loaders from TrainOptions, runs
// steps (micro-batches, gradient clipping, AdamW, schedule), evaluates,
// samples, writes metrics and checkpoints, and resumes exactly.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "runtime/comm/mesh.h"
#include "runtime/data/loader.h"
#include "runtime/model/engine.h"
#include "runtime/parallel/pipeline.h"
#include "runtime/train/addition_eval.h"
#include "runtime/train/options.h"

namespace myelin {

struct StepMetrics {
  int step = 0; // 1-based step just completed
  float loss = 0, lr = 0, grad_norm = 0;
  double ms = 0, tokens_per_s = 0;
  double mfu = 0; // model FLOP utilisation; 0 where the device's peak is unknown
  std::optional<float> val_loss;
  std::optional<double> exact_match; // percent, with --eval-task
};

class GradSync;

class Trainer {
 public:
  // mesh: the job's data- and pipeline-parallel layout over host memory
  // (MPI); null = one process. data_mesh: the same layout over the engine's
  // memory (NCCL for GPUs); null = mesh.
  explicit Trainer(const TrainOptions& opt, Mesh* mesh = nullptr, Mesh* data_mesh = nullptr);
  ~Trainer();

  // Runs until opt.steps; returns the metrics of every step run.
  std::vector<StepMetrics> run();

  Engine& engine() { return *engine_; }
  const ModelConfig& config() const { return cfg_; }
  int start_step() const { return start_step_; }
  float evaluate(); // mean validation loss over val_batches batches
  std::string sample(int len, std::uint64_t seed);
  // --eval-task's score on held-out problems, all data-parallel ranks together
  // (collective); the total is 0 without --eval-task. `show`: problems of
  // this rank's share to keep with the model's answers (ExactMatch::shown).
  ExactMatch evaluate_task(int show = 0);
  // Whole model parameters, host fp32 (collective over the pipeline when pp > 1).
  std::vector<float> params();
  std::size_t optimizer_bytes_saved() const;
  // One optimizer step on the next global batch; returns its metrics.
  StepMetrics step();
  void save(const std::string& path);
  // For the pool: replace the model (optimizer moments are kept), and move
  // the training data to a given position.
  void set_params(std::span<const float> p) { engine_->set_params(p); }
  void set_data_position(const LoaderPosition& p) { train_->set_position(p); }
  // For the pool: start a round's inner steps afresh, so they depend only on
  // (model, rows, settings): AdamW moments zeroed, its bias correction counted
  // from 1 again, and the step counter (the LR schedule's position) set to
  // `step`.
  void restart_optimizer(int step);
  LoaderPosition data_position() const { return train_->position(); }
  int completed_steps() const { return step_; }
  // Compute vs wall time of this rank's part of the last step's schedule.
  const PipeTiming& last_timing() const { return last_timing_; }
  Mesh& mesh() { return *mesh_; }
  // Tokens one step consumes on this process.
  std::uint64_t tokens_per_step() const {
    return std::uint64_t(opt_.batch_size) * opt_.seq_len * opt_.grad_accum;
  }

 private:
  void save_checkpoint(int completed_step);
  bool is_logger() const { return mesh_->world_rank() == 0; }
  void try_resume();
  void log(const StepMetrics& m);

  TrainOptions opt_;
  std::unique_ptr<Mesh> own_mesh_;
  Mesh* mesh_ = nullptr;
  Mesh* data_mesh_ = nullptr;
  std::unique_ptr<GradSync> sync_;
  PipeSchedule sched_ = PipeSchedule::k1F1B;
  PipeTiming last_timing_;
  ModelConfig cfg_;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<DataLoader> train_, val_;
  std::vector<int> inputs_, targets_;
  int start_step_ = 0;
  int step_ = 0;      // completed steps
  int adam_base_ = 0; // AdamW's step t counts from here (restart_optimizer)
  std::uint64_t sample_rng_ = 0;
  struct MetricsFile;
  std::unique_ptr<MetricsFile> metrics_;
  double started_s_ = 0;
};

} // namespace myelin
