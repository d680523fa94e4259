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
  double factor = 10.0;    // reject norm > factor * reference
  double max_norm = 0.0;   // absolute bound; 0 = none
  double min_factor = 0.0; // reject norm < min_factor * reference (the job's min_norm_factor)
};

// The norm a round's uploads are measured against: the lower median of this
// round's positive norms when there are >= 2 (a zero upload is no evidence
// of scale), else `previous_median` (the accepted median of an earlier round;
// <= 0 when unknown: then value 0, no reference).
struct NormReference {
  double value = 0;
  std::string name;
};
NormReference norm_reference(const std::vector<double>& norms, double previous_median);

// One verdict per norm: "" = accepted, else the reason (above factor x or
// below min_factor x the reference, above max_norm, not finite).
std::vector<std::string> judge_norms(const std::vector<double>& norms, double previous_median,
                                     const NormPolicy& policy);

// ||x - ref|| / ||ref|| (0 when both are zero, infinity when only ref is, or
// the sizes differ): how far an upload is from its replay.
double relative_difference(std::span<const float> x, std::span<const float> ref);

// The cosine between x and ref over the elements where x is not zero (0
// when either is zero there, -2 when the sizes differ): how far a sparse
// upload with error feedback agrees with its replay. Such an upload encodes
// the update plus what earlier rounds dropped, which the coordinator does
// not hold, so it cannot be compared element for element; an honest one
// still points the replayed update's way where it keeps values.
double support_cosine(std::span<const float> x, std::span<const float> ref);
// ||x|| / ||ref|| over the same elements (0 when ref is zero there).
double support_norm_ratio(std::span<const float> x, std::span<const float> ref);

} // namespace myelin::pool
