// Host-side helpers shared by the kernel checks that compare CUDA kernels with
// the CPU reference: tests/gpu (on a GPU) and tests/sim (the CPU simulation).
// Storage conversion (fp32 / bf16 bits), random inputs that are never zero,
// and the element-wise tolerance check (the double references of attention:
// tests/common/gqa_check.h).
//
// Tolerances, element-wise: |got - ref| <= rtol*|ref| + atol*rms(ref)
//   fp32 storage: rtol = atol = 1e-5  (fp32 math vs double reference)
//   bf16 storage: rtol = atol = 2e-2  (inputs are rounded to bf16 first, so the
//                 reference sees exactly the kernel's inputs; outputs and
//                 intermediates stored in bf16 carry 2^-9 relative rounding)
#pragma once

#include <gtest/gtest.h>

#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/ops.h"

namespace myelin::kernel_check {

using bf16 = __nv_bfloat16;

// ---- host-side storage conversion ----------------------------------------------------------
inline std::uint16_t bf16_bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7fffu + ((u >> 16) & 1u); // round to nearest even (test data is finite)
  return std::uint16_t(u >> 16);
}
inline float bf16_value(std::uint16_t b) {
  const std::uint32_t u = std::uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Storage traits: host representation of T (float, or raw bf16 bits).
template <typename T> struct St;
template <> struct St<float> {
  using Host = float;
  static Host enc(float f) { return f; }
  static float dec(Host h) { return h; }
  static constexpr double rtol = 1e-5, atol = 1e-5;
  static constexpr const char* name = "fp32";
};
template <> struct St<bf16> {
  using Host = std::uint16_t;
  static Host enc(float f) { return bf16_bits(f); }
  static float dec(Host h) { return bf16_value(h); }
  static constexpr double rtol = 2e-2, atol = 2e-2;
  static constexpr const char* name = "bf16";
};

inline std::mt19937_64& rng() {
  static std::mt19937_64 g(1234);
  return g;
}
// Uniform in [lo, hi], never exactly zero.
inline std::vector<float> rand_vec(std::size_t n, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) {
    do x = u(rng());
    while (x == 0.0f);
  }
  return v;
}
// Values representable in T (rounded through its storage).
template <typename T> std::vector<float> representable(std::vector<float> v) {
  for (auto& x : v) x = St<T>::dec(St<T>::enc(x));
  return v;
}
inline std::vector<double> to_d(const std::vector<float>& v) { return {v.begin(), v.end()}; }

// `extra`, when not empty, adds a per-element allowance (an error bound the
// element's own inputs give, e.g. an approximate tanh inside an epilogue).
inline void expect_close(const std::vector<double>& ref, const std::vector<float>& got, double rtol,
                         double atol, const std::string& what,
                         const std::vector<double>& extra = {}) {
  ASSERT_EQ(ref.size(), got.size()) << what;
  ASSERT_TRUE(extra.empty() || extra.size() == ref.size()) << what;
  double ss = 0.0;
  for (double r : ref) ss += r * r;
  const double rms = ref.empty() ? 0.0 : std::sqrt(ss / double(ref.size()));
  std::size_t bad = 0, first = 0;
  double worst = 0.0;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    const double err = std::fabs(double(got[i]) - ref[i]);
    const double allowed = rtol * std::fabs(ref[i]) + atol * rms + (extra.empty() ? 0.0 : extra[i]);
    if (!(err <= allowed)) { // also catches NaN
      if (bad == 0) first = i;
      ++bad;
    }
    if (std::isfinite(err) && err > worst) worst = err;
  }
  EXPECT_EQ(bad, 0u) << what << ": " << bad << " of " << ref.size()
                     << " elements out of tolerance; first at " << first << " (got "
                     << (bad ? got[first] : 0.0f) << ", ref " << (bad ? ref[first] : 0.0)
                     << "), max abs err " << worst << ", rms(ref) " << rms;
}
template <typename T>
void expect_close_t(const std::vector<double>& ref, const std::vector<float>& got,
                    const std::string& what) {
  expect_close(ref, got, St<T>::rtol, St<T>::atol, std::string(St<T>::name) + " " + what);
}

// Bit for bit (NaN equals NaN, 0 differs from -0): reruns and recomputations.
inline void expect_same_bits(const std::vector<float>& a, const std::vector<float>& b,
                             const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float))) << what;
}

} // namespace myelin::kernel_check
