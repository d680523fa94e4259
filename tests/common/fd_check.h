// Helpers of the CPU kernel tests (tests/test_cpu_ops.cpp, tests/test_llama_ops.cpp):
// random inputs, the scalar loss, the central finite-difference check of a
// backward pass, the float-vs-double comparison and the accumulation check.
//
// Every backward pass is checked in double precision against central finite
// differences of a scalar loss L = sum(out * R) for a fixed random R (so the
// upstream gradient dout is R): each input element (or 50 random elements of
// tensors larger than 256) is moved by h = 1e-6 both ways and
//     |(L(x+h) - L(x-h)) / 2h - analytic| <= 1e-8 + 1e-6 * |analytic|.
// The float instantiation is run on the same inputs (rounded to float) and must
// match the double results to 1e-5 relative, with an absolute floor of
// 1e-6 * max|double result| over the tensor for elements that are small through
// cancellation. A second backward call must double every gradient (to 1e-12).
#pragma once

#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <vector>

namespace myelin::fd_check {

using Vec = std::vector<double>;
using FVec = std::vector<float>;

constexpr double kFdStep = 1e-6;
constexpr double kFdRel = 1e-6;
constexpr double kFdAbs = 1e-8;
constexpr double kFloatRel = 1e-5;

inline Vec rand_vec(std::mt19937& g, std::size_t n, double lo = -1.0, double hi = 1.0) {
  std::uniform_real_distribution<double> u(lo, hi);
  Vec v(n);
  for (double& x : v) x = u(g);
  return v;
}

inline FVec to_float(const Vec& v) { return FVec(v.begin(), v.end()); }

// The loss sum(out * R), accumulated and returned in long double so that its
// rounding does not show in the finite differences of large outputs (a loss of
// 650 rounded to double is off by up to 6e-14, i.e. 3e-8 in a difference
// quotient with h = 1e-6).
inline long double dot(const Vec& a, const Vec& b) {
  long double s = 0.0L;
  for (std::size_t i = 0; i < a.size(); ++i) s += static_cast<long double>(a[i]) * b[i];
  return s;
}

// All indices of a small tensor, or 50 distinct random ones of a large one.
inline std::vector<std::size_t> fd_indices(std::mt19937& g, std::size_t n) {
  std::vector<std::size_t> idx(n);
  std::iota(idx.begin(), idx.end(), std::size_t{0});
  if (n > 256) {
    std::shuffle(idx.begin(), idx.end(), g);
    idx.resize(50);
  }
  return idx;
}

// Central finite differences of loss() with respect to x, against grad. The
// loss is evaluated on one OpenMP thread: cheap on a busy machine, and the
// analytic gradient (computed with all threads) is then checked against the
// serial code path as well.
inline void check_fd(const std::string& what, Vec& x, const Vec& grad,
                     const std::function<long double()>& loss, std::mt19937& g) {
  ASSERT_EQ(x.size(), grad.size()) << what;
  struct SerialScope {
    int saved = omp_get_max_threads();
    SerialScope() { omp_set_num_threads(1); }
    ~SerialScope() { omp_set_num_threads(saved); }
  } serial;
  for (std::size_t i : fd_indices(g, x.size())) {
    const double x0 = x[i];
    x[i] = x0 + kFdStep;
    const long double lp = loss();
    x[i] = x0 - kFdStep;
    const long double lm = loss();
    x[i] = x0;
    const double fd = static_cast<double>((lp - lm) / (2 * kFdStep));
    EXPECT_NEAR(fd, grad[i], kFdAbs + kFdRel * std::fabs(grad[i])) << what << "[" << i << "]";
  }
}

// The float result f must match the double result d (see the file comment).
inline void expect_float_close(const std::string& what, const FVec& f, const Vec& d) {
  ASSERT_EQ(f.size(), d.size()) << what;
  double mx = 0.0;
  for (double x : d) mx = std::max(mx, std::fabs(x));
  for (std::size_t i = 0; i < d.size(); ++i)
    EXPECT_NEAR(f[i], d[i], kFloatRel * (std::fabs(d[i]) + 0.1 * mx)) << what << "[" << i << "]";
}

// Calling a backward pass a second time must double every gradient.
inline void expect_doubled(const std::string& what, const Vec& once, const Vec& twice) {
  ASSERT_EQ(once.size(), twice.size()) << what;
  for (std::size_t i = 0; i < once.size(); ++i)
    EXPECT_NEAR(twice[i], 2 * once[i], 1e-12 * (1 + std::fabs(once[i]))) << what << "[" << i << "]";
}

} // namespace myelin::fd_check
