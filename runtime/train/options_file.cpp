#include "runtime/train/options_file.h"

#include <cstdio>
#include <sstream>

#include "runtime/util/error.h"

namespace myelin {
namespace {

class Lines {
 public:
  void text(const char* flag, const std::string& v) {
    require(v.find_first_of("#\r\n") == std::string::npos, std::string("--") + flag,
            "an options file cannot carry '#' or a line break in '" + v + "'");
    if (!v.empty()) out_ << flag << " = " << v << "\n";
  }
  void num(const char* flag, long long v) { out_ << flag << " = " << v << "\n"; }
  void unum(const char* flag, unsigned long long v) { out_ << flag << " = " << v << "\n"; }
  void real(const char* flag, double v) {
    char b[64];
    std::snprintf(b, sizeof(b), "%.9g", v);
    out_ << flag << " = " << b << "\n";
  }
  void flag(const char* name, bool on) {
    if (on) out_ << name << " = true\n";
  }
  std::string str() const { return out_.str(); }

 private:
  std::ostringstream out_;
};

} // namespace

std::string train_options_file_text(const TrainOptions& o) {
  Lines l;
  l.text("model", o.model_path);
  l.text("train-data", o.train_data);
  l.num("batch-size", o.batch_size);
  l.num("seq-len", o.seq_len);
  l.num("grad-accum", o.grad_accum);
  l.num("steps", o.steps);
  l.real("lr", o.lr);
  l.text("lr-schedule", o.lr_schedule);
  l.num("warmup-steps", o.warmup_steps);
  l.real("weight-decay", o.weight_decay);
  l.real("grad-clip", o.grad_clip);
  l.real("beta1", o.beta1);
  l.real("beta2", o.beta2);
  l.unum("seed", o.seed);
  l.text("device", o.device);
  l.num("threads", o.threads);
  l.num("dp", o.dp);
  l.num("pp", o.pp);
  if (o.data_ranks > 1)
    l.text("data-slice", std::to_string(o.data_rank) + "/" + std::to_string(o.data_ranks));
  if (o.data_start_batch >= 0) l.num("data-start-batch", (long long)o.data_start_batch);
  if (o.start_step >= 0) l.num("start-step", o.start_step);
  if (o.restart_warmup > 0) l.num("restart-warmup", o.restart_warmup);
  if (o.run_steps > 0) l.num("run-steps", o.run_steps);
  l.text("save", o.save_path);
  l.text("metrics-out", o.metrics_out);
  l.flag("quiet", o.quiet);
  return l.str();
}

} // namespace myelin
