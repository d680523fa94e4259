// A contributor's rating across rounds: a Beta-Bernoulli reputation. Each
// judged upload is a trial (accepted = success, rejected = failure; a failed
// replay, proof of dishonest work rather than a bad draw, counts as
// kReplayFailures failures). The posterior starts at the prior Beta(1, 1)
// (rating 0.5, no evidence) and before each new trial both counts decay
// toward the prior by kForget, so old behaviour fades (a reformed contributor
// recovers, a trusted one cannot bank credit forever): with 0.9 the evidence
// of about the last 10 rounds counts.
//
// rating = alpha / (alpha + beta), the posterior mean. It scales the weight
// of an accepted upload in the outer average (tokens x rating); a contributor
// rated below the job's bench_rating carries weight 0 but is still scored, so
// it can earn its way back.
//
// Why this model: it is cheap (two numbers per contributor), transparent (the
// counts are shown and anyone can recompute them from the ledger), and stable
// with few contributors and few rounds, where the prior keeps a newcomer at
// 0.5 instead of 0 or 1. Skill ratings such as OpenSkill or TrueSkill rank
// players against each other in matches; here each upload is judged on its
// own, pass or fail, which is exactly a Bernoulli trial.
#pragma once

namespace myelin::pool {

struct Rating {
  double alpha = 1, beta = 1;

  static constexpr double kForget = 0.9;
  static constexpr double kReplayFailures = 4;

  double mean() const { return alpha / (alpha + beta); }
  // One round's outcome: `successes` and `failures` after decaying toward the prior.
  Rating updated(double successes, double failures) const {
    return {1 + kForget * (alpha - 1) + successes, 1 + kForget * (beta - 1) + failures};
  }
};

} // namespace myelin::pool
