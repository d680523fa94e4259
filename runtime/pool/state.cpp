#include "runtime/pool/state.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>

#include "runtime/data/loader.h"
#include "runtime/io/file_util.h"
#include "runtime/io/model_any.h"
#include "runtime/io/model_file.h"
#include "runtime/io/xxh64.h"
#include "runtime/model/engine.h"
#include "runtime/model/init.h"
#include "runtime/pool/compress.h"
#include "runtime/pool/inner_train.h"
#include "runtime/pool/ledger.h"
#include "runtime/pool/outer_opt.h"
#include "runtime/pool/rating.h"
#include "runtime/pool/score.h"
#include "runtime/pool/validate.h"
#include "runtime/util/error.h"
#include "runtime/util/host_memory.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace myelin::pool {

struct PoolState::JobRt {
  JobSpec spec;
  ModelConfig cfg;
  std::size_t n = 0;
  std::unique_ptr<Engine> eval;
  std::unique_ptr<DataLoader> val;
  std::vector<int> in, tg;
  std::map<std::int64_t, std::uint64_t> model_sums; // round -> params_checksum of its model
  std::uint64_t replay_secret = 0;                  // keys replay draws (score.h); never shown
  // Per training shard: the size and modification time at which this process
  // last found its bytes to match the hash recorded at submission (unset:
  // not checked yet); shard_file re-hashes only when they change.
  struct ShardSeen {
    std::uintmax_t size = 0;
    fs::file_time_type mtime{};
    bool ok = false;
  };
  std::vector<ShardSeen> shard_seen;
  // Used only by the round closer (outside the lock; `closing` keeps it one).
  bool closing = false;
  std::unique_ptr<Scorer> scorer;
  // The replay trainer and the data slice it reads (one at a time: a trainer
  // holds a model's parameters, gradients and AdamW moments).
  std::unique_ptr<InnerTrainer> replayer;
  std::int64_t replayer_slot = -1;
};

// What closing a round takes from the database, works out without the lock,
// and writes back.
struct PoolState::CloseWork {
  std::int64_t job = 0, round = 0;
  JobRt* rt = nullptr;
  double started = 0, prev_median = 0;
  struct Row {
    std::int64_t id = 0, cid = 0, tokens = 0, slot = -1;
    double norm = 0;
    std::optional<double> loss;
    std::string file, reason;
    Rating rating;
    std::vector<float> g;
    std::optional<ScoreResult> score;
    // A score verdict against the upload: it is then always replayed, and the
    // replay decides (scoring alone never rejects work its re-run reproduces).
    std::string score_reason;
    std::optional<double> replay_diff;
    double weight = 0, failures = 0;
    bool benched = false;
  };
  std::vector<Row> rows;
  // Files: the model the round's inner steps started from (base_model; the
  // round's own model but under overlap), the one the outer step applies
  // to (model), and what closing writes (next_*, update).
  std::string base_model, model, momentum, next_model, next_momentum;
  std::string residual, next_residual, update;
  // results
  std::int64_t tokens = 0, replays = 0;
  std::optional<double> update_norm, median_norm, train_loss, val;
  double score_s = 0, replay_s = 0;
  std::uint64_t model_sum = 0;     // params_checksum of `model` (the round's own)
  std::uint64_t next_checksum = 0; // params_checksum of the next round's model
  std::size_t update_bytes = 0;    // the encoded outer update contributors download
};

namespace {
// A job's replay key (score.h replay_drawn).
std::uint64_t random_secret() {
  std::random_device rd;
  return std::uint64_t(rd()) << 32 ^ std::uint64_t(rd());
}

// Size and XXH64 of each file, read whole once.
std::vector<JobSpec::Shard> record_shards(const std::vector<std::string>& files) {
  std::vector<JobSpec::Shard> out;
  out.reserve(files.size());
  for (const auto& f : files) out.push_back({file_size_or_throw(f), xxh64_file(f)});
  return out;
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error(path + ": cannot open");
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}
json opt_num(const std::optional<double>& v) {
  return v && std::isfinite(*v) ? json(*v) : json(nullptr);
}
} // namespace

PoolState::PoolState(const std::string& state_dir, double heartbeat_timeout_s, bool quiet)
    : dir_(state_dir), hb_timeout_(heartbeat_timeout_s), quiet_(quiet), db_(db_path(state_dir)),
      auth_db_(db_path(state_dir)) {
  create_schema(db_);
}

PoolState::~PoolState() = default;

std::string PoolState::job_dir(std::int64_t job) const {
  return (fs::path(dir_) / "jobs" / std::to_string(job)).string();
}
std::string PoolState::round_path(std::int64_t job, const char* kind, std::int64_t round) const {
  char b[64];
  std::snprintf(b, sizeof(b), "%s_%06lld.bin", kind, static_cast<long long>(round));
  return (fs::path(job_dir(job)) / b).string();
}
std::string PoolState::model_path(std::int64_t job, std::int64_t round) const {
  return round_path(job, "model", round);
}
std::string PoolState::momentum_path(std::int64_t job, std::int64_t round) const {
  return round_path(job, "momentum", round);
}

std::optional<TokenInfo> PoolState::authenticate(const std::string& secret) {
  std::lock_guard lk(auth_mu_);
  return find_token(auth_db_, secret);
}

PoolState::JobRt& PoolState::job_rt(std::int64_t job) {
  auto it = jobs_.find(job);
  if (it != jobs_.end()) return *it->second;
  auto st = db_.prepare("SELECT spec, param_count, replay_secret FROM jobs WHERE id = ?");
  st.bind(1, job);
  if (!st.step()) throw Refused(404, "no job " + std::to_string(job));
  auto rt = std::make_unique<JobRt>();
  rt->spec = parse_job(json::parse(st.text(0)));
  rt->cfg = rt->spec.shape;
  // A job started from init_checkpoint stores no shape in its spec: round 0's
  // model file holds it (every field, Llama's included).
  if (!rt->spec.init_checkpoint.empty())
    rt->spec.shape = rt->cfg = load_model_config(model_path(job, 0));
  rt->n = std::size_t(st.i64(1));
  if (st.is_null(2)) { // a job from before the key existed: give it one
    rt->replay_secret = random_secret();
    db_.prepare("UPDATE jobs SET replay_secret = ? WHERE id = ?")
        .bind_all(std::int64_t(rt->replay_secret), job)
        .run();
  } else {
    rt->replay_secret = std::uint64_t(st.i64(2));
  }
  if (rt->spec.train_shards.size() != rt->spec.train_files.size()) {
    // A job stored before shards were hashed at submission: hash them now,
    // once, and store the result with the job.
    rt->spec.train_shards = record_shards(rt->spec.train_files);
    db_.prepare("UPDATE jobs SET spec = ? WHERE id = ?")
        .bind_all(job_to_json(rt->spec).dump(), job)
        .run();
  }
  rt->shard_seen.resize(rt->spec.train_files.size());
  return *(jobs_[job] = std::move(rt));
}

namespace {
// Keeps the checksums of the last few rounds' models (uploads name the one
// they started from).
void remember_checksum(std::map<std::int64_t, std::uint64_t>& sums, std::int64_t round,
                       std::uint64_t sum) {
  if (sums.size() > 8) sums.erase(sums.begin());
  sums[round] = sum;
}
} // namespace

std::optional<std::uint64_t> PoolState::model_checksum(std::int64_t job, std::int64_t round) {
  JobRt& rt = job_rt(job);
  if (auto it = rt.model_sums.find(round); it != rt.model_sums.end()) return it->second;
  const std::string p = model_path(job, round);
  if (!fs::exists(p)) return std::nullopt; // pruned: the round is long closed
  const std::uint64_t sum = params_checksum(load_model(p).params);
  remember_checksum(rt.model_sums, round, sum);
  return sum;
}

