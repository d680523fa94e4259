// CPU simulation of CUDA kernels: the inline-PTX wrappers of
// kernels/cuda/ptx.cuh (namespace myelin::cuda::ptx, same names and argument
// order), which gen_sim.py puts in place of that header. SIMULATION ONLY, see
// sim_runtime.h.
//
// Fragment layouts are those the PTX ISA documents (not scrambled as in
// sim_wmma.h: kernels written against mma.sync rely on them). With
// g = lane / 4 and t = lane % 4:
//  * mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32, D = A B + C with A
//    16x16, B 16x8, C/D 16x8. A in four 32-bit registers of two bf16 each (the
//    lower column in the low half): a0 = A[g][2t..2t+1], a1 = A[g+8][2t..2t+1],
//    a2 = A[g][2t+8..2t+9], a3 = A[g+8][2t+8..2t+9]. B in two: b0 = B[2t..2t+1][g],
//    b1 = B[2t+8..2t+9][g] (the lower row in the low half). C/D four floats:
//    c0, c1 = C[g][2t], C[g][2t+1]; c2, c3 = C[g+8][2t], C[g+8][2t+1].
//    Sums: exact products of the bf16 values, fp32 adds in increasing k after C.
//  * ldmatrix.sync.aligned.m8n8.{x1,x2,x4}[.trans].shared.b16: lanes 8i..8i+7
//    give the addresses of rows 0..7 of matrix i (16-byte aligned, 16 bytes in
//    the block's shared memory; lanes beyond 8*num are ignored). Register i of
//    lane l holds row g, columns 2t and 2t+1 of matrix i (with .trans: rows 2t,
//    2t+1 of column g). The data are read once for the whole warp, when all 32
//    lanes have arrived.
//  * cp.async.{ca,cg}.shared.global [dst], [src], 16 (or .ca 4), src_size: see
//    sim::detail::async_copy: the copy lands only at cp.async.wait_group /
//    wait_all, and its destination reads as NaN until then.
// mma.sync and ldmatrix are warp collectives of all 32 lanes (checked).
#pragma once

#include <cuda_bf16.h>

#include <cstdint>
#include <cstring>

#include "sim_device.h"

