// Deterministic per-channel parameter gradients of a row-wise op (the
// normalisation backward passes): every row adds a contribution of C channels
// into K gradient vectors (LayerNorm: dweight and dbias; RMSNorm: dweight).
//
// Contract: the N rows are cut into fixed blocks of kRows (fixed, not per
// thread). The op runs one task per block: slot(blk) returns that block's K*C
// partial sums, zeroed (gradient k at [k*C, k*C + C)), and the task adds the
// contributions of rows [row_begin(blk), row_end(blk)) into them. Then every
// thread of the op's OpenMP region (or the one thread of a serial call) calls
// reduce_into(grads), which adds the slots into grads[k] block by block, in
// block order, with the threads splitting the channels (an orphaned `omp for`:
// its implicit barrier also waits for all blocks). No atomics; the result is
// bit-identical for any thread count.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <vector>

namespace myelin::cpu {

template <typename Real, int K> class RowBlockGrads {
 public:
  static constexpr int kRows = 32;

  RowBlockGrads(int N, int C)
      : N_(N), C_(C), blocks_((N + kRows - 1) / kRows),
        part_(static_cast<std::size_t>(blocks_) * K * static_cast<std::size_t>(C)) {}

  int blocks() const { return blocks_; }
  int row_begin(int blk) const { return blk * kRows; }
  int row_end(int blk) const { return std::min(N_, (blk + 1) * kRows); }

  Real* slot(int blk) {
    Real* p = part_.data() + static_cast<std::size_t>(blk) * K * static_cast<std::size_t>(C_);
    std::fill(p, p + static_cast<std::size_t>(K) * C_, Real(0));
    return p;
  }

  void reduce_into(const std::array<Real*, K>& grads) const {
    constexpr int kCols = 64;
#pragma omp for schedule(static)
    for (int c0 = 0; c0 < C_; c0 += kCols) {
      const int c1 = std::min(C_, c0 + kCols);
      for (int blk = 0; blk < blocks_; ++blk) {
        const Real* p =
            part_.data() + static_cast<std::size_t>(blk) * K * static_cast<std::size_t>(C_);
        for (int k = 0; k < K; ++k) {
          Real* g = grads[static_cast<std::size_t>(k)];
          const Real* pk = p + static_cast<std::size_t>(k) * C_;
#pragma omp simd
          for (int i = c0; i < c1; ++i) g[i] += pk[i];
        }
      }
    }
  }

 private:
  int N_, C_, blocks_;
  std::vector<Real> part_;
};

} // namespace myelin::cpu
