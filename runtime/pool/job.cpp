#include "runtime/pool/job.h"

#include <cmath>
#include <cstdint>

#include "runtime/io/xxh64.h"
#include "runtime/util/error.h"
#include "runtime/util/json_fields.h"

namespace myelin::pool {
namespace {
using nlohmann::json;

using Fields = JsonFields;

constexpr long long kIntMin = -2147483648ll, kIntMax = 2147483647;
constexpr double kHuge = 1e30; // "any finite number" for fields without a natural bound
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
                                "train_shards",
                                "batch_size",
                                "seq_len",
                                "grad_accum",
                                "inner_steps",
                                "inner_lr",
                                "lr_schedule",
                                "warmup_steps",
                                "round_warmup_steps",
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
                                "topk_density",
                                "value_bits",
                                "chunk_size",
                                "error_feedback",
                                "norm_factor",
                                "max_norm",
                                "loss_check",
                                "loss_tolerance",
                                "val_batches",
                                "keep_snapshots",
                                "score_batches",
                                "min_norm_factor",
                                "replay_prob",
                                "replay_tolerance",
                                "bench_rating",
                                "overlap",
                                "replay_min_cosine"};
  for (const auto& [k, v] : j.items()) {
    bool ok = false;
    for (const char* n : known) ok = ok || k == n;
    require(ok, "job." + k, "unknown field");
  }
  JobSpec s;
  const Fields f{j, "job."};
  f.text("name", s.name);
  f.text("init_checkpoint", s.init_checkpoint);
  if (j.contains("model")) {
    const json& m = j.at("model");
    require(m.is_object(), "job.model", "expected an object with layers, heads, channels, ...");
    for (const auto& [k, v] : m.items()) {
      bool ok = false;
      for (const char* n :
           {"layers", "heads", "channels", "vocab", "padded_vocab", "max_seq_len", "seed", "family",
            "kv_heads", "intermediate_size", "tied_head", "norm_eps", "rope_theta"})
        ok = ok || k == n;
      require(ok, "job.model." + k, "unknown field");
    }
    // Any int here; ModelConfig::validate applies the shape's bounds below.
    const Fields mf{m, "job.model."};
    mf.integer("layers", s.shape.num_layers, kIntMin, kIntMax);
    mf.integer("heads", s.shape.num_heads, kIntMin, kIntMax);
    mf.integer("channels", s.shape.channels, kIntMin, kIntMax);
    mf.integer("vocab", s.shape.vocab_size, kIntMin, kIntMax);
    s.shape.padded_vocab_size = default_padded_vocab(s.shape.vocab_size);
    mf.integer("padded_vocab", s.shape.padded_vocab_size, kIntMin, kIntMax);
    mf.integer("max_seq_len", s.shape.max_seq_len, kIntMin, kIntMax);
    mf.seed("seed", s.seed);
    // The Llama family's fields, as the train command's flags (GPT-2 keeps
    // their defaults; validate says which a family may set).
    std::string family = "gpt2";
    mf.text("family", family);
    s.shape.family = parse_family(family, "job.model.family");
    mf.integer("kv_heads", s.shape.num_kv_heads, kIntMin, kIntMax);
    mf.integer("intermediate_size", s.shape.intermediate_size, kIntMin, kIntMax);
    mf.boolean("tied_head", s.shape.tied_head);
    mf.number("norm_eps", s.shape.norm_eps, -kHuge, kHuge);
    mf.number("rope_theta", s.shape.rope.theta, -kHuge, kHuge);
  }
  require(!(j.contains("model") && !s.init_checkpoint.empty()), "job.init_checkpoint",
          "give either model or init_checkpoint, not both");
  f.text("train_data", s.train_data);
  f.text("val_data", s.val_data);
  f.texts("train_files", s.train_files);
  f.texts("val_files", s.val_files);
  if (const json* v = f.find("train_shards")) {
    const char* want = "an array of {\"bytes\": N, \"hash\": \"<16 hex digits>\"}";
    if (!v->is_array()) f.wrong("train_shards", *v, want);
    for (const json& e : *v) {
      if (!e.is_object() || e.size() != 2) f.wrong("train_shards", e, want);
      const auto b = e.find("bytes"), h = e.find("hash");
      const bool size_ok = b != e.end() && b->is_number_integer() &&
                           (b->is_number_unsigned() || b->get<std::int64_t>() >= 0);
      if (!size_ok || h == e.end() || !h->is_string()) f.wrong("train_shards", e, want);
      const auto hash = parse_xxh64_hex(h->get<std::string>());
      if (!hash) f.wrong("train_shards", e, want);
      s.train_shards.push_back({b->get<std::uint64_t>(), *hash});
    }
  }
  f.integer("batch_size", s.batch_size, 1, static_cast<long long>(kMaxBatchTokens));
  f.integer("seq_len", s.seq_len, 1, kMaxSeqLen);
  f.integer("grad_accum", s.grad_accum, 1, 1 << 16);
  f.integer("inner_steps", s.inner_steps, 1, 1'000'000);
  f.number("inner_lr", s.inner_lr, 0, kHuge, true);
  f.text("lr_schedule", s.lr_schedule);
  f.integer("warmup_steps", s.warmup_steps, 0, 1'000'000);
  f.integer("round_warmup_steps", s.round_warmup_steps, -1, 1'000'000);
  f.number("weight_decay", s.weight_decay, 0, kHuge);
  f.number("grad_clip", s.grad_clip, 0, kHuge);
  f.number("beta1", s.beta1, 0, 1, false, true);
  f.number("beta2", s.beta2, 0, 1, false, true);
  f.number("outer_lr", s.outer_lr, 0, kHuge, true);
  f.number("outer_momentum", s.outer_momentum, 0, 1, false, true);
  f.integer("rounds", s.rounds, 1, 10'000'000);
  f.integer("min_contributors", s.min_contributors, 1, 4096);
  f.integer("max_contributors", s.max_contributors, 1, 4096);
  f.number("round_deadline_s", s.round_deadline_s, 0, 1e7, true);
  std::string comp = codec_name(s.codec.codec);
  f.text("compression", comp);
  try {
    s.codec.codec = parse_codec(comp);
  } catch (const InputError& e) {
    throw InputError(std::string("job.") + e.what());
  }
  f.integer("block_size", s.codec.block, 1, 1 << 20);
  f.number("topk_density", s.codec.density, 0, 1, true);
  f.integer("value_bits", s.codec.value_bits, 2, 8);
  f.integer("chunk_size", s.codec.chunk, 1, 1 << 20);
  if (const std::string why = codec_params_problem(s.codec); !why.empty())
    throw InputError("job." + why);
  s.error_feedback = s.codec.codec == Codec::kSparse;
  f.boolean("error_feedback", s.error_feedback);
  require(!(s.error_feedback && s.codec.codec == Codec::kNone), "job.error_feedback",
          "compression none drops nothing to feed back");
  f.number("norm_factor", s.norm_factor, 0, kHuge, true);
  f.number("max_norm", s.max_norm, 0, kHuge);
  f.boolean("loss_check", s.loss_check);
  f.number("loss_tolerance", s.loss_tolerance, 0, kHuge);
  f.integer("val_batches", s.val_batches, 1, 1'000'000);
  f.integer("keep_snapshots", s.keep_snapshots, 2, 1'000'000);
  f.integer("score_batches", s.score_batches, 0, 1'000);
  f.number("min_norm_factor", s.min_norm_factor, 0, 1, false, true);
  f.number("replay_prob", s.replay_prob, 0, 1);
  f.number("replay_tolerance", s.replay_tolerance, 0, 1, true);
  f.number("bench_rating", s.bench_rating, 0, 1, false, true);
  f.boolean("overlap", s.overlap);
  f.number("replay_min_cosine", s.replay_min_cosine, -1, 1);

  require(!s.name.empty() && s.name.size() <= 200, "job.name", "expected 1..200 characters");
  require(!s.train_data.empty() || !s.train_files.empty(), "job.train_data",
          "required (a shard glob on the coordinator)");
  if (s.init_checkpoint.empty()) {
    s.shape.validate(key_names("job.model."));
    validate_micro_batch(s.shape, s.batch_size, s.seq_len, key_names("job."));
  }
  require(s.train_shards.empty() || s.train_shards.size() == s.train_files.size(),
          "job.train_shards", "expected one entry per train_files entry");
  require(s.lr_schedule == "constant" || s.lr_schedule == "cosine", "job.lr_schedule",
          "expected constant or cosine");
  require(s.min_contributors <= s.max_contributors, "job.min_contributors",
          "expected 1..max_contributors");
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
    if (s.shape.llama()) {
      json& m = j["model"];
      m["family"] = family_name(s.shape.family);
      m["kv_heads"] = s.shape.num_kv_heads;
      m["intermediate_size"] = s.shape.intermediate_size;
      m["tied_head"] = s.shape.tied_head;
      m["norm_eps"] = s.shape.norm_eps;
      m["rope_theta"] = s.shape.rope.theta;
    }
  }
  j["train_data"] = s.train_data;
  j["val_data"] = s.val_data;
  j["train_files"] = s.train_files;
  j["val_files"] = s.val_files;
  json shards = json::array();
  for (const auto& t : s.train_shards)
    shards.push_back({{"bytes", t.bytes}, {"hash", xxh64_hex(t.hash)}});
  j["train_shards"] = shards;
  j["batch_size"] = s.batch_size;
  j["seq_len"] = s.seq_len;
  j["grad_accum"] = s.grad_accum;
  j["inner_steps"] = s.inner_steps;
  j["inner_lr"] = s.inner_lr;
  j["lr_schedule"] = s.lr_schedule;
  j["warmup_steps"] = s.warmup_steps;
  j["round_warmup_steps"] = s.round_warmup_steps;
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
  j["compression"] = codec_name(s.codec.codec);
  j["block_size"] = s.codec.block;
  j["topk_density"] = s.codec.density;
  j["value_bits"] = s.codec.value_bits;
  j["chunk_size"] = s.codec.chunk;
  j["error_feedback"] = s.error_feedback;
  j["norm_factor"] = s.norm_factor;
  j["max_norm"] = s.max_norm;
  j["loss_check"] = s.loss_check;
  j["loss_tolerance"] = s.loss_tolerance;
  j["val_batches"] = s.val_batches;
  j["keep_snapshots"] = s.keep_snapshots;
  j["score_batches"] = s.score_batches;
  j["min_norm_factor"] = s.min_norm_factor;
  j["replay_prob"] = s.replay_prob;
  j["replay_tolerance"] = s.replay_tolerance;
  j["bench_rating"] = s.bench_rating;
  j["overlap"] = s.overlap;
  j["replay_min_cosine"] = s.replay_min_cosine;
  return j;
}

} // namespace myelin::pool
