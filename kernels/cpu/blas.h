// BLAS helpers shared by the CPU kernels: a row-major gemm for float and
// double, and a guard that runs gemm calls single-threaded inside OpenMP.
#pragma once

#include <cblas.h>

namespace myelin::cpu {

// Row-major C[M,N] = alpha * op(A) @ op(B) + beta * C.
inline void gemm(bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda,
                 const float* B, int ldb, float beta, float* Cm, int ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N,
              K, alpha, A, lda, B, ldb, beta, Cm, ldc);
}
inline void gemm(bool ta, bool tb, int M, int N, int K, double alpha, const double* A, int lda,
                 const double* B, int ldb, double beta, double* Cm, int ldc) {
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N,
              K, alpha, A, lda, B, ldb, beta, Cm, ldc);
}

// While alive, gemm calls run on the calling thread. Only the pthreads build
// of OpenBLAS (openblas_get_parallel() == 1) needs telling: the OpenMP build
// already runs single-threaded inside an OpenMP region (and its
// openblas_set_num_threads would also change OpenMP's thread count), and the
// serial build has no threads. The previous setting is restored.
class BlasSingleThread {
 public:
  BlasSingleThread() : saved_(openblas_get_parallel() == 1 ? openblas_get_num_threads() : 1) {
    if (saved_ != 1) openblas_set_num_threads(1);
  }
  ~BlasSingleThread() {
    if (saved_ != 1) openblas_set_num_threads(saved_);
  }
  BlasSingleThread(const BlasSingleThread&) = delete;
  BlasSingleThread& operator=(const BlasSingleThread&) = delete;

 private:
  int saved_;
};

} // namespace myelin::cpu
