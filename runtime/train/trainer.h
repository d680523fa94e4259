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

#include "runtime/data/loader.h"
#include "runtime/model/engine.h"
#include "runtime/train/options.h"

namespace myelin {

struct StepMetrics {
  int step = 0; // 1-based step just completed
  float loss = 0, lr = 0, grad_norm = 0;
  double ms = 0, tokens_per_s = 0;
  std::optional<float> val_loss;
};

class Trainer {
public:
  explicit Trainer(const TrainOptions& opt);
  ~Trainer();

  // Runs until opt.steps; returns the metrics of every step run.
  std::vector<StepMetrics> run();

  Engine& engine() { return *engine_; }
  const GPT2Config& config() const { return cfg_; }
  int start_step() const { return start_step_; }
  float evaluate(); // mean validation loss over val_batches batches
  std::string sample(int len, std::uint64_t seed);
  // Whole model parameters, host fp32.
  std::vector<float> params() const;
  // One optimizer step on the next global batch; returns its metrics.
  StepMetrics step();
  void save(const std::string& path);

private:
  void save_checkpoint(int completed_step);
  void try_resume();
  void log(const StepMetrics& m);

  TrainOptions opt_;
  GPT2Config cfg_;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<DataLoader> train_, val_;
  std::vector<int> inputs_, targets_;
  int start_step_ = 0;
  int step_ = 0; // completed steps
  std::uint64_t sample_rng_ = 0;
  struct MetricsFile;
  std::unique_ptr<MetricsFile> metrics_;
  double started_s_ = 0;
};

} // namespace myelin
