#include "runtime/train/trainer.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>

#include "runtime/comm/agree.h"
#include "runtime/comm/self_comm.h"
#include "runtime/data/tokenizer.h"
#include "runtime/io/checkpoint.h"
#include "runtime/io/model_any.h"
#include "runtime/io/model_file.h"
#include "runtime/io/output_path.h"
#include "runtime/io/train_state.h"
#include "runtime/model/generate.h"
#include "runtime/model/init.h"
#include "runtime/optim/schedule.h"
#include "runtime/parallel/grad_sync.h"
#include "runtime/parallel/pipeline.h"
#include "runtime/util/error.h"
#include "runtime/util/host_memory.h"
#include "runtime/util/rng.h"
#include "runtime/util/threads.h"

namespace myelin {

struct Trainer::MetricsFile {
  std::ofstream out;
};

namespace {
double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
std::string fmt_eta(double s) {
  char b[32];
  const long t = long(s + 0.5);
  std::snprintf(b, sizeof(b), "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
  return b;
}
// The tokens a text sample starts from: the newline token, then the prompt's
// bytes (byte-level models). Throws InputError naming the flag when one of them
// is outside the model's vocabulary (a vocabulary under 256 lacks some bytes),
// so the engine never looks up a row past wte.
std::vector<int> sample_start_tokens(const std::string& prompt, int vocab) {
  const auto outside = [&](int t) {
    return "token " + std::to_string(t) + " is outside this model's vocabulary of " +
           std::to_string(vocab);
  };
  require('\n' < vocab, "--sample-every", "samples start from the newline " + outside('\n'));
  std::vector<int> toks = {'\n'};
  for (char c : prompt) {
    const int t = static_cast<unsigned char>(c);
    require(t < vocab, "--sample-prompt", "byte " + outside(t));
    toks.push_back(t);
  }
  return toks;
}
// A CPU run holds the initial parameters, then parameters, gradients and the
// two AdamW moments (5 fp32 copies), and the activations of each micro-batch
// in flight; refuse a shape that cannot fit in this machine before allocating.
void require_cpu_memory(const ModelConfig& c, const TrainOptions& o, int slots,
                        const std::string& field) {
  // Both counts are bounded (kMaxParams, kMaxActivations): no overflow.
  const std::size_t bytes =
      5 * sizeof(float) * *c.param_count() +
      sizeof(float) * std::size_t(slots) * *activation_elements(c, o.batch_size, o.seq_len);
  require_host_memory(bytes, field,
                      "the model (" + c.describe() + ") with micro-batches of " +
                          std::to_string(o.batch_size) + " x " + std::to_string(o.seq_len));
}
} // namespace

Trainer::Trainer(const TrainOptions& opt, Mesh* mesh, Mesh* data_mesh)
    : opt_(opt), mesh_(mesh), data_mesh_(data_mesh) {
  validate_train_options(opt_);
  // Fail before any work when an output cannot be written.
  if (!opt_.save_path.empty()) check_output_file(opt_.save_path, "--save");
  if (!opt_.metrics_out.empty()) check_output_file(opt_.metrics_out, "--metrics-out");
  if (!opt_.checkpoint_dir.empty())
    check_output_dir(opt_.checkpoint_dir, "--checkpoint-dir", opt_.checkpoint_every > 0);
  if (opt_.threads > 0) set_cpu_threads(opt_.threads);
  if (!mesh_) {
    own_mesh_ = std::make_unique<Mesh>(std::make_unique<SelfComm>(), 1, 1);
    mesh_ = own_mesh_.get();
  }
  if (!data_mesh_) data_mesh_ = mesh_;
  mesh_->world().set_timeout(opt_.comm_timeout_s);
  mesh_->dp().set_timeout(opt_.comm_timeout_s);
  mesh_->pp().set_timeout(opt_.comm_timeout_s);
  sched_ = opt_.pp_schedule == "gpipe" ? PipeSchedule::kGPipe : PipeSchedule::k1F1B;
  const int slots = pipeline_slots(sched_, mesh_->pp_size(), opt_.grad_accum);
  std::vector<float> init;
  if (!opt_.model_path.empty()) {
    cfg_ = load_any_model_config(opt_.model_path); // the header, checked
    validate_micro_batch(cfg_, opt_.batch_size, opt_.seq_len, flag_names());
    if (opt_.device == "cpu")
      require_cpu_memory(cfg_, opt_, slots, opt_.model_path + " with --batch-size");
    ModelFile mf = load_any_model(opt_.model_path);
    cfg_ = mf.config;
    init = std::move(mf.params);
  } else {
    cfg_ = opt_.shape; // checked by validate_train_options
    if (opt_.device == "cpu")
      require_cpu_memory(cfg_, opt_, slots, "--layers/--channels/--batch-size");
    init = gpt2_init(cfg_, opt_.seed);
  }
  const auto stages = split_stages(cfg_.num_layers, mesh_->pp_size(), opt_.pp_layers);
  EngineOptions eo;
  eo.device = opt_.device;
  eo.dtype = opt_.dtype;
  eo.recompute = opt_.recompute;
  eo.device_index = opt_.device_index;
  eo.slots = slots;
  eo.zero_dp = opt_.zero == 1 ? mesh_->dp_size() : 1;
  engine_ = make_engine(cfg_, stages[mesh_->pp_rank()], opt_.batch_size, opt_.seq_len, eo);
  engine_->set_params(init);
  // Device communicators (NCCL) wait on the engine's stream before they read
  // its buffers, not on the legacy stream the engine never uses.
  data_mesh_->set_input_stream(engine_->device_stream());
  sync_ = std::make_unique<GradSync>(*engine_, *mesh_, *data_mesh_, opt_.zero == 1);
  // Data slice r of n, split over the dp ranks: loader rank r*dp + dp_rank of
  // n*dp, with B rows each; the global batch (n*dp*B rows) and this slice's
  // rows are those of one process reading slice r of n with dp*B rows.
  const int rank = opt_.data_rank * mesh_->dp_size() + mesh_->dp_rank();
  const int ranks = opt_.data_ranks * mesh_->dp_size();
  train_ =
      std::make_unique<DataLoader>(opt_.train_data, "--train-data", opt_.batch_size, opt_.seq_len,
                                   rank, ranks, cfg_.vocab_size, opt_.shuffle, opt_.seed);
  if (!opt_.val_data.empty())
    val_ =
        std::make_unique<DataLoader>(opt_.val_data, "--val-data", opt_.batch_size, opt_.seq_len,
                                     mesh_->dp_rank(), mesh_->dp_size(), cfg_.vocab_size, false, 0);
  if (opt_.sample_every > 0 && cfg_.vocab_size <= ByteTokenizer::kVocab && mesh_->pp_size() == 1)
    (void)sample_start_tokens(opt_.sample_prompt, cfg_.vocab_size);
  require(opt_.eval_task.empty() ||
              (cfg_.vocab_size > '=' && cfg_.vocab_size <= ByteTokenizer::kVocab),
          "--eval-task",
          "needs a byte-level model (vocabulary of 62..256 tokens), this one has " +
              std::to_string(cfg_.vocab_size));
  inputs_.resize(std::size_t(opt_.batch_size) * opt_.seq_len);
  targets_.resize(inputs_.size());
  sample_rng_ = Rng64(opt_.seed ^ 0x5a5a5a5aull).state();
  if (opt_.resume) try_resume();
  if (opt_.start_step >= 0) restart_optimizer(opt_.start_step);
  if (opt_.data_start_batch >= 0)
    train_->set_position(train_->position_at(std::uint64_t(opt_.data_start_batch)));
  if (!opt_.metrics_out.empty() && is_logger()) {
    metrics_ = std::make_unique<MetricsFile>();
    metrics_->out.open(opt_.metrics_out, opt_.resume ? std::ios::app : std::ios::trunc);
    require(bool(metrics_->out), "--metrics-out",
            "cannot open " + opt_.metrics_out + " for writing");
  }
}

Trainer::~Trainer() = default;

void Trainer::restart_optimizer(int step) {
  const auto range = engine_->optimizer_range();
  const std::vector<float> zeros(range.second - range.first, 0.0f);
  engine_->set_moments(zeros, zeros);
  start_step_ = step_ = adam_base_ = step;
}

std::vector<float> Trainer::params() { return sync_->gather_full_params(); }

std::size_t Trainer::optimizer_bytes_saved() const { return sync_->optimizer_bytes_saved(); }

void Trainer::try_resume() {
  // Every rank reads the same folder; rank 0 also checks every file's checksum
  // (the others wait), each rank loads and checks its own files, and the job
  // fails as one if any rank found bad input.
  const bool newest = opt_.resume_from.empty();
  std::optional<CheckpointInfo> ck;
  ModelFile mf;
  TrainState st;
  std::string error;
  try {
    std::optional<std::string> dir = opt_.resume_from;
    if (newest) {
      dir = latest_checkpoint(opt_.checkpoint_dir);
    } else {
      std::error_code ec;
      require(std::filesystem::is_directory(*dir, ec), "--resume-from",
              "'" + *dir + "' is not a checkpoint folder");
    }
    if (dir) {
      // A damaged newest checkpoint is refused, never skipped: say how to pick
      // an older one instead.
      auto intact = [&](auto&& check) {
        try {
          check();
        } catch (const InputError& e) {
          if (!newest) throw;
          throw InputError(std::string(e.what()) + " (newest checkpoint in --checkpoint-dir; " +
                           "pass --resume-from FOLDER to resume from an older one)");
        }
      };
      intact([&] { ck = read_checkpoint(*dir); });
      const auto& l = ck->layout;
      const std::string want = std::to_string(mesh_->dp_size()) + "x" +
                               std::to_string(mesh_->pp_size()) + " zero " +
                               std::to_string(opt_.zero);
      const std::string have =
          std::to_string(l.dp) + "x" + std::to_string(l.pp) + " zero " + std::to_string(l.zero);
      require(want == have, *dir,
              "checkpoint was written by a dp x pp = " + have + " job; this job is " + want);
      intact([&] {
        if (is_logger()) verify_checkpoint_files(*ck);
        mf = load_checkpoint_model(*ck);
      });
      require(mf.config.describe() == cfg_.describe(), *dir,
              "checkpoint model shape " + mf.config.describe() + " differs from this run's " +
                  cfg_.describe());
      intact([&] { st = load_checkpoint_state(*ck, mesh_->world_rank(), mf.config); });
      const std::string state_path =
          *dir + "/state_" + std::to_string(mesh_->world_rank()) + ".bin";
      const auto range = engine_->optimizer_range();
      require(st.slice_begin == range.first && st.m.size() == range.second - range.first,
              state_path, "optimizer state does not match this rank's model slice");
      require(st.step <= std::uint64_t(opt_.steps), "--steps",
              std::to_string(opt_.steps) + " is below the step " + std::to_string(st.step) +
                  " of checkpoint " + *dir);
      try {
        train_->set_position(st.data);
      } catch (const InputError& e) {
        throw InputError(state_path + ": " + e.what() + " of --train-data");
      }
    }
  } catch (const InputError& e) {
    error = e.what();
  }
  agree_on_input_error(mesh_->world(), error);
  if (!ck) {
    if (!opt_.quiet && is_logger())
      std::cout << "resume: no checkpoint in " << opt_.checkpoint_dir << ", starting fresh\n";
    return;
  }
  engine_->set_params(mf.params);
  engine_->set_moments(st.m, st.v);
  sample_rng_ = st.rng;
  start_step_ = step_ = int(st.step);
  if (!opt_.quiet && is_logger())
    std::cout << "resume: continuing from " << ck->dir << " (step " << step_ << ")\n";
}

void Trainer::save_checkpoint(int completed_step) {
  const auto paths = checkpoint_paths(opt_.checkpoint_dir, completed_step);
  Communicator& world = mesh_->world();
  if (is_logger()) begin_checkpoint(paths);
  world.barrier();
  const auto full = params();
  if (is_logger()) save_model(paths.model(), cfg_, full, 3);
  const auto range = engine_->optimizer_range();
  TrainState st;
  st.step = completed_step;
  st.rank = mesh_->world_rank();
  st.ranks = mesh_->world_size();
  st.dp = mesh_->dp_size();
  st.pp = mesh_->pp_size();
  st.zero = opt_.zero;
  st.data = train_->position();
  st.rng = sample_rng_;
  st.param_count = engine_->layout().total;
  st.slice_begin = range.first;
  st.m.resize(range.second - range.first);
  st.v.resize(st.m.size());
  engine_->get_moments(st.m, st.v);
  save_train_state(paths.state(mesh_->world_rank()), st);
  world.barrier();
  if (is_logger())
    finish_checkpoint(opt_.checkpoint_dir, paths,
                      {std::uint64_t(completed_step), mesh_->world_size(), mesh_->dp_size(),
                       mesh_->pp_size(), opt_.zero, cfg_.describe()},
                      opt_.keep_checkpoints);
  world.barrier();
}

// Mean over data-parallel replicas of a value the last stage of each holds.
static float replica_mean(Mesh& mesh, bool last_stage, double v) {
  double x = last_stage ? v / mesh.dp_size() : 0.0;
  if (mesh.world_size() > 1) mesh.world().all_reduce(&x, 1, CommDType::kF64, ReduceOp::kSum);
  return float(x);
}

float Trainer::evaluate() {
  if (!val_) return NAN;
  val_->reset();
  double sum = 0;
  const int nb = int(std::min<std::uint64_t>(opt_.val_batches, val_->batches_per_epoch()));
  for (int i = 0; i < nb; ++i) {
    val_->next(inputs_.data(), targets_.data());
    sum += pipeline_forward(*engine_, data_mesh_->pp(), opt_.batch_size, opt_.seq_len,
                            inputs_.data(), targets_.data());
  }
  return replica_mean(*mesh_, engine_->stage().last, sum / nb);
}

std::string Trainer::sample(int len, std::uint64_t seed) {
  if (cfg_.vocab_size > ByteTokenizer::kVocab || mesh_->pp_size() > 1) return {};
  Rng64 rng(1);
  rng.set_state(seed);
  std::vector<int> toks = sample_start_tokens(opt_.sample_prompt, cfg_.vocab_size);
  std::vector<float> logits(cfg_.padded_vocab_size);
  for (int i = 0; i < len; ++i) {
    next_token_logits(*engine_, toks, opt_.seq_len, logits);
    float mx = -INFINITY;
    for (int v = 0; v < cfg_.vocab_size; ++v) mx = std::max(mx, logits[v]);
    double sum = 0;
    for (int v = 0; v < cfg_.vocab_size; ++v) sum += std::exp(double(logits[v] - mx));
    double r = rng.uniform_double() * sum, acc = 0;
    int pick = cfg_.vocab_size - 1;
    for (int v = 0; v < cfg_.vocab_size; ++v) {
      acc += std::exp(double(logits[v] - mx));
      if (r < acc) {
        pick = v;
        break;
      }
    }
    toks.push_back(pick);
  }
  sample_rng_ = rng.state();
  return ByteTokenizer::decode(std::vector<int>(toks.begin() + 1, toks.end()));
}

ExactMatch Trainer::evaluate_task(int show) {
  if (opt_.eval_task.empty()) return {};
  ExactMatch r = addition_exact_match(*engine_, opt_.eval_digits, std::uint64_t(opt_.eval_examples),
                                      opt_.seq_len, mesh_->dp_rank(), mesh_->dp_size(), show);
  if (mesh_->world_size() > 1) {
    double counts[2] = {double(r.correct), double(r.total)};
    mesh_->world().all_reduce(counts, 2, CommDType::kF64, ReduceOp::kSum);
    r.correct = std::uint64_t(counts[0]);
    r.total = std::uint64_t(counts[1]);
  }
  return r;
}

StepMetrics Trainer::step() {
  const double t0 = now_s();
  // Without a pipeline or ZeRO the norm needs no collective: the engine keeps
  // the loss and the norm in its memory, clips there, and the step waits for
  // the device once, at the end (Engine::begin_step / end_step).
  const bool one_sync = sync_->norm_is_local();
  if (one_sync) engine_->begin_step();
  engine_->zero_grad();
  const int K = opt_.grad_accum, B = opt_.batch_size, T = opt_.seq_len;
  double loss_sum = run_pipeline(
      *engine_, data_mesh_->pp(), sched_, K, B, T,
      [&](int, int* in, int* tg) { train_->next(in, tg); }, [&] { sync_->arm(); }, &last_timing_);
  sync_->finish();
  const auto range = sync_->update_range();
  float norm = 0.0f;
  if (one_sync) {
    engine_->clip_grad_norm(opt_.grad_clip, range.first, range.second);
  } else {
    norm = float(std::sqrt(sync_->global_norm()));
    if (opt_.grad_clip > 0 && norm > opt_.grad_clip) engine_->scale_grads(opt_.grad_clip / norm);
  }
  LrSchedule sched{opt_.lr_schedule, opt_.lr, opt_.warmup_steps, opt_.steps, opt_.final_lr_frac};
  // After an optimizer restart (a pool round) the rate ramps up again.
  const int since_restart = step_ - adam_base_;
  const float ramp = opt_.restart_warmup > 0 && since_restart < opt_.restart_warmup
                         ? float(since_restart + 1) / float(opt_.restart_warmup)
                         : 1.0f;
  const float lr = sched.at(step_) * ramp;
  AdamWConfig ac{opt_.lr, opt_.beta1, opt_.beta2, opt_.eps, opt_.weight_decay};
  engine_->adamw(ac, lr, step_ - adam_base_ + 1, range.first, range.second);
  sync_->after_update();
  if (one_sync) {
    const Engine::StepSums sums = engine_->end_step();
    loss_sum = sums.loss_sum;
    norm = float(std::sqrt(sums.grad_sum_squares));
  }
  const float loss = replica_mean(*mesh_, engine_->stage().last, loss_sum / K);
  ++step_;
  StepMetrics m;
  m.step = step_;
  m.loss = loss;
  m.lr = lr;
  m.grad_norm = norm;
  m.ms = (now_s() - t0) * 1000.0;
  m.tokens_per_s = double(B) * T * K * mesh_->dp_size() / (m.ms / 1000.0);
  if (const double peak = engine_->peak_flops(); peak > 0) {
    // PaLM's count: 6 FLOPs per parameter per token (forward + backward) plus
    // 12 L C T for attention; all ranks together against all devices' peak.
    const double per_token =
        6.0 * double(engine_->layout().total) + 12.0 * cfg_.num_layers * cfg_.channels * double(T);
    m.mfu = per_token * m.tokens_per_s / (peak * mesh_->world_size());
  }
  if (!std::isfinite(m.loss))
    throw std::runtime_error("loss became " + std::to_string(m.loss) + " at step " +
                             std::to_string(step_) + " (try a lower --lr)");
  return m;
}

void Trainer::log(const StepMetrics& m) {
  if (metrics_) {
    std::ostringstream j;
    j.precision(9);
    j << "{\"step\":" << m.step << ",\"loss\":" << m.loss << ",\"lr\":" << m.lr
      << ",\"grad_norm\":" << m.grad_norm << ",\"tokens_per_s\":" << m.tokens_per_s
      << ",\"ms\":" << m.ms;
    if (m.mfu > 0) j << ",\"mfu\":" << m.mfu;
    if (m.val_loss) j << ",\"val_loss\":" << *m.val_loss;
    if (m.exact_match) j << ",\"exact_match\":" << *m.exact_match;
    if (const std::size_t g = engine_->graphs_captured()) j << ",\"graphs\":" << g;
    j << "}\n";
    metrics_->out << j.str();
    metrics_->out.flush();
  }
  if (opt_.quiet || !is_logger()) return;
  if (m.step % opt_.log_every != 0 && m.step != opt_.steps && !m.val_loss && !m.exact_match) return;
  const double elapsed = now_s() - started_s_;
  const double per = elapsed / std::max(1, m.step - start_step_);
  char line[256];
  std::snprintf(line, sizeof(line),
                "step %6d/%d | loss %.4f | lr %.2e | norm %.3f | %.1f ms | %.0f tok/s | ETA %s",
                m.step, opt_.steps, m.loss, m.lr, m.grad_norm, m.ms, m.tokens_per_s,
                fmt_eta(per * (opt_.steps - m.step)).c_str());
  std::string out = line;
  char extra[64];
  if (m.mfu > 0) {
    std::snprintf(extra, sizeof(extra), " | MFU %.1f%%", m.mfu * 100);
    out += extra;
  }
  if (m.val_loss) {
    std::snprintf(extra, sizeof(extra), " | val %.4f", *m.val_loss);
    out += extra;
  }
  if (m.exact_match) {
    std::snprintf(extra, sizeof(extra), " | exact %.1f%%", *m.exact_match);
    out += extra;
  }
  std::cout << out << std::endl;
}

std::vector<StepMetrics> Trainer::run() {
  std::vector<StepMetrics> all;
  ExactMatch score; // the newest --eval-task score
  started_s_ = now_s();
  if (!opt_.quiet && is_logger()) {
    std::cout << "model " << cfg_.describe() << " | " << engine_->layout().total / 1e6
              << "M params | device " << engine_->device_name() << " | batch " << opt_.batch_size
              << "x" << opt_.seq_len << " x accum " << opt_.grad_accum;
    if (mesh_->world_size() > 1)
      std::cout << " | dp " << mesh_->dp_size() << " x pp " << mesh_->pp_size() << " ("
                << opt_.pp_schedule << ")" << (opt_.zero ? " | zero-1" : "");
    std::cout << " | steps " << step_ << ".." << opt_.steps << std::endl;
    const MemoryUse mu = engine_->memory_use();
    char mem[256];
    std::snprintf(mem, sizeof(mem),
                  "memory (this rank, MiB): params %.1f | grads %.1f | AdamW %.1f | "
                  "activations %.1f | scratch %.1f | recompute %d",
                  mu.params / 1048576.0, mu.grads / 1048576.0, mu.optimizer / 1048576.0,
                  mu.activations / 1048576.0, mu.scratch / 1048576.0, opt_.recompute);
    std::cout << mem << std::endl;
    if (opt_.zero)
      std::cout << "zero-1: AdamW state per rank reduced by "
                << sync_->optimizer_bytes_saved() / 1048576.0 << " MiB" << std::endl;
  }
  while (step_ < opt_.steps && (opt_.run_steps == 0 || step_ - start_step_ < opt_.run_steps)) {
    StepMetrics m = step();
    if (val_ && opt_.val_every > 0 && (m.step % opt_.val_every == 0 || m.step == opt_.steps))
      m.val_loss = evaluate();
    const bool last =
        m.step == opt_.steps || (opt_.run_steps > 0 && m.step - start_step_ == opt_.run_steps);
    if (!opt_.eval_task.empty() && (last || (opt_.val_every > 0 && m.step % opt_.val_every == 0))) {
      score = evaluate_task(last ? 5 : 0);
      m.exact_match = score.percent();
    }
    log(m);
    all.push_back(m);
    if (opt_.sample_every > 0 && (m.step % opt_.sample_every == 0 || m.step == opt_.steps)) {
      const std::string s = sample(opt_.sample_len, sample_rng_);
      if (!s.empty() && !opt_.quiet && is_logger())
        std::cout << "sample at step " << m.step << ":\n" << s << "\n---" << std::endl;
    }
    if (opt_.checkpoint_every > 0 && (m.step % opt_.checkpoint_every == 0 || last))
      save_checkpoint(m.step);
  }
  if (score.total > 0 && !opt_.quiet && is_logger()) {
    for (const auto& line : score.shown) std::cout << "held-out " << line << "\n";
    std::cout << score.describe() << " after step " << step_ << std::endl;
  }
  if (!opt_.save_path.empty()) save(opt_.save_path);
  return all;
}

void Trainer::save(const std::string& path) {
  const auto full = params();
  if (!is_logger()) return;
  save_any_model(path, cfg_, full, opt_.save_version == 5);
  if (!opt_.quiet) std::cout << "saved model to " << path << std::endl;
}

} // namespace myelin