float PoolState::evaluate(JobRt& rt, const std::vector<float>& params) {
  if (rt.spec.val_files.empty()) return NAN;
  const auto& s = rt.spec;
  if (!rt.eval) {
    EngineOptions eo;
    rt.eval = make_engine(rt.cfg, StageSpec::whole(rt.cfg), s.batch_size, s.seq_len, eo);
    rt.val = std::make_unique<DataLoader>(s.val_data, "job.val_data", s.batch_size, s.seq_len, 0, 1,
                                          rt.cfg.vocab_size, false, 0);
    rt.in.resize(std::size_t(s.batch_size) * s.seq_len);
    rt.tg.resize(rt.in.size());
  }
  rt.eval->set_params(params);
  rt.val->reset();
  const int nb = int(std::min<std::uint64_t>(s.val_batches, rt.val->batches_per_epoch()));
  double sum = 0;
  for (int i = 0; i < nb; ++i) {
    rt.val->next(rt.in.data(), rt.tg.data());
    sum += rt.eval->eval_loss(rt.in.data(), rt.tg.data(), s.batch_size, s.seq_len);
  }
  return float(sum / nb);
}

// ---- jobs -------------------------------------------------------------------

std::int64_t PoolState::submit_job(const json& spec_json) {
  JobSpec s = parse_job(spec_json);
  require(!s.train_data.empty(), "job.train_data", "required (a shard glob on the coordinator)");
  s.train_files = glob_files(s.train_data, "job.train_data");
  // Each training shard is hashed once, here, before taking the lock (the
  // pool keeps answering meanwhile); the sizes and hashes are stored with the
  // job, shipped in every assignment and checked before a shard is served.
  s.train_shards = record_shards(s.train_files);
  std::lock_guard lk(mu_);
  s.val_files.clear();
  if (!s.val_data.empty()) s.val_files = glob_files(s.val_data, "job.val_data");
  std::vector<float> params;
  if (!s.init_checkpoint.empty()) {
    ModelFile mf = load_any_model(s.init_checkpoint);
    s.shape = mf.config;
    params = std::move(mf.params);
    validate_micro_batch(s.shape, s.batch_size, s.seq_len, key_names("job."));
  } else {
    // The coordinator holds the model, its outer momentum, a decoded upload
    // per contributor of a round, and three engines (evaluation, scoring,
    // replay: parameters, gradients, AdamW moments each): about 14 fp32
    // copies plus one per slot.
    require_host_memory((14 + std::size_t(s.max_contributors)) * sizeof(float) *
                            *s.shape.param_count(),
                        "job.model", "the model (" + s.shape.describe() + ")");
    params = gpt2_init(s.shape, s.seed);
  }
  // Every shard must hold at least one global batch of all slices.
  DataLoader probe(s.train_data, "job.train_data", s.batch_size, s.seq_len, 0, s.max_contributors,
                   s.shape.vocab_size, false, 0);
  (void)probe;

  Tx tx(db_);
  db_.prepare("INSERT INTO jobs(name, spec, status, round, param_count, created, replay_secret) "
              "VALUES(?, ?, 'running', 0, ?, ?, ?)")
      .bind_all(s.name, job_to_json(s).dump(), std::int64_t(params.size()), unix_now(),
                std::int64_t(random_secret()))
      .run();
  const std::int64_t id = db_.last_insert_id();
  fs::create_directories(fs::path(job_dir(id)) / "pending");
  save_model(model_path(id, 0), s.shape, params, 3);
  jobs_.erase(id);
  auto rt = std::make_unique<JobRt>();
  rt->spec = s;
  rt->cfg = s.shape;
  rt->n = params.size();
  rt->shard_seen.resize(s.train_files.size());
  const float v = evaluate(*rt, params);
  db_.prepare("UPDATE jobs SET init_val_loss = ? WHERE id = ?")
      .bind(1, std::isfinite(v) ? std::optional<double>(v) : std::nullopt)
      .bind(2, id)
      .run();
  db_.prepare("INSERT INTO rounds(job_id, round, status, opened, model) VALUES(?, 0, 'open', ?, ?)")
      .bind_all(id, unix_now(), model_path(id, 0))
      .run();
  tx.commit();
  jobs_[id] = std::move(rt);
  if (!quiet_)
    std::cout << "pool: job " << id << " '" << s.name << "' submitted: " << s.shape.describe()
              << ", " << params.size() << " params, " << s.rounds << " rounds x " << s.inner_steps
              << " inner steps" << std::endl;
  return id;
}

void PoolState::stop_job(std::int64_t job) {
  std::lock_guard lk(mu_);
  Tx tx(db_);
  db_.prepare(
         "UPDATE jobs SET status = 'stopped', finished = ? WHERE id = ? AND status = 'running'")
      .bind_all(unix_now(), job)
      .run();
  if (db_.changes() == 0) throw Refused(404, "no running job " + std::to_string(job));
  tx.commit();
}

// ---- contributors -------------------------------------------------------------

void PoolState::check_owner(const TokenInfo& who, std::int64_t cid) {
  auto st = db_.prepare("SELECT token_id FROM contributors WHERE id = ?");
  st.bind(1, cid);
  if (!st.step()) throw Refused(404, "unknown contributor " + std::to_string(cid));
  if (st.i64(0) != who.id)
    throw Refused(403, "contributor " + std::to_string(cid) + " belongs to another token");
}

JoinResponse PoolState::join(const TokenInfo& who, const JoinRequest& req) {
  std::lock_guard lk(mu_);
  const std::string& name = req.name;
  const double now = unix_now();
  Tx tx(db_);
  // A name belongs to the token that registered it first.
  auto st = db_.prepare("SELECT id, token_id FROM contributors WHERE name = ? ORDER BY id LIMIT 1");
  st.bind(1, name);
  std::int64_t id;
  const std::string hw = dump_json(json(req.hardware));
  if (st.step()) {
    if (st.i64(1) != who.id)
      throw Refused(403, "contributor name '" + name + "' belongs to another token");
    id = st.i64(0);
    db_.prepare("UPDATE contributors SET hardware = ?, state = 'idle', last_seen = ? WHERE id = ?")
        .bind_all(hw, now, id)
        .run();
  } else {
    // A token registers at most kMaxNamesPerToken names, ever: enough for one
    // volunteer's machines, too few to shed a bad rating by rejoining under
    // fresh names again and again.
    auto count = db_.prepare("SELECT COUNT(*) FROM contributors WHERE token_id = ?");
    count.bind(1, who.id);
    count.step();
    if (count.i64(0) >= kMaxNamesPerToken)
      throw Refused(403, "this token already registered " + std::to_string(kMaxNamesPerToken) +
                             " contributor names, the most one token may hold; join under one of "
                             "them");
    db_.prepare("INSERT INTO contributors(token_id, name, hardware, state, joined, last_seen) "
                "VALUES(?, ?, ?, 'idle', ?, ?)")
        .bind_all(who.id, name, hw, now, now)
        .run();
    id = db_.last_insert_id();
  }
  tx.commit();
  if (!quiet_) std::cout << "pool: contributor " << id << " '" << name << "' joined" << std::endl;
  return {id, std::max(0.2, hb_timeout_ / 4)};
}

void PoolState::heartbeat(const TokenInfo& who, const HeartbeatRequest& req) {
  std::lock_guard lk(mu_);
  check_owner(who, req.contributor_id);
  db_.prepare("UPDATE contributors SET last_seen = ?, state = ? WHERE id = ?")
      .bind_all(unix_now(), req.state, req.contributor_id)
      .run();
}

void PoolState::leave(const TokenInfo& who, std::int64_t cid) {
  std::lock_guard lk(mu_);
  check_owner(who, cid);
  Tx tx(db_);
  db_.prepare("UPDATE contributors SET state = 'left', last_seen = ? WHERE id = ?")
      .bind_all(unix_now(), cid)
      .run();
  // Free its slot in open rounds it has not contributed to.
  db_.prepare("DELETE FROM assignments WHERE contributor_id = ? AND NOT EXISTS ("
              "SELECT 1 FROM contributions x WHERE x.job_id = assignments.job_id AND "
              "x.round = assignments.round AND x.contributor_id = assignments.contributor_id)")
      .bind(1, cid)
      .run();
  tx.commit();
  if (!quiet_) std::cout << "pool: contributor " << cid << " left" << std::endl;
}

