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

std::string score_verdict(const ScoreResult& s, double noise) {
  const double a = s.improvement_assigned(), o = s.improvement_other(), slack = 3 * noise;
  char b[240];
  if (!std::isfinite(a) || !std::isfinite(o)) return "score: the loss is not finite";
  if (a + slack <= 0) {
    std::snprintf(b, sizeof(b),
                  "score: does not lower the loss of its own rows (%+.3g; round noise %.2g)", -a,
                  noise);
    return b;
  }
  if (a + slack <= o) {
    std::snprintf(b, sizeof(b),
                  "score: lowers the loss of its own rows (%.3g) no more than other rows' (%.3g; "
                  "round noise %.2g)",
                  a, o, noise);
    return b;
  }
  return "";
}

bool replay_drawn(std::int64_t job, std::int64_t round, std::int64_t contributor, double prob) {
  // splitmix64 of the three ids: a uniform draw in [0, 1).
  std::uint64_t x = std::uint64_t(job) * 0x9e3779b97f4a7c15ull ^
                    std::uint64_t(round) * 0xbf58476d1ce4e5b9ull ^
                    std::uint64_t(contributor) * 0x94d049bb133111ebull;
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return double(x >> 11) * 0x1.0p-53 < prob;
}

bool replay_suspicious(double rating, double norm, double reference, const ScoreResult* score) {
  if (rating < 0.5) return true;
  if (reference > 0 && (norm < 0.5 * reference || norm > 2 * reference)) return true;
  return score && score->improvement_assigned() < 2 * score->improvement_other();
}

Scorer::Scorer(const JobSpec& spec, const GPT2Config& cfg) : spec_(spec), cfg_(cfg) {
  EngineOptions eo;
  engine_ = make_engine(cfg_, StageSpec::whole(cfg_), spec_.batch_size, spec_.seq_len, eo);
  in_.resize(std::size_t(spec_.batch_size) * spec_.seq_len);
  tg_.resize(in_.size());
}

Scorer::~Scorer() = default;

// Mean loss over score_batches micro-batches of slice `slot` from global
// batch `pos` (the engine holds the parameters to judge).
double Scorer::loss(std::int64_t slot, std::uint64_t pos) {
  auto& l = loaders_[slot];
  if (!l)
    l = std::make_unique<DataLoader>(spec_.train_data, "job.train_data", spec_.batch_size,
                                     spec_.seq_len, int(slot), spec_.max_contributors,
                                     cfg_.vocab_size, false, 0);
  l->set_position(l->position_at(pos));
  double sum = 0;
  for (int i = 0; i < spec_.score_batches; ++i) {
    l->next(in_.data(), tg_.data());
    sum += engine_->eval_loss(in_.data(), tg_.data(), spec_.batch_size, spec_.seq_len);
  }
  return sum / spec_.score_batches;
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
  r.assigned_before = loss(rows.slot, own_pos);
  r.other_before = loss(other_slot, other_pos);
  work_.resize(global.size());
  for (std::size_t i = 0; i < global.size(); ++i) work_[i] = global[i] - g[i];
  engine_->set_params(work_);
  r.assigned_after = loss(rows.slot, own_pos);
  r.other_after = loss(other_slot, other_pos);
  return r;
}

} // namespace myelin::pool
