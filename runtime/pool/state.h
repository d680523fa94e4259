// The coordinator's state machine, independent of HTTP: jobs, contributors,
// slot assignment, uploads, round closing (validation + outer step) and the
// ledger. All state lives in SQLite (state_dir/pool.db) and in model files
// under state_dir/jobs/<id>/ (model_<round>.bin is the global model a round
// starts from; momentum_<round>.bin the outer momentum). Files are written
// atomically before the transaction that makes them current, so after kill -9
// a restarted coordinator continues from the last committed round.
// Thread-safe: one mutex serialises every operation, except the heavy part of
// closing a round (scoring, replays, the outer step), which runs outside it
// (see tick), so requests are answered while a round is being scored.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "runtime/pool/db.h"
#include "runtime/pool/job.h"
#include "runtime/pool/protocol.h"
#include "runtime/pool/tokens.h"

namespace myelin::pool {

// A request the state machine refuses: an HTTP status and a reason.
class Refused : public std::runtime_error {
 public:
  Refused(int status, const std::string& msg) : std::runtime_error(msg), status_(status) {}
  int status() const { return status_; }

 private:
  int status_;
};

struct UploadMeta {
  std::int64_t job = 0, round = 0, contributor = 0;
  std::int64_t tokens = 0;
  double compute_s = 0;
  std::optional<double> train_loss;
  double receive_s = 0; // measured by the server: seconds spent reading the body
  // Claimed: seconds the contributor spent not computing since its previous
  // upload (waiting for work, downloading); bounded by the server's clock.
  std::optional<double> wait_s;
};

// The most contributor names one token may register (see PoolState::join).
inline constexpr std::int64_t kMaxNamesPerToken = 8;

class PoolState {
 public:
  PoolState(const std::string& state_dir, double heartbeat_timeout_s, bool quiet);
  ~PoolState();

  std::optional<TokenInfo> authenticate(const std::string& secret);

  // Jobs (admin).
  std::int64_t submit_job(const nlohmann::json& spec);
  void stop_job(std::int64_t job);

  // Contributors. A contributor name belongs to the token that registered it
  // (joining under another token's name is refused with 403), and every call
  // checks that the contributor belongs to the calling token (403 otherwise;
  // nothing changes). A token registers at most kMaxNamesPerToken names (403
  // for more); rejoining under a name it holds is always allowed.
  JoinResponse join(const TokenInfo& who, const JoinRequest& req);
  void heartbeat(const TokenInfo& who, const HeartbeatRequest& req);
  void leave(const TokenInfo& who, std::int64_t cid);
  // An assignment, or how long to wait. Jobs are served one at a time in
  // submission order (FIFO by id): the oldest running job gets every
  // contributor until it is done or cancelled.
  WorkResponse work(const TokenInfo& who, std::int64_t cid);
  // Validates and records an upload (body = wire bytes). Returns
  // {"status": "pending"|"rejected", "reason", ...}. Malformed bodies throw
  // Refused(400) and change nothing.
  nlohmann::json upload(const TokenInfo& who, const UploadMeta& meta, const std::string& body);

  // Paths of files a contributor may download (throw Refused(404)).
  std::string model_file(std::int64_t job, std::int64_t round);
  // The encoded outer update of a closed round (wire format, compress.h; its
  // origin names the job, the round and the checksum of the model it
  // applies to): model_<round+1> = model_<round> - decode(update), element by
  // element in fp32. Refused(404) when the round is not closed or pruned.
  std::string update_file(std::int64_t job, std::int64_t round);
  // Bytes the coordinator served to a contributor (model, updates, shards),
  // recorded as the bytes_down of its next upload. 403 for another token's
  // contributor.
  void count_download(const TokenInfo& who, std::int64_t cid, std::uint64_t bytes);
  // A training shard, only while its bytes are those hashed at submission:
  // checked (hashed, without the lock) the first time in this process and
  // whenever its size or modification time changes; different bytes are
  // logged and refused with 409, a missing file with 410.
  std::string shard_file(std::int64_t job, std::size_t index);
  std::size_t param_count(std::int64_t job);
  // The job's model configuration (for an init_checkpoint job: round 0's model
  // file's, every field).
  ModelConfig job_config(std::int64_t job);

  // Closes every round that is ready: enough uploads and nobody still
  // training, or its deadline passed (whatever the other contributors do: a
  // slot held by a contributor that heartbeats but never uploads is
  // reclaimed then). At the deadline a round with valid uploads closes with
  // them (even fewer than min_contributors); one without any reopens with a
  // fresh deadline and its slots freed. Then seals finished ledger rows into
  // the hash chain. Called periodically (the coordinator's ticker): closing
  // judges each upload (norms, scoring, replays; see score.h), averages the
  // accepted ones weighted by tokens x rating (rating.h) and updates ratings.
  void tick();

  nlohmann::json status_json();
  // The ledger in chain order (see ledger.h); rows still pending come last,
  // without a hash.
  nlohmann::json ledger_json(std::optional<std::int64_t> job);
  std::string ledger_csv(std::optional<std::int64_t> job);

 private:
  struct JobRt;
  JobRt& job_rt(std::int64_t job);
  void check_owner(const TokenInfo& who, std::int64_t cid);
  struct CloseWork;
  // Whether the job's open round should close now (a round past its deadline
  // without valid uploads is reopened here).
  bool round_ready(std::int64_t job);
  std::unique_ptr<CloseWork> take_ready(std::int64_t job); // under the lock
  void compute_close(CloseWork& w);                        // without it
  void commit_close(CloseWork& w);                         // under the lock
  void seal_ledger();
  float evaluate(JobRt& rt, const std::vector<float>& params);
  // params_checksum of a round's global model (cached); nullopt once pruned.
  std::optional<std::uint64_t> model_checksum(std::int64_t job, std::int64_t round);
  std::string job_dir(std::int64_t job) const;
  // state_dir/jobs/<job>/<kind>_<round>.bin: "model" (the global model round
  // `round` starts from), "momentum" (the outer momentum after round-1),
  // "residual" (the outer update's error feedback after round-1), "update"
  // (the encoded outer update that turns model_<round> into
  // model_<round+1>, as contributors download it).
  std::string round_path(std::int64_t job, const char* kind, std::int64_t round) const;
  std::string model_path(std::int64_t job, std::int64_t round) const;
  // A round file contributors may download: 404 unless it exists and its
  // round is at most the job's current round minus past_current.
  std::string served_file(std::int64_t job, const char* kind, std::int64_t round,
                          std::int64_t past_current);
  std::string momentum_path(std::int64_t job, std::int64_t round) const;
  void prune_snapshots(std::int64_t job, std::int64_t newest, int keep);

  std::string dir_;
  double hb_timeout_;
  bool quiet_;
  std::mutex mu_;
  Db db_;
  // Token lookups use their own connection and lock, so authenticating a
  // request never waits for the state lock (WAL lets it read meanwhile).
  std::mutex auth_mu_;
  Db auth_db_;
  std::map<std::int64_t, std::unique_ptr<JobRt>> jobs_;
};

} // namespace myelin::pool