namespace myelin::cuda::ptx {

namespace sim_detail {
inline float bf16_lo(std::uint32_t r) { return __uint_as_float(r << 16); }
inline float bf16_hi(std::uint32_t r) { return __uint_as_float(r & 0xffff0000u); }

template <int N, bool Trans>
void ldmatrix(std::uint32_t* r, const void* row, const sim::detail::Loc& loc) {
  using sim::detail::fail;
  const int lane = sim::detail::t_ctx->lane;
  sim::detail::WarpExchange& ex = sim::detail::warp_exchange();
  ex.ptr[lane] = row;
  ex.gathered = false;
  sim::detail::warp_arrive(sim::detail::Op::kLdmatrix, 0xffffffffu, loc);
  if (!ex.gathered) { // the first lane to resume reads for the whole warp
    for (int k = 0; k < 8 * N; ++k) {
      const void* p = ex.ptr[k];
      if (reinterpret_cast<std::uintptr_t>(p) % 16 != 0)
        fail(loc, "ldmatrix: row address %p of lane %d is not 16-byte aligned", p, k);
      if (!sim::detail::in_block_shared(p, 16))
        fail(loc, "ldmatrix: row address %p of lane %d is not in the block's shared memory", p, k);
    }
    for (int l = 0; l < 32; ++l) {
      const int g = l / 4, t = l % 4;
      for (int i = 0; i < N; ++i) {
        std::uint16_t lo, hi;
        if (Trans) { // rows 2t, 2t+1 of column g
          std::memcpy(&lo, static_cast<const char*>(ex.ptr[8 * i + 2 * t]) + 2 * g, 2);
          std::memcpy(&hi, static_cast<const char*>(ex.ptr[8 * i + 2 * t + 1]) + 2 * g, 2);
        } else { // row g, columns 2t, 2t+1
          std::memcpy(&lo, static_cast<const char*>(ex.ptr[8 * i + g]) + 4 * t, 2);
          std::memcpy(&hi, static_cast<const char*>(ex.ptr[8 * i + g]) + 4 * t + 2, 2);
        }
        ex.frag[l][i] = std::uint32_t(lo) | (std::uint32_t(hi) << 16);
      }
    }
    ex.gathered = true;
  }
  for (int i = 0; i < N; ++i) r[i] = ex.frag[lane][i];
}
} // namespace sim_detail

inline void mma_bf16_16816(float (&d)[4], const std::uint32_t (&a)[4], std::uint32_t b0,
                           std::uint32_t b1,
                           const sim::detail::Loc& loc = sim::detail::Loc::current()) {
  using namespace sim_detail;
  const int lane = sim::detail::t_ctx->lane, g = lane / 4, t = lane % 4;
  sim::detail::WarpExchange& ex = sim::detail::warp_exchange();
  float* A = ex.a; // [16][16]
  float* B = ex.b; // [16][8]
  float* C = ex.c; // [16][8]
  A[g * 16 + 2 * t] = bf16_lo(a[0]);
  A[g * 16 + 2 * t + 1] = bf16_hi(a[0]);
  A[(g + 8) * 16 + 2 * t] = bf16_lo(a[1]);
  A[(g + 8) * 16 + 2 * t + 1] = bf16_hi(a[1]);
  A[g * 16 + 2 * t + 8] = bf16_lo(a[2]);
  A[g * 16 + 2 * t + 9] = bf16_hi(a[2]);
  A[(g + 8) * 16 + 2 * t + 8] = bf16_lo(a[3]);
  A[(g + 8) * 16 + 2 * t + 9] = bf16_hi(a[3]);
  B[(2 * t) * 8 + g] = bf16_lo(b0);
  B[(2 * t + 1) * 8 + g] = bf16_hi(b0);
  B[(2 * t + 8) * 8 + g] = bf16_lo(b1);
  B[(2 * t + 9) * 8 + g] = bf16_hi(b1);
  C[g * 8 + 2 * t] = d[0];
  C[g * 8 + 2 * t + 1] = d[1];
  C[(g + 8) * 8 + 2 * t] = d[2];
  C[(g + 8) * 8 + 2 * t + 1] = d[3];
  sim::detail::warp_arrive(sim::detail::Op::kMma, 0xffffffffu, loc);
  for (int e = 0; e < 4; ++e) {
    const int row = g + 8 * (e / 2), col = 2 * t + (e % 2);
    float s = C[row * 8 + col];
    for (int k = 0; k < 16; ++k) s += A[row * 16 + k] * B[k * 8 + col];
    d[e] = s;
  }
}

inline void ldmatrix_x1(std::uint32_t (&r)[1], const void* row,
                        const sim::detail::Loc& loc = sim::detail::Loc::current()) {
  sim_detail::ldmatrix<1, false>(r, row, loc);
}
inline void ldmatrix_x2(std::uint32_t (&r)[2], const void* row,
                        const sim::detail::Loc& loc = sim::detail::Loc::current()) {
  sim_detail::ldmatrix<2, false>(r, row, loc);
}
inline void ldmatrix_x4(std::uint32_t (&r)[4], const void* row,
                        const sim::detail::Loc& loc = sim::detail::Loc::current()) {
  sim_detail::ldmatrix<4, false>(r, row, loc);
}
inline void ldmatrix_x1_trans(std::uint32_t (&r)[1], const void* row,
                              const sim::detail::Loc& loc = sim::detail::Loc::current()) {
  sim_detail::ldmatrix<1, true>(r, row, loc);
}
inline void ldmatrix_x2_trans(std::uint32_t (&r)[2], const void* row,
                              const sim::detail::Loc& loc = sim::detail::Loc::current()) {
  sim_detail::ldmatrix<2, true>(r, row, loc);
}
inline void ldmatrix_x4_trans(std::uint32_t (&r)[4], const void* row,
                              const sim::detail::Loc& loc = sim::detail::Loc::current()) {
  sim_detail::ldmatrix<4, true>(r, row, loc);
}

inline void cp_async_cg16(void* dst, const void* src, unsigned src_bytes,
                          const sim::detail::Loc& loc = sim::detail::Loc::current()) {
  sim::detail::async_copy(dst, src, 16, src_bytes, loc);
}
inline void cp_async_ca16(void* dst, const void* src, unsigned src_bytes,
                          const sim::detail::Loc& loc = sim::detail::Loc::current()) {
  sim::detail::async_copy(dst, src, 16, src_bytes, loc);
}
inline void cp_async_ca4(void* dst, const void* src, unsigned src_bytes,
                         const sim::detail::Loc& loc = sim::detail::Loc::current()) {
  sim::detail::async_copy(dst, src, 4, src_bytes, loc);
}
inline void cp_async_commit() { sim::detail::async_commit(); }
template <int N>
inline void cp_async_wait_group(const sim::detail::Loc& loc = sim::detail::Loc::current()) {
  static_assert(N >= 0, "cp.async.wait_group N >= 0");
  sim::detail::async_wait(N, loc);
}
inline void cp_async_wait_all() { sim::detail::async_wait_all(); }

} // namespace myelin::cuda::ptx
