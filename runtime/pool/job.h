// A pool job: what to train, on which data, and how the outer loop runs. The
// admin submits it as JSON (`myelin pool submit JOB.json`); the coordinator
// stores the normalised JSON, including the resolved shard lists and the
// size and hash of each training shard.
//
// {
//   "name": "tiny",
//   "model": {"layers": 2, "heads": 2, "channels": 32, "vocab": 256,
//             "padded_vocab": 256, "max_seq_len": 32, "seed": 1},
//   "init_checkpoint": "path/model.bin",      (instead of "model"; llm.c format, or
//                                             a .safetensors / .index.json / folder)
//   "train_data": "data/train_*.bin", "val_data": "data/val_*.bin",
//   "batch_size": 4, "seq_len": 32, "grad_accum": 1,   (per contributor, per inner step)
//   "inner_steps": 5, "inner_lr": 1e-3, "lr_schedule": "constant", "warmup_steps": 0,
//   "round_warmup_steps": -1, "weight_decay": 0, "grad_clip": 1, "beta1": 0.9, "beta2": 0.95,
//   "outer_lr": 0.7, "outer_momentum": 0.9,
//   "rounds": 10, "min_contributors": 1, "max_contributors": 4,
//   "round_deadline_s": 300, "compression": "int8", "block_size": 256,
//   "topk_density": 0.016, "value_bits": 2, "chunk_size": 4096, "error_feedback": false,
//   "norm_factor": 10, "max_norm": 0, "loss_check": false, "loss_tolerance": 0.05,
//   "val_batches": 4, "keep_snapshots": 3,
//   "score_batches": 2, "min_norm_factor": 0.25, "replay_prob": 0.25,
//   "replay_tolerance": 0.05, "bench_rating": 0.3, "overlap": false
// }
// The coordinator adds train_files, val_files (the resolved globs) and
// train_shards (each training shard's bytes and XXH64) at submission.
// Scoring (score.h): each upload's loss change on score_batches batches of its
// own rows and as many of rows it was not given (0 = no scoring); norms below
// min_norm_factor x the round's reference are rejected. Replays (replay.h):
// each upload is re-run with probability replay_prob (always when suspicious)
// and rejected when it differs by more than replay_tolerance (relative L2).
// Rating (rating.h): a contributor rated below bench_rating carries no weight.
// Compression (compress.h): "none", "int8" (block_size elements per scale) or
// "sparse" (top-k per chunk_size chunk, topk_density kept, value_bits 2/4/8);
// error_feedback carries what an upload dropped into the contributor's next
// one (default: on for sparse, off otherwise; not allowed with none).
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "runtime/data/loader.h"
#include "runtime/model/config.h"
#include "runtime/pool/compress.h"

namespace myelin::pool {

struct JobSpec {
  std::string name = "job";
  std::string init_checkpoint; // on the coordinator; empty = init from shape + seed
  ModelConfig shape{64, 256, 256, 2, 2, 32};
  std::uint64_t seed = 1337;
  std::string train_data, val_data;                // globs as submitted
  std::vector<std::string> train_files, val_files; // resolved by the coordinator
  // Size and XXH64 of each train_files entry, recorded by the coordinator at
  // submission ("train_shards": [{"bytes": N, "hash": "<16 hex>"}, ...]);
  // what contributors are told to expect and what the coordinator serves.
  struct Shard {
    std::uint64_t bytes = 0, hash = 0;
  };
  std::vector<Shard> train_shards;
  int batch_size = 4, seq_len = 32, grad_accum = 1;
  int inner_steps = 10;
  float inner_lr = 1e-3f;
  std::string lr_schedule = "constant";
  int warmup_steps = 0;
  // The inner learning rate ramps up over this many steps at the start of
  // every round (AdamW starts afresh each round: see inner_train.h); -1 =
  // inner_steps / 5.
  int round_warmup_steps = -1;
  int round_warmup() const {
    return round_warmup_steps >= 0 ? round_warmup_steps : inner_steps / 5;
  }
  float weight_decay = 0.0f, grad_clip = 1.0f, beta1 = 0.9f, beta2 = 0.95f;
  float outer_lr = 0.7f, outer_momentum = 0.9f;
  int rounds = 10;
  int min_contributors = 1;
  int max_contributors = 4; // data slices per round
  double round_deadline_s = 300;
  CodecParams codec;           // "compression", "block_size", "topk_density", ...
  bool error_feedback = false; // true by default when codec is sparse
  double norm_factor = 10, max_norm = 0;
  bool loss_check = false;
  double loss_tolerance = 0.05;
  int val_batches = 4;
  int keep_snapshots = 3;
  int score_batches = 2;
  double min_norm_factor = 0.25;
  double replay_prob = 0.25, replay_tolerance = 0.05;
  // With error feedback a replay is judged by direction (validate.h
  // support_cosine): the least cosine accepted.
  double replay_min_cosine = 0.5;
  double bench_rating = 0.3;
  // One-step-delayed outer updates: round r's inner steps start from round
  // r-1's global model, so a contributor starts its next round as soon as it
  // has uploaded, while the coordinator closes the round (see state.h).
  bool overlap = false;

  // The round whose global model round r's inner steps start from.
  std::int64_t base_round(std::int64_t r) const { return overlap && r > 0 ? r - 1 : r; }

  // Tokens one contributor processes in one round.
  std::uint64_t tokens_per_round() const {
    return std::uint64_t(batch_size) * seq_len * grad_accum * inner_steps;
  }
};

// Parses and checks a job; throws InputError naming the field ("job.rounds: ...").
// Every field is strictly typed (an integer field takes only a JSON integer, no
// bool or float; a number field takes no string or bool) and range-bounded; the
// model's shape and the micro-batch go through ModelConfig::validate and
// validate_micro_batch, as `myelin train`'s flags do.
JobSpec parse_job(const nlohmann::json& j);
nlohmann::json job_to_json(const JobSpec& s);

// position_after (the loader position after k global batches) lives in
// runtime/data/loader.h.

} // namespace myelin::pool
