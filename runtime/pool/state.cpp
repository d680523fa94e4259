#include "runtime/pool/state.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "runtime/data/loader.h"
#include "runtime/io/file_util.h"
#include "runtime/io/model_file.h"
#include "runtime/model/engine.h"
#include "runtime/model/init.h"
#include "runtime/pool/compress.h"
#include "runtime/pool/ledger.h"
#include "runtime/pool/outer_opt.h"
#include "runtime/pool/validate.h"
#include "runtime/util/error.h"
#include "runtime/util/host_memory.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace myelin::pool {

struct PoolState::JobRt {
  JobSpec spec;
  GPT2Config cfg;
  std::size_t n = 0;
  std::unique_ptr<Engine> eval;
  std::unique_ptr<DataLoader> val;
  std::vector<int> in, tg;
};

namespace {
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
std::string PoolState::model_path(std::int64_t job, std::int64_t round) const {
  char b[64];
  std::snprintf(b, sizeof(b), "model_%06lld.bin", static_cast<long long>(round));
  return (fs::path(job_dir(job)) / b).string();
}
std::string PoolState::momentum_path(std::int64_t job, std::int64_t round) const {
  char b[64];
  std::snprintf(b, sizeof(b), "momentum_%06lld.bin", static_cast<long long>(round));
  return (fs::path(job_dir(job)) / b).string();
}

std::optional<TokenInfo> PoolState::authenticate(const std::string& secret) {
  std::lock_guard lk(auth_mu_);
  return find_token(auth_db_, secret);
}

PoolState::JobRt& PoolState::job_rt(std::int64_t job) {
  auto it = jobs_.find(job);
  if (it != jobs_.end()) return *it->second;
  auto st = db_.prepare("SELECT spec, param_count FROM jobs WHERE id = ?");
  st.bind(1, job);
  if (!st.step()) throw Refused(404, "no job " + std::to_string(job));
  auto rt = std::make_unique<JobRt>();
  rt->spec = parse_job(json::parse(st.text(0)));
  rt->cfg = rt->spec.shape;
  rt->n = std::size_t(st.i64(1));
  return *(jobs_[job] = std::move(rt));
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
  std::lock_guard lk(mu_);
  JobSpec s = parse_job(spec_json);
  require(!s.train_data.empty(), "job.train_data", "required (a shard glob on the coordinator)");
  s.train_files = glob_files(s.train_data, "job.train_data");
  s.val_files.clear();
  if (!s.val_data.empty()) s.val_files = glob_files(s.val_data, "job.val_data");
  std::vector<float> params;
  if (!s.init_checkpoint.empty()) {
    ModelFile mf = load_model(s.init_checkpoint);
    s.shape = mf.config;
    params = std::move(mf.params);
    validate_micro_batch(s.shape, s.batch_size, s.seq_len, key_names("job."));
  } else {
    // The coordinator holds the model, its outer momentum and an evaluation
    // engine (parameters, gradients, AdamW moments): about 6 fp32 copies.
    require_host_memory(6 * sizeof(float) * *s.shape.param_count(), "job.model",
                        "the model (" + s.shape.describe() + ")");
    params = gpt2_init(s.shape, s.seed);
  }
  // Every shard must hold at least one global batch of all slices.
  DataLoader probe(s.train_data, "job.train_data", s.batch_size, s.seq_len, 0, s.max_contributors,
                   s.shape.vocab_size, false, 0);
  (void)probe;

  Tx tx(db_);
  db_.prepare("INSERT INTO jobs(name, spec, status, round, param_count, created) "
              "VALUES(?, ?, 'running', 0, ?, ?)")
      .bind_all(s.name, job_to_json(s).dump(), std::int64_t(params.size()), unix_now())
      .run();
  const std::int64_t id = db_.last_insert_id();
  fs::create_directories(fs::path(job_dir(id)) / "pending");
  save_model(model_path(id, 0), s.shape, params, 3);
  jobs_.erase(id);
  auto rt = std::make_unique<JobRt>();
  rt->spec = s;
  rt->cfg = s.shape;
  rt->n = params.size();
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

  auto has_contribution = [&](std::int64_t c) {
    auto q = db_.prepare(
        "SELECT 1 FROM contributions WHERE job_id = ? AND round = ? AND contributor_id = ?");
    q.bind_all(job, round, c);
    return q.step();
  };
  std::int64_t slot = -1;
  {
    auto q = db_.prepare(
        "SELECT slot FROM assignments WHERE job_id = ? AND round = ? AND contributor_id = ?");
    q.bind_all(job, round, cid);
    if (q.step()) slot = q.i64(0);
  }
  if (slot >= 0 && has_contribution(cid))
    return wait(0.05, false, "waiting for round " + std::to_string(round) + " to close");
  if (has_contribution(cid)) return wait(0.05, false, "already contributed to this round");

  Tx tx(db_);
  if (slot < 0) {
    // Slot states in this round: taken (live or uploaded), reclaimable (its
    // contributor is gone and did not upload), or free.
    std::vector<int> state(std::size_t(s.max_contributors), 0); // 0 free, 1 taken, 2 reclaimable
    auto q = db_.prepare(
        "SELECT a.slot, c.state, c.last_seen, EXISTS (SELECT 1 FROM contributions x WHERE "
        "x.job_id = a.job_id AND x.round = a.round AND x.contributor_id = a.contributor_id) "
        "FROM assignments a JOIN contributors c ON c.id = a.contributor_id "
        "WHERE a.job_id = ? AND a.round = ?");
    q.bind_all(job, round);
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
                      std::to_string(round) + " are taken");
    db_.prepare("DELETE FROM assignments WHERE job_id = ? AND round = ? AND slot = ?")
        .bind_all(job, round, slot)
        .run();
    db_.prepare("INSERT INTO assignments(job_id, round, slot, contributor_id, assigned) "
                "VALUES(?, ?, ?, ?, ?)")
        .bind_all(job, round, slot, cid, now)
        .run();
  }
  db_.prepare("UPDATE contributors SET job_id = ?, round = ?, slot = ?, state = 'training' "
              "WHERE id = ?")
      .bind_all(job, round, slot, cid)
      .run();
  tx.commit();

