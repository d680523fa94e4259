// Trust checks on contributions. Uploads are checked one by one when they
// arrive (shape and round are checked by the coordinator, finiteness here),
// and the norms of a round's uploads are judged together when it closes.
#pragma once

#include <span>
#include <string>
#include <vector>

namespace myelin::pool {

// "" when all values are finite, else a reason naming the first bad index.
std::string check_finite(std::span<const float> x);
double l2_norm(std::span<const float> x);
// Lower median (element (n-1)/2 of the sorted values): with two uploads the
// smaller one is the reference, so one inflated upload cannot drag it up.
double lower_median(std::vector<double> v);

struct NormPolicy {
  double factor = 10.0;  // reject norm > factor * reference
  double max_norm = 0.0; // absolute bound; 0 = none
};

// One verdict per norm: "" = accepted, else the reason. The reference is the
// lower median of this round's norms when there are >= 2, else (a single
// upload) `previous_median` (the accepted median of an earlier round; <= 0
// when unknown, then only max_norm applies).
std::vector<std::string> judge_norms(const std::vector<double>& norms, double previous_median,
                                     const NormPolicy& policy);

} // namespace myelin::pool