WorkResponse PoolState::work(const TokenInfo& who, std::int64_t cid) {
  std::lock_guard lk(mu_);
  check_owner(who, cid);
  const double now = unix_now();
  db_.prepare("UPDATE contributors SET last_seen = ? WHERE id = ?").bind_all(now, cid).run();
  auto js = db_.prepare("SELECT id, round FROM jobs WHERE status = 'running' ORDER BY id LIMIT 1");
  auto wait = [](double s, bool idle, std::string reason) {
    WorkResponse w;
    w.wait = s, w.idle = idle, w.reason = std::move(reason);
    return w;
  };
  if (!js.step()) return wait(1.0, true, "no running job");
  const std::int64_t job = js.i64(0), round = js.i64(1);
  JobRt& rt = job_rt(job);
  const JobSpec& s = rt.spec;

  auto has_contribution = [&](std::int64_t r) {
    auto q = db_.prepare(
        "SELECT 1 FROM contributions WHERE job_id = ? AND round = ? AND contributor_id = ?");
    q.bind_all(job, r, cid);
    return q.step();
  };
  auto slot_in = [&](std::int64_t r) {
    auto q = db_.prepare(
        "SELECT slot FROM assignments WHERE job_id = ? AND round = ? AND contributor_id = ?");
    q.bind_all(job, r, cid);
    return q.step() ? q.i64(0) : std::int64_t(-1);
  };
  // The round to work on: the open one; under overlap the next one too, for
  // a contributor done with the open round or arriving while it closes (its
  // base model, the open round's, exists already).
  std::int64_t target = round;
  std::int64_t slot = slot_in(round);
  const bool done_here = has_contribution(round);
  if (slot < 0 && !done_here && s.overlap && round + 1 < s.rounds)
    if (const auto ahead = slot_in(round + 1); ahead >= 0) // taken while the round closed
      target = round + 1, slot = ahead;
  // A round being closed takes no new slots: work handed out now would arrive
  // after the close and be refused as stale. The newcomer starts next round.
  if (target == round && (done_here || (slot < 0 && rt.closing))) {
    if (!s.overlap || round + 1 >= s.rounds)
      return wait(0.05, false,
                  done_here ? "waiting for round " + std::to_string(round) + " to close"
                            : "round " + std::to_string(round) + " is closing");
    target = round + 1;
    slot = slot_in(target);
  }
  if (target != round && has_contribution(target)) // done with the next round too
    return wait(0.05, false, "waiting for round " + std::to_string(round) + " to close");

  Tx tx(db_);
  if (slot < 0) {
    // Slot states in the target round: taken (live or uploaded),
    // reclaimable (its contributor is gone and did not upload), or free.
    std::vector<int> state(std::size_t(s.max_contributors), 0); // 0 free, 1 taken, 2 reclaimable
    auto q = db_.prepare(
        "SELECT a.slot, c.state, c.last_seen, EXISTS (SELECT 1 FROM contributions x WHERE "
        "x.job_id = a.job_id AND x.round = a.round AND x.contributor_id = a.contributor_id) "
        "FROM assignments a JOIN contributors c ON c.id = a.contributor_id "
        "WHERE a.job_id = ? AND a.round = ?");
    q.bind_all(job, target);
    while (q.step()) {
      const auto k = std::size_t(q.i64(0));
      if (k >= state.size()) continue;
      const bool gone = q.text(1) == "left" || q.f64(2) < now - hb_timeout_;
      state[k] = (gone && q.i64(3) == 0) ? 2 : 1;
    }
    std::int64_t prev = -1;
    {
      auto p = db_.prepare("SELECT slot FROM contributors WHERE id = ? AND job_id = ?");
      p.bind_all(cid, job);
      if (p.step() && !p.is_null(0)) prev = p.i64(0);
    }
    if (prev >= 0 && prev < s.max_contributors && state[std::size_t(prev)] == 0) slot = prev;
    for (int want = 0; want <= 2 && slot < 0; want += 2)
      for (std::size_t k = 0; k < state.size() && slot < 0; ++k)
        if (state[k] == want) slot = std::int64_t(k);
    if (slot < 0)
      return wait(0.5, false,
                  "all " + std::to_string(s.max_contributors) + " slots of round " +
                      std::to_string(target) + " are taken");
    db_.prepare("DELETE FROM assignments WHERE job_id = ? AND round = ? AND slot = ?")
        .bind_all(job, target, slot)
        .run();
    db_.prepare("INSERT INTO assignments(job_id, round, slot, contributor_id, assigned) "
                "VALUES(?, ?, ?, ?, ?)")
        .bind_all(job, target, slot, cid, now)
        .run();
    // The next round opens with its first assignment (its deadline runs
    // from then); closing the open round finds it there.
    if (target != round)
      db_.prepare("INSERT OR IGNORE INTO rounds(job_id, round, status, opened, model) "
                  "VALUES(?, ?, 'open', ?, ?)")
          .bind_all(job, target, now, model_path(job, target))
          .run();
  }
  db_.prepare("UPDATE contributors SET job_id = ?, round = ?, slot = ?, state = 'training' "
              "WHERE id = ?")
      .bind_all(job, target, slot, cid)
      .run();
  tx.commit();

  double opened = now;
  {
    auto q = db_.prepare("SELECT opened FROM rounds WHERE job_id = ? AND round = ?");
    q.bind_all(job, target);
    if (q.step()) opened = q.f64(0);
  }
  Assignment a;
  for (std::size_t i = 0; i < s.train_shards.size(); ++i)
    a.shards.push_back({i, s.train_shards[i].bytes, s.train_shards[i].hash});
  a.job = job, a.name = s.name, a.round = target, a.rounds = s.rounds;
  a.slot = slot, a.slots = s.max_contributors, a.inner_steps = s.inner_steps;
  a.base_round = s.base_round(target);
  const auto sum = model_checksum(job, a.base_round);
  if (!sum)
    throw std::runtime_error("the model of round " + std::to_string(a.base_round) + " of job " +
                             std::to_string(job) + " is missing");
  a.model_checksum = *sum;
  a.batch_position = std::uint64_t(target) * s.inner_steps * s.grad_accum;
  a.param_count = rt.n;
  a.codec = s.codec, a.error_feedback = s.error_feedback;
  a.deadline_s = std::max(0.0, opened + s.round_deadline_s - now);
  a.train = train_settings(s);
  WorkResponse w;
  w.assignment = std::move(a);
  return w;
}

// ---- uploads ------------------------------------------------------------------

