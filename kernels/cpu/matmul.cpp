// Linear layer: out[N,OC] = inp[N,IC] @ weight[OC,IC]^T (+ bias[OC]).
//   forward : one gemm, 2*N*IC*OC FLOPs; reads N*IC + OC*IC (+OC), writes N*OC.
//   backward: dinp[N,IC] += dout @ weight        (gemm, 2*N*IC*OC FLOPs)
//             dweight[OC,IC] += dout^T @ inp     (gemm, 2*N*IC*OC FLOPs)
//             dbias[OC] += sum_n dout[n,:]       (N*OC adds)
//             reads N*OC + OC*IC + N*IC, writes N*IC + OC*IC (+OC).
// Parallel layout: all parallelism comes from OpenMP. Each output (out, dinp,
// dweight) is cut into tiles by its shape alone, never by the thread count:
// row tiles (about 4, multiples of 16 rows, 16..256) when it has at least 64
// rows, else column tiles the same way, else one tile. Each tile is one
// single-threaded OpenBLAS gemm (cblas_sgemm / cblas_dgemm) over the whole
// inner dimension, and the OpenMP threads share the tiles. So every element
// comes from the same gemm call whatever the thread count: the results are
// bit-identical for any --threads (which a pool's replay of a contributor's
// steps relies on). OpenBLAS is set to one thread for the duration of the call
// and restored afterwards: measured on 2 Zen 4 cores, N=1024, IC=256, OC=768,
// ~200 GFLOP/s this way, versus 50-100 GFLOP/s when OpenBLAS's own threads run
// right after an OpenMP region (the two thread pools spin against each other).
// Calls under ~256K FLOPs run their tiles on the calling thread. dbias splits
// OC into fixed 64-wide strips, one thread per strip, adding rows in order
// n = 0..N-1 (deterministic, no atomics).
#include <algorithm>
#include <cstddef>

#include <cblas.h>
#include <omp.h>

#include "kernels/cpu/blas.h"
#include "kernels/ops.h"

namespace myelin::cpu {

namespace {

// The tiles of an output of rows x cols: tile t covers rows (or, when
// !by_rows, columns) [t * size, min(n, (t + 1) * size)).
struct Tiles {
  bool by_rows = true;
  int n = 0, size = 1, count = 1;
  int begin(int t) const { return t * size; }
  int end(int t) const { return std::min(n, (t + 1) * size); }
};
Tiles tiles(int rows, int cols) {
  constexpr int kMin = 64; // a dimension cut into tiles has at least this many
  Tiles t;
  t.by_rows = rows >= kMin || cols < kMin;
  t.n = t.by_rows ? rows : cols;
  if (t.n < kMin) {
    t.size = std::max(1, t.n);
    return t;
  }
  t.size = std::clamp((t.n / 4 + 15) / 16 * 16, 16, 256);
  t.count = (t.n + t.size - 1) / t.size;
  return t;
}

constexpr double kSerialFlops = 262144.0; // below this, one thread does the whole call

bool run_parallel(int N, int IC, int OC) {
  return 2.0 * N * IC * OC >= kSerialFlops && omp_get_max_threads() > 1;
}

} // namespace

template <typename Real>
void matmul_forward(Real* out, const Real* inp, const Real* weight, const nondeduced_t<Real>* bias,
                    int N, int IC, int OC) {
  if (N <= 0 || OC <= 0) return;
  const std::size_t sOC = static_cast<std::size_t>(OC);
  const std::size_t sIC = static_cast<std::size_t>(IC);
  const Real beta = bias != nullptr ? Real(1) : Real(0);
  if (IC <= 0) { // degenerate: out = bias (or 0)
    for (int n = 0; n < N; ++n)
      for (int o = 0; o < OC; ++o) out[n * sOC + o] = bias != nullptr ? bias[o] : Real(0);
    return;
  }
  BlasSingleThread blas1;
  const Tiles to = tiles(N, OC);
#pragma omp parallel for schedule(static) if (run_parallel(N, IC, OC))
  for (int t = 0; t < to.count; ++t) {
    const int a = to.begin(t), b = to.end(t);
    if (to.by_rows) { // out rows [a, b)
      if (bias != nullptr)
        for (int n = a; n < b; ++n) std::copy(bias, bias + sOC, out + n * sOC);
      gemm(false, true, b - a, OC, IC, Real(1), inp + a * sIC, IC, weight, IC, beta, out + a * sOC,
           OC);
    } else { // out columns [a, b)
      if (bias != nullptr)
        for (int n = 0; n < N; ++n) std::copy(bias + a, bias + b, out + n * sOC + a);
      gemm(false, true, N, b - a, IC, Real(1), inp, IC, weight + a * sIC, IC, beta, out + a, OC);
    }
  }
}

template <typename Real>
void matmul_backward(nondeduced_t<Real>* dinp, Real* dweight, nondeduced_t<Real>* dbias,
                     const Real* dout, const Real* inp, const Real* weight, int N, int IC, int OC,
                     nondeduced_t<Real> scale) {
  if (N <= 0 || OC <= 0) return;
  const std::size_t sOC = static_cast<std::size_t>(OC);
  const std::size_t sIC = static_cast<std::size_t>(IC);
  BlasSingleThread blas1;
  const Tiles ti = tiles(N, IC);  // dinp [N, IC]
  const Tiles tw = tiles(OC, IC); // dweight [OC, IC]
#pragma omp parallel if (run_parallel(N, IC, OC))
  {
    if (IC > 0) {
      // dinp[N,IC] += dout[N,OC] @ weight[OC,IC]
      if (dinp != nullptr) {
#pragma omp for schedule(static)
        for (int t = 0; t < ti.count; ++t) {
          const int a = ti.begin(t), b = ti.end(t);
          if (ti.by_rows)
            gemm(false, false, b - a, IC, OC, scale, dout + a * sOC, OC, weight, IC, Real(1),
                 dinp + a * sIC, IC);
          else
            gemm(false, false, N, b - a, OC, scale, dout, OC, weight + a, IC, Real(1), dinp + a,
                 IC);
        }
      }
      // dweight[OC,IC] += dout^T[OC,N] @ inp[N,IC]
#pragma omp for schedule(static)
      for (int t = 0; t < tw.count; ++t) {
        const int a = tw.begin(t), b = tw.end(t);
        if (tw.by_rows)
          gemm(true, false, b - a, IC, N, scale, dout + a, OC, inp, IC, Real(1), dweight + a * sIC,
               IC);
        else
          gemm(true, false, OC, b - a, N, scale, dout, OC, inp + a, IC, Real(1), dweight + a, IC);
      }
    }
    if (dbias != nullptr) {
      constexpr int kCols = 64;
#pragma omp for schedule(static)
      for (int c0 = 0; c0 < OC; c0 += kCols) {
        const int c1 = std::min(OC, c0 + kCols);
        for (int n = 0; n < N; ++n) {
          const Real* d = dout + n * sOC;
#pragma omp simd
          for (int o = c0; o < c1; ++o) dbias[o] += scale * d[o];
        }
      }
    }
  }
}

template void matmul_forward<float>(float*, const float*, const float*, const float*, int, int,
                                    int);
template void matmul_forward<double>(double*, const double*, const double*, const double*, int, int,
                                     int);
template void matmul_backward<float>(float*, float*, float*, const float*, const float*,
                                     const float*, int, int, int, float);
template void matmul_backward<double>(double*, double*, double*, const double*, const double*,
                                      const double*, int, int, int, double);

} // namespace myelin::cpu
