// Causal multi-head self-attention on tensor cores (bf16 WMMA 16x16x16, fp32
// accumulators), flash style, bf16 storage, head size hs = 64 or 128. Same
// layout and semantics as attention.cu: qkv [B,T,3C] = (q | k | v), out [B,T,C],
// lse [B,NH,T] = m + log(l) of the scaled scores (scale 1/sqrt(hs)); backward
// overwrites dqkv, scratch (B*NH*T floats) holds Drow = rowsum(dO * O).
// Launch: 128 threads (4 warps) per block, 64-row tiles (warp w owns rows
// 16w..16w+15), 64-wide inner tiles; bf16 tiles in shared memory with row
// stride hs+8. Accumulator element -> (row, col) is read once per warp from a
// fragment loaded from an index matrix, so masks, exp, row rescaling and the
// output stores need no knowledge of the opaque WMMA layout.
//  * forward, block per (query tile, b*NH+h), heaviest first: Q fragments in
//    registers; per key tile S = QK^T -> shared f32, a lane pair per row does the
//    online softmax and writes P (bf16); O (registers) *= alpha; O += PV.
//    Shared: K, V, S (stages Q), P: hs 64 45,312 B; hs 128 61,696 B.
//  * backward dQ, block per query tile, heaviest first: Drow of its rows into
//    scratch; per key tile S = QK^T, dP = dO V^T, P = exp(scale S - lse),
//    dS = P (dP - Drow) -> bf16 shared, dQ += dS K; dQ *= scale.
//    Shared: K, V (stage Q, dO), dS: hs 64 28,160 B; hs 128 44,544 B.
//  * backward dK/dV, block per key tile, low tiles (most work) first, after dQ
//    on the stream (reads Drow): per query tile S^T, dP^T, P^T, dS^T -> bf16
//    shared, dV += P^T dO, dK += dS^T Q; dK *= scale.
//    Shared: K, V, Q, dO, P^T, dS^T: hs 64 55,808 B; hs 128 88,576 B.
// 16x16 blocks wholly above the diagonal are skipped. No atomics, fixed-order
// sums: bit-identical run to run. Partial tiles are zero-filled on load and
// masked on store. Pointers must be 16-byte aligned.
// FLOPs (causal, K = B*NH*hs*T(T+1)/2 multiply-adds per triangle GEMM):
//   forward 4K; backward useful 10K, executed 14K (S, dP computed in both
//   kernels); executed adds ~7.5*B*NH*hs*T multiply-adds per GEMM (diagonal
//   16x16 blocks computed whole) and the padding rows of a partial last tile.
// Bytes: forward reads qkv (K, V once per query tile, mostly from L2), writes
//   out + lse; backward reads qkv, O, dO, lse, writes dqkv + Drow.
#include <mma.h>

#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <stdexcept>
#include <string>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops_cuda.h"