json PoolState::upload(const TokenInfo& who, const UploadMeta& m, const std::string& body) {
  std::size_t n;
  CodecParams codec;
  {
    std::lock_guard lk(mu_);
    check_owner(who, m.contributor);
    const JobRt& rt = job_rt(m.job);
    n = rt.n, codec = rt.spec.codec;
  }
  check_claims({m.tokens, m.compute_s, m.train_loss, m.wait_s});
  Decoded d;
  try {
    d = decode(body, n);
  } catch (const InputError& e) {
    throw Refused(400, e.what());
  }
  // Only the job's codec settings (a sparse upload: at most the job's k).
  if (const std::string why = codec_mismatch(d, codec, n); !why.empty())
    throw Refused(400, "codec settings differ from the job's: " + why);

  // The upload names where it comes from; anything else is refused (409).
  // A refused upload in the contributor's own open round is also recorded
  // as rejected (a failed trial for its rating), so the round does not wait
  // for it.
  std::string refusal;
  if (d.origin.job != m.job || d.origin.round != m.round)
    refusal = "refused: upload made for job " + std::to_string(d.origin.job) + " round " +
              std::to_string(d.origin.round) + ", posted to job " + std::to_string(m.job) +
              " round " + std::to_string(m.round) + " (a replayed upload)";

  std::lock_guard lk(mu_);
  JobRt& rt = job_rt(m.job);
  const std::int64_t base = rt.spec.base_round(m.round);
  if (const auto want = model_checksum(m.job, base);
      refusal.empty() && want && *want != d.origin.model_checksum)
    refusal = "refused: upload did not start from the global model of round " +
              std::to_string(base) + " (model checksum mismatch)";
  auto js = db_.prepare("SELECT status, round FROM jobs WHERE id = ?");
  js.bind(1, m.job);
  if (!js.step()) throw Refused(404, "no job " + std::to_string(m.job));
  const std::string status = js.text(0);
  const std::int64_t cur = js.i64(1);
  if (status != "running" && m.round >= cur)
    throw Refused(409, "job " + std::to_string(m.job) + " is " + status);
  // Under overlap the round after the open one takes uploads too (they wait
  // for it to become the open round).
  if (m.round > cur + (rt.spec.overlap ? 1 : 0) || m.round < 0)
    throw Refused(400, "round " + std::to_string(m.round) + " is not open");
  {
    auto q = db_.prepare(
        "SELECT 1 FROM contributions WHERE job_id = ? AND round = ? AND contributor_id = ?");
    q.bind_all(m.job, m.round, m.contributor);
    if (q.step())
      throw Refused(409, "contributor " + std::to_string(m.contributor) +
                             " already uploaded to round " + std::to_string(m.round));
  }
  std::optional<std::int64_t> slot;
  std::optional<double> since_assigned; // measured here, shown beside the claims
  {
    auto q = db_.prepare("SELECT slot, assigned FROM assignments WHERE job_id = ? AND round = ? "
                         "AND contributor_id = ?");
    q.bind_all(m.job, m.round, m.contributor);
    if (q.step()) slot = q.i64(0), since_assigned = unix_now() - q.f64(1);
  }
  // Nobody computes longer than it has held the assignment.
  if (since_assigned && m.compute_s > *since_assigned * 1.1 + 5)
    throw Refused(400, "compute_s: claims " + std::to_string(m.compute_s) +
                           " s, but the slot was "
                           "assigned " +
                           std::to_string(*since_assigned) + " s ago");
  std::string reason;
  const std::int64_t expected = std::int64_t(rt.spec.tokens_per_round());
  // The most serious problem is the one recorded: bad values first.
  if (!refusal.empty() && (!slot || m.round < cur)) throw Refused(409, refusal);
  reason = refusal.empty() ? check_finite(d.values) : refusal;
  const bool non_finite = !reason.empty();
  if (reason.empty()) {
    if (m.round < cur)
      reason = "stale: round " + std::to_string(m.round) + " already closed";
    else if (!slot)
      reason = "not assigned to round " + std::to_string(m.round) + " (slot reclaimed)";
    else if (m.tokens <= 0)
      reason = "no tokens reported";
  }
  const std::int64_t tokens = std::clamp<std::int64_t>(m.tokens, 0, expected);
  std::optional<double> norm;
  if (reason.empty()) norm = l2_norm(d.values);
  std::string file;
  if (reason.empty()) {
    file = (fs::path(job_dir(m.job)) / "pending" /
            ("r" + std::to_string(m.round) + "_c" + std::to_string(m.contributor) + ".pg"))
               .string();
    fs::create_directories(fs::path(file).parent_path());
    write_atomic(file, [&](const ByteSink& out) { out(body.data(), body.size()); });
  }
  // Traffic down since the previous upload, and the claimed waiting time,
  // bounded by the time since then (or since joining).
  std::int64_t bytes_down = 0;
  double since_last = 0;
  {
    auto q = db_.prepare("SELECT bytes_down_pending, COALESCE(last_upload, joined) FROM "
                         "contributors WHERE id = ?");
    q.bind(1, m.contributor);
    if (q.step()) bytes_down = q.i64(0), since_last = std::max(0.0, unix_now() - q.f64(1));
  }
  const std::optional<double> wait_s =
      m.wait_s ? std::optional<double>(std::min(*m.wait_s, since_last)) : std::nullopt;
  Tx tx(db_);
  db_.prepare("INSERT INTO contributions(job_id, round, contributor_id, slot, tokens, compute_s, "
              "train_loss, bytes, raw_bytes, norm, status, reason, file, created, receive_s, "
              "since_assigned_s, weight, bytes_down, wait_s) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
              "?, ?, ?, ?, ?, ?, ?, ?, ?)")
      .bind_all(
          m.job, m.round, m.contributor, slot, tokens, m.compute_s,
          m.train_loss && std::isfinite(*m.train_loss) ? m.train_loss : std::optional<double>(),
          std::int64_t(body.size()), std::int64_t(4 * n), norm,
          std::string(reason.empty() ? "pending" : "rejected"), reason,
          file.empty() ? std::optional<std::string>() : std::optional<std::string>(file),
          unix_now(), m.receive_s, since_assigned,
          reason.empty() ? std::optional<double>() : std::optional<double>(0.0), bytes_down, wait_s)
      .run();
  if (non_finite) { // bad values or a refused origin: a failed trial (rating.h)
    auto q = db_.prepare("SELECT rating_alpha, rating_beta FROM contributors WHERE id = ?");
    q.bind(1, m.contributor);
    if (q.step()) {
      const Rating next = Rating{q.f64(0), q.f64(1)}.updated(0, 1);
      db_.prepare("UPDATE contributors SET rating_alpha = ?, rating_beta = ? WHERE id = ?")
          .bind_all(next.alpha, next.beta, m.contributor)
          .run();
    }
  }
  db_.prepare("UPDATE contributors SET state = 'waiting', last_seen = ?1, last_upload = ?1, "
              "bytes_down_pending = 0 WHERE id = ?2")
      .bind_all(unix_now(), m.contributor)
      .run();
  tx.commit();
  if (!refusal.empty()) throw Refused(409, refusal);
  if (!quiet_)
    std::cout << "pool: job " << m.job << " round " << m.round << ": upload from contributor "
              << m.contributor << " (" << body.size() << " bytes, " << codec_name(d.codec) << ") "
              << (reason.empty() ? "pending" : "rejected: " + reason) << std::endl;
  return {{"status", reason.empty() ? "pending" : "rejected"},
          {"reason", reason},
          {"norm", opt_num(norm)},
          {"bytes", body.size()},
          {"raw_bytes", 4 * n}};
}

// ---- rounds -----------------------------------------------------------------

void PoolState::tick() {
  // Rounds close in three steps: take what is ready (under the lock),
  // compute (decode, score, replay, aggregate, outer step, model files:
  // without it, so heartbeats, work and uploads are answered meanwhile),
  // commit (under the lock).
  std::vector<std::unique_ptr<CloseWork>> todo;
  {
    std::lock_guard lk(mu_);
    std::vector<std::int64_t> running;
    auto q = db_.prepare("SELECT id FROM jobs WHERE status = 'running'");
    while (q.step()) running.push_back(q.i64(0));
    for (auto j : running)
      if (!job_rt(j).closing && round_ready(j)) todo.push_back(take_ready(j));
  }
  for (std::size_t i = 0; i < todo.size(); ++i) {
    try {
      compute_close(*todo[i]);
      std::lock_guard lk(mu_);
      commit_close(*todo[i]);
    } catch (...) {
      // This round (and any taken after it) is tried again on a later tick.
      std::lock_guard lk(mu_);
      for (std::size_t k = i; k < todo.size(); ++k) todo[k]->rt->closing = false;
      throw;
    }
  }
  std::lock_guard lk(mu_);
  seal_ledger();
}

