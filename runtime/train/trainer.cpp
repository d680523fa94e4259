#include "runtime/train/trainer.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include "runtime/data/tokenizer.h"
#include "runtime/io/checkpoint.h"
#include "runtime/io/model_file.h"
#include "runtime/io/train_state.h"
#include "runtime/model/init.h"
#include "runtime/optim/schedule.h"
#include "runtime/util/error.h"
#include "runtime/util/rng.h"

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
} // namespace

Trainer::Trainer(const TrainOptions& opt) : opt_(opt) {
  validate_train_options(opt_);
  std::vector<float> init;
  if (!opt_.model_path.empty()) {
    ModelFile mf = load_model(opt_.model_path);
    cfg_ = mf.config;
    init = std::move(mf.params);
    require(opt_.seq_len <= cfg_.max_seq_len, "--seq-len",
            std::to_string(opt_.seq_len) + " exceeds the model's max sequence length " +
                std::to_string(cfg_.max_seq_len) + " (" + opt_.model_path + ")");
  } else {
    cfg_ = opt_.shape;
    cfg_.validate();
    init = gpt2_init(cfg_, opt_.seed);
  }
  EngineOptions eo;
  eo.device = opt_.device;
  eo.dtype = opt_.dtype;
  eo.recompute = opt_.recompute;
  engine_ = make_engine(cfg_, StageSpec::whole(cfg_), opt_.batch_size, opt_.seq_len, eo);
  engine_->set_params(init);
  train_ = std::make_unique<DataLoader>(opt_.train_data, "--train-data", opt_.batch_size,
                                        opt_.seq_len, 0, 1, cfg_.vocab_size, opt_.shuffle,
                                        opt_.seed);
  if (!opt_.val_data.empty())
    val_ = std::make_unique<DataLoader>(opt_.val_data, "--val-data", opt_.batch_size, opt_.seq_len,
                                        0, 1, cfg_.vocab_size, false, 0);
  inputs_.resize(std::size_t(opt_.batch_size) * opt_.seq_len);
  targets_.resize(inputs_.size());
  sample_rng_ = Rng64(opt_.seed ^ 0x5a5a5a5aull).state();
  if (opt_.resume) try_resume();
  if (!opt_.metrics_out.empty()) {
    metrics_ = std::make_unique<MetricsFile>();
    metrics_->out.open(opt_.metrics_out, opt_.resume ? std::ios::app : std::ios::trunc);
    require(bool(metrics_->out), "--metrics-out", "cannot open " + opt_.metrics_out + " for writing");
  }
}

Trainer::~Trainer() = default;

std::vector<float> Trainer::params() const {
  std::vector<float> p(engine_->layout().total);
  engine_->get_params(p);
  return p;
}

void Trainer::try_resume() {
  auto ck = latest_checkpoint(opt_.checkpoint_dir);
  if (!ck) {
    if (!opt_.quiet)
      std::cout << "resume: no checkpoint in " << opt_.checkpoint_dir << ", starting fresh\n";
    return;
  }
  ModelFile mf = load_model(*ck + "/model.bin");
  const auto& a = mf.config;
  require(a.num_layers == cfg_.num_layers && a.channels == cfg_.channels &&
              a.num_heads == cfg_.num_heads && a.vocab_size == cfg_.vocab_size &&
              a.padded_vocab_size == cfg_.padded_vocab_size && a.max_seq_len == cfg_.max_seq_len,
          *ck, "checkpoint model shape " + a.describe() + " differs from this run's " + cfg_.describe());
  TrainState st = load_train_state(*ck + "/state_0.bin");
  require(st.param_count == engine_->layout().total && st.slice_begin == 0 &&
              st.m.size() == engine_->layout().total,
          *ck + "/state_0.bin", "optimizer state does not match the model size");
  engine_->set_params(mf.params);
  engine_->set_moments(st.m, st.v);
  train_->set_position(st.data);
  sample_rng_ = st.rng;
  start_step_ = step_ = int(st.step);
  if (!opt_.quiet) std::cout << "resume: continuing from " << *ck << " (step " << step_ << ")\n";
}

void Trainer::save_checkpoint(int completed_step) {
  const auto paths = checkpoint_paths(opt_.checkpoint_dir, completed_step);
  begin_checkpoint(paths);
  const std::size_t n = engine_->layout().total;
  save_model(paths.model(), cfg_, params(), 3);
  TrainState st;
  st.step = completed_step;
  st.data = train_->position();
  st.rng = sample_rng_;
  st.param_count = n;
  st.m.resize(n);
  st.v.resize(n);
  engine_->get_moments(st.m, st.v);
  save_train_state(paths.state(0), st);
  finish_checkpoint(opt_.checkpoint_dir, paths,
                    {{"step", std::to_string(completed_step)}, {"ranks", "1"}, {"dp", "1"},
                     {"pp", "1"}, {"model", cfg_.describe()}},
                    opt_.keep_checkpoints);
}