  double opened = now;
  {
    auto q = db_.prepare("SELECT opened FROM rounds WHERE job_id = ? AND round = ?");
    q.bind_all(job, round);
    if (q.step()) opened = q.f64(0);
  }
  Assignment a;
  for (std::size_t i = 0; i < s.train_files.size(); ++i) {
    std::error_code ec;
    const auto sz = fs::file_size(s.train_files[i], ec);
    a.shards.push_back({i, ec ? 0 : std::uint64_t(sz)});
  }
  a.job = job, a.name = s.name, a.round = round, a.rounds = s.rounds;
  a.slot = slot, a.slots = s.max_contributors, a.inner_steps = s.inner_steps;
  a.batch_position = std::uint64_t(round) * s.inner_steps * s.grad_accum;
  a.param_count = rt.n;
  a.compression = codec_name(s.compression);
  a.block_size = std::uint32_t(s.block_size);
  a.deadline_s = std::max(0.0, opened + s.round_deadline_s - now);
  TrainSettings& t = a.train;
  t.batch_size = s.batch_size, t.seq_len = s.seq_len, t.grad_accum = s.grad_accum;
  t.lr = s.inner_lr, t.lr_schedule = s.lr_schedule, t.warmup_steps = s.warmup_steps;
  t.weight_decay = s.weight_decay, t.grad_clip = s.grad_clip, t.beta1 = s.beta1;
  t.beta2 = s.beta2, t.seed = s.seed;
  t.total_steps = std::int64_t(s.rounds) * s.inner_steps;
  WorkResponse w;
  w.assignment = std::move(a);
  return w;
}

// ---- uploads ------------------------------------------------------------------