bool PoolState::round_ready(std::int64_t job) {
  auto js = db_.prepare("SELECT status, round FROM jobs WHERE id = ?");
  js.bind(1, job);
  if (!js.step() || js.text(0) != "running") return false;
  const std::int64_t r = js.i64(1);
  const JobSpec& s = job_rt(job).spec;
  const double now = unix_now(), live_after = now - hb_timeout_;
  auto count = [&](const char* sql, bool with_live) {
    auto q = db_.prepare(sql);
    q.bind(1, job).bind(2, r);
    if (with_live) q.bind(3, live_after);
    q.step();
    return q.i64(0);
  };
  const auto valid = count(
      "SELECT COUNT(*) FROM contributions WHERE job_id = ? AND round = ? AND status = 'pending'",
      false);
  double opened = now;
  {
    auto q = db_.prepare("SELECT opened FROM rounds WHERE job_id = ? AND round = ?");
    q.bind_all(job, r);
    if (q.step()) opened = q.f64(0);
  }
  // The deadline holds whatever the contributors do: slots held without an
  // upload are reclaimed by closing (or, with nothing valid, reopening).
  if (now >= opened + s.round_deadline_s) {
    if (valid > 0) return true;
    Tx tx(db_);
    db_.prepare("UPDATE rounds SET opened = ? WHERE job_id = ? AND round = ?")
        .bind_all(now, job, r)
        .run();
    db_.prepare("DELETE FROM assignments WHERE job_id = ?1 AND round = ?2 AND NOT EXISTS (SELECT "
                "1 FROM contributions x WHERE x.job_id = ?1 AND x.round = ?2 AND "
                "x.contributor_id = assignments.contributor_id)")
        .bind_all(job, r)
        .run();
    const int freed = db_.changes();
    tx.commit();
    if (!quiet_)
      std::cout << "pool: job " << job << " round " << r << ": deadline passed without a valid "
                << "upload; reopened (" << freed << " slots freed)" << std::endl;
    return false;
  }
  if (valid < s.min_contributors) return false;
  const char* no_upload =
      "NOT EXISTS (SELECT 1 FROM contributions x WHERE x.job_id = ?1 AND x.round = ?2 AND "
      "x.contributor_id = c.id)";
  // Live contributors assigned to this round that have not uploaded yet.
  const auto training = count((std::string("SELECT COUNT(*) FROM assignments a JOIN contributors c "
                                           "ON c.id = a.contributor_id WHERE a.job_id = ?1 AND "
                                           "a.round = ?2 AND c.state != 'left' AND "
                                           "c.last_seen >= ?3 AND ") +
                               no_upload)
                                  .c_str(),
                              true);
  // Live contributors of this job not yet assigned (between rounds), or
  // waiting for their first job (jobs are served one at a time, so this one
  // is theirs), as many as there are slots left: a slot freed by a dead
  // contributor goes to a waiting one in the same round. One already
  // working on the next round (overlap) is not coming.
  const auto unassigned =
      count((std::string("SELECT COUNT(*) FROM contributors c WHERE (c.job_id = ?1 OR "
                         "c.job_id IS NULL) AND "
                         "c.state != 'left' AND c.last_seen >= ?3 AND NOT EXISTS (SELECT 1 FROM "
                         "assignments a WHERE a.job_id = ?1 AND a.round IN (?2, ?2 + 1) AND "
                         "a.contributor_id = c.id) AND ") +
             no_upload)
                .c_str(),
            true);
  const auto used = count(
      "SELECT COUNT(*) FROM assignments a JOIN contributors c ON c.id = a.contributor_id WHERE "
      "a.job_id = ?1 AND a.round = ?2 AND ((c.state != 'left' AND c.last_seen >= ?3) OR EXISTS "
      "(SELECT 1 FROM contributions x WHERE x.job_id = ?1 AND x.round = ?2 AND "
      "x.contributor_id = c.id))",
      true);
  const std::int64_t expected =
      training +
      std::min<std::int64_t>(unassigned, std::max<std::int64_t>(0, s.max_contributors - used));
  return expected == 0;
}

std::unique_ptr<PoolState::CloseWork> PoolState::take_ready(std::int64_t job) {
  auto w = std::make_unique<CloseWork>();
  JobRt& rt = job_rt(job);
  rt.closing = true;
  w->job = job;
  w->rt = &rt;
  w->started = unix_now();
  {
    auto q = db_.prepare("SELECT round FROM jobs WHERE id = ?");
    q.bind(1, job);
    q.step();
    w->round = q.i64(0);
  }
  const std::int64_t r = w->round;
  auto q = db_.prepare("SELECT x.id, x.contributor_id, x.tokens, x.norm, x.train_loss, x.file, "
                       "x.slot, c.rating_alpha, c.rating_beta FROM contributions x JOIN "
                       "contributors c ON c.id = x.contributor_id WHERE x.job_id = ? AND "
                       "x.round = ? AND x.status = 'pending' ORDER BY x.id");
  q.bind_all(job, r);
  while (q.step()) {
    CloseWork::Row row;
    row.id = q.i64(0), row.cid = q.i64(1), row.tokens = q.i64(2), row.norm = q.f64(3);
    row.loss = q.opt_f64(4), row.file = q.text(5);
    row.slot = q.is_null(6) ? -1 : q.i64(6);
    row.rating = {q.f64(7), q.f64(8)};
    w->rows.push_back(std::move(row));
  }
  auto m = db_.prepare("SELECT median_norm FROM rounds WHERE job_id = ? AND round < ? AND "
                       "median_norm IS NOT NULL ORDER BY round DESC LIMIT 1");
  m.bind_all(job, r);
  if (m.step()) w->prev_median = m.f64(0);
  w->base_model = model_path(job, rt.spec.base_round(r));
  w->model = model_path(job, r), w->next_model = model_path(job, r + 1);
  w->momentum = momentum_path(job, r), w->next_momentum = momentum_path(job, r + 1);
  w->residual = round_path(job, "residual", r);
  w->next_residual = round_path(job, "residual", r + 1);
  w->update = round_path(job, "update", r);
  w->model_sum = model_checksum(job, r).value_or(0);
  return w;
}