float Trainer::evaluate() {
  if (!val_) return NAN;
  val_->reset();
  double sum = 0;
  const int nb = int(std::min<std::uint64_t>(opt_.val_batches, val_->batches_per_epoch()));
  for (int i = 0; i < nb; ++i) {
    val_->next(inputs_.data(), targets_.data());
    sum += engine_->eval_loss(inputs_.data(), targets_.data(), opt_.batch_size, opt_.seq_len);
  }
  return float(sum / nb);
}

std::string Trainer::sample(int len, std::uint64_t seed) {
  if (cfg_.vocab_size > ByteTokenizer::kVocab) return {};
  Rng64 rng(1);
  rng.set_state(seed);
  std::vector<int> toks = {'\n'};
  for (char c : opt_.sample_prompt) toks.push_back(static_cast<unsigned char>(c));
  std::vector<float> logits(cfg_.padded_vocab_size);
  for (int i = 0; i < len; ++i) {
    const int T = std::min<int>(int(toks.size()), opt_.seq_len);
    const int* window = toks.data() + toks.size() - T;
    engine_->forward(0, window, nullptr, 1, T);
    engine_->last_logits(T - 1, logits);
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

StepMetrics Trainer::step() {
  const double t0 = now_s();
  engine_->zero_grad();
  const int K = opt_.grad_accum, B = opt_.batch_size, T = opt_.seq_len;
  double loss = 0;
  for (int k = 0; k < K; ++k) {
    train_->next(inputs_.data(), targets_.data());
    loss += engine_->forward(0, inputs_.data(), targets_.data(), B, T);
    engine_->backward(0, 1.0f / float(K));
  }
  loss /= K;
  const std::size_t n = engine_->layout().total;
  const float norm = float(std::sqrt(engine_->grad_sum_squares(0, n)));
  if (opt_.grad_clip > 0 && norm > opt_.grad_clip) engine_->scale_grads(opt_.grad_clip / norm);
  LrSchedule sched{opt_.lr_schedule, opt_.lr, opt_.warmup_steps, opt_.steps, opt_.final_lr_frac};
  const float lr = sched.at(step_);
  AdamWConfig ac{opt_.lr, opt_.beta1, opt_.beta2, opt_.eps, opt_.weight_decay};
  engine_->adamw(ac, lr, step_ + 1, 0, n);
  ++step_;
  StepMetrics m;
  m.step = step_;
  m.loss = float(loss);
  m.lr = lr;
  m.grad_norm = norm;
  m.ms = (now_s() - t0) * 1000.0;
  m.tokens_per_s = double(B) * T * K / (m.ms / 1000.0);
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
    if (m.val_loss) j << ",\"val_loss\":" << *m.val_loss;
    j << "}\n";
    metrics_->out << j.str();
    metrics_->out.flush();
  }
  if (opt_.quiet) return;
  if (m.step % opt_.log_every != 0 && m.step != opt_.steps && !m.val_loss) return;
  const double elapsed = now_s() - started_s_;
  const double per = elapsed / std::max(1, m.step - start_step_);
  char line[256];
  std::snprintf(line, sizeof(line),
                "step %6d/%d | loss %.4f | lr %.2e | norm %.3f | %.1f ms | %.0f tok/s | ETA %s",
                m.step, opt_.steps, m.loss, m.lr, m.grad_norm, m.ms, m.tokens_per_s,
                fmt_eta(per * (opt_.steps - m.step)).c_str());
  std::cout << line;
  if (m.val_loss) std::printf(" | val %.4f", *m.val_loss), std::fflush(stdout);
  std::cout << std::endl;
}

std::vector<StepMetrics> Trainer::run() {
  std::vector<StepMetrics> all;
  started_s_ = now_s();
  if (!opt_.quiet)
    std::cout << "model " << cfg_.describe() << " | " << engine_->layout().total / 1e6
              << "M params | device " << engine_->device_name() << " | batch " << opt_.batch_size
              << "x" << opt_.seq_len << " x accum " << opt_.grad_accum << " | steps " << step_
              << ".." << opt_.steps << std::endl;
  while (step_ < opt_.steps) {
    StepMetrics m = step();
    if (val_ && opt_.val_every > 0 && (m.step % opt_.val_every == 0 || m.step == opt_.steps))
      m.val_loss = evaluate();
    log(m);
    all.push_back(m);
    if (opt_.sample_every > 0 && (m.step % opt_.sample_every == 0 || m.step == opt_.steps)) {
      const std::string s = sample(opt_.sample_len, sample_rng_);
      if (!s.empty() && !opt_.quiet) std::cout << "sample at step " << m.step << ":\n" << s << "\n---" << std::endl;
    }
    if (opt_.checkpoint_every > 0 && (m.step % opt_.checkpoint_every == 0 || m.step == opt_.steps))
      save_checkpoint(m.step);
  }
  if (!opt_.save_path.empty()) save(opt_.save_path);
  return all;
}

void Trainer::save(const std::string& path) {
  save_model(path, cfg_, params(), opt_.save_version);
  if (!opt_.quiet) std::cout << "saved model to " << path << std::endl;
}

} // namespace myelin
