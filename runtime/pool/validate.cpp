#include "runtime/pool/validate.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace myelin::pool {
namespace {
std::string fmt(double v) {
  char b[32];
  std::snprintf(b, sizeof(b), "%.4g", v);
  return b;
}
} // namespace

std::string check_finite(std::span<const float> x) {
  for (std::size_t i = 0; i < x.size(); ++i)
    if (!std::isfinite(x[i]))
      return "non-finite value (" + fmt(x[i]) + ") at element " + std::to_string(i);
  return {};
}

double l2_norm(std::span<const float> x) {
  double s = 0;
  for (float v : x) s += double(v) * v;
  return std::sqrt(s);
}

double lower_median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[(v.size() - 1) / 2];
}

std::vector<std::string> judge_norms(const std::vector<double>& norms, double previous_median,
                                     const NormPolicy& policy) {
  std::vector<std::string> out(norms.size());
  double ref = 0;
  std::string ref_name;
  if (norms.size() >= 2) {
    ref = lower_median(norms);
    ref_name = "this round's median";
  } else if (previous_median > 0) {
    ref = previous_median;
    ref_name = "the previous rounds' median";
  }
  for (std::size_t i = 0; i < norms.size(); ++i) {
    const double n = norms[i];
    if (!std::isfinite(n)) {
      out[i] = "non-finite norm";
    } else if (policy.max_norm > 0 && n > policy.max_norm) {
      out[i] = "norm " + fmt(n) + " exceeds max_norm " + fmt(policy.max_norm);
    } else if (ref > 0 && n > policy.factor * ref) {
      out[i] =
          "norm " + fmt(n) + " exceeds " + fmt(policy.factor) + "x " + ref_name + " " + fmt(ref);
    }
  }
  return out;
}

} // namespace myelin::pool