// Runs without the state lock: touches only `w`, the files it names and the
// job's scorer, replayers and evaluation engine (only the closer uses them).
void PoolState::compute_close(CloseWork& w) {
  JobRt& rt = *w.rt;
  const JobSpec& s = rt.spec;
  for (auto& row : w.rows) {
    try {
      row.g = decode(read_file(row.file), rt.n).values;
    } catch (const std::exception& e) {
      row.reason = std::string("stored upload unreadable: ") + e.what();
      row.failures = 1;
    }
  }
  // Norms: bounded above and below by the round's reference.
  std::vector<double> norms;
  std::vector<CloseWork::Row*> ok;
  for (auto& row : w.rows)
    if (row.reason.empty()) norms.push_back(row.norm), ok.push_back(&row);
  const NormReference ref = norm_reference(norms, w.prev_median);
  const auto verdicts =
      judge_norms(norms, w.prev_median, {s.norm_factor, s.max_norm, s.min_norm_factor});
  for (std::size_t i = 0; i < ok.size(); ++i)
    if (!verdicts[i].empty()) ok[i]->reason = verdicts[i], ok[i]->failures = 1;

  std::vector<float> params = load_model(w.model).params;
  // What the uploads started from: scoring, replays and the loss check
  // judge them there; the outer step moves `params`.
  const std::vector<float> base_copy =
      w.base_model == w.model ? std::vector<float>() : load_model(w.base_model).params;
  const std::vector<float>& base = w.base_model == w.model ? params : base_copy;
  std::vector<float> mom(rt.n, 0.0f);
  if (s.outer_momentum > 0 && fs::exists(w.momentum)) mom = load_model(w.momentum).params;

  // Scoring: each upload alone, on its own rows and on rows it was not given.
  const std::uint64_t batch_position = std::uint64_t(w.round) * s.inner_steps * s.grad_accum;
  const double t_score = unix_now();
  double median_gain = 0; // the round's median own-row gain (replay_suspicious)
  if (s.score_batches > 0) {
    if (!rt.scorer) rt.scorer = std::make_unique<Scorer>(s, rt.cfg);
    std::vector<ScoreResult> scored;
    for (auto& row : w.rows) {
      if (!row.reason.empty() || row.slot < 0) continue;
      row.score = rt.scorer->score(base, row.g, {row.slot, s.max_contributors, batch_position});
      scored.push_back(*row.score);
    }
    const double noise = score_noise(scored);
    std::vector<double> gains, diffs;
    for (const auto& x : scored) {
      gains.push_back(x.improvement_assigned());
      diffs.push_back(x.improvement_assigned() - x.improvement_other());
    }
    median_gain = gains.size() >= 3 ? lower_median(gains) : 0.0;
    const double median_diff = diffs.size() >= 3 ? lower_median(diffs) : 0.0;
    for (auto& row : w.rows)
      if (row.reason.empty() && row.score)
        row.score_reason =
            score_verdict(*row.score, noise, median_gain, !s.error_feedback, median_diff);
  }
  w.score_s = unix_now() - t_score;

  // Replays: drawn, or the upload looks suspicious, or scoring found against it.
  const double t_replay = unix_now();
  std::vector<std::pair<CloseWork::Row*, double>> scales; // error feedback: size vs re-run
  for (auto& row : w.rows) {
    if (!row.reason.empty() || row.slot < 0) continue;
    if (row.score_reason.empty() &&
        !replay_drawn(w.job, w.round, row.cid, s.replay_prob, rt.replay_secret) &&
        !replay_suspicious(row.rating.mean(), row.norm, ref.value,
                           row.score ? &*row.score : nullptr, median_gain))
      continue;
    if (!rt.replayer || rt.replayer_slot != row.slot) {
      rt.replayer.reset();
      rt.replayer = std::make_unique<InnerTrainer>(inner_train_options(
          train_settings(s), row.slot, s.max_contributors, w.model, s.train_data, "cpu", 0));
      rt.replayer_slot = row.slot;
    }
    const InnerResult res =
        rt.replayer->run(base, batch_position, w.round * s.inner_steps, s.inner_steps);
    std::vector<float> g(rt.n);
    for (std::size_t i = 0; i < rt.n; ++i) g[i] = base[i] - res.local[i];
    ++w.replays;
    // With error feedback an upload also carries what earlier rounds
    // dropped: it is judged by its direction where it keeps values
    // (replay_diff = 1 - that cosine); otherwise element for element.
    const bool feedback = s.error_feedback;
    row.replay_diff = feedback ? 1.0 - support_cosine(row.g, g) : relative_difference(row.g, g);
    const double tolerance = feedback ? 1.0 - s.replay_min_cosine : s.replay_tolerance;
    if (feedback) scales.emplace_back(&row, support_norm_ratio(row.g, g));
    if (!(*row.replay_diff <= tolerance)) {
      char b[200];
      if (feedback)
        std::snprintf(b, sizeof(b),
                      "replay mismatch: points away from the coordinator's re-run (cosine %.3g "
                      "where it keeps values; at least %.3g)",
                      1.0 - *row.replay_diff, s.replay_min_cosine);
      else
        std::snprintf(b, sizeof(b),
                      "replay mismatch: differs from the coordinator's re-run by %.3g (relative "
                      "L2; tolerance %.3g)",
                      *row.replay_diff, s.replay_tolerance);
      row.reason = b;
      if (!row.score_reason.empty()) row.reason += "; " + row.score_reason;
      row.failures = Rating::kReplayFailures;
    }
  }
  // With error feedback the size is judged against the round's other
  // replays (the carried residual grows alike for honest contributors): an
  // upload scaled up or down (more or fewer steps, another learning rate)
  // stands out.
  if (scales.size() >= 3) {
    std::vector<double> v;
    for (const auto& [row, k] : scales) v.push_back(k);
    const double med = lower_median(v);
    for (auto& [row, k] : scales)
      if (row->reason.empty() && med > 0 && !(k >= 0.5 * med && k <= 2 * med)) {
        char b[200];
        std::snprintf(b, sizeof(b),
                      "replay mismatch: %.3gx the size of its re-run where it keeps values, the "
                      "round's replays %.3gx (at most 2x apart)",
                      k, med);
        row->reason = b;
        row->failures = Rating::kReplayFailures;
      }
  }
  w.replay_s = unix_now() - t_replay;

  if (s.loss_check && !s.val_files.empty()) {
    const float base_loss = evaluate(rt, base);
    std::vector<float> local(rt.n);
    for (auto& row : w.rows) {
      if (!row.reason.empty()) continue;
      for (std::size_t i = 0; i < rt.n; ++i) local[i] = base[i] - row.g[i];
      const float l = evaluate(rt, local);
      if (!(l <= base_loss + s.loss_tolerance * std::fabs(base_loss))) {
        char b[160];
        std::snprintf(b, sizeof(b), "held-out loss %.4f worse than the global model's %.4f", l,
                      base_loss);
        row.reason = b;
        row.failures = 1;
      }
    }
  }

  // The outer average: accepted uploads clipped to the reference norm,
  // weighted by tokens x rating (0 while benched).
  std::vector<std::span<const float>> grads;
  std::vector<double> weights, acc_norms;
  double loss_sum = 0, loss_w = 0;
  for (auto& row : w.rows) {
    if (!row.reason.empty()) continue;
    acc_norms.push_back(row.norm);
    const double rating = row.rating.mean();
    row.benched = rating < s.bench_rating;
    if (row.benched) continue;
    if (ref.value > 0 && row.norm > ref.value) {
      const float k = float(ref.value / row.norm);
      for (auto& v : row.g) v *= k;
    }
    row.weight = double(std::max<std::int64_t>(row.tokens, 1)) * rating;
    grads.emplace_back(row.g);
    weights.push_back(row.weight);
    w.tokens += row.tokens;
    if (row.loss) loss_sum += row.weight * *row.loss, loss_w += row.weight;
  }
  std::vector<float> delta(rt.n, 0.0f);
  if (!grads.empty()) {
    const std::vector<float> avg = weighted_average(grads, weights);
    delta = outer_update(mom, avg, {s.outer_lr, s.outer_momentum});
    w.update_norm = l2_norm(avg);
    if (loss_w > 0) w.train_loss = loss_sum / loss_w;
  }
  // The update contributors download, compressed like the uploads; what a
  // lossy codec drops is carried into the next round's update (error
  // feedback), and the global model moves by exactly the decoded update, so
  // a contributor applying it holds the same bits.
  const CodecParams& codec = s.codec;
  const UploadOrigin origin{w.job, w.round, w.model_sum};
  std::vector<float> applied;
  std::string update;
  const bool feedback = codec.codec != Codec::kNone;
  std::vector<float> residual;
  if (feedback) {
    residual.assign(rt.n, 0.0f);
    if (fs::exists(w.residual)) residual = load_model(w.residual).params;
    update = encode_with_feedback(delta, residual, origin, codec, &applied);
  } else {
    update = encode(delta, origin, codec);
    applied = decode(update, rt.n).values;
  }
  for (std::size_t i = 0; i < rt.n; ++i) params[i] -= applied[i];
  w.update_bytes = update.size();
  if (!acc_norms.empty()) w.median_norm = lower_median(acc_norms);
  // Weights as shares of the round's total (the ledger's `weight`).
  double total = 0;
  for (double x : weights) total += x;
  for (auto& row : w.rows) row.weight = total > 0 ? row.weight / total : 0.0;
  // The new global model (and momentum) reach the disk before the round is
  // committed as closed; a crash in between re-closes the same round.
  write_atomic(w.update, [&](const ByteSink& out) { out(update.data(), update.size()); });
  save_model(w.next_model, rt.cfg, params, 3);
  w.next_checksum = params_checksum(params);
  if (s.outer_momentum > 0) save_model(w.next_momentum, rt.cfg, mom, 3);
  if (feedback) save_model(w.next_residual, rt.cfg, residual, 3);
  const float v = evaluate(rt, params);
  if (std::isfinite(v)) w.val = v;
}

