#include "runtime/pool/job.h"

#include <cmath>

#include "runtime/util/error.h"

namespace myelin::pool {
namespace {
using nlohmann::json;

template <typename T> void get(const json& j, const char* key, T& out) {
  if (!j.contains(key)) return;
  try {
    out = j.at(key).get<T>();
  } catch (const json::exception&) {
    throw InputError(std::string("job.") + key + ": wrong type (" + j.at(key).dump() + ")");
  }
}
void positive(double v, const char* key) {
  require(std::isfinite(v) && v > 0, std::string("job.") + key, "expected a positive number");
}
void non_negative(double v, const char* key) {
  require(std::isfinite(v) && v >= 0, std::string("job.") + key, "expected a non-negative number");
}
} // namespace

JobSpec parse_job(const json& j) {
  require(j.is_object(), "job", "expected a JSON object");
  static const char* known[] = {"name",
                                "model",
                                "init_checkpoint",
                                "train_data",
                                "val_data",
                                "train_files",
                                "val_files",
                                "batch_size",
                                "seq_len",
                                "grad_accum",
                                "inner_steps",
                                "inner_lr",
                                "lr_schedule",
                                "warmup_steps",
                                "weight_decay",
                                "grad_clip",
                                "beta1",
                                "beta2",
                                "outer_lr",
                                "outer_momentum",
                                "rounds",
                                "min_contributors",
                                "max_contributors",
                                "round_deadline_s",
                                "compression",
                                "block_size",
                                "norm_factor",
                                "max_norm",
                                "loss_check",
                                "loss_tolerance",
                                "val_batches",
                                "keep_snapshots"};
  for (const auto& [k, v] : j.items()) {
    bool ok = false;
    for (const char* n : known) ok = ok || k == n;
    require(ok, "job." + k, "unknown field");
  }
  JobSpec s;
  get(j, "name", s.name);
  get(j, "init_checkpoint", s.init_checkpoint);
  if (j.contains("model")) {
    const json& m = j.at("model");
    require(m.is_object(), "job.model", "expected an object with layers, heads, channels, ...");
    get(m, "layers", s.shape.num_layers);
    get(m, "heads", s.shape.num_heads);
    get(m, "channels", s.shape.channels);
    get(m, "vocab", s.shape.vocab_size);
    s.shape.padded_vocab_size = (s.shape.vocab_size + 127) / 128 * 128;
    get(m, "padded_vocab", s.shape.padded_vocab_size);
    get(m, "max_seq_len", s.shape.max_seq_len);
    get(m, "seed", s.seed);
  }
  require(!(j.contains("model") && !s.init_checkpoint.empty()), "job.init_checkpoint",
          "give either model or init_checkpoint, not both");
  get(j, "train_data", s.train_data);
  get(j, "val_data", s.val_data);
  get(j, "train_files", s.train_files);
  get(j, "val_files", s.val_files);
  get(j, "batch_size", s.batch_size);
  get(j, "seq_len", s.seq_len);
  get(j, "grad_accum", s.grad_accum);
  get(j, "inner_steps", s.inner_steps);
  get(j, "inner_lr", s.inner_lr);
  get(j, "lr_schedule", s.lr_schedule);
  get(j, "warmup_steps", s.warmup_steps);
  get(j, "weight_decay", s.weight_decay);
  get(j, "grad_clip", s.grad_clip);
  get(j, "beta1", s.beta1);
  get(j, "beta2", s.beta2);
  get(j, "outer_lr", s.outer_lr);
  get(j, "outer_momentum", s.outer_momentum);
  get(j, "rounds", s.rounds);
  get(j, "min_contributors", s.min_contributors);
  get(j, "max_contributors", s.max_contributors);
  get(j, "round_deadline_s", s.round_deadline_s);
  std::string comp = codec_name(s.compression);
  get(j, "compression", comp);
  s.compression = parse_codec(comp);
  get(j, "block_size", s.block_size);
  get(j, "norm_factor", s.norm_factor);
  get(j, "max_norm", s.max_norm);
  get(j, "loss_check", s.loss_check);
  get(j, "loss_tolerance", s.loss_tolerance);
  get(j, "val_batches", s.val_batches);
  get(j, "keep_snapshots", s.keep_snapshots);

  require(!s.name.empty() && s.name.size() <= 200, "job.name", "expected 1..200 characters");
  require(!s.train_data.empty() || !s.train_files.empty(), "job.train_data",
          "required (a shard glob on the coordinator)");
  if (s.init_checkpoint.empty()) {
    const auto& c = s.shape;
    require(c.num_layers > 0 && c.num_layers <= 4096, "job.model.layers", "expected 1..4096");
    require(c.num_heads > 0, "job.model.heads", "expected a positive number");
    require(c.channels > 0 && c.channels % c.num_heads == 0, "job.model.channels",
            "expected a positive multiple of heads");
    require(c.vocab_size > 0 && c.vocab_size <= 65536, "job.model.vocab", "expected 1..65536");
    require(c.padded_vocab_size >= c.vocab_size, "job.model.padded_vocab", "expected >= vocab");
    require(c.max_seq_len > 0, "job.model.max_seq_len", "expected a positive number");
    require(s.seq_len <= c.max_seq_len, "job.seq_len", "exceeds model.max_seq_len");
  }
  positive(s.batch_size, "batch_size");
  positive(s.seq_len, "seq_len");
  positive(s.grad_accum, "grad_accum");
  positive(s.inner_steps, "inner_steps");
  positive(s.inner_lr, "inner_lr");
  require(s.lr_schedule == "constant" || s.lr_schedule == "cosine", "job.lr_schedule",
          "expected constant or cosine");
  non_negative(s.warmup_steps, "warmup_steps");
  non_negative(s.weight_decay, "weight_decay");
  non_negative(s.grad_clip, "grad_clip");
  require(s.beta1 >= 0 && s.beta1 < 1, "job.beta1", "expected [0, 1)");
  require(s.beta2 >= 0 && s.beta2 < 1, "job.beta2", "expected [0, 1)");
  positive(s.outer_lr, "outer_lr");
  require(s.outer_momentum >= 0 && s.outer_momentum < 1, "job.outer_momentum", "expected [0, 1)");
  require(s.rounds > 0 && s.rounds <= 10000000, "job.rounds", "expected 1..10^7");
  require(s.max_contributors > 0 && s.max_contributors <= 4096, "job.max_contributors",
          "expected 1..4096");
  require(s.min_contributors > 0 && s.min_contributors <= s.max_contributors,
          "job.min_contributors", "expected 1..max_contributors");
  positive(s.round_deadline_s, "round_deadline_s");
  require(s.block_size > 0 && s.block_size <= (1 << 20), "job.block_size", "expected 1..2^20");
  positive(s.norm_factor, "norm_factor");
  non_negative(s.max_norm, "max_norm");
  non_negative(s.loss_tolerance, "loss_tolerance");
  positive(s.val_batches, "val_batches");
  require(s.keep_snapshots >= 2, "job.keep_snapshots", "expected >= 2");
  return s;
}

nlohmann::json job_to_json(const JobSpec& s) {
  json j;
  j["name"] = s.name;
  if (!s.init_checkpoint.empty()) {
    j["init_checkpoint"] = s.init_checkpoint;
  } else {
    j["model"] = {{"layers", s.shape.num_layers},
                  {"heads", s.shape.num_heads},
                  {"channels", s.shape.channels},
                  {"vocab", s.shape.vocab_size},
                  {"padded_vocab", s.shape.padded_vocab_size},
                  {"max_seq_len", s.shape.max_seq_len},
                  {"seed", s.seed}};
  }
  j["train_data"] = s.train_data;
  j["val_data"] = s.val_data;
  j["train_files"] = s.train_files;
  j["val_files"] = s.val_files;
  j["batch_size"] = s.batch_size;
  j["seq_len"] = s.seq_len;
  j["grad_accum"] = s.grad_accum;
  j["inner_steps"] = s.inner_steps;
  j["inner_lr"] = s.inner_lr;
  j["lr_schedule"] = s.lr_schedule;
  j["warmup_steps"] = s.warmup_steps;
  j["weight_decay"] = s.weight_decay;
  j["grad_clip"] = s.grad_clip;
  j["beta1"] = s.beta1;
  j["beta2"] = s.beta2;
  j["outer_lr"] = s.outer_lr;
  j["outer_momentum"] = s.outer_momentum;
  j["rounds"] = s.rounds;
  j["min_contributors"] = s.min_contributors;
  j["max_contributors"] = s.max_contributors;
  j["round_deadline_s"] = s.round_deadline_s;
  j["compression"] = codec_name(s.compression);
  j["block_size"] = s.block_size;
  j["norm_factor"] = s.norm_factor;
  j["max_norm"] = s.max_norm;
  j["loss_check"] = s.loss_check;
  j["loss_tolerance"] = s.loss_tolerance;
  j["val_batches"] = s.val_batches;
  j["keep_snapshots"] = s.keep_snapshots;
  return j;
}

} // namespace myelin::pool
