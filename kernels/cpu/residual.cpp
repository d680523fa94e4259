// Residual connection.
//   forward : out = a + b                      (n adds; reads 2n, writes n)
//   backward: da += dout; db += dout           (2n adds; reads 3n, writes 2n)
// Parallel layout: the n elements are split statically across OpenMP threads
// (only above 32K elements); the inner loop is vectorised.
#include <cstddef>

#include "kernels/ops.h"

namespace myelin::cpu {

template <typename Real>
void residual_forward(Real* out, const Real* a, const Real* b, std::size_t n) {
#pragma omp parallel for simd schedule(static) if (n > 32768)
  for (std::size_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

template <typename Real>
void residual_backward(Real* da, Real* db, const Real* dout, std::size_t n) {
#pragma omp parallel for simd schedule(static) if (n > 32768)
  for (std::size_t i = 0; i < n; ++i) {
    da[i] += dout[i];
    db[i] += dout[i];
  }
}

template void residual_forward<float>(float*, const float*, const float*, std::size_t);
template void residual_forward<double>(double*, const double*, const double*, std::size_t);
template void residual_backward<float>(float*, float*, const float*, std::size_t);
template void residual_backward<double>(double*, double*, const double*, std::size_t);

} // namespace myelin::cpu
