// The pool protocol between coordinator and contributor: typed request and
// response structs for join, heartbeat, leave, work and the status report,
// with to_json/from_json (found by nlohmann::json through ADL). Both ends use
// them. from_json is strict: a field of the wrong JSON type (an integer
// field given 2.5, true or "3"), out of range, or a string that is too long
// throws ProtocolError naming the field ("hardware.cores: ..."), which the
// coordinator answers with 400. Claims a contributor makes about itself
// (hardware, compute seconds, loss) are bounded here too.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "runtime/pool/compress.h"
#include "runtime/util/error.h"

namespace myelin::pool {

// A malformed message is bad input like any other (the one bad-input type).
class ProtocolError : public InputError {
 public:
  using InputError::InputError;
};

// What a contributor says about its machine (shown, never trusted).
struct Hardware {
  std::string device; // "cpu" | "cuda"
  std::string cpu;
  std::optional<std::int64_t> cores;
  std::optional<double> memory_gb;
  std::vector<std::string> gpus;
  std::optional<std::int64_t> ranks, dp, pp;
};
void to_json(nlohmann::json& j, const Hardware& h);
void from_json(const nlohmann::json& j, Hardware& h);

struct JoinRequest {
  std::string name; // 1..100 bytes of UTF-8, no control characters
  Hardware hardware;
};
void to_json(nlohmann::json& j, const JoinRequest& r);
void from_json(const nlohmann::json& j, JoinRequest& r);

struct JoinResponse {
  std::int64_t contributor_id = 0;
  double heartbeat_s = 1;
};
void to_json(nlohmann::json& j, const JoinResponse& r);
void from_json(const nlohmann::json& j, JoinResponse& r);

// Contributor states a heartbeat may report.
bool valid_contributor_state(const std::string& s);
struct HeartbeatRequest {
  std::int64_t contributor_id = 0;
  std::string state = "idle";
};
void to_json(nlohmann::json& j, const HeartbeatRequest& r);
void from_json(const nlohmann::json& j, HeartbeatRequest& r);

// The body of leave and work.
struct ContributorRequest {
  std::int64_t contributor_id = 0;
};
void to_json(nlohmann::json& j, const ContributorRequest& r);
void from_json(const nlohmann::json& j, ContributorRequest& r);

// Inner-loop settings of an assignment (the job's, per contributor).
struct TrainSettings {
  std::int64_t batch_size = 0, seq_len = 0, grad_accum = 1;
  double lr = 0;
  std::string lr_schedule = "constant";
  std::int64_t warmup_steps = 0;
  double weight_decay = 0, grad_clip = 0, beta1 = 0, beta2 = 0;
  std::uint64_t seed = 0;
  std::int64_t total_steps = 0;
  std::int64_t round_warmup = 0; // steps of the inner lr's ramp at each round's start
};
// A training shard of the job: its index (GET /api/jobs/ID/shards/INDEX),
// size and XXH64 (runtime/io/xxh64.h) as the coordinator recorded them when
// the job was submitted. On the wire the hash is 16 lowercase hex digits.
struct ShardInfo {
  std::uint64_t index = 0, bytes = 0, hash = 0;
};
struct Assignment {
  std::int64_t job = 0;
  std::string name;
  std::int64_t round = 0, rounds = 0, slot = 0, slots = 0, inner_steps = 0;
  // The global model the inner steps start from: round `base_round`'s (the
  // round itself, or the one before under one-step-delayed outer updates),
  // whose params_checksum is `model_checksum` (hex on the wire). The
  // contributor reaches it by applying the outer updates since the model it
  // holds, or downloads it whole.
  std::int64_t base_round = 0;
  std::uint64_t model_checksum = 0;
  std::uint64_t batch_position = 0, param_count = 0;
  CodecParams codec; // "compression", "block_size", "topk_density", "value_bits", "chunk_size"
  bool error_feedback = false;
  double deadline_s = 0;
  TrainSettings train;
  std::vector<ShardInfo> shards;
};
// Closed rounds whose outer updates the coordinator keeps for download (GET
// /api/jobs/<id>/update?round=R); a contributor further behind downloads the
// whole model.
inline constexpr std::int64_t kKeepUpdates = 32;

// The answer to work: an assignment, or wait this long (idle: no job at all).
struct WorkResponse {
  std::optional<Assignment> assignment;
  double wait = 1;
  bool idle = false;
  std::string reason;
};
void to_json(nlohmann::json& j, const WorkResponse& r);
void from_json(const nlohmann::json& j, WorkResponse& r);

// The status report (GET /api/status), as `pool status` and the page read
// it. Claims (hardware, compute_s) sit beside the coordinator's measurements
// (measured_s: seconds the contributor held its slots; bytes_received).
struct RoundStatus {
  std::int64_t round = 0;
  std::string status;
  double opened = 0;
  std::optional<double> closed;
  std::int64_t accepted = 0, rejected = 0, tokens = 0;
  std::optional<double> train_loss, val_loss, median_norm, update_norm;
  std::optional<std::int64_t> update_bytes; // the encoded outer update's size
};
struct LedgerHead {
  std::int64_t seq = 0;
  std::string hash;
};
struct JobStatus {
  std::int64_t id = 0;
  std::string name, status, model, compression;
  std::int64_t round = 0, rounds = 0, param_count = 0, inner_steps = 0;
  std::int64_t min_contributors = 0, max_contributors = 0, uploads_this_round = 0;
  std::uint64_t tokens_per_round = 0;
  double outer_lr = 0, outer_momentum = 0, created = 0;
  std::optional<double> init_val_loss, finished;
  std::optional<std::int64_t> queue_position; // running jobs: 0 = being served
  std::optional<LedgerHead> ledger_head;
  std::vector<RoundStatus> history;
};
struct ContributorStatus {
  std::int64_t id = 0;
  std::string name, state;
  Hardware hardware; // a claim; shown empty when it does not parse
  std::optional<std::int64_t> job, round, slot;
  std::int64_t accepted = 0, rejected = 0, tokens = 0, bytes_received = 0;
  // Bytes served to it (models, outer updates, shards) over its uploads, and
  // its claimed seconds not computing (bounded by the coordinator's clock).
  std::int64_t bytes_down = 0;
  double joined = 0, last_seen_s = 0, compute_s = 0, measured_s = 0, wait_s = 0;
  // Its reputation (rating.h) and whether the last round it was judged in
  // benched it (weight 0 below the job's bench_rating).
  double rating = 0.5;
  bool benched = false;
};
struct StatusResponse {
  double time = 0, heartbeat_timeout_s = 0;
  std::string job_order;
  std::vector<JobStatus> jobs;
  std::vector<ContributorStatus> contributors;
};
void to_json(nlohmann::json& j, const RoundStatus& r);
void from_json(const nlohmann::json& j, RoundStatus& r);
void to_json(nlohmann::json& j, const JobStatus& r);
void from_json(const nlohmann::json& j, JobStatus& r);
void to_json(nlohmann::json& j, const ContributorStatus& r);
void from_json(const nlohmann::json& j, ContributorStatus& r);
void to_json(nlohmann::json& j, const StatusResponse& r);
void from_json(const nlohmann::json& j, StatusResponse& r);

// Self-reported figures of an upload, checked: tokens >= 0, compute_s finite
// in [0, 1e6] s, loss finite in [0, 1e3] or absent ("nan": the contributor
// has none).
struct UploadClaims {
  std::int64_t tokens = 0;
  double compute_s = 0;
  std::optional<double> loss;
  std::optional<double> wait_s; // finite in [0, 1e7] s
};
void check_claims(const UploadClaims& c);

// Parses a JSON request body into T, mapping every failure (malformed JSON,
// invalid UTF-8, not an object, wrong field) to ProtocolError.
template <typename T> T parse_body_as(const std::string& body) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(body);
  } catch (const nlohmann::json::exception& e) {
    throw ProtocolError(std::string("malformed JSON body: ") + e.what());
  }
  if (!j.is_object()) throw ProtocolError("body: expected a JSON object");
  return j.get<T>();
}

// JSON text that is valid UTF-8 whatever the strings hold (bad bytes become
// U+FFFD): every JSON answer of the coordinator goes through this.
std::string dump_json(const nlohmann::json& j, int indent = -1);

} // namespace myelin::pool
