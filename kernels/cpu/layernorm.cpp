// LayerNorm over the last dimension, eps = 1e-5, biased variance.
//   forward : mean = avg(x); rstd = 1/sqrt(avg((x-mean)^2) + eps)
//             out = (x-mean)*rstd*weight + bias;  saves mean, rstd (N each)
//   backward: norm = (x-mean)*rstd, g = weight*dout
//             dinp += (g - avg(g) - norm*avg(g*norm)) * rstd
//             dweight += sum_n norm*dout;  dbias += sum_n dout
// Traffic (elements): forward reads N*C (+2C), writes N*C (+2N), ~8*N*C FLOPs
// (two-pass mean/variance); backward reads 2*N*C (+2N+C), writes N*C, ~14*N*C
// FLOPs. All math in Real (fp32 for float).
// Parallel layout: forward splits rows statically across OpenMP threads.
// Backward: rows in fixed blocks, each writing its rows of dinp and its own
// partial dweight/dbias slot, reduced in block order (row_block_grads.h): no
// atomics, bit-identical for any thread count.
#include <cmath>
#include <cstddef>

#include "kernels/cpu/row_block_grads.h"
#include "kernels/ops.h"

namespace myelin::cpu {

namespace {
// o = (x - m) * r * weight + bias: shared by the forward and the recomputation,
// so both produce the same bits.
template <typename Real>
inline void normalize_row(Real* o, const Real* x, const Real* weight, const Real* bias, Real m,
                          Real r, int C) {
#pragma omp simd
  for (int i = 0; i < C; ++i) o[i] = (x[i] - m) * r * weight[i] + bias[i];
}
} // namespace

template <typename Real>
void layernorm_forward(Real* out, Real* mean, Real* rstd, const Real* inp, const Real* weight,
                       const Real* bias, int N, int C) {
  const Real eps = static_cast<Real>(1e-5);
  const Real invC = Real(1) / static_cast<Real>(C);
#pragma omp parallel for schedule(static) if (static_cast <long>(N) * C > 16384)
  for (int n = 0; n < N; ++n) {
    const Real* x = inp + static_cast<std::size_t>(n) * C;
    Real* o = out + static_cast<std::size_t>(n) * C;
    Real s = 0;
#pragma omp simd reduction(+ : s)
    for (int i = 0; i < C; ++i) s += x[i];
    const Real m = s * invC;
    Real v = 0;
#pragma omp simd reduction(+ : v)
    for (int i = 0; i < C; ++i) {
      const Real d = x[i] - m;
      v += d * d;
    }
    const Real r = Real(1) / std::sqrt(v * invC + eps);
    normalize_row(o, x, weight, bias, m, r, C);
    mean[n] = m;
    rstd[n] = r;
  }
}

template <typename Real>
void layernorm_apply(Real* out, const Real* inp, const Real* weight, const Real* bias,
                     const Real* mean, const Real* rstd, int N, int C) {
#pragma omp parallel for schedule(static) if (static_cast <long>(N) * C > 16384)
  for (int n = 0; n < N; ++n) {
    const std::size_t off = static_cast<std::size_t>(n) * C;
    normalize_row(out + off, inp + off, weight, bias, mean[n], rstd[n], C);
  }
}

template <typename Real>
void layernorm_backward(Real* dinp, Real* dweight, Real* dbias, const Real* dout, const Real* inp,
                        const Real* weight, const Real* mean, const Real* rstd, int N, int C) {
  const std::size_t sC = static_cast<std::size_t>(C);
  const Real invC = Real(1) / static_cast<Real>(C);
  // Per row block: [dweight partial (C) | dbias partial (C)].
  RowBlockGrads<Real, 2> part(N, C);
#pragma omp parallel if (static_cast <long>(N) * C > 16384)
  {
#pragma omp for schedule(static)
    for (int blk = 0; blk < part.blocks(); ++blk) {
      Real* pw = part.slot(blk);
      Real* pb = pw + sC;
      for (int n = part.row_begin(blk); n < part.row_end(blk); ++n) {
        const Real* x = inp + static_cast<std::size_t>(n) * sC;
        const Real* d = dout + static_cast<std::size_t>(n) * sC;
        Real* di = dinp + static_cast<std::size_t>(n) * sC;
        const Real m = mean[n];
        const Real r = rstd[n];
        Real g_mean = 0, gn_mean = 0;
#pragma omp simd reduction(+ : g_mean, gn_mean)
        for (int i = 0; i < C; ++i) {
          const Real norm = (x[i] - m) * r;
          const Real g = weight[i] * d[i];
          g_mean += g;
          gn_mean += g * norm;
        }
        g_mean *= invC;
        gn_mean *= invC;
#pragma omp simd
        for (int i = 0; i < C; ++i) {
          const Real norm = (x[i] - m) * r;
          const Real g = weight[i] * d[i];
          pb[i] += d[i];
          pw[i] += norm * d[i];
          di[i] += (g - g_mean - norm * gn_mean) * r;
        }
      }
    }
    part.reduce_into({dweight, dbias});
  }
}

template void layernorm_forward<float>(float*, float*, float*, const float*, const float*,
                                       const float*, int, int);
template void layernorm_forward<double>(double*, double*, double*, const double*, const double*,
                                        const double*, int, int);
template void layernorm_apply<float>(float*, const float*, const float*, const float*, const float*,
                                     const float*, int, int);
template void layernorm_apply<double>(double*, const double*, const double*, const double*,
                                      const double*, const double*, int, int);
template void layernorm_backward<float>(float*, float*, float*, const float*, const float*,
                                        const float*, const float*, const float*, int, int);
template void layernorm_backward<double>(double*, double*, double*, const double*, const double*,
                                         const double*, const double*, const double*, int, int);

} // namespace myelin::cpu
