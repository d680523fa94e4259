#include "runtime/pool/contributor.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "runtime/data/shard.h"
#include "runtime/io/file_util.h"
#include "runtime/io/model_file.h"
#include "runtime/io/xxh64.h"
#include "runtime/pool/compress.h"
#include "runtime/pool/hardware.h"
#include "runtime/pool/inner_train.h"
#include "runtime/pool/job.h"
#include "runtime/pool/protocol.h"
#include "runtime/pool/residual.h"
#include "runtime/pool/shard_cache.h"
#include "runtime/train/options_file.h"
#include "runtime/train/trainer.h"
#include "runtime/util/error.h"
#include "runtime/util/threads.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace myelin::pool {
namespace {

std::atomic<int> g_stop{0};
std::atomic<pid_t> g_child{0}; // process group of a running mpirun child
extern "C" void on_stop_signal(int s) {
  if (g_stop) { // second signal: leave at once, taking the child down too
    const pid_t c = g_child;
    if (c > 0) kill(-c, SIGKILL);
    std::_Exit(128 + s);
  }
  g_stop = s;
}

struct Stopped {};

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Sleeps up to `s` seconds, waking early on a stop signal.
void nap(double s) {
  const double end = now_s() + s;
  while (!g_stop && now_s() < end) std::this_thread::sleep_for(std::chrono::milliseconds(20));
}

std::string hostname() {
  char b[256] = {0};
  if (gethostname(b, sizeof(b) - 1) != 0) return "contributor";
  return b;
}

// Stats for the summary and --stats-out.
struct Stats {
  int rounds = 0, accepted_pending = 0, rejected = 0;
  std::uint64_t bytes_sent = 0, raw_bytes = 0, bytes_downloaded = 0;
  int model_downloads = 0, model_skips = 0;
  // Global model fetches: whole, or the outer updates since the held older
  // round; model_bytes is what they cost, model_bytes_full what whole
  // downloads would have cost.
  int update_downloads = 0, update_fallbacks = 0;
  std::uint64_t model_bytes = 0, model_bytes_full = 0;
  double compute_s = 0, wait_s = 0, started = now_s();
};

class Agent {
 public:
  Agent(const ContributeOptions& o, int ranks, std::string mpirun)
      : o_(o), cli_(o.client), ranks_(ranks), mpirun_(std::move(mpirun)) {}

  int run();

 private:
  template <typename F> auto retry(F f, const char* what) -> decltype(f()) {
    double first_fail = 0;
    for (;;) {
      if (g_stop) throw Stopped{};
      try {
        return f();
      } catch (const PoolError& e) {
        if (e.status() != 0) throw;
        if (first_fail == 0) {
          first_fail = now_s();
          if (!o_.quiet)
            std::cerr << "contribute: " << what << ": coordinator unreachable (" << e.what()
                      << "), retrying" << std::endl;
        }
        if (now_s() - first_fail > o_.retry_s)
          throw std::runtime_error(std::string(what) + ": coordinator unreachable for " +
                                   std::to_string(int(o_.retry_s)) + " s: " + e.what());
        nap(0.5);
      }
    }
  }
  void set_state(const char* s) {
    std::lock_guard lk(state_mu_);
    state_ = s;
  }
  void heartbeat_loop(double interval);
  void one_round(const Assignment& w);
  void ensure_shards(const Assignment& w, const std::string& dir);
  void fetch_model(const Assignment& w, const std::string& dir);
  bool apply_updates(std::int64_t job, std::int64_t round, std::uint64_t want);
  std::unique_ptr<ShardCache> shard_cache_; // created by ensure_shards
  std::optional<std::vector<float>> train_in_child(const Assignment& w, const std::string& dir,
                                                   const std::string& model, double& loss);
  void corrupt(std::vector<float>& g, std::int64_t round) const;
  // The query suffix that makes a download count as this contributor's.
  std::string mine() const { return "&contributor_id=" + std::to_string(cid_); }
  void say(const std::string& s) const {
    if (!o_.quiet) std::cout << "contribute: " << s << std::endl;
  }

  const ContributeOptions& o_;
  PoolClient cli_;
  std::int64_t cid_ = 0;
  std::mutex state_mu_;
  std::string state_ = "idle";
  std::atomic<bool> done_{false};
  Stats st_;
  std::string cache_root_;
  double last_mark_ = now_s(); // when the last upload began (or the agent started)

