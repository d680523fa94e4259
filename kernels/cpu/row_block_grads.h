// Deterministic per-channel parameter gradients of a row-wise op (the
// normalisation backward passes): each row adds a contribution of C channels
// into K gradient vectors (LayerNorm: dweight and dbias; RMSNorm: dweight).
//
// Contract: accumulate_row_blocks(N, C, grads, par, row) calls row(n, part)
// exactly once for every n in [0, N); part points to K*C zero-initialised
// partial sums (gradient k at part[k*C .. k*C+C)) that row adds into, and row
// may also write any per-row output it owns (its row of dinp). Rows are cut
// into fixed blocks of 32 (fixed, not per thread), one task per block with its
// own partial slot; the slots are then added into grads[k] block by block in
// order, with threads splitting the channels. No atomics, and the result is
// bit-identical for any thread count. par = false runs on the calling thread.
// Must be called outside an OpenMP parallel region.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <vector>

namespace myelin::cpu {

template <int K, typename Real, typename RowFn>
void accumulate_row_blocks(int N, int C, const std::array<Real*, K>& grads, bool par, RowFn row) {
  constexpr int kRows = 32;
  const int nblk = (N + kRows - 1) / kRows;
  const std::size_t slot = static_cast<std::size_t>(K) * static_cast<std::size_t>(C);
  std::vector<Real> part(static_cast<std::size_t>(nblk) * slot);
#pragma omp parallel if (par)
  {
#pragma omp for schedule(static)
    for (int blk = 0; blk < nblk; ++blk) {
      Real* p = part.data() + static_cast<std::size_t>(blk) * slot;
      std::fill(p, p + slot, Real(0));
      const int n1 = std::min(N, (blk + 1) * kRows);
      for (int n = blk * kRows; n < n1; ++n) row(n, p);
    }
    // Reduce the block partials in block order; threads split the channels.
    constexpr int kCols = 64;
#pragma omp for schedule(static)
    for (int c0 = 0; c0 < C; c0 += kCols) {
      const int c1 = std::min(C, c0 + kCols);
      for (int blk = 0; blk < nblk; ++blk) {
        const Real* p = part.data() + static_cast<std::size_t>(blk) * slot;
        for (int k = 0; k < K; ++k) {
          Real* g = grads[static_cast<std::size_t>(k)];
          const Real* pk = p + static_cast<std::size_t>(k) * C;
#pragma omp simd
          for (int i = c0; i < c1; ++i) g[i] += pk[i];
        }
      }
    }
  }
}

} // namespace myelin::cpu