void PoolState::commit_close(CloseWork& w) {
  JobRt& rt = *w.rt;
  rt.closing = false;
  const JobSpec& s = rt.spec;
  const std::int64_t job = w.job, r = w.round;
  const double now = unix_now();
  Tx tx(db_);
  for (const auto& row : w.rows) {
    const Rating next =
        row.rating.updated(row.reason.empty() ? 1.0 : 0.0, row.reason.empty() ? 0 : row.failures);
    std::string reason = row.reason;
    if (reason.empty() && row.benched) {
      char b[120];
      std::snprintf(b, sizeof(b), "benched: rating %.3f below %.3f (weight 0)", row.rating.mean(),
                    s.bench_rating);
      reason = b;
    }
    db_.prepare("UPDATE contributions SET status = ?, reason = ?, weight = ?, score_assigned = ?, "
                "score_other = ?, replay_diff = ?, rating = ? WHERE id = ?")
        .bind_all(
            std::string(row.reason.empty() ? "accepted" : "rejected"), reason, row.weight,
            row.score ? std::optional<double>(row.score->improvement_assigned()) : std::nullopt,
            row.score ? std::optional<double>(row.score->improvement_other()) : std::nullopt,
            row.replay_diff && std::isfinite(*row.replay_diff) ? row.replay_diff : std::nullopt,
            next.mean(), row.id)
        .run();
    db_.prepare("UPDATE contributors SET rating_alpha = ?, rating_beta = ?, benched = ? WHERE "
                "id = ?")
        .bind_all(next.alpha, next.beta, std::int64_t(next.mean() < s.bench_rating), row.cid)
        .run();
  }
  // Uploads that arrived while the round was being computed.
  std::vector<std::string> late;
  {
    auto q = db_.prepare("SELECT file FROM contributions WHERE job_id = ? AND round = ? AND "
                         "status = 'pending' AND file IS NOT NULL");
    q.bind_all(job, r);
    while (q.step()) late.push_back(q.text(0));
  }
  db_.prepare("UPDATE contributions SET status = 'rejected', reason = 'stale: arrived while the "
              "round was closing', weight = 0 WHERE job_id = ? AND round = ? AND status = "
              "'pending'")
      .bind_all(job, r)
      .run();
  std::int64_t n_acc = 0, n_rej = 0;
  {
    auto q = db_.prepare("SELECT SUM(status = 'accepted'), SUM(status = 'rejected') FROM "
                         "contributions WHERE job_id = ? AND round = ?");
    q.bind_all(job, r);
    if (q.step()) n_acc = q.i64(0), n_rej = q.i64(1);
  }
  db_.prepare("UPDATE rounds SET status = 'closed', closed = ?, accepted = ?, rejected = ?, "
              "tokens = ?, train_loss = ?, val_loss = ?, median_norm = ?, update_norm = ?, "
              "score_s = ?, replay_s = ?, replays = ?, update_bytes = ? WHERE job_id = ? AND "
              "round = ?")
      .bind_all(now, n_acc, n_rej, w.tokens, w.train_loss, w.val, w.median_norm, w.update_norm,
                w.score_s, w.replay_s, w.replays, std::int64_t(w.update_bytes), job, r)
      .run();
  const bool done = r + 1 >= s.rounds;
  if (done) {
    db_.prepare("UPDATE jobs SET round = ?, status = 'done', finished = ? WHERE id = ? AND "
                "status = 'running'")
        .bind_all(r + 1, now, job)
        .run();
  } else {
    // (Under overlap the next round may be open already: its first
    // assignment opened it.)
    db_.prepare("INSERT OR IGNORE INTO rounds(job_id, round, status, opened, model) VALUES(?, ?, "
                "'open', ?, ?)")
        .bind_all(job, r + 1, now, w.next_model)
        .run();
    db_.prepare("UPDATE jobs SET round = ? WHERE id = ?").bind_all(r + 1, job).run();
  }
  db_.prepare("DELETE FROM assignments WHERE job_id = ? AND round <= ?").bind_all(job, r).run();
  tx.commit();
  // The next round's model is the file just written: no reread to check uploads.
  remember_checksum(rt.model_sums, r + 1, w.next_checksum);

  for (const auto& row : w.rows) {
    std::error_code ec;
    fs::remove(row.file, ec);
  }
  for (const auto& f : late) {
    std::error_code ec;
    fs::remove(f, ec);
  }
  prune_snapshots(job, r + 1, s.keep_snapshots);
  if (!quiet_) {
    char b[320];
    std::snprintf(b, sizeof(b),
                  "pool: job %lld round %lld closed: %lld accepted, %lld rejected, %lld tokens, "
                  "val loss %.4f (%.0f ms; scoring %.0f ms, %lld replays %.0f ms)%s",
                  static_cast<long long>(job), static_cast<long long>(r),
                  static_cast<long long>(n_acc), static_cast<long long>(n_rej),
                  static_cast<long long>(w.tokens), w.val ? *w.val : NAN,
                  (unix_now() - w.started) * 1000, w.score_s * 1000,
                  static_cast<long long>(w.replays), w.replay_s * 1000, done ? " - job done" : "");
    std::cout << b << std::endl;
  }
}

void PoolState::prune_snapshots(std::int64_t job, std::int64_t newest, int keep) {
  std::error_code ec;
  if (newest - keep >= 1) fs::remove(model_path(job, newest - keep), ec);
  if (newest >= 1) fs::remove(momentum_path(job, newest - 1), ec);
  if (newest >= 1) fs::remove(round_path(job, "residual", newest - 1), ec);
  // Updates are small: contributors up to kKeepUpdates rounds behind catch
  // up through them instead of downloading the model.
  if (newest - 1 - kKeepUpdates >= 0)
    fs::remove(round_path(job, "update", newest - 1 - kKeepUpdates), ec);
}

// ---- downloads --------------------------------------------------------------

std::string PoolState::served_file(std::int64_t job, const char* kind, std::int64_t round,
                                   std::int64_t past_current) {
  std::lock_guard lk(mu_);
  job_rt(job);
  const std::string p = round_path(job, kind, round);
  auto q = db_.prepare("SELECT round FROM jobs WHERE id = ?");
  q.bind(1, job);
  if (!q.step() || round < 0 || round > q.i64(0) - past_current || !fs::exists(p))
    throw Refused(404, std::string("no ") + kind + " for job " + std::to_string(job) + " round " +
                           std::to_string(round));
  return p;
}

std::string PoolState::model_file(std::int64_t job, std::int64_t round) {
  return served_file(job, "model", round, 0);
}

std::string PoolState::update_file(std::int64_t job, std::int64_t round) {
  return served_file(job, "update", round, 1);
}

void PoolState::count_download(const TokenInfo& who, std::int64_t cid, std::uint64_t bytes) {
  std::lock_guard lk(mu_);
  check_owner(who, cid);
  db_.prepare("UPDATE contributors SET bytes_down_pending = bytes_down_pending + ? WHERE id = ?")
      .bind_all(std::int64_t(std::min<std::uint64_t>(bytes, INT64_MAX)), cid)
      .run();
}

std::string PoolState::shard_file(std::int64_t job, std::size_t index) {
  std::string path;
  JobSpec::Shard want;
  JobRt::ShardSeen seen;
  {
    std::lock_guard lk(mu_);
    const JobRt& rt = job_rt(job);
    if (index >= rt.spec.train_files.size())
      throw Refused(404, "no shard " + std::to_string(index));
    path = rt.spec.train_files[index];
    want = rt.spec.train_shards[index];
    seen = rt.shard_seen[index];
  }
  const std::string what = "job " + std::to_string(job) + " shard " + std::to_string(index);
  std::error_code ec1, ec2;
  const auto size = fs::file_size(path, ec1);
  const auto mtime = fs::last_write_time(path, ec2);
  if (ec1 || ec2) {
    std::cerr << "pool: " << what << " (" << path << ") cannot be read: refusing to serve it"
              << std::endl;
    throw Refused(410, what + " is gone from the coordinator");
  }
  if (seen.ok && seen.size == size && seen.mtime == mtime) return path;
  // First request in this process, or the file changed: hash it (without
  // the lock). Different bytes than at submission are never served.
  std::uint64_t h = 0;
  if (size == want.bytes) {
    try {
      h = xxh64_file(path);
    } catch (const InputError&) {
      throw Refused(410, what + " is gone from the coordinator");
    }
  }
  if (size != want.bytes || h != want.hash) {
    std::cerr << "pool: " << what << " (" << path
              << ") changed on disk since the job was submitted (" << size << " bytes, xxh64 "
              << xxh64_hex(h) << "; submitted " << want.bytes << " bytes, xxh64 "
              << xxh64_hex(want.hash) << "): refusing to serve it" << std::endl;
    throw Refused(409, what + " changed on the coordinator since the job was submitted");
  }
  std::lock_guard lk(mu_);
  job_rt(job).shard_seen[index] = {size, mtime, true};
  return path;
}

ModelConfig PoolState::job_config(std::int64_t job) {
  std::lock_guard lk(mu_);
  return job_rt(job).cfg;
}

std::size_t PoolState::param_count(std::int64_t job) {
  std::lock_guard lk(mu_);
  return job_rt(job).n;
}

// ---- reports ----------------------------------------------------------------

