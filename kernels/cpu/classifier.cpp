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

#include "kernels/cpu/vexp.h"
#include "kernels/ops.h"

namespace myelin::cpu {

namespace {} // namespace

template <typename Real>
void classifier_forward_backward(Real* losses, nondeduced_t<Real>* dlogits, const Real* logits,
                                 const int* targets, int N, int V, int Vp,
                                 nondeduced_t<Real> dloss) {
  const std::size_t sVp = static_cast<std::size_t>(Vp);
#pragma omp parallel for schedule(static) if (static_cast <long>(N) * V > 32768)
  for (int n = 0; n < N; ++n) {
    const Real* l = logits + static_cast<std::size_t>(n) * sVp;
    const int tgt = targets[n];
    Real mx = l[0];
#pragma omp simd reduction(max : mx)
    for (int i = 0; i < V; ++i) mx = l[i] > mx ? l[i] : mx;
    const Real lt = l[tgt]; // read before an in-place write can clobber it
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

template void classifier_forward_backward<float>(float*, float*, const float*, const int*, int, int,
                                                 int, float);
template void classifier_forward_backward<double>(double*, double*, const double*, const int*, int,
                                                  int, int, double);

} // namespace myelin::cpu