  // What this agent holds between rounds.
  std::unique_ptr<InnerTrainer> trainer_;
  std::int64_t t_job_ = -1, t_slot_ = -1, t_slots_ = -1;
  std::int64_t model_job_ = -1, model_round_ = -1;
  std::uint64_t model_sum_ = 0; // params_checksum(global_)
  std::vector<float> global_;
  ModelConfig global_cfg_;
  bool truncated_once_ = false;
  // --debug-corrupt replay: this and the previous round's honest uploads.
  std::string last_body_, prev_body_;
  std::int64_t last_round_ = -1;
  ErrorFeedback feedback_; // what earlier uploads dropped (the job's error_feedback)

  // Several ranks: the mpirun child's command.
  int ranks_ = 1;
  std::string mpirun_;
  int child_failures_ = 0;
};

// Runs argv (argv[0] a path) in its own process group and waits; a stop
// signal terminates the whole group (SIGTERM, then SIGKILL after 10 s).
// Returns the wait status, or nullopt when stopped.
std::optional<int> run_child(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const pid_t pid = fork();
  if (pid < 0) throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
  if (pid == 0) {
    setpgid(0, 0);
#ifdef __linux__
    prctl(PR_SET_PDEATHSIG, SIGTERM); // the agent died: mpirun takes its ranks down
#endif
    execv(argv[0], argv.data());
    _exit(127);
  }
  setpgid(pid, pid);
  g_child = pid;
  int status = 0;
  for (;;) {
    const pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    if (r < 0 && errno != EINTR) {
      g_child = 0;
      throw std::runtime_error(std::string("waitpid: ") + std::strerror(errno));
    }
    if (g_stop) {
      kill(-pid, SIGTERM);
      const double end = now_s() + 10;
      while (waitpid(pid, &status, WNOHANG) == 0 && now_s() < end)
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      kill(-pid, SIGKILL); // whatever of the group is left
      waitpid(pid, &status, WNOHANG);
      g_child = 0;
      return std::nullopt;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  g_child = 0;
  kill(-pid, SIGKILL); // stray ranks of a failed job, if any
  return status;
}

std::string describe_status(int st) {
  if (WIFEXITED(st)) return "exit code " + std::to_string(WEXITSTATUS(st));
  if (WIFSIGNALED(st)) return "killed by signal " + std::to_string(WTERMSIG(st));
  return "status " + std::to_string(st);
}

void Agent::heartbeat_loop(double interval) {
  PoolClient hb(o_.client);
  double next = now_s() + interval;
  while (!done_) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    if (now_s() < next) continue;
    next = now_s() + interval;
    std::string s;
    {
      std::lock_guard lk(state_mu_);
      s = state_;
    }
    try {
      hb.post_json("/api/heartbeat", HeartbeatRequest{cid_, s});
    } catch (const std::exception&) {
      // the main loop notices an unreachable coordinator on its own
    }
  }
}

// The job's shards, from the cache shared by all jobs (WORK_DIR/shards,
// content-addressed, hash-verified: shard_cache.h), downloading or resuming
// what is missing; the job folder gets a symbolic link per shard
// (train_00000.bin -> ../../shards/<hash>.bin) for the trainer's glob.
void Agent::ensure_shards(const Assignment& w, const std::string& dir) {
  fs::create_directories(dir);
  if (!shard_cache_)
    shard_cache_ = std::make_unique<ShardCache>(
        (fs::path(cache_root_).parent_path() / "shards").string(), o_.quiet);
  for (const auto& s : w.shards) {
    const std::size_t k = s.index;
    const std::string url = "/api/jobs/" + std::to_string(w.job) + "/shards/" + std::to_string(k) +
                            "?contributor_id=" + std::to_string(cid_);
    const auto got = shard_cache_->fetch(s, [&](const std::string& part) {
      set_state("downloading");
      return std::uint64_t(
          retry([&] { return cli_.download_resume(url, part); }, "shard download"));
    });
    if (got.downloaded > 0) {
      st_.bytes_downloaded += got.downloaded;
      say("downloaded shard " + std::to_string(k) + " (" + std::to_string(got.downloaded) +
          " bytes, xxh64 " + xxh64_hex(s.hash) + " verified)");
    }
    char name[64];
    std::snprintf(name, sizeof(name), "train_%05zu.bin", k);
    const fs::path link = fs::path(dir) / name;
    const fs::path target = fs::relative(got.path, dir);
    std::error_code ec;
    if (fs::is_symlink(link, ec) && fs::read_symlink(link, ec) == target) continue;
    fs::remove(link, ec);
    fs::create_symlink(target, link);
  }
}

// The global model an assignment starts from (round w.base_round, whose
// checksum the assignment names) into global_ and dir/model.bin: nothing to
// do when it is held (in memory, or in the work dir after a restart); the
// outer updates since the held round of this job when there are any (each
// applied exactly as the coordinator did, so the result has the same bits);
// the whole model when that fails or the held model is too old.
void Agent::fetch_model(const Assignment& w, const std::string& dir) {
  const std::int64_t job = w.job, round = w.base_round;
  const std::size_t n = std::size_t(w.param_count);
  const std::string model = (fs::path(dir) / "model.bin").string();
  const std::string round_file = (fs::path(dir) / "model.round").string();
  if (model_job_ != job) { // after a restart or a job change: the work dir's copy
    global_.clear();
    model_job_ = -1, model_round_ = -1;
    std::ifstream rf(round_file);
    long long have = -1;
    if (rf >> have && have >= 0 && have <= round && fs::exists(model)) {
      try {
        ModelFile mf = load_model(model);
        if (mf.params.size() == n) {
          global_ = std::move(mf.params);
          global_cfg_ = mf.config;
          model_job_ = job, model_round_ = have, model_sum_ = params_checksum(global_);
        }
      } catch (const std::exception&) {
      }
    }
  }
  if (model_job_ == job && model_round_ == round && model_sum_ == w.model_checksum) {
    ++st_.model_skips;
    return;
  }
  const std::uint64_t full = 256 * sizeof(std::int32_t) + 4 * std::uint64_t(n);
  st_.model_bytes_full += full;
  set_state("downloading");
  if (model_job_ == job && model_round_ >= 0 && model_round_ < round &&
      round - model_round_ <= kKeepUpdates && global_.size() == n &&
      apply_updates(job, round, w.model_checksum)) {
    // The on-disk copy (a multi-rank child and a restart read it): the round
    // file goes stale first, so a crash in between costs a download at worst.
    std::error_code ec;
    fs::remove(round_file, ec);
    save_model(model, global_cfg_, global_, 3, Durability::kCache); // checked on reload
    std::ofstream(round_file) << round << "\n";
    return;
  }
  for (int attempt = 0;; ++attempt) {
    const auto got = retry(
        [&] {
          return cli_.download("/api/jobs/" + std::to_string(job) +
                                   "/model?round=" + std::to_string(round) + mine(),
                               model);
        },
        "model download");
    st_.bytes_downloaded += got;
    st_.model_bytes += got;
    ++st_.model_downloads;
    ModelFile mf = load_model(model);
    if (params_checksum(mf.params) == w.model_checksum) {
      global_ = std::move(mf.params);
      global_cfg_ = mf.config;
      break;
    }
    if (attempt == 2)
      throw std::runtime_error("the model of round " + std::to_string(round) +
                               " does not match the checksum the coordinator gave, 3 times");
    say("downloaded model does not match its checksum; downloading again");
  }
  std::ofstream(round_file) << round << "\n";
  say("job " + std::to_string(job) + " round " + std::to_string(round) +
      ": downloaded the whole model (" + std::to_string(full) + " bytes)");
  model_job_ = job, model_round_ = round, model_sum_ = w.model_checksum;
}

// Applies the outer updates of rounds model_round_ .. round-1 to a copy of
// global_; on success (every update's origin names the model it is applied
// to, and the result has checksum `want`) keeps the result. False, with
// global_ unchanged, when an update is gone, malformed or does not fit.
bool Agent::apply_updates(std::int64_t job, std::int64_t round, std::uint64_t want) {
  std::vector<float> p = global_;
  std::uint64_t sum = model_sum_, bytes = 0;
  for (std::int64_t r = model_round_; r < round; ++r) {
    std::string body;
    try {
      body = retry(
          [&] {
            return cli_.get_text("/api/jobs/" + std::to_string(job) +
                                 "/update?round=" + std::to_string(r) + mine());
          },
          "update download");
    } catch (const PoolError& e) {
      ++st_.update_fallbacks;
      say("no outer update for round " + std::to_string(r) + " (" + e.what() +
          "); downloading the whole model");
      return false;
    }
    st_.bytes_downloaded += body.size();
    st_.model_bytes += body.size();
    bytes += body.size();
    std::string why;
    try {
      const Decoded d = decode(body, p.size());
      if (d.origin.job != job || d.origin.round != r)
        why = "it is for job " + std::to_string(d.origin.job) + " round " +
              std::to_string(d.origin.round);
      else if (d.origin.model_checksum != sum)
        why = "it applies to another model (checksum mismatch)";
      else
        for (std::size_t i = 0; i < p.size(); ++i) p[i] -= d.values[i];
    } catch (const InputError& e) {
      why = e.what();
    }
    if (!why.empty()) {
      ++st_.update_fallbacks;
      say("outer update of round " + std::to_string(r) + " refused (" + why +
          "); downloading the whole model");
      return false;
    }
    sum = params_checksum(p);
  }
  if (sum != want) {
    ++st_.update_fallbacks;
    say("model after the updates to round " + std::to_string(round) +
        " disagrees with the coordinator's checksum; downloading the whole model");
    return false;
  }
  const std::int64_t from = model_round_;
  global_ = std::move(p);
  model_round_ = round, model_sum_ = sum;
  st_.update_downloads += round - from;
  const double full = 256.0 * sizeof(std::int32_t) + 4.0 * double(global_.size());
  char b[256];
  std::snprintf(b, sizeof(b),
                "job %lld: model of round %lld from round %lld's by %lld outer update(s): %llu "
                "bytes (whole model %.0f, %.1f%% saved)",
                static_cast<long long>(job), static_cast<long long>(round),
                static_cast<long long>(from), static_cast<long long>(round - from),
                static_cast<unsigned long long>(bytes), full, 100.0 * (1.0 - double(bytes) / full));
  say(b);
  return true;
}

std::optional<std::vector<float>> Agent::train_in_child(const Assignment& w, const std::string& dir,
                                                        const std::string& model, double& loss) {
  const auto slot = w.slot, slots = w.slots;
  const int H = int(w.inner_steps);
  const TrainSettings& t = w.train;
  const int B = int(t.batch_size), pp = o_.pp, dp = ranks_ / o_.pp;
  if (B % dp != 0)
    throw InputError("--ranks: the job's batch size " + std::to_string(B) +
                     " does not split over " + std::to_string(dp) +
                     " data-parallel ranks; use a --ranks/--pp whose dp divides it");
  // Each round starts afresh (AdamW state reset, steps counted from the
  // round's first global step), as in process (see inner_train.h).
  const fs::path cdir =
      fs::path(dir) / ("ranks_" + std::to_string(ranks_) + "_pp_" + std::to_string(pp));
  fs::create_directories(cdir);
  const std::string out = (cdir / "local.bin").string(),
                    metrics = (cdir / "metrics.jsonl").string();
  fs::remove(out);
  fs::remove(metrics);
  // The same options as in process (inner_train_options), split over this
  // machine's ranks, handed to the child as one options file.
  TrainOptions to = inner_train_options(
      t, slot, slots, model, (fs::path(dir) / "train_*.bin").string(), o_.device, o_.threads);
  const std::int64_t start = w.round * H;
  to.batch_size = B / dp;
  to.steps =
      int(std::clamp<std::int64_t>(std::max<std::int64_t>(to.steps, start + H), 1, INT32_MAX));
  to.run_steps = H;
  to.dp = dp, to.pp = pp;
  to.data_start_batch = std::int64_t(w.batch_position);
  to.start_step = int(std::clamp<std::int64_t>(start, 0, INT32_MAX));
  to.save_path = out, to.metrics_out = metrics;
  const std::string opts = (cdir / "options.txt").string();
  {
    const std::string text = train_options_file_text(to);
    write_atomic(
        opts, [&](const ByteSink& sink) { sink(text.data(), text.size()); }, Durability::kCache);
  }
  std::vector<std::string> a = {mpirun_, "-np", std::to_string(ranks_)};
  std::istringstream extra(o_.mpirun_args);
  for (std::string x; extra >> x;) a.push_back(x);
  a.insert(a.end(), {fs::read_symlink("/proc/self/exe").string(), "train", "--options-file", opts});
  const auto st = run_child(a);
  if (!st) throw Stopped{};
  if (*st != 0) {
    std::cerr << "contribute: training child (mpirun -np " << ranks_
              << ") failed: " << describe_status(*st) << std::endl;
    return std::nullopt;
  }
  std::vector<float> local;
  try {
    local = load_model(out).params;
  } catch (const std::exception& e) {
    std::cerr << "contribute: training child wrote no model: " << e.what() << std::endl;
    return std::nullopt;
  }
  if (local.size() != global_.size()) {
    std::cerr << "contribute: training child's model has " << local.size()
              << " parameters, expected " << global_.size() << std::endl;
    return std::nullopt;
  }
  std::ifstream mf(metrics);
  double sum = 0;
  int n = 0;
  for (std::string line; std::getline(mf, line);) {
    if (line.empty()) continue;
    try {
      sum += json::parse(line).at("loss").get<double>();
      ++n;
    } catch (const std::exception&) {
    }
  }
  loss = n > 0 ? sum / n : NAN;
  return local;
}

// Adversary modes (--debug-corrupt, for tests) that change the
// pseudo-gradient itself.
void Agent::corrupt(std::vector<float>& g, std::int64_t round) const {
  const std::string& m = o_.debug_corrupt;
  if (m == "nan") g[g.size() / 2] = NAN;
  const float scale = m == "scale100"   ? 100.0f
                      : m == "scale3"   ? 3.0f
                      : m == "signflip" ? -1.0f
                      : m == "zero"     ? 0.0f
                                        : 1.0f;
  if (scale != 1.0f)
    for (auto& v : g) v *= scale;
  if (m == "noise") { // a random direction with the honest update's norm
    double norm = 0, rn = 0;
    for (float v : g) norm += double(v) * v;
    std::mt19937_64 rng(std::uint64_t(round) * 7919 + std::uint64_t(cid_));
    std::normal_distribution<float> nd(0.0f, 1.0f);
    for (auto& v : g) v = nd(rng), rn += double(v) * v;
    const float k = rn > 0 ? float(std::sqrt(norm / rn)) : 0.0f;
    for (auto& v : g) v *= k;
  }
}

void Agent::one_round(const Assignment& w) {
  const auto job = w.job, round = w.round;
  const auto slot = w.slot, slots = w.slots;
  const int H = int(w.inner_steps);
  const TrainSettings& t = w.train;
  const std::string dir = (fs::path(cache_root_) / ("job_" + std::to_string(job))).string();
  ensure_shards(w, dir);

  // The global model (whole, by outer updates, or already held).
  fetch_model(w, dir);
  const std::string model = (fs::path(dir) / "model.bin").string();
  if (global_.size() != w.param_count)
    throw std::runtime_error("global model has " + std::to_string(global_.size()) +
                             " parameters, the job says " + std::to_string(w.param_count));

  // The trainer: rebuilt when the job or the data slice changes (AdamW
  // moments carry over between rounds otherwise, as in DiLoCo).
  const int B = int(t.batch_size), T = int(t.seq_len), accum = int(t.grad_accum);
  std::vector<float> local;
  double loss = 0, compute = 0;
  if (ranks_ > 1) {
    set_state("training");
    const double t0 = now_s();
    auto got = train_in_child(w, dir, model, loss);
    if (!got) {
      set_state("waiting");
      if (++child_failures_ >= 3)
        throw std::runtime_error("the training child failed 3 rounds in a row; giving up");
      say("job " + std::to_string(job) + " round " + std::to_string(round) +
          ": dropped (the training child failed)");
      nap(1.0);
      return;
    }
    child_failures_ = 0;
    local = std::move(*got);
    compute = now_s() - t0;
    st_.compute_s += compute;
  } else {
    // Adversary modes (tests): fewer inner steps, another slice's rows, or
    // its own learning rate (3x the job's).
    const int steps = o_.debug_corrupt == "lazy" ? std::max(1, H / 3) : H;
    const std::int64_t rows_slot =
        o_.debug_corrupt == "otherdata" && slots > 1 ? (slot + 1) % slots : slot;
    if (!trainer_ || t_job_ != job || t_slot_ != rows_slot || t_slots_ != slots) {
      trainer_.reset();
      TrainOptions to =
          inner_train_options(t, rows_slot, slots, model, (fs::path(dir) / "train_*.bin").string(),
                              o_.device, o_.threads);
      if (o_.debug_corrupt == "otherlr") to.lr *= 3;
      trainer_ = std::make_unique<InnerTrainer>(to);
      t_job_ = job, t_slot_ = rows_slot, t_slots_ = slots;
    }
    set_state("training");
    const double t0 = now_s();
    InnerResult res = trainer_->run(global_, w.batch_position, round * H, steps, [&] {
      if (g_stop) throw Stopped{};
      if (o_.debug_step_delay_ms > 0)
        std::this_thread::sleep_for(std::chrono::milliseconds(o_.debug_step_delay_ms));
    });
    loss = res.loss;
    compute = now_s() - t0;
    st_.compute_s += compute;
    local = std::move(res.local);
  }

  std::vector<float> g(local.size());
  for (std::size_t i = 0; i < g.size(); ++i) g[i] = global_[i] - local[i];
  corrupt(g, round);
  const Codec codec = w.codec.codec;
  const UploadOrigin origin{job, round, model_sum_};
  std::vector<float> residual; // error feedback: kept once the coordinator takes the upload
  std::string body;
  if (w.error_feedback) {
    std::string note;
    residual = feedback_.take(dir, job, round, g.size(), note);
    if (!note.empty()) say(note);
    body = encode_with_feedback(g, residual, origin, w.codec);
  } else {
    body = encode(g, origin, w.codec);
  }
  if (o_.debug_corrupt == "replay") { // re-send the previous round's upload
    if (round > last_round_) prev_body_ = std::move(last_body_), last_body_ = body;
    last_round_ = round;
    if (!prev_body_.empty()) body = prev_body_; // (its first round: honest)
  }
  const std::uint64_t tokens = std::uint64_t(H) * B * T * accum;
  // Seconds since the previous upload began (or since joining) not spent
  // computing: waiting for work, downloading, the previous upload.
  const double up_start = now_s();
  const double wait = std::max(0.0, up_start - last_mark_ - compute);
  last_mark_ = up_start;
  st_.wait_s += wait;
  char q[320];
  std::snprintf(q, sizeof(q),
                "/api/jobs/%lld/rounds/%lld/upload?contributor_id=%lld&tokens=%llu&compute_s=%.6f&"
                "wait_s=%.6f&loss=%.9g",
                static_cast<long long>(job), static_cast<long long>(round),
                static_cast<long long>(cid_), static_cast<unsigned long long>(tokens), compute,
                wait, loss);
  set_state("uploading");
  if (o_.debug_corrupt == "truncate" && !truncated_once_) {
    truncated_once_ = true;
    try {
      cli_.post_bytes(q, body.substr(0, body.size() / 2));
      say("truncated upload was ACCEPTED (unexpected)");
    } catch (const PoolError& e) {
      say("truncated upload refused: HTTP " + std::to_string(e.status()) + " (" + e.what() + ")");
    }
  }
  json r;
  try {
    r = retry([&] { return cli_.post_bytes(q, body); }, "upload");
  } catch (const PoolError& e) {
    if (e.status() != 409) throw;
    say(std::string("upload not taken: ") + e.what());
    set_state("waiting");
    return;
  }
  set_state("waiting");
  if (w.error_feedback)
    if (const std::string why = feedback_.keep(dir, job, round + 1, std::move(residual));
        !why.empty())
      say("residual dropped: " + why);
  ++st_.rounds;
  st_.bytes_sent += body.size();
  st_.raw_bytes += 4 * g.size();
  const bool rejected = r["status"] == "rejected";
  if (rejected)
    ++st_.rejected;
  else
    ++st_.accepted_pending;
  char line[512];
  std::snprintf(line, sizeof(line),
                "job %lld round %lld slot %lld/%lld: %d steps, loss %.4f, %.2f s; sent %zu bytes "
                "(%s; fp32 would be %zu, %.1f%% saved) -> %s%s%s",
                static_cast<long long>(job), static_cast<long long>(round),
                static_cast<long long>(slot), static_cast<long long>(slots), H, loss, compute,
                body.size(), codec_name(codec).c_str(), 4 * g.size() + kWireHeaderBytes,
                100.0 * (1.0 - double(body.size()) / double(4 * g.size() + kWireHeaderBytes)),
                r["status"].get<std::string>().c_str(), rejected ? ": " : "",
                rejected ? r["reason"].get<std::string>().c_str() : "");
  say(line);
}

int Agent::run() {
  const std::string name = o_.name.empty() ? hostname() : o_.name;
  Fnv1a h;
  h.add(o_.client.url.data(), o_.client.url.size());
  cache_root_ = (fs::path(o_.work_dir.empty() ? ".myelin-contribute" : o_.work_dir) /
                 (xxh64_hex(h.h) + "_" + name))
                    .string();
  fs::create_directories(cache_root_);
  JoinRequest jr;
  jr.name = name;
  jr.hardware = describe_hardware(o_.device, o_.gpus).get<Hardware>();
  jr.hardware.ranks = ranks_;
  if (ranks_ > 1) {
    jr.hardware.dp = ranks_ / o_.pp;
    jr.hardware.pp = o_.pp;
  }
  JoinResponse j;
  try {
    j = retry([&] { return cli_.post_json("/api/join", jr); }, "join").get<JoinResponse>();
  } catch (const PoolError& e) {
    if (e.status() == 401 || e.status() == 403)
      throw InputError("--token: the pool refused it (" + std::string(e.what()) + ")");
    throw;
  }
  cid_ = j.contributor_id;
  say("joined " + o_.client.url + " as '" + name + "' (contributor " + std::to_string(cid_) + ", " +
      o_.device +
      (ranks_ > 1 ? ", " + std::to_string(ranks_) + " ranks: dp " + std::to_string(ranks_ / o_.pp) +
                        " x pp " + std::to_string(o_.pp) + " via " + mpirun_
                  : std::string()) +
      ")");
  std::thread hb([this, iv = j.heartbeat_s] { heartbeat_loop(iv); });
  int rc = 0;
  bool worked = false;
  try {
    while (!g_stop) {
      set_state("idle");
      const WorkResponse w =
          retry([&] { return cli_.post_json("/api/work", ContributorRequest{cid_}); }, "work")
              .get<WorkResponse>();
      if (!w.assignment) {
        if (w.idle && o_.exit_when_idle && worked) {
          say("no job left; exiting");
          break;
        }
        set_state("waiting");
        nap(w.wait);
        continue;
      }
      worked = true;
      one_round(*w.assignment);
      if (o_.max_rounds > 0 && st_.rounds >= o_.max_rounds) break;
    }
  } catch (const Stopped&) {
  } catch (const std::exception& e) {
    std::cerr << "contribute: error: " << e.what() << std::endl;
    rc = 1;
  }
  done_ = true;
  hb.join();
  if (g_stop) say("signal received: leaving the pool (an unfinished round is dropped)");
  try {
    cli_.post_json("/api/leave", ContributorRequest{cid_});
  } catch (const std::exception&) {
  }
  const double wall = now_s() - st_.started;
  json s = {{"name", name},
            {"contributor_id", cid_},
            {"rounds", st_.rounds},
            {"rejected", st_.rejected},
            {"bytes_sent", st_.bytes_sent},
            {"bytes_uncompressed", st_.raw_bytes},
            {"bytes_downloaded", st_.bytes_downloaded},
            {"model_downloads", st_.model_downloads},
            {"model_download_skips", st_.model_skips},
            {"model_update_downloads", st_.update_downloads},
            {"model_update_fallbacks", st_.update_fallbacks},
            {"model_bytes_downloaded", st_.model_bytes},
            {"model_bytes_full", st_.model_bytes_full},
            {"compute_s", st_.compute_s},
            {"wait_s", st_.wait_s},
            {"wall_s", wall},
            {"compute_share", wall > 0 ? st_.compute_s / wall : 0.0}};
  if (!o_.quiet) {
    char b[400];
    std::snprintf(b, sizeof(b),
                  "%d rounds uploaded (%d rejected); sent %.3f MB vs %.3f MB uncompressed "
                  "(%.1f%% saved); computing %.1f s of %.1f s (%.0f%%), the rest waiting, "
                  "downloading and uploading",
                  st_.rounds, st_.rejected, st_.bytes_sent / 1e6, st_.raw_bytes / 1e6,
                  st_.raw_bytes ? 100.0 * (1.0 - double(st_.bytes_sent) / st_.raw_bytes) : 0.0,
                  st_.compute_s, wall, wall > 0 ? 100.0 * st_.compute_s / wall : 0.0);
    say(b);
  }
  if (!o_.stats_out.empty()) {
    const std::string text = s.dump(2) + "\n";
    write_atomic(o_.stats_out, [&](const ByteSink& out) { out(text.data(), text.size()); });
  }
  return rc;
}

} // namespace

int run_contributor(const ContributeOptions& o) {
  require(o.device == "cpu" || o.device == "cuda", "--device", "expected cpu or cuda");
  static const std::set<std::string> modes = {"",         "nan",    "scale100",  "truncate",
                                              "signflip", "scale3", "zero",      "noise",
                                              "replay",   "lazy",   "otherdata", "otherlr"};
  require(modes.count(o.debug_corrupt) == 1, "--debug-corrupt",
          "expected nan, scale100, truncate, signflip, scale3, zero, noise, replay, lazy, "
          "otherdata or otherlr");
  require(!o.client.token.empty(), "--token-file",
          "required (or the MYELIN_POOL_TOKEN environment variable, or --token)");
  require(o.ranks >= 0 && o.ranks <= 4096, "--ranks", "expected 0..4096");
  require(o.threads >= 0 && o.threads <= 4096, "--threads", "expected 0..4096");
  require(o.max_rounds >= 0, "--max-rounds", "expected a non-negative number");
  require(std::isfinite(o.client.timeout_s) && o.client.timeout_s > 0 && o.client.timeout_s <= 1e6,
          "--timeout", "expected a number of seconds in (0, 1e6]");
  require(std::isfinite(o.retry_s) && o.retry_s >= 0 && o.retry_s <= 1e7, "--give-up-s",
          "expected a number of seconds in [0, 1e7]");
  require(o.debug_step_delay_ms >= 0 && o.debug_step_delay_ms <= 1'000'000, "--debug-step-delay-ms",
          "expected 0..1000000");
  int ranks = o.ranks;
  if (!o.gpus.empty()) {
    require(o.device == "cuda", "--gpus", "needs --device cuda");
    // One rank per listed GPU (the children see only these GPUs); one GPU
    // trains in this process.
    int n = 1;
    for (char c : o.gpus) n += c == ',';
    if (ranks == 0) ranks = n;
    require(ranks == n, "--ranks",
            "expected one rank per --gpus entry (" + std::to_string(n) + ")");
    setenv("CUDA_VISIBLE_DEVICES", o.gpus.c_str(), 1);
  }
  if (ranks == 0) ranks = 1;
  require(ranks >= 1, "--ranks", "expected a positive number");
  require(o.pp >= 1 && ranks % o.pp == 0, "--pp", "expected a positive divisor of --ranks");
  std::string mpirun;
  if (ranks > 1) {
    const char* path = std::getenv("PATH");
    std::istringstream dirs(path ? path : "");
    for (std::string d; std::getline(dirs, d, ':');) {
      const fs::path c = fs::path(d.empty() ? "." : d) / "mpirun";
      if (access(c.c_str(), X_OK) == 0) {
        mpirun = fs::absolute(c).string();
        break;
      }
    }
    require(!mpirun.empty(), "--ranks",
            "several ranks run under mpirun, which is not on PATH (install Open MPI or MPICH, "
            "or use --ranks 1)");
  }
  if (o.threads > 0) set_cpu_threads(o.threads);
  g_stop = 0;
  std::signal(SIGINT, on_stop_signal);
  std::signal(SIGTERM, on_stop_signal);
  Agent a(o, ranks, mpirun);
  const int rc = a.run();
  std::signal(SIGINT, SIG_DFL);
  std::signal(SIGTERM, SIG_DFL);
  return rc;
}

} // namespace myelin::pool
