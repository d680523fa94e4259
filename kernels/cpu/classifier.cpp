// Fused classifier: softmax over the first V of Vp logit columns, cross-entropy
// loss, and its gradient, one row per token position.
//   losses[n]    = log(sum_{i<V} exp(l_i - max)) - (l_target - max)
//   dlogits[n,i] = (softmax_i - [i == target]) * dloss  for i < V, 0 for i >= V
// Traffic (elements): reads N*Vp logits twice (max pass, exp pass), and when
// dlogits is given writes N*Vp and rewrites N*V (scale pass, in L2 for one row
// when V is small, otherwise streamed); ~N*V exps and ~4*N*V FLOPs.
// Precision: all math in Real (fp32 for float, as in llm.c); the exp sum uses a
// vectorised reduction (several partial sums), and exp is a vectorisable
// polynomial (~1 ulp). In place: dlogits may alias logits; each element is read
// before the same element is written, and logits[target] is read first.
// Parallel layout: rows are split statically across OpenMP threads; the inner
// loops over the vocabulary are vectorised.
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "kernels/ops.h"

namespace myelin::cpu {

namespace {

// exp(x) without libm, so that `omp simd` loops vectorise. Cody-Waite range
// reduction x = k*ln2 + r, |r| <= ln2/2, then a Taylor polynomial (degree 7 for
// float, 13 for double: truncation error below half an ulp), times 2^k built
// from the exponent bits. Inputs are clamped to the finite range.
template <typename Real>
inline Real vexp(Real x) {
  if constexpr (sizeof(Real) == 4) {
    x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    const float magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
    const float k = (x * 1.44269504088896341f + magic) - magic;
    const float r = x - k * 0.693145751953125f - k * 1.428606765330187045e-06f;
    float p = 1.0f / 5040 + r * (1.0f / 40320);
    p = 1.0f / 720 + r * p;
    p = 1.0f / 120 + r * p;
    p = 1.0f / 24 + r * p;
    p = 1.0f / 6 + r * p;
    p = 0.5f + r * p;
    p = 1.0f + r * p;
    p = 1.0f + r * p;
    const auto ki = static_cast<std::int32_t>(k);
    return p * std::bit_cast<float>(static_cast<std::int32_t>((ki + 127) << 23));
  } else {
    x = x < -708.0 ? -708.0 : (x > 709.0 ? 709.0 : x);
    const double magic = 6755399441055744.0;  // 1.5 * 2^52
    const double k = (x * 1.4426950408889634074 + magic) - magic;
    const double r = x - k * 6.93147180369123816490e-01 - k * 1.90821492927058770002e-10;
    double p = 1.0 / 6227020800.0;
    p = 1.0 / 479001600.0 + r * p;
    p = 1.0 / 39916800.0 + r * p;
    p = 1.0 / 3628800.0 + r * p;
    p = 1.0 / 362880.0 + r * p;
    p = 1.0 / 40320.0 + r * p;
    p = 1.0 / 5040.0 + r * p;
    p = 1.0 / 720.0 + r * p;
    p = 1.0 / 120.0 + r * p;
    p = 1.0 / 24.0 + r * p;
    p = 1.0 / 6.0 + r * p;
    p = 0.5 + r * p;
    p = 1.0 + r * p;
    p = 1.0 + r * p;
    const auto ki = static_cast<std::int64_t>(k);
    return p * std::bit_cast<double>(static_cast<std::int64_t>((ki + 1023) << 52));
  }
}

} // namespace

template <typename Real>
void classifier_forward_backward(Real* losses, Real* dlogits, const Real* logits,
                                 const int* targets, int N, int V, int Vp,
                                 scalar_t<Real> dloss) {
  const std::size_t sVp = static_cast<std::size_t>(Vp);
#pragma omp parallel for schedule(static) if (static_cast<long>(N) * V > 32768)
  for (int n = 0; n < N; ++n) {
    const Real* l = logits + static_cast<std::size_t>(n) * sVp;
    const int tgt = targets[n];
    Real mx = l[0];
#pragma omp simd reduction(max : mx)
    for (int i = 0; i < V; ++i) mx = l[i] > mx ? l[i] : mx;
    const Real lt = l[tgt];  // read before an in-place write can clobber it
    Real sum = 0;
    if (dlogits == nullptr) {
#pragma omp simd reduction(+ : sum)
      for (int i = 0; i < V; ++i) sum += vexp(l[i] - mx);
    } else {
      Real* d = dlogits + static_cast<std::size_t>(n) * sVp;
      // d[i] is written only after l[i] (same index) is read: safe when aliased.
#pragma omp simd reduction(+ : sum)
      for (int i = 0; i < V; ++i) {
        const Real e = vexp(l[i] - mx);
        d[i] = e;
        sum += e;
      }
      const Real scale = dloss / sum;
#pragma omp simd
      for (int i = 0; i < V; ++i) d[i] *= scale;
      d[tgt] -= dloss;
      for (int i = V; i < Vp; ++i) d[i] = Real(0);
    }
    losses[n] = std::log(sum) - (lt - mx);
  }
}

template void classifier_forward_backward<float>(float*, float*, const float*, const int*, int,
                                                 int, int, float);
template void classifier_forward_backward<double>(double*, double*, const double*, const int*,
                                                  int, int, int, double);

} // namespace myelin::cpu