json PoolState::upload(const TokenInfo& who, const UploadMeta& m, const std::string& body) {
  std::size_t n;
  {
    std::lock_guard lk(mu_);
    check_owner(who, m.contributor);
    n = job_rt(m.job).n;
  }
  check_claims({m.tokens, m.compute_s, m.train_loss});
  Decoded d;
  try {
    d = decode(body, n);
  } catch (const InputError& e) {
    throw Refused(400, e.what());
  }

  std::lock_guard lk(mu_);
  JobRt& rt = job_rt(m.job);
  auto js = db_.prepare("SELECT status, round FROM jobs WHERE id = ?");
  js.bind(1, m.job);
  if (!js.step()) throw Refused(404, "no job " + std::to_string(m.job));
  const std::string status = js.text(0);
  const std::int64_t cur = js.i64(1);
  if (status != "running" && m.round >= cur)
    throw Refused(409, "job " + std::to_string(m.job) + " is " + status);
  if (m.round > cur || m.round < 0)
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
  reason = check_finite(d.values);
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
  Tx tx(db_);
  db_.prepare("INSERT INTO contributions(job_id, round, contributor_id, slot, tokens, compute_s, "
              "train_loss, bytes, raw_bytes, norm, status, reason, file, created, receive_s, "
              "since_assigned_s) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
      .bind_all(m.job, m.round, m.contributor, slot, tokens, m.compute_s,
                m.train_loss && std::isfinite(*m.train_loss) ? m.train_loss
                                                             : std::optional<double>(),
                std::int64_t(body.size()), std::int64_t(4 * n), norm,
                std::string(reason.empty() ? "pending" : "rejected"), reason,
                file.empty() ? std::optional<std::string>() : std::optional<std::string>(file),
                unix_now(), m.receive_s, since_assigned)
      .run();
  db_.prepare("UPDATE contributors SET state = 'waiting', last_seen = ? WHERE id = ?")
      .bind_all(unix_now(), m.contributor)
      .run();
  tx.commit();
  if (!quiet_)
    std::cout << "pool: job " << m.job << " round " << m.round << ": upload from contributor "
              << m.contributor << " (" << body.size() << " bytes, " << codec_name(d.codec) << ") "
              << (reason.empty() ? "pending" : "rejected: " + reason) << std::endl;
  if (m.round == cur) maybe_close(m.job);
  return {{"status", reason.empty() ? "pending" : "rejected"},
          {"reason", reason},
          {"norm", opt_num(norm)},
          {"bytes", body.size()},
          {"raw_bytes", 4 * n}};
}

// ---- rounds -----------------------------------------------------------------

void PoolState::tick() {
  std::lock_guard lk(mu_);
  std::vector<std::int64_t> running;
  auto q = db_.prepare("SELECT id FROM jobs WHERE status = 'running'");
  while (q.step()) running.push_back(q.i64(0));
  for (auto j : running) maybe_close(j);
  seal_ledger();
}

void PoolState::maybe_close(std::int64_t job) {
  auto js = db_.prepare("SELECT status, round FROM jobs WHERE id = ?");
  js.bind(1, job);
  if (!js.step() || js.text(0) != "running") return;
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
    if (valid > 0) return close_round(job, r);
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
    return;
  }
  if (valid < s.min_contributors) return;
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
  // Live contributors of this job not yet assigned (between rounds), as many
  // as there are slots left.
  const auto unassigned = count(
      (std::string("SELECT COUNT(*) FROM contributors c WHERE c.job_id = ?1 AND "
                   "c.state != 'left' AND c.last_seen >= ?3 AND NOT EXISTS (SELECT 1 FROM "
                   "assignments a WHERE a.job_id = ?1 AND a.round = ?2 AND a.contributor_id = "
                   "c.id) AND ") +
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
  if (expected == 0) close_round(job, r);
}

void PoolState::close_round(std::int64_t job, std::int64_t r) {
  const double t0 = unix_now();
  JobRt& rt = job_rt(job);
  const JobSpec& s = rt.spec;
  struct Row {
    std::int64_t id, cid, tokens;
    double norm;
    std::optional<double> loss;
    std::string file, reason;
    std::vector<float> g;
  };
  std::vector<Row> rows;
  {
    auto q = db_.prepare("SELECT id, contributor_id, tokens, norm, train_loss, file FROM "
                         "contributions WHERE job_id = ? AND round = ? AND status = 'pending' "
                         "ORDER BY id");
    q.bind_all(job, r);
    while (q.step())
      rows.push_back({q.i64(0), q.i64(1), q.i64(2), q.f64(3), q.opt_f64(4), q.text(5), {}, {}});
  }
  for (auto& row : rows) {
    try {
      row.g = decode(read_file(row.file), rt.n).values;
    } catch (const std::exception& e) {
      row.reason = std::string("stored upload unreadable: ") + e.what();
    }
  }
  double prev_median = 0;
  {
    auto q = db_.prepare("SELECT median_norm FROM rounds WHERE job_id = ? AND round < ? AND "
                         "median_norm IS NOT NULL ORDER BY round DESC LIMIT 1");
    q.bind_all(job, r);
    if (q.step()) prev_median = q.f64(0);
  }
  {
    std::vector<double> norms;
    std::vector<Row*> ok;
    for (auto& row : rows)
      if (row.reason.empty()) norms.push_back(row.norm), ok.push_back(&row);
    const auto verdicts = judge_norms(norms, prev_median, {s.norm_factor, s.max_norm});
    for (std::size_t i = 0; i < ok.size(); ++i) ok[i]->reason = verdicts[i];
  }

  std::vector<float> params = load_model(model_path(job, r)).params;
  std::vector<float> mom(rt.n, 0.0f);
  if (s.outer_momentum > 0 && fs::exists(momentum_path(job, r)))
    mom = load_model(momentum_path(job, r)).params;

  if (s.loss_check && !s.val_files.empty()) {
    const float base = evaluate(rt, params);
    std::vector<float> local(rt.n);
    for (auto& row : rows) {
      if (!row.reason.empty()) continue;
      for (std::size_t i = 0; i < rt.n; ++i) local[i] = params[i] - row.g[i];
      const float l = evaluate(rt, local);
      if (!(l <= base + s.loss_tolerance * std::fabs(base))) {
        char b[160];
        std::snprintf(b, sizeof(b), "held-out loss %.4f worse than the global model's %.4f", l,
                      base);
        row.reason = b;
      }
    }
  }

  std::vector<std::span<const float>> grads;
  std::vector<double> weights, acc_norms;
  double loss_sum = 0, loss_w = 0;
  std::int64_t tokens = 0;
  for (auto& row : rows) {
    if (!row.reason.empty()) continue;
    const double w = double(std::max<std::int64_t>(row.tokens, 1));
    grads.emplace_back(row.g);
    weights.push_back(w);
    acc_norms.push_back(row.norm);
    tokens += row.tokens;
    if (row.loss) loss_sum += w * *row.loss, loss_w += w;
  }
  std::optional<double> update_norm, median_norm, train_loss;
  if (!grads.empty()) {
    const std::vector<float> avg = weighted_average(grads, weights);
    outer_step(params, mom, avg, {s.outer_lr, s.outer_momentum});
    update_norm = l2_norm(avg);
    median_norm = lower_median(acc_norms);
    if (loss_w > 0) train_loss = loss_sum / loss_w;
  }
  // The new global model (and momentum) reach the disk before the round is
  // committed as closed; a crash in between re-closes the same round.
  save_model(model_path(job, r + 1), rt.cfg, params, 3);
  if (s.outer_momentum > 0) save_model(momentum_path(job, r + 1), rt.cfg, mom, 3);
  const float v = evaluate(rt, params);
  const std::optional<double> val = std::isfinite(v) ? std::optional<double>(v) : std::nullopt;

  const double now = unix_now();
  Tx tx(db_);
  for (const auto& row : rows)
    db_.prepare("UPDATE contributions SET status = ?, reason = ? WHERE id = ?")
        .bind_all(std::string(row.reason.empty() ? "accepted" : "rejected"), row.reason, row.id)
        .run();
  std::int64_t n_acc = 0, n_rej = 0;
  {
    auto q = db_.prepare("SELECT SUM(status = 'accepted'), SUM(status = 'rejected') FROM "
                         "contributions WHERE job_id = ? AND round = ?");
    q.bind_all(job, r);
    if (q.step()) n_acc = q.i64(0), n_rej = q.i64(1);
  }
  db_.prepare("UPDATE rounds SET status = 'closed', closed = ?, accepted = ?, rejected = ?, "
              "tokens = ?, train_loss = ?, val_loss = ?, median_norm = ?, update_norm = ? "
              "WHERE job_id = ? AND round = ?")
      .bind_all(now, n_acc, n_rej, tokens, train_loss, val, median_norm, update_norm, job, r)
      .run();
  const bool done = r + 1 >= s.rounds;
  if (done) {
    db_.prepare("UPDATE jobs SET round = ?, status = 'done', finished = ? WHERE id = ?")
        .bind_all(r + 1, now, job)
        .run();
  } else {
    db_.prepare(
           "INSERT INTO rounds(job_id, round, status, opened, model) VALUES(?, ?, 'open', ?, ?)")
        .bind_all(job, r + 1, now, model_path(job, r + 1))
        .run();
    db_.prepare("UPDATE jobs SET round = ? WHERE id = ?").bind_all(r + 1, job).run();
  }
  db_.prepare("DELETE FROM assignments WHERE job_id = ? AND round <= ?").bind_all(job, r).run();
  tx.commit();

  for (const auto& row : rows) {
    std::error_code ec;
    fs::remove(row.file, ec);
  }
  prune_snapshots(job, r + 1, s.keep_snapshots);
  if (!quiet_) {
    char b[256];
    std::snprintf(b, sizeof(b),
                  "pool: job %lld round %lld closed: %lld accepted, %lld rejected, %lld tokens, "
                  "val loss %.4f (%.0f ms)%s",
                  static_cast<long long>(job), static_cast<long long>(r),
                  static_cast<long long>(n_acc), static_cast<long long>(n_rej),
                  static_cast<long long>(tokens), val ? *val : NAN, (unix_now() - t0) * 1000,
                  done ? " - job done" : "");
    std::cout << b << std::endl;
  }
}

void PoolState::prune_snapshots(std::int64_t job, std::int64_t newest, int keep) {
  std::error_code ec;
  if (newest - keep >= 1) fs::remove(model_path(job, newest - keep), ec);
  if (newest >= 1) fs::remove(momentum_path(job, newest - 1), ec);
}

// ---- downloads --------------------------------------------------------------

std::string PoolState::model_file(std::int64_t job, std::int64_t round) {
  std::lock_guard lk(mu_);
  job_rt(job);
  const std::string p = model_path(job, round);
  auto q = db_.prepare("SELECT round FROM jobs WHERE id = ?");
  q.bind(1, job);
  if (!q.step() || round < 0 || round > q.i64(0) || !fs::exists(p))
    throw Refused(404,
                  "no model for job " + std::to_string(job) + " round " + std::to_string(round));
  return p;
}

std::string PoolState::shard_file(std::int64_t job, std::size_t index) {
  std::lock_guard lk(mu_);
  const auto& files = job_rt(job).spec.train_files;
  if (index >= files.size()) throw Refused(404, "no shard " + std::to_string(index));
  return files[index];
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
    j.compression = codec_name(s.compression), j.tokens_per_round = s.tokens_per_round();
    auto rq = db_.prepare("SELECT round, status, opened, closed, accepted, rejected, tokens, "
                          "train_loss, val_loss, median_norm, update_norm FROM rounds WHERE "
                          "job_id = ? ORDER BY round");
    rq.bind(1, id);
    while (rq.step())
      j.history.push_back({rq.i64(0), rq.text(1), rq.f64(2), finite(rq.opt_f64(3)), rq.i64(4),
                           rq.i64(5), rq.i64(6), finite(rq.opt_f64(7)), finite(rq.opt_f64(8)),
                           finite(rq.opt_f64(9)), finite(rq.opt_f64(10))});
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
      "(SELECT COALESCE(SUM(bytes), 0) FROM contributions x WHERE x.contributor_id = c.id) FROM "
      "contributors c ORDER BY c.id");
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
    "x.since_assigned_s, x.seq, x.hash FROM contributions x JOIN contributors c ON c.id = "
    "x.contributor_id";
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
