#include "runtime/pool/score.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace myelin::pool {

double score_noise(const std::vector<ScoreResult>& round) {
  if (round.size() < 3) return 0;
  std::vector<double> d;
  for (const auto& s : round) {
    const double x = s.improvement_assigned() - s.improvement_other();
    if (std::isfinite(x)) d.push_back(x);
  }
  if (d.size() < 3) return 0;
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    const std::size_t k = v.size() / 2;
    return v.size() % 2 ? v[k] : 0.5 * (v[k - 1] + v[k]);
  };
  const double m = median(d);
  for (auto& x : d) x = std::fabs(x - m);
  return 1.4826 * median(d);
}

std::string score_verdict(const ScoreResult& s, double round_noise, double round_median_gain,
                          bool own_rows_first, double round_median_diff) {
  const double noise = std::max(round_noise, std::isfinite(s.noise) ? s.noise : 0.0);
  const double a = s.improvement_assigned(), o = s.improvement_other(), slack = 3 * noise;
  char b[240];
  if (!std::isfinite(a) || !std::isfinite(o)) return "score: the loss is not finite";
  const double floor = std::isfinite(round_median_gain) ? std::min(0.0, round_median_gain) : 0.0;
  if (a + slack <= floor) {
    std::snprintf(b, sizeof(b),
                  "score: does not lower the loss of its own rows (%+.3g; round noise %.2g, "
                  "round median %+.3g)",
                  -a, noise, -round_median_gain);
    return b;
  }
  const double floor_diff =
      std::isfinite(round_median_diff) ? std::min(0.0, round_median_diff) : 0.0;
  if (own_rows_first && a - o + slack <= floor_diff) {
    std::snprintf(b, sizeof(b),
                  "score: lowers the loss of its own rows (%.3g) no more than other rows' (%.3g; "
                  "round noise %.2g, round median difference %+.3g)",
                  a, o, noise, round_median_diff);
    return b;
  }
  return "";
}

bool replay_drawn(std::int64_t job, std::int64_t round, std::int64_t contributor, double prob,
                  std::uint64_t secret) {
  // splitmix64 of the three ids and the key: a uniform draw in [0, 1).
  std::uint64_t x = secret ^ std::uint64_t(job) * 0x9e3779b97f4a7c15ull ^
                    std::uint64_t(round) * 0xbf58476d1ce4e5b9ull ^
                    std::uint64_t(contributor) * 0x94d049bb133111ebull;
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return double(x >> 11) * 0x1.0p-53 < prob;
}

bool replay_suspicious(double rating, double norm, double reference, const ScoreResult* score,
                       double median_gain) {
  if (rating < 0.5) return true;
  if (reference > 0 && (norm < 0.5 * reference || norm > 2 * reference)) return true;
  if (!score) return false;
  const double gain = score->improvement_assigned();
  return gain < 2 * score->improvement_other() || (median_gain > 0 && gain < 0.5 * median_gain);
}

Scorer::Scorer(const JobSpec& spec, const ModelConfig& cfg) : spec_(spec), cfg_(cfg) {
  EngineOptions eo;
  engine_ = make_engine(cfg_, StageSpec::whole(cfg_), spec_.batch_size, spec_.seq_len, eo);
  in_.resize(std::size_t(spec_.batch_size) * spec_.seq_len);
  tg_.resize(in_.size());
}

Scorer::~Scorer() = default;

// The loss of each of `n` micro-batches of slice `slot` from global batch
// `pos` (the engine holds the parameters to judge).
std::vector<double> Scorer::losses(std::int64_t slot, std::uint64_t pos, std::uint64_t n) {
  auto& l = loaders_[slot];
  if (!l)
    l = std::make_unique<DataLoader>(spec_.train_data, "job.train_data", spec_.batch_size,
                                     spec_.seq_len, int(slot), spec_.max_contributors,
                                     cfg_.vocab_size, false, 0);
  l->set_position(l->position_at(pos));
  std::vector<double> out;
  for (std::uint64_t i = 0; i < n; ++i) {
    l->next(in_.data(), tg_.data());
    out.push_back(engine_->eval_loss(in_.data(), tg_.data(), spec_.batch_size, spec_.seq_len));
  }
  return out;
}

ScoreResult Scorer::score(std::span<const float> global, std::span<const float> g,
                          const ScoreRows& rows) {
  ScoreResult r;
  if (spec_.score_batches <= 0) return r;
  // The round's last score_batches micro-batches of its rows (the inner
  // steps fit those most), and as many of another slice of the same global
  // batches, or (one slice) of the next round's rows.
  const std::uint64_t round_batches = std::uint64_t(spec_.inner_steps) * spec_.grad_accum;
  const std::uint64_t n =
      std::min<std::uint64_t>(std::uint64_t(spec_.score_batches), round_batches);
  const std::uint64_t own_pos = rows.batch_position + round_batches - n;
  const std::int64_t other_slot = rows.slots > 1 ? (rows.slot + 1) % rows.slots : rows.slot;
  const std::uint64_t other_pos = rows.slots > 1 ? own_pos : rows.batch_position + round_batches;
  engine_->set_params(global);
  const auto own0 = losses(rows.slot, own_pos, n), other0 = losses(other_slot, other_pos, n);
  work_.resize(global.size());
  for (std::size_t i = 0; i < global.size(); ++i) work_[i] = global[i] - g[i];
  engine_->set_params(work_);
  const auto own1 = losses(rows.slot, own_pos, n), other1 = losses(other_slot, other_pos, n);
  // Means, and the batch-to-batch spread of the per-batch gains (pooled over
  // both groups): the standard error of the own-minus-other difference.
  double ss = 0, gain_own = 0, gain_other = 0;
  for (std::uint64_t i = 0; i < n; ++i) {
    r.assigned_before += own0[i] / n, r.assigned_after += own1[i] / n;
    r.other_before += other0[i] / n, r.other_after += other1[i] / n;
  }
  gain_own = r.improvement_assigned(), gain_other = r.improvement_other();
  for (std::uint64_t i = 0; i < n; ++i) {
    const double a = own0[i] - own1[i] - gain_own, o = other0[i] - other1[i] - gain_other;
    ss += a * a + o * o;
  }
  if (n >= 2) {
    const double var = ss / double(2 * (n - 1)); // per-batch variance of a gain
    r.noise = std::sqrt(2 * var / double(n));    // of (mean own gain - mean other gain)
  }
  return r;
}

} // namespace myelin::pool
