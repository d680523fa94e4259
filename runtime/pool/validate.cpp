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

NormReference norm_reference(const std::vector<double>& norms, double previous_median) {
  std::vector<double> positive;
  for (double n : norms)
    if (std::isfinite(n) && n > 0) positive.push_back(n);
  if (positive.size() >= 2) return {lower_median(positive), "this round's median"};
  if (previous_median > 0) return {previous_median, "the previous rounds' median"};
  return {};
}

std::vector<std::string> judge_norms(const std::vector<double>& norms, double previous_median,
                                     const NormPolicy& policy) {
  std::vector<std::string> out(norms.size());
  const NormReference r = norm_reference(norms, previous_median);
  for (std::size_t i = 0; i < norms.size(); ++i) {
    const double n = norms[i];
    if (!std::isfinite(n)) {
      out[i] = "non-finite norm";
    } else if (policy.max_norm > 0 && n > policy.max_norm) {
      out[i] = "norm " + fmt(n) + " exceeds max_norm " + fmt(policy.max_norm);
    } else if (r.value > 0 && n > policy.factor * r.value) {
      out[i] =
          "norm " + fmt(n) + " exceeds " + fmt(policy.factor) + "x " + r.name + " " + fmt(r.value);
    } else if (r.value > 0 && n < policy.min_factor * r.value) {
      out[i] = "norm " + fmt(n) + " below " + fmt(policy.min_factor) + "x " + r.name + " " +
               fmt(r.value);
    }
  }
  return out;
}

double relative_difference(std::span<const float> x, std::span<const float> ref) {
  double d = 0, r = 0;
  for (std::size_t i = 0; i < x.size() && i < ref.size(); ++i) {
    const double e = double(x[i]) - ref[i];
    d += e * e;
    r += double(ref[i]) * ref[i];
  }
  if (x.size() != ref.size()) return INFINITY;
  if (r == 0) return d == 0 ? 0.0 : INFINITY;
  return std::sqrt(d / r);
}

namespace {
struct SupportSums {
  double xy = 0, xx = 0, yy = 0;
};
SupportSums support_sums(std::span<const float> x, std::span<const float> ref) {
  SupportSums s;
  for (std::size_t i = 0; i < x.size() && i < ref.size(); ++i) {
    if (x[i] == 0) continue;
    s.xy += double(x[i]) * ref[i], s.xx += double(x[i]) * x[i], s.yy += double(ref[i]) * ref[i];
  }
  return s;
}
} // namespace

double support_cosine(std::span<const float> x, std::span<const float> ref) {
  if (x.size() != ref.size()) return -2;
  const SupportSums s = support_sums(x, ref);
  return s.xx > 0 && s.yy > 0 ? s.xy / std::sqrt(s.xx * s.yy) : 0.0;
}

double support_norm_ratio(std::span<const float> x, std::span<const float> ref) {
  const SupportSums s = support_sums(x, ref);
  return s.yy > 0 ? std::sqrt(s.xx / s.yy) : 0.0;
}

} // namespace myelin::pool
