// Linear layer: out[N,OC] = inp[N,IC] @ weight[OC,IC]^T (+ bias[OC]).
//   forward : one gemm, 2*N*IC*OC FLOPs; reads N*IC + OC*IC (+OC), writes N*OC.
//   backward: dinp[N,IC] += dout @ weight        (gemm, 2*N*IC*OC FLOPs)
//             dweight[OC,IC] += dout^T @ inp     (gemm, 2*N*IC*OC FLOPs)
//             dbias[OC] += sum_n dout[n,:]       (N*OC adds)
//             reads N*OC + OC*IC + N*IC, writes N*IC + OC*IC (+OC).
// Parallel layout: the gemms go to OpenBLAS (cblas_sgemm / cblas_dgemm), which
// uses its own thread pool; they are called from the serial part of the code,
// never from inside an OpenMP region. The bias broadcast splits rows across
// OpenMP threads; dbias splits the OC columns into fixed 64-wide strips, one
// thread per strip, each adding rows in order n = 0..N-1 (deterministic).
#include <algorithm>
#include <cstddef>

#include <cblas.h>

#include "kernels/ops.h"

namespace myelin::cpu {

namespace {

// Row-major C[M,N] = alpha * op(A) @ op(B) + beta * C.
inline void gemm(bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda,
                 const float* B, int ldb, float beta, float* Cm, int ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M,
              N, K, alpha, A, lda, B, ldb, beta, Cm, ldc);
}
inline void gemm(bool ta, bool tb, int M, int N, int K, double alpha, const double* A, int lda,
                 const double* B, int ldb, double beta, double* Cm, int ldc) {
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M,
              N, K, alpha, A, lda, B, ldb, beta, Cm, ldc);
}

} // namespace

template <typename Real>
void matmul_forward(Real* out, const Real* inp, const Real* weight, const Real* bias, int N,
                    int IC, int OC) {
  if (N <= 0 || OC <= 0) return;
  const std::size_t sOC = static_cast<std::size_t>(OC);
  if (bias != nullptr) {
#pragma omp parallel for schedule(static) if (static_cast<long>(N) * OC > 32768)
    for (int n = 0; n < N; ++n) std::copy(bias, bias + sOC, out + static_cast<std::size_t>(n) * sOC);
  }
  if (IC <= 0) {
    if (bias == nullptr) std::fill(out, out + static_cast<std::size_t>(N) * sOC, Real(0));
    return;
  }
  gemm(false, true, N, OC, IC, Real(1), inp, IC, weight, IC, bias != nullptr ? Real(1) : Real(0),
       out, OC);
}

template <typename Real>
void matmul_backward(Real* dinp, Real* dweight, Real* dbias, const Real* dout, const Real* inp,
                     const Real* weight, int N, int IC, int OC) {
  if (N <= 0 || OC <= 0) return;
  if (IC > 0) {
    if (dinp != nullptr) gemm(false, false, N, IC, OC, Real(1), dout, OC, weight, IC, Real(1), dinp, IC);
    gemm(true, false, OC, IC, N, Real(1), dout, OC, inp, IC, Real(1), dweight, IC);
  }
  if (dbias != nullptr) {
    constexpr int kCols = 64;
    const std::size_t sOC = static_cast<std::size_t>(OC);
#pragma omp parallel for schedule(static) if (static_cast<long>(N) * OC > 32768)
    for (int c0 = 0; c0 < OC; c0 += kCols) {
      const int c1 = std::min(OC, c0 + kCols);
      for (int n = 0; n < N; ++n) {
        const Real* d = dout + static_cast<std::size_t>(n) * sOC;
#pragma omp simd
        for (int o = c0; o < c1; ++o) dbias[o] += d[o];
      }
    }
  }
}

template void matmul_forward<float>(float*, const float*, const float*, const float*, int, int,
                                    int);
template void matmul_forward<double>(double*, const double*, const double*, const double*, int,
                                     int, int);
template void matmul_backward<float>(float*, float*, float*, const float*, const float*,
                                     const float*, int, int, int);
template void matmul_backward<double>(double*, double*, double*, const double*, const double*,
                                      const double*, int, int, int);

} // namespace myelin::cpu