namespace myelin::cuda {

namespace {

namespace wmma = nvcuda::wmma;

constexpr int TILE = 64; // query rows per block tile == keys per inner tile
constexpr int NWARP = 4; // warps per block; warp w owns tile rows 16w .. 16w+15
constexpr int NT = 32 * NWARP;
constexpr int LDS = TILE + 4; // fp32 score tile row stride (multiple of 4)
constexpr int LDP = TILE + 8; // bf16 P / dS tile row stride (multiple of 8)
static_assert(TILE == 16 * NWARP, "one 16-row slice per warp");

using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major>;
using FragBc = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major>;
using FragBr = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major>;
using FragC = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;
constexpr int NE = FragC::num_elements;

template <int HS> __host__ __device__ constexpr int ldh() { return HS + 8; }

// Shared memory bytes of each kernel (every buffer a multiple of 128 bytes, so
// all fragment base pointers stay 32-byte aligned).
template <int HS> constexpr std::size_t tile_bytes() {
  return std::size_t(TILE) * ldh<HS>() * sizeof(bf16);
}
constexpr std::size_t s_bytes = std::size_t(TILE) * LDS * sizeof(float);
constexpr std::size_t p_bytes = std::size_t(TILE) * LDP * sizeof(bf16);
constexpr std::size_t row_bytes = std::size_t(TILE) * sizeof(float);
template <int HS> constexpr std::size_t fwd_bytes() {
  return 2 * tile_bytes<HS>() + s_bytes + p_bytes + row_bytes;
}
template <int HS> constexpr std::size_t dq_bytes() {
  return 2 * tile_bytes<HS>() + p_bytes + 2 * row_bytes;
}
template <int HS> constexpr std::size_t dkv_bytes() {
  return 4 * tile_bytes<HS>() + 2 * p_bytes + 2 * row_bytes;
}
static_assert(tile_bytes<64>() % 128 == 0 && tile_bytes<128>() % 128 == 0, "alignment");
static_assert(s_bytes % 128 == 0 && p_bytes % 128 == 0 && row_bytes % 128 == 0, "alignment");
// The forward stages Q in the S buffer: it must hold a bf16 tile.
static_assert(tile_bytes<128>() <= s_bytes && tile_bytes<64>() <= s_bytes, "Q staging");

// Rows [r0, r0 + 64) of one head's hs columns of a [*, row_stride] bf16 matrix
// (src points at row 0, first column of the head) -> dst [64][hs+8]; rows >= Tn
// are zero. 16-byte vectors; all threads of the block take part.
template <int HS>
__device__ __forceinline__ void load_tile(bf16* dst, const bf16* src, std::size_t row_stride,
                                          int r0, int Tn) {
  constexpr int VPR = HS / 8; // 16-byte vectors per row
  constexpr int LD = ldh<HS>();
  static_assert(TILE * VPR % NT == 0, "whole vectors per thread");
#pragma unroll
  for (int k = 0; k < TILE * VPR / NT; ++k) {
    const int v = int(threadIdx.x) + k * NT;
    const int r = v / VPR, c = (v - r * VPR) * 8;
    const int t = r0 + r;
    uint4 x = make_uint4(0u, 0u, 0u, 0u);
    if (t < Tn) x = *reinterpret_cast<const uint4*>(src + std::size_t(t) * row_stride + c);
    *reinterpret_cast<uint4*>(dst + r * LD + c) = x;
  }
}

// Per-warp map of accumulator fragment elements: idx[e] = 16*row + col of the
// element e this lane holds. `scratch` is 256 floats of shared memory private to
// the warp, 32-byte aligned.
__device__ __forceinline__ void fragment_index(int idx[NE], float* scratch) {
  const int lane = threadIdx.x & 31;
  for (int e = lane; e < 256; e += 32) scratch[e] = float(e);
  __syncwarp();
  FragC f;
  wmma::load_matrix_sync(f, scratch, 16, wmma::mem_row_major);
#pragma unroll
  for (int e = 0; e < NE; ++e) idx[e] = int(f.x[e]);
  __syncwarp();
}

// ---- forward -----------------------------------------------------------------------------------
template <int HS>
__global__ void __launch_bounds__(NT)
    attn_tc_fwd_kernel(bf16* out, float* lse, const bf16* qkv, int Tn, int C, int NH, float scale) {
  constexpr int LD = ldh<HS>();
  constexpr int KS = HS / 16; // 16-wide slices of the head dimension
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* sK = reinterpret_cast<bf16*>(smem);
  bf16* sV = sK + TILE * LD;
  float* sS = reinterpret_cast<float*>(sV + TILE * LD);    // [64][LDS]; stages Q first
  bf16* sP = reinterpret_cast<bf16*>(sS + TILE * LDS);     // [64][LDP]
  float* sRow = reinterpret_cast<float*>(sP + TILE * LDP); // [64]: alpha, then 1/l
  bf16* sQ = reinterpret_cast<bf16*>(sS);

  const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5;
  const int qt = int(gridDim.x) - 1 - int(blockIdx.x); // heaviest tiles first
  const int bh = blockIdx.y, b = bh / NH, h = bh - b * NH;
  const int q0 = qt * TILE;
  const std::size_t rs = 3 * std::size_t(C);
  const bf16* base = qkv + std::size_t(b) * Tn * rs + std::size_t(h) * HS;

  int idx[NE];
  fragment_index(idx, reinterpret_cast<float*>(sK) + w * 256);
  __syncthreads(); // sK no longer used as index scratch
  load_tile<HS>(sQ, base, rs, q0, Tn);
  __syncthreads();
  FragA qf[KS];
#pragma unroll
  for (int kk = 0; kk < KS; ++kk) wmma::load_matrix_sync(qf[kk], sQ + w * 16 * LD + kk * 16, LD);
  FragC o[KS];
#pragma unroll
  for (int f = 0; f < KS; ++f) wmma::fill_fragment(o[f], 0.0f);

  // Softmax: lane pair (2r, 2r+1) owns row r of the warp's slice, columns of
  // parity ph. Both lanes keep identical m, l.
  const int pr = lane >> 1, ph = lane & 1;
  const int i = q0 + w * 16 + pr; // this lane pair's query row
  float m_run = -INFINITY, l_run = 0.0f;
  float* srow = sS + (w * 16 + pr) * LDS;
  bf16* prow = sP + (w * 16 + pr) * LDP;

  for (int kt = 0; kt <= qt; ++kt) {
    const int k0 = kt * TILE;
    __syncthreads(); // previous K/V (and Q staging) fully consumed
    load_tile<HS>(sK, base + C, rs, k0, Tn);
    load_tile<HS>(sV, base + 2 * C, rs, k0, Tn);
    __syncthreads();
    // Key blocks n > nmax lie entirely above the diagonal for this warp's rows.
    const int nmax = kt == qt ? w : NWARP - 1;
#pragma unroll
    for (int n = 0; n < TILE / 16; ++n) {
      if (n > nmax) continue;
      FragC s;
      wmma::fill_fragment(s, 0.0f);
#pragma unroll
      for (int kk = 0; kk < KS; ++kk) {
        FragBc kb; // K^T: element (d, key) at sK[key * LD + d]
        wmma::load_matrix_sync(kb, sK + n * 16 * LD + kk * 16, LD);
        wmma::mma_sync(s, qf[kk], kb, s);
      }
      wmma::store_matrix_sync(sS + w * 16 * LDS + n * 16, s, LDS, wmma::mem_row_major);
    }
    __syncwarp();
    const int ncol = (nmax + 1) * 16;
    float mx = -INFINITY;
    for (int c = ph; c < ncol; c += 2)
      if (k0 + c <= i) mx = fmaxf(mx, srow[c] * scale);
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    const float m_new = fmaxf(m_run, mx);
    // m_new == -inf only while every key so far is masked (cannot happen for
    // BR == BC tiles, kept for safety): nothing to rescale, P = 0.
    const bool any = m_new != -INFINITY;
    const float alpha = any ? expf(m_run - m_new) : 1.0f; // first tile: exp(-inf) = 0
    float sum = 0.0f;
    for (int c = ph; c < ncol; c += 2) {
      const float p = (any && k0 + c <= i) ? expf(srow[c] * scale - m_new) : 0.0f;
      prow[c] = __float2bfloat16_rn(p);
      sum += p;
    }
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    l_run = l_run * alpha + sum;
    m_run = m_new;
    if (ph == 0) sRow[w * 16 + pr] = alpha;
    __syncwarp();
#pragma unroll
    for (int f = 0; f < KS; ++f)
#pragma unroll
      for (int e = 0; e < NE; ++e) o[f].x[e] *= sRow[w * 16 + (idx[e] >> 4)];
#pragma unroll
    for (int kk = 0; kk < TILE / 16; ++kk) {
      if (kk > nmax) continue; // P columns there are all zero (and not written)
      FragA pa;
      wmma::load_matrix_sync(pa, sP + w * 16 * LDP + kk * 16, LDP);
#pragma unroll
      for (int f = 0; f < KS; ++f) {
        FragBr vb; // V: element (key, d) at sV[key * LD + d]
        wmma::load_matrix_sync(vb, sV + kk * 16 * LD + f * 16, LD);
        wmma::mma_sync(o[f], pa, vb, o[f]);
      }
    }
  }
  __syncwarp(); // every lane has read its alphas
  if (ph == 0) {
    sRow[w * 16 + pr] = l_run > 0.0f ? 1.0f / l_run : 0.0f;
    if (i < Tn) lse[std::size_t(bh) * Tn + i] = m_run + logf(l_run);
  }
  __syncwarp();
#pragma unroll
  for (int e = 0; e < NE; ++e) {
    const int r = idx[e] >> 4, c = idx[e] & 15;
    const int t = q0 + w * 16 + r;
    if (t >= Tn) continue;
    const float inv = sRow[w * 16 + r];
    bf16* orow = out + (std::size_t(b) * Tn + t) * C + std::size_t(h) * HS + c;
#pragma unroll
    for (int f = 0; f < KS; ++f) orow[f * 16] = __float2bfloat16_rn(o[f].x[e] * inv);
  }
}

// ---- backward: dQ (and Drow) -------------------------------------------------------------------
template <int HS>
__global__ void __launch_bounds__(NT)
    attn_tc_dq_kernel(bf16* dqkv, float* Drow, const bf16* dout, const bf16* qkv, const bf16* out,
                      const float* lse, int Tn, int C, int NH, float scale) {
  constexpr int LD = ldh<HS>();
  constexpr int KS = HS / 16;
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* sK = reinterpret_cast<bf16*>(smem); // stages Q first
  bf16* sV = sK + TILE * LD;                // stages dO first
  bf16* sDS = sV + TILE * LD;               // [64][LDP]
  float* sLse = reinterpret_cast<float*>(sDS + TILE * LDP);
  float* sD = sLse + TILE;

  const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5;
  const int qt = int(gridDim.x) - 1 - int(blockIdx.x);
  const int bh = blockIdx.y, b = bh / NH, h = bh - b * NH;
  const int q0 = qt * TILE;
  const std::size_t rs = 3 * std::size_t(C);
  const bf16* base = qkv + std::size_t(b) * Tn * rs + std::size_t(h) * HS;
  const std::size_t ooff = std::size_t(b) * Tn * C + std::size_t(h) * HS;

  int idx[NE];
  fragment_index(idx, reinterpret_cast<float*>(sK) + w * 256);
  __syncthreads();
  load_tile<HS>(sK, base, rs, q0, Tn);
  load_tile<HS>(sV, dout + ooff, std::size_t(C), q0, Tn);
  if (tid < TILE) {
    const int t = q0 + tid;
    sLse[tid] = t < Tn ? lse[std::size_t(bh) * Tn + t] : 0.0f;
  }
  __syncthreads();
  FragA qf[KS], gf[KS];
#pragma unroll
  for (int kk = 0; kk < KS; ++kk) {
    wmma::load_matrix_sync(qf[kk], sK + w * 16 * LD + kk * 16, LD);
    wmma::load_matrix_sync(gf[kk], sV + w * 16 * LD + kk * 16, LD);
  }
  // Drow for the warp's 16 rows: lane pair per row, half of the channels each.
  {
    const int pr = lane >> 1, ph = lane & 1;
    const int t = q0 + w * 16 + pr;
    float acc = 0.0f;
    if (t < Tn) {
      const bf16* grow = sV + (w * 16 + pr) * LD + ph * (HS / 2);
      const bf16* orow = out + ooff + std::size_t(t) * C + ph * (HS / 2);
#pragma unroll
      for (int v = 0; v < HS / 2; v += 8) {
        const Vec<bf16, 8> g = load_vec<8>(grow + v);
        const Vec<bf16, 8> y = load_vec<8>(orow + v);
#pragma unroll
        for (int k = 0; k < 8; ++k) acc += to_f32(g.v[k]) * to_f32(y.v[k]);
      }
    }
    acc += __shfl_xor_sync(0xffffffffu, acc, 1);
    if (ph == 0) {
      sD[w * 16 + pr] = acc; // 0 for rows >= Tn
      if (t < Tn) Drow[std::size_t(bh) * Tn + t] = acc;
    }
  }
  __syncwarp(); // sD rows of this warp are read only by this warp
  FragC dq[KS];
#pragma unroll
  for (int f = 0; f < KS; ++f) wmma::fill_fragment(dq[f], 0.0f);

  for (int kt = 0; kt <= qt; ++kt) {
    const int k0 = kt * TILE;
    __syncthreads(); // Q/dO staging, previous K/V and this warp's dS reads done
    load_tile<HS>(sK, base + C, rs, k0, Tn);
    load_tile<HS>(sV, base + 2 * C, rs, k0, Tn);
    __syncthreads();
    const int nmax = kt == qt ? w : NWARP - 1;
#pragma unroll
    for (int n = 0; n < TILE / 16; ++n) {
      if (n > nmax) continue;
      FragC s, dp;
      wmma::fill_fragment(s, 0.0f);
      wmma::fill_fragment(dp, 0.0f);
#pragma unroll
      for (int kk = 0; kk < KS; ++kk) {
        FragBc kb, vb;
        wmma::load_matrix_sync(kb, sK + n * 16 * LD + kk * 16, LD);
        wmma::mma_sync(s, qf[kk], kb, s);
        wmma::load_matrix_sync(vb, sV + n * 16 * LD + kk * 16, LD);
        wmma::mma_sync(dp, gf[kk], vb, dp);
      }
#pragma unroll
      for (int e = 0; e < NE; ++e) {
        const int r = idx[e] >> 4, c = idx[e] & 15;
        const int ti = q0 + w * 16 + r, tj = k0 + n * 16 + c;
        float ds = 0.0f;
        if (tj <= ti && ti < Tn) {
          const float p = expf(s.x[e] * scale - sLse[w * 16 + r]);
          ds = p * (dp.x[e] - sD[w * 16 + r]);
        }
        sDS[(w * 16 + r) * LDP + n * 16 + c] = __float2bfloat16_rn(ds);
      }
    }
    __syncwarp();
#pragma unroll
    for (int kk = 0; kk < TILE / 16; ++kk) {
      if (kk > nmax) continue;
      FragA da;
      wmma::load_matrix_sync(da, sDS + w * 16 * LDP + kk * 16, LDP);
#pragma unroll
      for (int f = 0; f < KS; ++f) {
        FragBr kb; // K: element (key, d) at sK[key * LD + d]
        wmma::load_matrix_sync(kb, sK + kk * 16 * LD + f * 16, LD);
        wmma::mma_sync(dq[f], da, kb, dq[f]);
      }
    }
  }
#pragma unroll
  for (int e = 0; e < NE; ++e) {
    const int r = idx[e] >> 4, c = idx[e] & 15;
    const int t = q0 + w * 16 + r;
    if (t >= Tn) continue;
    bf16* drow = dqkv + (std::size_t(b) * Tn + t) * rs + std::size_t(h) * HS + c;
#pragma unroll
    for (int f = 0; f < KS; ++f) drow[f * 16] = __float2bfloat16_rn(dq[f].x[e] * scale);
  }
}

// ---- backward: dK, dV --------------------------------------------------------------------------
template <int HS>
__global__ void __launch_bounds__(NT)
    attn_tc_dkv_kernel(bf16* dqkv, const float* Drow, const bf16* dout, const bf16* qkv,
                       const float* lse, int Tn, int C, int NH, float scale) {
  constexpr int LD = ldh<HS>();
  constexpr int KS = HS / 16;
  // K, V operand fragments stay in registers for hs 64; for hs 128 they would
  // not fit next to the dK, dV accumulators and are re-read from shared memory.
  constexpr bool kRegKV = HS <= 64;
  constexpr int KR = kRegKV ? KS : 1;
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* sK = reinterpret_cast<bf16*>(smem);
  bf16* sV = sK + TILE * LD;
  bf16* sQ = sV + TILE * LD;
  bf16* sG = sQ + TILE * LD; // dO
  bf16* sPT = sG + TILE * LD;
  bf16* sDST = sPT + TILE * LDP;
  float* sLse = reinterpret_cast<float*>(sDST + TILE * LDP);
  float* sD = sLse + TILE;

  const int tid = threadIdx.x, w = tid >> 5;
  const int kt = blockIdx.x; // low key tiles see the most query tiles: they start first
  const int nq = (Tn + TILE - 1) / TILE;
  const int bh = blockIdx.y, b = bh / NH, h = bh - b * NH;
  const int k0 = kt * TILE;
  const std::size_t rs = 3 * std::size_t(C);
  const bf16* base = qkv + std::size_t(b) * Tn * rs + std::size_t(h) * HS;
  const bf16* gbase = dout + std::size_t(b) * Tn * C + std::size_t(h) * HS;

  int idx[NE];
  fragment_index(idx, reinterpret_cast<float*>(sQ) + w * 256);
  load_tile<HS>(sK, base + C, rs, k0, Tn);
  load_tile<HS>(sV, base + 2 * C, rs, k0, Tn);
  __syncthreads();
  FragA kf[KR], vf[KR];
  if constexpr (kRegKV) {
#pragma unroll
    for (int kk = 0; kk < KS; ++kk) {
      wmma::load_matrix_sync(kf[kk], sK + w * 16 * LD + kk * 16, LD);
      wmma::load_matrix_sync(vf[kk], sV + w * 16 * LD + kk * 16, LD);
    }
  }
  FragC dk[KS], dv[KS];
#pragma unroll
  for (int f = 0; f < KS; ++f) {
    wmma::fill_fragment(dk[f], 0.0f);
    wmma::fill_fragment(dv[f], 0.0f);
  }

  for (int qt = kt; qt < nq; ++qt) {
    const int q0 = qt * TILE;
    __syncthreads(); // index scratch / previous Q, dO, lse, D and P^T, dS^T consumed
    load_tile<HS>(sQ, base, rs, q0, Tn);
    load_tile<HS>(sG, gbase, std::size_t(C), q0, Tn);
    if (tid < TILE) {
      const int t = q0 + tid;
      sLse[tid] = t < Tn ? lse[std::size_t(bh) * Tn + t] : 0.0f;
      sD[tid] = t < Tn ? Drow[std::size_t(bh) * Tn + t] : 0.0f;
    }
    __syncthreads();
    // Query blocks n < nmin lie entirely above the diagonal for this warp's keys.
    const int nmin = qt == kt ? w : 0;
#pragma unroll
    for (int n = 0; n < TILE / 16; ++n) {
      if (n < nmin) continue;
      FragC s, dp; // S^T, dP^T: rows = keys of this warp, columns = queries n*16 ..
      wmma::fill_fragment(s, 0.0f);
      wmma::fill_fragment(dp, 0.0f);
#pragma unroll
      for (int kk = 0; kk < KS; ++kk) {
        FragBc qb, gb; // Q^T, dO^T: element (d, query) at sQ[query * LD + d]
        wmma::load_matrix_sync(qb, sQ + n * 16 * LD + kk * 16, LD);
        wmma::load_matrix_sync(gb, sG + n * 16 * LD + kk * 16, LD);
        if constexpr (kRegKV) {
          wmma::mma_sync(s, kf[kk], qb, s);
          wmma::mma_sync(dp, vf[kk], gb, dp);
        } else {
          FragA ka, va;
          wmma::load_matrix_sync(ka, sK + w * 16 * LD + kk * 16, LD);
          wmma::mma_sync(s, ka, qb, s);
          wmma::load_matrix_sync(va, sV + w * 16 * LD + kk * 16, LD);
          wmma::mma_sync(dp, va, gb, dp);
        }
      }
#pragma unroll
      for (int e = 0; e < NE; ++e) {
        const int r = idx[e] >> 4, c = idx[e] & 15;
        const int tj = k0 + w * 16 + r, iq = n * 16 + c, ti = q0 + iq;
        float p = 0.0f, ds = 0.0f;
        if (tj <= ti && ti < Tn) {
          p = expf(s.x[e] * scale - sLse[iq]);
          ds = p * (dp.x[e] - sD[iq]);
        }
        const int o = (w * 16 + r) * LDP + n * 16 + c;
        sPT[o] = __float2bfloat16_rn(p);
        sDST[o] = __float2bfloat16_rn(ds);
      }
    }
    __syncwarp();
#pragma unroll
    for (int kk = 0; kk < TILE / 16; ++kk) {
      if (kk < nmin) continue; // those P^T / dS^T columns are zero (and not written)
      FragA pa, da;
      wmma::load_matrix_sync(pa, sPT + w * 16 * LDP + kk * 16, LDP);
      wmma::load_matrix_sync(da, sDST + w * 16 * LDP + kk * 16, LDP);
#pragma unroll
      for (int f = 0; f < KS; ++f) {
        FragBr gb, qb; // dO, Q: element (query, d) at sG[query * LD + d]
        wmma::load_matrix_sync(gb, sG + kk * 16 * LD + f * 16, LD);
        wmma::mma_sync(dv[f], pa, gb, dv[f]);
        wmma::load_matrix_sync(qb, sQ + kk * 16 * LD + f * 16, LD);
        wmma::mma_sync(dk[f], da, qb, dk[f]);
      }
    }
  }
#pragma unroll
  for (int e = 0; e < NE; ++e) {
    const int r = idx[e] >> 4, c = idx[e] & 15;
    const int t = k0 + w * 16 + r;
    if (t >= Tn) continue;
    bf16* drow = dqkv + (std::size_t(b) * Tn + t) * rs + std::size_t(h) * HS + c;
#pragma unroll
    for (int f = 0; f < KS; ++f) {
      drow[C + f * 16] = __float2bfloat16_rn(dk[f].x[e] * scale);
      drow[2 * C + f * 16] = __float2bfloat16_rn(dv[f].x[e]);
    }
  }
}

// ---- host side ---------------------------------------------------------------------------------
template <typename K> void set_smem(K kernel, std::size_t bytes) {
  if (bytes > 48 * 1024) {
    MYELIN_CUDA_CHECK(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
  }
  // Prefer the largest shared-memory carveout: more resident blocks per SM.
  MYELIN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout,
                                         int(cudaSharedmemCarveoutMaxShared)));
}

void check_tc(const char* what, int B, int Tn, int C, int NH,
              std::initializer_list<const void*> ptrs) {
  const std::string w(what);
  if (B <= 0 || Tn <= 0 || C <= 0 || NH <= 0)
    throw std::invalid_argument(w + ": B, T, C and NH must be positive");
  if (!attention_tc_supported(C, NH))
    throw std::invalid_argument(w + ": needs C % NH == 0 and head size C/NH of 64 or 128 (C=" +
                                std::to_string(C) + ", NH=" + std::to_string(NH) + ")");
  if (std::int64_t(B) * NH > 65535) throw std::invalid_argument(w + ": B*NH must be <= 65535");
  for (const void* p : ptrs)
    if (!aligned16(p)) throw std::invalid_argument(w + ": pointers must be 16-byte aligned");
}

template <int HS>
void fwd_launch(bf16* out, float* lse, const bf16* qkv, int B, int Tn, int C, int NH,
                cudaStream_t s) {
  constexpr std::size_t smem = fwd_bytes<HS>();
  set_smem(attn_tc_fwd_kernel<HS>, smem);
  const dim3 grid(unsigned((Tn + TILE - 1) / TILE), unsigned(B * NH));
  attn_tc_fwd_kernel<HS><<<grid, NT, smem, s>>>(out, lse, qkv, Tn, C, NH, 1.0f / sqrtf(float(HS)));
  MYELIN_CUDA_CHECK_LAUNCH();
}

template <int HS>
void bwd_launch(bf16* dqkv, float* Drow, const bf16* dout, const bf16* qkv, const bf16* out,
                const float* lse, int B, int Tn, int C, int NH, cudaStream_t s) {
  const float scale = 1.0f / sqrtf(float(HS));
  const dim3 grid(unsigned((Tn + TILE - 1) / TILE), unsigned(B * NH));
  constexpr std::size_t s1 = dq_bytes<HS>(), s2 = dkv_bytes<HS>();
  set_smem(attn_tc_dq_kernel<HS>, s1);
  set_smem(attn_tc_dkv_kernel<HS>, s2);
  // The dQ kernel writes Drow; the dK/dV kernel, next on the stream, reads it.
  attn_tc_dq_kernel<HS><<<grid, NT, s1, s>>>(dqkv, Drow, dout, qkv, out, lse, Tn, C, NH, scale);
  MYELIN_CUDA_CHECK_LAUNCH();
  attn_tc_dkv_kernel<HS><<<grid, NT, s2, s>>>(dqkv, Drow, dout, qkv, lse, Tn, C, NH, scale);
  MYELIN_CUDA_CHECK_LAUNCH();
}

} // namespace

bool attention_tc_supported(int C, int NH) {
  if (C <= 0 || NH <= 0 || C % NH != 0) return false;
  const int hs = C / NH;
  return hs == 64 || hs == 128;
}

void attention_forward_tc(bf16* out, float* lse, const bf16* qkv, int B, int Tn, int C, int NH,
                          cudaStream_t s) {
  check_tc("attention_forward_tc", B, Tn, C, NH, {out, qkv});
  if (C / NH == 64)
    fwd_launch<64>(out, lse, qkv, B, Tn, C, NH, s);
  else
    fwd_launch<128>(out, lse, qkv, B, Tn, C, NH, s);
}

void attention_backward_tc(bf16* dqkv, float* scratch, const bf16* dout, const bf16* qkv,
                           const bf16* out, const float* lse, int B, int Tn, int C, int NH,
                           cudaStream_t s) {
  check_tc("attention_backward_tc", B, Tn, C, NH, {dqkv, dout, qkv, out});
  if (C / NH == 64)
    bwd_launch<64>(dqkv, scratch, dout, qkv, out, lse, B, Tn, C, NH, s);
  else
    bwd_launch<128>(dqkv, scratch, dout, qkv, out, lse, B, Tn, C, NH, s);
}

} // namespace myelin::cuda
