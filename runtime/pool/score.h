// Scoring an upload by what it does, not only by its size: the coordinator
// measures the loss of the round's global model before and after applying
// that upload alone (global - g), on `score_batches` batches of the rows the
// contributor was assigned and as many batches of rows it was not (another
// contributor's slice of the same global batches; with a single slice, the
// rows of the next round, which nobody has trained on yet).
//
// Honest inner steps lower the loss of the rows they trained on more than
// that of other rows from the same distribution (the model fits what it
// saw). An upload is rejected when it does not lower its own rows' loss at
// all, or lowers it no more than the other rows': zero, replayed, unrelated,
// sign-flipped, random or other-data updates. No margin is added: ties (a
// zero update changes nothing anywhere) reject through "<=", and any fixed
// margin would have to be scaled to the loss, which changes by orders of
// magnitude over a job; the measured honest gap is in docs/perf.md.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "runtime/data/loader.h"
#include "runtime/model/config.h"
#include "runtime/model/engine.h"
#include "runtime/pool/job.h"

namespace myelin::pool {

struct ScoreResult {
  double assigned_before = 0, assigned_after = 0, other_before = 0, other_after = 0;
  double improvement_assigned() const { return assigned_before - assigned_after; }
  double improvement_other() const { return other_before - other_after; }
};

// "" when the upload passes, else the reason.
std::string score_verdict(const ScoreResult& s);

// Whether the coordinator replays an upload: drawn with probability `prob`
// from a hash of (job, round, contributor), so a run is reproducible and a
// contributor cannot predict its draw without the coordinator's rule; or
// always when suspicious (see replay_suspicious).
bool replay_drawn(std::int64_t job, std::int64_t round, std::int64_t contributor, double prob);
// Suspicious: its rating is below the prior's 0.5 (it failed before), its
// norm is outside [0.5, 2] x the round's reference, or it lowers its own
// rows' loss less than twice as much as other rows'.
bool replay_suspicious(double rating, double norm, double reference, const ScoreResult* score);

// Where an assignment's rows and its comparison rows lie.
struct ScoreRows {
  std::int64_t slot = 0, slots = 1;
  std::uint64_t batch_position = 0; // first global batch of the round
};

// Holds an evaluation engine and one loader per data slice of a job; not
// thread-safe (the round closer owns it).
class Scorer {
 public:
  Scorer(const JobSpec& spec, const GPT2Config& cfg);
  ~Scorer();
  // Scores `g` (a pseudo-gradient: global - local) against `global`.
  ScoreResult score(std::span<const float> global, std::span<const float> g, const ScoreRows& rows);

 private:
  double loss(std::int64_t slot, std::uint64_t pos);

  JobSpec spec_;
  GPT2Config cfg_;
  std::unique_ptr<Engine> engine_;
  std::map<std::int64_t, std::unique_ptr<DataLoader>> loaders_;
  std::vector<float> work_;
  std::vector<int> in_, tg_;
};

} // namespace myelin::pool