json PoolState::status_json() {
  std::lock_guard lk(mu_);
  const double now = unix_now();
  auto finite = [](const std::optional<double>& v) {
    return v && std::isfinite(*v) ? v : std::nullopt;
  };
  StatusResponse out;
  out.time = now;
  out.heartbeat_timeout_s = hb_timeout_;
  out.job_order = "fifo: running jobs are served one at a time, oldest first";
  std::int64_t queued = 0; // 0 = the running job being served
  auto jq = db_.prepare("SELECT id, name, status, round, param_count, init_val_loss, created, "
                        "finished FROM jobs ORDER BY id");
  while (jq.step()) {
    const std::int64_t id = jq.i64(0);
    const JobSpec& s = job_rt(id).spec;
    JobStatus j;
    j.id = id, j.name = jq.text(1), j.status = jq.text(2), j.round = jq.i64(3);
    j.rounds = s.rounds, j.param_count = jq.i64(4), j.init_val_loss = finite(jq.opt_f64(5));
    j.created = jq.f64(6), j.finished = finite(jq.opt_f64(7));
    j.model = s.shape.describe(), j.inner_steps = s.inner_steps;
    j.min_contributors = s.min_contributors, j.max_contributors = s.max_contributors;
    j.outer_lr = s.outer_lr, j.outer_momentum = s.outer_momentum;
    j.compression = codec_name(s.codec.codec), j.tokens_per_round = s.tokens_per_round();
    auto rq = db_.prepare("SELECT round, status, opened, closed, accepted, rejected, tokens, "
                          "train_loss, val_loss, median_norm, update_norm, update_bytes FROM "
                          "rounds WHERE job_id = ? ORDER BY round");
    rq.bind(1, id);
    while (rq.step())
      j.history.push_back(
          {rq.i64(0), rq.text(1), rq.f64(2), finite(rq.opt_f64(3)), rq.i64(4), rq.i64(5), rq.i64(6),
           finite(rq.opt_f64(7)), finite(rq.opt_f64(8)), finite(rq.opt_f64(9)),
           finite(rq.opt_f64(10)),
           rq.is_null(11) ? std::nullopt : std::optional<std::int64_t>(rq.i64(11))});
    auto pq = db_.prepare("SELECT COUNT(*) FROM contributions WHERE job_id = ? AND round = ?");
    pq.bind_all(id, j.round);
    pq.step();
    j.uploads_this_round = pq.i64(0);
    auto hq = db_.prepare("SELECT seq, hash FROM contributions WHERE job_id = ? AND hash IS NOT "
                          "NULL ORDER BY seq DESC LIMIT 1");
    hq.bind(1, id);
    if (hq.step()) j.ledger_head = LedgerHead{hq.i64(0), hq.text(1)};
    if (j.status == "running") j.queue_position = queued++;
    out.jobs.push_back(std::move(j));
  }
  auto cq = db_.prepare(
      "SELECT c.id, c.name, c.hardware, c.state, c.joined, c.last_seen, c.job_id, c.round, "
      "c.slot, (SELECT COUNT(*) FROM contributions x WHERE x.contributor_id = c.id AND "
      "x.status = 'accepted'), (SELECT COUNT(*) FROM contributions x WHERE x.contributor_id = "
      "c.id AND x.status = 'rejected'), (SELECT COALESCE(SUM(tokens), 0) FROM contributions x "
      "WHERE x.contributor_id = c.id AND x.status = 'accepted'), (SELECT COALESCE(SUM(compute_s), "
      "0) FROM contributions x WHERE x.contributor_id = c.id), (SELECT "
      "COALESCE(SUM(since_assigned_s), 0) FROM contributions x WHERE x.contributor_id = c.id), "
      "(SELECT COALESCE(SUM(bytes), 0) FROM contributions x WHERE x.contributor_id = c.id), "
      "c.rating_alpha, c.rating_beta, c.benched, (SELECT COALESCE(SUM(bytes_down), 0) FROM "
      "contributions x WHERE x.contributor_id = c.id), (SELECT COALESCE(SUM(wait_s), 0) FROM "
      "contributions x WHERE x.contributor_id = c.id) FROM contributors c ORDER BY c.id");
  auto opt_i64 = [&](int col) {
    return cq.is_null(col) ? std::nullopt : std::optional<std::int64_t>(cq.i64(col));
  };
  while (cq.step()) {
    ContributorStatus c;
    c.id = cq.i64(0), c.name = cq.text(1), c.state = cq.text(3);
    if (c.state != "left" && cq.f64(5) < now - hb_timeout_) c.state = "lost";
    // Stored hardware was validated on join; anything else (an older
    // database) shows as empty.
    try {
      c.hardware = json::parse(cq.text(2)).get<Hardware>();
    } catch (const std::exception&) {
    }
    c.joined = cq.f64(4), c.last_seen_s = now - cq.f64(5);
    c.job = opt_i64(6), c.round = opt_i64(7), c.slot = opt_i64(8);
    c.accepted = cq.i64(9), c.rejected = cq.i64(10), c.tokens = cq.i64(11);
    c.compute_s = cq.f64(12), c.measured_s = cq.f64(13), c.bytes_received = cq.i64(14);
    c.rating = Rating{cq.f64(15), cq.f64(16)}.mean(), c.benched = cq.i64(17) != 0;
    c.bytes_down = cq.i64(18), c.wait_s = cq.f64(19);
    out.contributors.push_back(std::move(c));
  }
  return out;
}

namespace {
// One query and one row builder for the export and for sealing, so a sealed
// hash covers exactly what the export shows.
const char* kLedgerSql =
    "SELECT x.id, x.job_id, x.round, x.contributor_id, c.name, x.tokens, x.compute_s, "
    "x.train_loss, x.bytes, x.raw_bytes, x.norm, x.status, x.reason, x.created, x.receive_s, "
    "x.since_assigned_s, x.seq, x.hash, x.weight, x.score_assigned, x.score_other, "
    "x.replay_diff, x.rating, x.bytes_down, x.wait_s FROM contributions x JOIN contributors c ON "
    "c.id = x.contributor_id";
json ledger_row(const Stmt& q) {
  json r = {{"id", q.i64(0)},
            {"job", q.i64(1)},
            {"round", q.i64(2)},
            {"contributor_id", q.i64(3)},
            {"contributor", q.text(4)},
            {"tokens", q.i64(5)},
            {"compute_s", q.f64(6)},
            {"train_loss", opt_num(q.opt_f64(7))},
            {"bytes", q.i64(8)},
            {"raw_bytes", q.i64(9)},
            {"norm", opt_num(q.opt_f64(10))},
            {"status", q.text(11)},
            {"reason", q.text(12)},
            {"time", q.f64(13)},
            {"receive_s", opt_num(q.opt_f64(14))},
            {"since_assigned_s", opt_num(q.opt_f64(15))},
            {"seq", q.is_null(16) ? json(nullptr) : json(q.i64(16))}};
  if (!q.is_null(17)) r["hash"] = q.text(17);
  // Fields added with scoring: shown when set, so rows sealed before them
  // keep their hashes.
  const char* scored[] = {"weight", "score_assigned", "score_other", "replay_diff", "rating"};
  for (int i = 0; i < 5; ++i)
    if (!q.is_null(18 + i)) r[scored[i]] = opt_num(q.opt_f64(18 + i));
  // Traffic and waiting (added later, shown when set likewise): bytes_up is
  // the upload's size (`bytes`), bytes_down what was served to the
  // contributor since its previous upload.
  if (!q.is_null(23)) r["bytes_up"] = q.i64(8), r["bytes_down"] = q.i64(23);
  if (!q.is_null(24)) r["wait_s"] = opt_num(q.opt_f64(24));
  return r;
}
} // namespace

void PoolState::seal_ledger() {
  std::vector<json> todo;
  {
    auto q = db_.prepare(std::string(kLedgerSql) +
                         " WHERE x.hash IS NULL AND x.status != 'pending' ORDER BY x.id");
    while (q.step()) todo.push_back(ledger_row(q));
  }
  if (todo.empty()) return;
  Tx tx(db_);
  for (json& row : todo) {
    std::int64_t seq = 0;
    std::string prev;
    auto h = db_.prepare("SELECT seq, hash FROM contributions WHERE job_id = ? AND hash IS NOT "
                         "NULL ORDER BY seq DESC LIMIT 1");
    h.bind(1, row["job"].get<std::int64_t>());
    if (h.step()) seq = h.i64(0), prev = h.text(1);
    row["seq"] = seq + 1;
    db_.prepare("UPDATE contributions SET seq = ?, hash = ? WHERE id = ?")
        .bind_all(seq + 1, ledger_hash(prev, row), row["id"].get<std::int64_t>())
        .run();
  }
  tx.commit();
}

json PoolState::ledger_json(std::optional<std::int64_t> job) {
  std::lock_guard lk(mu_);
  seal_ledger();
  json out = json::array();
  auto q = db_.prepare(std::string(kLedgerSql) +
                       " WHERE (?1 IS NULL OR x.job_id = ?1) ORDER BY x.hash IS NULL, x.job_id, "
                       "x.seq, x.id");
  q.bind(1, job);
  while (q.step()) out.push_back(ledger_row(q));
  return out;
}

std::string PoolState::ledger_csv(std::optional<std::int64_t> job) {
  return ledger_to_csv(ledger_json(job));
}

} // namespace myelin::pool
