// Host-side helpers shared by the kernel checks that compare CUDA kernels with
// the CPU reference: tests/gpu (on a GPU) and tests/sim (the CPU simulation).
// Storage conversion (fp32 / bf16 bits), random inputs that are never zero,
// the element-wise tolerance check, and the double references of attention.
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

struct AttnShape {
  int B, Tn, C, NH;
  int NKV = 0; // key/value heads (grouped-query attention); 0: as many as NH
  int kv() const { return NKV > 0 ? NKV : NH; }
  int D() const { return C / NH; }
  // Elements of one position's qkv row: (NH + 2 NKV) D.
  std::size_t qkv_row() const { return std::size_t(NH + 2 * kv()) * D(); }
};
// Random bf16/fp32-representable inputs of one attention case and the double
// CPU reference of its forward and backward (grouped-query when NKV < NH).
template <typename T> struct AttnCase {
  std::vector<float> qkv, dout;
  std::vector<double> qkvd, doutd, out, dqkv;
  std::string tag;
  explicit AttnCase(AttnShape s) {
    const std::size_t N = std::size_t(s.B) * s.Tn, NC = N * s.C;
    qkv = representable<T>(rand_vec(N * s.qkv_row(), -2.0f, 2.0f));
    dout = representable<T>(rand_vec(NC));
    qkvd = to_d(qkv);
    doutd = to_d(dout);
    out.assign(NC, 0.0);
    std::vector<double> att(std::size_t(s.B) * s.NH * s.Tn * s.Tn);
    myelin::cpu::gqa_attention_forward(out.data(), att.data(), qkvd.data(), s.B, s.Tn, s.NH, s.kv(),
                                       s.D());
    dqkv.assign(qkv.size(), 0.0);
    std::vector<double> scr(att.size());
    myelin::cpu::gqa_attention_backward(dqkv.data(), scr.data(), doutd.data(), qkvd.data(),
                                        att.data(), s.B, s.Tn, s.NH, s.kv(), s.D());
    tag = " B=" + std::to_string(s.B) + " T=" + std::to_string(s.Tn) + " C=" + std::to_string(s.C) +
          " NH=" + std::to_string(s.NH) + " NKV=" + std::to_string(s.kv());
  }
};

// ---- attention on tensor cores (bf16, hs 64 / 128) ---------------------------------------------
// Reference lse [B,NH,T] = logsumexp_j<=i (q_i . k_j / sqrt(hs)), in double.
inline std::vector<double> ref_lse(const std::vector<double>& qkv, int B, int Tn, int C, int NH) {
  const int hs = C / NH;
  const double scale = 1.0 / std::sqrt(double(hs));
  std::vector<double> lse(std::size_t(B) * NH * Tn), s(Tn);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < NH; ++h)
      for (int i = 0; i < Tn; ++i) {
        const double* q = &qkv[(std::size_t(b) * Tn + i) * 3 * C + std::size_t(h) * hs];
        double m = -INFINITY;
        for (int j = 0; j <= i; ++j) {
          const double* k = &qkv[(std::size_t(b) * Tn + j) * 3 * C + C + std::size_t(h) * hs];
          double d = 0.0;
          for (int c = 0; c < hs; ++c) d += q[c] * k[c];
          s[j] = d * scale;
          m = std::max(m, s[j]);
        }
        double l = 0.0;
        for (int j = 0; j <= i; ++j) l += std::exp(s[j] - m);
        lse[(std::size_t(b) * NH + h) * Tn + i] = m + std::log(l);
      }
  return lse;
}

// Double reference of the flash backward as the GPU kernels define it:
// Drow = dO . O with the (bf16) O the backward is given, P = exp(scale q.k - lse),
// dS = P (dO.v - Drow); dV = P^T dO, dQ = scale dS K, dK = scale dS^T Q. With
// bf16_operands, P and dS are rounded to bf16 before the products, as the
// tensor-core kernels do (they are MMA operands).
inline std::vector<double> ref_flash_backward(const std::vector<double>& qkv,
                                              const std::vector<double>& dout,
                                              const std::vector<float>& O,
                                              const std::vector<double>& lse, int B, int Tn, int C,
                                              int NH, bool bf16_operands) {
  const int hs = C / NH;
  const double scale = 1.0 / std::sqrt(double(hs));
  const std::size_t rs = 3 * std::size_t(C);
  auto rnd = [&](double x) {
    return bf16_operands ? double(St<bf16>::dec(bf16_bits(float(x)))) : x;
  };
  std::vector<double> d(qkv.size(), 0.0);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < NH; ++h)
      for (int i = 0; i < Tn; ++i) {
        const std::size_t ri = std::size_t(b) * Tn + i, hh = std::size_t(h) * hs;
        double D = 0.0;
        for (int c = 0; c < hs; ++c) D += dout[ri * C + hh + c] * double(O[ri * C + hh + c]);
        const double L = lse[(std::size_t(b) * NH + h) * Tn + i];
        for (int j = 0; j <= i; ++j) {
          const std::size_t rj = std::size_t(b) * Tn + j;
          double sd = 0.0, dp = 0.0;
          for (int c = 0; c < hs; ++c) {
            sd += qkv[ri * rs + hh + c] * qkv[rj * rs + C + hh + c];
            dp += dout[ri * C + hh + c] * qkv[rj * rs + 2 * C + hh + c];
          }
          const double p = std::exp(sd * scale - L);
          const double ds = rnd(p * (dp - D)), pr = rnd(p);
          for (int c = 0; c < hs; ++c) {
            d[ri * rs + hh + c] += scale * ds * qkv[rj * rs + C + hh + c];
            d[rj * rs + C + hh + c] += scale * ds * qkv[ri * rs + hh + c];
            d[rj * rs + 2 * C + hh + c] += pr * dout[ri * C + hh + c];
          }
        }
      }
  return d;
}

} // namespace myelin::kernel_check
