// Double references of causal grouped-query attention for the attention
// checks (FMA and tensor-core kernels; tests/gpu on a GPU, tests/sim in the CPU
// simulation): random inputs of one case representable in the storage type T,
// the CPU reference (kernels/ops.h gqa_attention_*, in double), the row
// logsumexp, and the flash backward as the tensor-core kernels define it. Layout: qkv
// [B,T,(NH+2*NKV)*D] = (q: NH*D | k: NKV*D | v: NKV*D), query head h reads kv head h/(NH/NKV); out
// [B,T,NH*D]; lse [B,NH,T].
#pragma once

#include <cmath>
#include <cstddef>
#include <string>
#include <vector>

#include "kernels/ops.h"
#include "tests/common/kernel_check.h"

namespace myelin::kernel_check {

struct GqaShape {
  int B, Tn, NH, NKV, D;
  std::size_t row() const { return std::size_t(NH + 2 * NKV) * D; }      // qkv row
  std::size_t qkv_elems() const { return std::size_t(B) * Tn * row(); }  // qkv, dqkv
  std::size_t out_elems() const { return std::size_t(B) * Tn * NH * D; } // out, dout
  std::size_t lse_elems() const { return std::size_t(B) * NH * Tn; }     // lse, scratch
  std::size_t q_col(int h) const { return std::size_t(h) * D; }          // column of q head h
  std::size_t k_col(int h) const { return std::size_t(NH + h / (NH / NKV)) * D; }
  std::size_t v_col(int h) const { return std::size_t(NH + NKV + h / (NH / NKV)) * D; }
};

template <typename T = bf16> struct GqaCase {
  std::vector<float> qkv, dout;
  std::vector<double> qkvd, doutd, out, dqkv, lse;
  std::string tag;
  explicit GqaCase(GqaShape s) {
    qkv = representable<T>(rand_vec(s.qkv_elems(), -2.0f, 2.0f));
    dout = representable<T>(rand_vec(s.out_elems()));
    qkvd = to_d(qkv);
    doutd = to_d(dout);
    out.assign(s.out_elems(), 0.0);
    std::vector<double> att(std::size_t(s.B) * s.NH * s.Tn * s.Tn);
    myelin::cpu::gqa_attention_forward(out.data(), att.data(), qkvd.data(), s.B, s.Tn, s.NH, s.NKV,
                                       s.D);
    dqkv.assign(s.qkv_elems(), 0.0);
    std::vector<double> scr(att.size());
    myelin::cpu::gqa_attention_backward(dqkv.data(), scr.data(), doutd.data(), qkvd.data(),
                                        att.data(), s.B, s.Tn, s.NH, s.NKV, s.D);
    lse = ref_lse(s);
    tag = " B=" + std::to_string(s.B) + " T=" + std::to_string(s.Tn) +
          " NH=" + std::to_string(s.NH) + " NKV=" + std::to_string(s.NKV) +
          " D=" + std::to_string(s.D);
  }

  // lse [B,NH,T] = logsumexp_{j<=i} (q_i . k_j / sqrt(D)).
  std::vector<double> ref_lse(const GqaShape& s) const {
    const double scale = 1.0 / std::sqrt(double(s.D));
    std::vector<double> l(s.lse_elems()), sc(std::size_t(s.Tn));
    for (int b = 0; b < s.B; ++b)
      for (int h = 0; h < s.NH; ++h)
        for (int i = 0; i < s.Tn; ++i) {
          const double* q = &qkvd[(std::size_t(b) * s.Tn + i) * s.row() + s.q_col(h)];
          double m = -INFINITY;
          for (int j = 0; j <= i; ++j) {
            const double* k = &qkvd[(std::size_t(b) * s.Tn + j) * s.row() + s.k_col(h)];
            double d = 0.0;
            for (int c = 0; c < s.D; ++c) d += q[c] * k[c];
            sc[std::size_t(j)] = d * scale;
            m = std::max(m, sc[std::size_t(j)]);
          }
          double sum = 0.0;
          for (int j = 0; j <= i; ++j) sum += std::exp(sc[std::size_t(j)] - m);
          l[(std::size_t(b) * s.NH + h) * s.Tn + i] = m + std::log(sum);
        }
    return l;
  }

  // The flash backward as the kernels define it, from the (bf16) O the backward
  // is given: Drow = dO . O, P = exp(scale q.k - lse), dS = P (dO.v - Drow),
  // dV = P^T dO, dQ = scale dS K, dK = scale dS^T Q (dK, dV summed over the
  // group). P and dS rounded to bf16 before the products (MMA operands).
  std::vector<double> flash_backward(const GqaShape& s, const std::vector<float>& O) const {
    const double scale = 1.0 / std::sqrt(double(s.D));
    const std::size_t rs = s.row(), os = std::size_t(s.NH) * s.D;
    auto rnd = [](double x) { return double(St<bf16>::dec(bf16_bits(float(x)))); };
    std::vector<double> d(qkvd.size(), 0.0);
    for (int b = 0; b < s.B; ++b)
      for (int h = 0; h < s.NH; ++h)
        for (int i = 0; i < s.Tn; ++i) {
          const std::size_t ri = std::size_t(b) * s.Tn + i, oh = std::size_t(h) * s.D;
          double Dr = 0.0;
          for (int c = 0; c < s.D; ++c) Dr += doutd[ri * os + oh + c] * double(O[ri * os + oh + c]);
          const double L = lse[(std::size_t(b) * s.NH + h) * s.Tn + i];
          for (int j = 0; j <= i; ++j) {
            const std::size_t rj = std::size_t(b) * s.Tn + j;
            const double* q = &qkvd[ri * rs + s.q_col(h)];
            const double* k = &qkvd[rj * rs + s.k_col(h)];
            const double* v = &qkvd[rj * rs + s.v_col(h)];
            double sd = 0.0, dp = 0.0;
            for (int c = 0; c < s.D; ++c) {
              sd += q[c] * k[c];
              dp += doutd[ri * os + oh + c] * v[c];
            }
            const double p = std::exp(sd * scale - L);
            const double ds = rnd(p * (dp - Dr)), pr = rnd(p);
            for (int c = 0; c < s.D; ++c) {
              d[ri * rs + s.q_col(h) + c] += scale * ds * k[c];
              d[rj * rs + s.k_col(h) + c] += scale * ds * q[c];
              d[rj * rs + s.v_col(h) + c] += pr * doutd[ri * os + oh + c];
            }
          }
        }
    return d;
  }
};

} // namespace myelin::kernel_check
