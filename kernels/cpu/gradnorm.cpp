// Global gradient norm helpers.
//   sum_squares  : returns sum_i x[i]^2 in double (reads n, 2n FLOPs)
//   scale_inplace: x[i] *= s                        (reads n, writes n, n FLOPs)
// Parallel layout: sum_squares cuts x into fixed chunks of 64K elements (fixed,
// not per thread), each chunk is summed in double by one OpenMP thread into its
// own slot, and the chunk sums are added serially in chunk order, so the result
// is bit-identical for any thread count. scale_inplace splits n statically.
#include <algorithm>
#include <cstddef>
#include <vector>

#include "kernels/ops.h"

namespace myelin::cpu {

namespace {
constexpr std::size_t kChunk = std::size_t{1} << 16;
}

template <typename Real> double sum_squares(const Real* x, std::size_t n) {
  const std::size_t nchunks = (n + kChunk - 1) / kChunk;
  std::vector<double> partial(nchunks, 0.0);
#pragma omp parallel for schedule(static) if (nchunks > 1)
  for (std::size_t c = 0; c < nchunks; ++c) {
    const std::size_t lo = c * kChunk;
    const std::size_t hi = std::min(n, lo + kChunk);
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (std::size_t i = lo; i < hi; ++i) {
      const double xi = static_cast<double>(x[i]);
      s += xi * xi;
    }
    partial[c] = s;
  }
  double total = 0.0;
  for (double s : partial) total += s;
  return total;
}

template <typename Real> void scale_inplace(Real* x, std::size_t n, nondeduced_t<Real> s) {
#pragma omp parallel for simd schedule(static) if (n > 32768)
  for (std::size_t i = 0; i < n; ++i) x[i] *= s;
}

template double sum_squares<float>(const float*, std::size_t);
template double sum_squares<double>(const double*, std::size_t);
template void scale_inplace<float>(float*, std::size_t, float);
template void scale_inplace<double>(double*, std::size_t, double);

} // namespace myelin::cpu
