// Scoring an upload by what it does, not only by its size: the coordinator
// measures the loss of the round's global model before and after applying
// that upload alone (global - g), on `score_batches` batches of the rows the
// contributor was assigned and as many batches of rows it was not (another
// contributor's slice of the same global batches; with a single slice, the
// rows of the next round, which nobody has trained on yet).
//
// Honest inner steps lower the loss of the rows they trained on more than
// that of other rows from the same distribution (the model fits what it
// saw), but on a few batches of a small model that gain is within the
// batch-to-batch noise. So the verdicts allow for the round's measured noise
// (score_noise: a robust spread of the uploads' own-minus-other gains, the
// honest majority's scatter; or, when larger, the upload's own standard
// error from the spread of its per-batch gains, which also works for rounds
// of one or two uploads): an upload is rejected when its own rows' loss
// does not fall (gain + 3 noise <= floor), or falls no more than the other
// rows' (gain - other gain + 3 noise <= floor'). The floor is 0, or the
// round's median own-row gain when that is negative: near convergence an
// honest update can raise the loss of two scored batches a little, and then
// every honest upload of the round does; judged against its peers it is not
// rejected for that. Likewise floor' is 0, or the round's median of (own gain
// - other gain) when that is negative: once the model has settled, honest
// updates no longer fit their own rows measurably better than others. Three robust standard
// deviations keep an honest upload's chance of rejection near 0.1% per check; sign-flipped and
// other harmful updates sit far outside. What the noise hides (zero, random,
// lazy, other-data updates) is caught by the norm floor and by replays
// (replay_suspicious asks for one whenever the gain is not clearly above the
// other rows'). A verdict is not a rejection: the coordinator replays every
// upload scoring finds against, and the replay decides (near convergence an
// honest update applied alone can raise the loss of a few scored batches by
// more than three noise estimates; its re-run clears it, while every
// adversary of tests/scripts/test_pool_adversary.sh fails its replay).
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
  // This upload's own noise estimate: the standard error of (own gain -
  // other gain) from the batch-to-batch spread of its per-batch gains (0 with
  // one score batch).
  double noise = 0;
  double improvement_assigned() const { return assigned_before - assigned_after; }
  double improvement_other() const { return other_before - other_after; }
};

// The round's score noise: 1.4826 x the median absolute deviation of
// (improvement_assigned - improvement_other) over its scored uploads (a
// standard deviation for normal scatter, unmoved by a minority of outliers);
// 0 with fewer than 3.
double score_noise(const std::vector<ScoreResult>& round);
// "" when the upload passes, else the reason; the noise allowed is the
// larger of round_noise and s.noise; round_median_gain is the round's median
// improvement_assigned and round_median_diff its median (improvement_assigned
// - improvement_other) (each 0 when fewer than 3 uploads were scored). With
// own_rows_first false only the loss on its own rows is judged, not whether
// it falls more than on other rows: an upload with error feedback also
// carries what earlier rounds' rows contributed.
std::string score_verdict(const ScoreResult& s, double round_noise, double round_median_gain = 0,
                          bool own_rows_first = true, double round_median_diff = 0);

// Whether the coordinator replays an upload: drawn with probability `prob`
// from a hash of (job, round, contributor) keyed with the job's secret (a
// random 64-bit value the coordinator keeps to itself), so a restarted
// coordinator draws the same, and a contributor, which knows the rule but
// not the key, cannot tell which of its uploads will be re-run; or always
// when suspicious (see replay_suspicious).
bool replay_drawn(std::int64_t job, std::int64_t round, std::int64_t contributor, double prob,
                  std::uint64_t secret);
// Suspicious: its rating is below the prior's 0.5 (it failed before), its
// norm is outside [0.5, 2] x the round's reference, it lowers its own rows'
// loss less than twice as much as other rows' (which, on small noisy
// batches, includes most honest uploads: replays are then the rule), or less
// than half the round's median own-row gain (`median_gain`, 0 = unknown).
bool replay_suspicious(double rating, double norm, double reference, const ScoreResult* score,
                       double median_gain);

// Where an assignment's rows and its comparison rows lie.
struct ScoreRows {
  std::int64_t slot = 0, slots = 1;
  std::uint64_t batch_position = 0; // first global batch of the round
};

// Holds an evaluation engine and one loader per data slice of a job; not
// thread-safe (the round closer owns it).
class Scorer {
 public:
  Scorer(const JobSpec& spec, const ModelConfig& cfg);
  ~Scorer();
  // Scores `g` (a pseudo-gradient: global - local) against `global`.
  ScoreResult score(std::span<const float> global, std::span<const float> g, const ScoreRows& rows);

 private:
  std::vector<double> losses(std::int64_t slot, std::uint64_t pos, std::uint64_t n);

  JobSpec spec_;
  ModelConfig cfg_;
  std::unique_ptr<Engine> engine_;
  std::map<std::int64_t, std::unique_ptr<DataLoader>> loaders_;
  std::vector<float> work_;
  std::vector<int> in_, tg_;
};

} // namespace myelin::pool
