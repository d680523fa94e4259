#include "runtime/bench/pipeline_bench.h"

#include <cstdio>
#include <filesystem>
#include <vector>

#include "runtime/comm/mesh.h"
#include "runtime/data/make_shards.h"
#include "runtime/data/synthetic.h"
#include "runtime/data/tokenizer.h"
#include "runtime/train/trainer.h"
#include "runtime/util/error.h"

namespace myelin {

int run_pipeline_bench(std::unique_ptr<Communicator> world, const PipelineBenchOptions& o) {
  require(o.micro_batches > 0, "--micro-batches", "expected a positive number");
  require(o.steps > 1, "--steps", "expected at least 2 (the first is a warm-up)");
  const int M = world->size();
  const bool root = world->rank() == 0;
  const std::string dir =
      (std::filesystem::temp_directory_path() / "myelin_pipeline_bench").string();
  if (root)
    write_token_shards(ByteTokenizer::encode(synthetic_addition(20000, 3, 1)), dir, "pb", 0.0,
                       std::size_t(1) << 30);
  world->barrier();
  TrainOptions t;
  t.train_data = dir + "/pb_train_*.bin";
  t.shape = ModelConfig{o.seq, 256, 256, M * o.layers_per_stage, 4, o.channels};
  t.batch_size = o.batch;
  t.seq_len = o.seq;
  t.grad_accum = o.micro_batches;
  t.steps = o.steps;
  t.pp = M;
  t.pp_schedule = o.schedule;
  t.quiet = true;
  t.threads = 1;
  Mesh mesh(std::move(world), 1, M);
  Trainer tr(t, &mesh);
  double busy = 0, total = 0;
  for (int s = 0; s < o.steps; ++s) {
    tr.step();
    if (s == 0) continue;
    busy += tr.last_timing().busy_s;
    total += tr.last_timing().total_s;
  }
  std::vector<double> mine = {busy, total}, all(2 * M);
  mesh.world().all_gather(mine.data(), all.data(), 2, CommDType::kF64);
  if (root) {
    const double theory = double(M - 1) / (o.micro_batches + M - 1);
    std::printf("pipeline bubble: %d stages, %d micro-batches, %s, %d steps measured\n", M,
                o.micro_batches, o.schedule.c_str(), o.steps - 1);
    std::printf("%-8s %12s %12s %10s\n", "stage", "compute_s", "step_s", "idle");
    double idle_sum = 0;
    for (int s = 0; s < M; ++s) {
      const double idle = 1.0 - all[2 * s] / all[2 * s + 1];
      idle_sum += idle;
      std::printf("%-8d %12.4f %12.4f %9.1f%%\n", s, all[2 * s], all[2 * s + 1], idle * 100);
    }
    std::printf("measured bubble (mean idle share): %.1f%% | theoretical (M-1)/(K+M-1): %.1f%%\n",
                idle_sum / M * 100, theory * 100);
  }
  return 0;
}

} // namespace myelin
