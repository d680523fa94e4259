// Token + position embedding (GPT-2 encoder).
//   forward : out[b,t,:] = wte[tokens[b,t],:] + wpe[t,:]
//   backward: dwte[tokens[b,t],:] += dout[b,t,:];  dwpe[t,:] += dout[b,t,:]
// Traffic (elements): forward reads 2*B*T*C, writes B*T*C, 0 FLOPs beyond B*T*C
// adds; backward reads B*T*C of dout plus the touched rows of dwte/dwpe, and
// does 2*B*T*C adds.
// Parallel layout: forward splits the B*T rows statically across OpenMP threads.
// Backward is deterministic with no atomics: dwpe is split over t (each thread
// owns whole rows and adds the B contributions in order b = 0..B-1); for dwte,
// the positions are bucketed by token (counting sort, serial, O(B*T + Vp)) and
// the distinct tokens are split across threads, each adding its positions in
// increasing order. The result does not depend on the thread count.
#include <algorithm>
#include <cstddef>
#include <vector>

#include "kernels/ops.h"

namespace myelin::cpu {

template <typename Real>
void encoder_forward(Real* out, const int* tokens, const Real* wte, const nondeduced_t<Real>* wpe,
                     int B, int T, int C) {
  const std::ptrdiff_t N = static_cast<std::ptrdiff_t>(B) * T;
#pragma omp parallel for schedule(static) if (N * C > 32768)
  for (std::ptrdiff_t n = 0; n < N; ++n) {
    const std::size_t t = static_cast<std::size_t>(n % T);
    Real* o = out + static_cast<std::size_t>(n) * C;
    const Real* e = wte + static_cast<std::size_t>(tokens[n]) * C;
    if (wpe == nullptr) { // rotary models: the token embedding only
      std::copy(e, e + C, o);
      continue;
    }
    const Real* p = wpe + t * C;
#pragma omp simd
    for (int i = 0; i < C; ++i) o[i] = e[i] + p[i];
  }
}

template <typename Real>
void encoder_backward(Real* dwte, nondeduced_t<Real>* dwpe, const Real* dout, const int* tokens,
                      int B, int T, int C, int Vp) {
  const std::size_t N = static_cast<std::size_t>(B) * T;
  const std::size_t sC = static_cast<std::size_t>(C);

  // dwpe: thread owns row t, sums over b in order.
#pragma omp parallel for schedule(static) if (N * sC > 32768)
  for (int t = 0; t < (dwpe ? T : 0); ++t) {
    Real* dp = dwpe + static_cast<std::size_t>(t) * sC;
    for (int b = 0; b < B; ++b) {
      const Real* d = dout + (static_cast<std::size_t>(b) * T + t) * sC;
#pragma omp simd
      for (int i = 0; i < C; ++i) dp[i] += d[i];
    }
  }

  // dwte: bucket positions by token (stable), then one thread per token row.
  std::vector<int> start(static_cast<std::size_t>(Vp) + 1, 0);
  for (std::size_t n = 0; n < N; ++n) ++start[static_cast<std::size_t>(tokens[n]) + 1];
  std::vector<int> distinct;
  for (int v = 0; v < Vp; ++v) {
    if (start[static_cast<std::size_t>(v) + 1] > 0) distinct.push_back(v);
    start[static_cast<std::size_t>(v) + 1] += start[static_cast<std::size_t>(v)];
  }
  std::vector<int> fill(start.begin(), start.end() - 1);
  std::vector<int> order(N);
  for (std::size_t n = 0; n < N; ++n)
    order[static_cast<std::size_t>(fill[static_cast<std::size_t>(tokens[n])]++)] =
        static_cast<int>(n);

  const std::ptrdiff_t ndistinct = static_cast<std::ptrdiff_t>(distinct.size());
#pragma omp parallel for schedule(dynamic, 16) if (N * sC > 32768)
  for (std::ptrdiff_t k = 0; k < ndistinct; ++k) {
    const std::size_t v = static_cast<std::size_t>(distinct[static_cast<std::size_t>(k)]);
    Real* dw = dwte + v * sC;
    for (int j = start[v]; j < start[v + 1]; ++j) {
      const Real* d = dout + static_cast<std::size_t>(order[static_cast<std::size_t>(j)]) * sC;
#pragma omp simd
      for (int i = 0; i < C; ++i) dw[i] += d[i];
    }
  }
}

template void encoder_forward<float>(float*, const int*, const float*, const float*, int, int, int);
template void encoder_forward<double>(double*, const int*, const double*, const double*, int, int,
                                      int);
template void encoder_backward<float>(float*, float*, const float*, const int*, int, int, int, int);
template void encoder_backward<double>(double*, double*, const double*, const int*, int, int, int,
                                       int);

} // namespace myelin::cpu
