// RMSNorm over the last dimension (Llama), no bias, eps given by the caller.
//   forward : rrms = 1/sqrt(avg(x^2) + eps);  out = x*rrms*weight;  saves rrms (N)
//   backward: xhat = x*rrms, g = weight*dout
//             dinp += (g - xhat*avg(g*xhat)) * rrms
//             dweight += sum_n xhat*dout
// Traffic (elements): forward reads N*C (+C), writes N*C (+N), ~5*N*C FLOPs;
// backward reads 3*N*C (dout, inp, dinp) (+C+N), writes N*C, ~11*N*C FLOPs.
// All math in Real (fp32 for float).
// Parallel layout: forward splits rows statically across OpenMP threads.
// Backward: rows in fixed blocks, each writing its rows of dinp and its own
// partial dweight slot, reduced in block order (row_block_grads.h): no
// atomics, bit-identical for any thread count.
#include <cmath>
#include <cstddef>

#include "kernels/cpu/row_block_grads.h"
#include "kernels/ops.h"

namespace myelin::cpu {

namespace {

// Rows below this many elements in total run on the calling thread.
constexpr long kParallelElems = 16384;

// o = x * r * weight: shared by the forward and the recomputation, so both
// produce the same bits.
template <typename Real>
inline void scale_row(Real* o, const Real* x, const Real* weight, Real r, int C) {
#pragma omp simd
  for (int i = 0; i < C; ++i) o[i] = x[i] * r * weight[i];
}

} // namespace

template <typename Real>
void rmsnorm_forward(Real* out, Real* rrms, const Real* inp, const Real* weight, int N, int C,
                     nondeduced_t<Real> eps) {
  const Real invC = Real(1) / static_cast<Real>(C);
#pragma omp parallel for schedule(static) if (static_cast <long>(N) * C > kParallelElems)
  for (int n = 0; n < N; ++n) {
    const Real* x = inp + static_cast<std::size_t>(n) * C;
    Real ss = 0;
#pragma omp simd reduction(+ : ss)
    for (int i = 0; i < C; ++i) ss += x[i] * x[i];
    const Real r = Real(1) / std::sqrt(ss * invC + eps);
    scale_row(out + static_cast<std::size_t>(n) * C, x, weight, r, C);
    rrms[n] = r;
  }
}

template <typename Real>
void rmsnorm_apply(Real* out, const Real* inp, const Real* weight, const Real* rrms, int N, int C) {
#pragma omp parallel for schedule(static) if (static_cast <long>(N) * C > kParallelElems)
  for (int n = 0; n < N; ++n) {
    const std::size_t off = static_cast<std::size_t>(n) * C;
    scale_row(out + off, inp + off, weight, rrms[n], C);
  }
}

template <typename Real>
void rmsnorm_backward(Real* dinp, Real* dweight, const Real* dout, const Real* inp,
                      const Real* weight, const Real* rrms, int N, int C) {
  const std::size_t sC = static_cast<std::size_t>(C);
  const Real invC = Real(1) / static_cast<Real>(C);
  RowBlockGrads<Real, 1> part(N, C); // per row block: dweight partial (C)
#pragma omp parallel if (static_cast <long>(N) * C > kParallelElems)
  {
#pragma omp for schedule(static)
    for (int blk = 0; blk < part.blocks(); ++blk) {
      Real* pw = part.slot(blk);
      for (int n = part.row_begin(blk); n < part.row_end(blk); ++n) {
        const Real* x = inp + static_cast<std::size_t>(n) * sC;
        const Real* d = dout + static_cast<std::size_t>(n) * sC;
        Real* di = dinp + static_cast<std::size_t>(n) * sC;
        const Real r = rrms[n];
        Real gx_mean = 0;
#pragma omp simd reduction(+ : gx_mean)
        for (int i = 0; i < C; ++i) gx_mean += weight[i] * d[i] * (x[i] * r);
        gx_mean *= invC;
#pragma omp simd
        for (int i = 0; i < C; ++i) {
          const Real xhat = x[i] * r;
          pw[i] += xhat * d[i];
          di[i] += (weight[i] * d[i] - xhat * gx_mean) * r;
        }
      }
    }
    part.reduce_into({dweight});
  }
}

template void rmsnorm_forward<float>(float*, float*, const float*, const float*, int, int, float);
template void rmsnorm_forward<double>(double*, double*, const double*, const double*, int, int,
                                      double);
template void rmsnorm_apply<float>(float*, const float*, const float*, const float*, int, int);
template void rmsnorm_apply<double>(double*, const double*, const double*, const double*, int, int);
template void rmsnorm_backward<float>(float*, float*, const float*, const float*, const float*,
                                      const float*, int, int);
template void rmsnorm_backward<double>(double*, double*, const double*, const double*,
                                       const double*, const double*, int, int);

} // namespace myelin::cpu
