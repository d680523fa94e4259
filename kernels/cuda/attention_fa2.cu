// Causal self-attention on tensor cores, FlashAttention-2 style: forward and
// backward, bf16 storage, fp32 accumulation, head size D = 64 or 128, grouped-
// query attention. Same semantics as attention.cu, so either backward may take
// the other's forward:
//   qkv [B,T,(NH + 2 NKV) D] per position = (q: NH*D | k: NKV*D | v: NKV*D);
//   query head h reads kv head h / (NH/NKV); out [B,T,NH*D];
//   lse [B,NH,T] = logsumexp over keys <= t of scale * q.k (natural log),
//   scale = 1/sqrt(D). Backward overwrites dqkv (same layout as qkv); scratch
//   (B*NH*T floats) holds Drow = rowsum(dO * O).
// Instructions (kernels/cuda/ptx.cuh): mma.sync m16n8k16 bf16 -> fp32,
// ldmatrix .x4 (.trans for operands stored transposed), cp.async 16-byte copies
// in commit groups, double-buffered. S and P never leave registers: P is packed
// to bf16 A fragments straight from the S accumulators (the accumulator layout
// of two n8 tiles is the A layout of one k16 step). Softmax in base 2: scores
// are multiplied by scale*log2(e) once and exponentiated with exp2f.
// Launch: 256 threads (8 warps), warp w owns 16 rows of the block's tile.
//  * forward, grid (ceil(T/128), B*NH), heaviest query tile first: block = 128
//    query rows; Q fragments in registers; 64-key K/V tiles double-buffered,
//    K and V in separate commit groups (S = QK^T runs while V is landing);
//    O (16 x D per warp) in registers; output staged through shared memory for
//    16-byte stores. Shared: Q 128 rows + 2 x (K, V) 64 rows, row stride D+8
//    (bf16): D 64: 55,296 B; D 128: 104,448 B.
//  * backward dQ, grid (ceil(T/128), B*NH), heaviest first: writes Drow of its
//    128 rows; per key tile (64 keys at D 64, 32 at D 128) S = QK^T,
//    P = exp2(S' - lse'), dP = dO V^T, dS = P (dP - Drow), dQ += dS K; Q and dO
//    fragments in registers; K/V pipelined as in the forward. Shared: Q, dO 128 rows + 2 x (K, V):
//    D 64: 73,728 B + 512; D 128: 104,448 B + 512.
//  * backward dK/dV, grid (ceil(T/128), B*NKV), after dQ on the stream (reads
//    Drow): block = 128 keys of one kv head; loops over the group's NH/NKV query
//    heads and their query tiles (64 rows at D 64, 32 at D 128; Q, dO, lse and
//    Drow by cp.async, double-buffered) in a fixed order: S^T = K Q^T, P^T,
//    dP^T = V dO^T, dS^T = P^T (dP^T - Drow), dV += P^T dO, dK += dS^T Q, all
//    in registers (K, V fragments re-read from shared memory). Shared: K, V 128 rows +
//    2 x (Q, dO): D 64: 73,728 B + 1,024; D 128: 104,448 B + 512.
// Registers per thread (ptxas -v, sm_90, CUDA 13, no spills; D 64 / 128):
// forward 128 / 200, dQ 180 / 221, dK/dV 204 / 242; __launch_bounds__(256, 1).
// Resident per thread: forward Q fragments (D/4 words) and O (D/2 floats); dQ
// Q and dO fragments (D/4 words each) and dQ (D/2); dK/dV dK and dV (D/2 each).
// 16-key (or 16-query) blocks wholly on the masked side of the diagonal are
// skipped per warp. No atomics, fixed-order sums: bit-identical run to run;
// dK/dV of a kv head sum over its query heads in order inside one block.
// Partial tiles are zero-filled by cp.async (src-size 0) and masked on store.
// Pointers must be 16-byte aligned.
// FLOPs (causal; K = B*NH*D*T(T+1)/2 multiply-adds per triangle GEMM): forward
//   2 GEMMs = 4K FLOPs; backward 5 GEMMs useful (10K), executed 7 (14K: S and dP
//   in both kernels); plus the diagonal 16x16 blocks computed whole.
// Bytes (compulsory): forward reads qkv, writes out (bf16) + lse (fp32);
//   backward reads qkv, O, dO, lse, writes dqkv + Drow and reads Drow again.
//   K/V are re-read once per query tile (dQ: per 128 query rows; forward the
//   same) and Q/dO once per 128-key tile (dK/dV), mostly from L2.
//   GPT-2 124M (B 64, T 1024, NH = NKV 12, D 64): forward 406 MB and 103 GFLOP
//   per layer; backward 815 MB and 258 GFLOP useful (361 executed).
#include <cmath>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <stdexcept>
#include <string>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops_cuda.h"
#include "kernels/cuda/ptx.cuh"

namespace myelin::cuda {

namespace {

constexpr int kWarps = 8;
constexpr int kThreads = 32 * kWarps;
constexpr int kRows = 16 * kWarps; // query rows per forward / dQ block, keys per dK/dV block
constexpr float kLog2e = 1.4426950408889634f;

template <int D> __host__ __device__ constexpr int ld() {
  return D + 8;
} // shared row stride (bf16), 16-byte rows
// Inner tile sizes: keys per forward / dQ step, query rows per dK/dV step.
template <int D> __host__ __device__ constexpr int fwd_keys() { return 64; }
template <int D> __host__ __device__ constexpr int dq_keys() { return D == 128 ? 32 : 64; }
template <int D> __host__ __device__ constexpr int dkv_rows() { return D == 128 ? 32 : 64; }

template <int D> constexpr std::size_t tile_bytes(int rows) {
  return std::size_t(rows) * ld<D>() * sizeof(bf16);
}
template <int D> constexpr std::size_t fwd_smem() {
  return tile_bytes<D>(kRows) + 4 * tile_bytes<D>(fwd_keys<D>());
}
template <int D> constexpr std::size_t dq_smem() {
  return 2 * tile_bytes<D>(kRows) + 4 * tile_bytes<D>(dq_keys<D>()) + kRows * sizeof(float);
}
template <int D> constexpr std::size_t dkv_smem() {
  return 2 * tile_bytes<D>(kRows) + 4 * tile_bytes<D>(dkv_rows<D>()) +
         4 * dkv_rows<D>() * sizeof(float);
}
static_assert(fwd_smem<64>() == 55296 && fwd_smem<128>() == 104448, "header comment");
static_assert(dq_smem<64>() == 73728 + 512 && dq_smem<128>() == 104448 + 512, "header comment");
static_assert(dkv_smem<64>() == 73728 + 1024 && dkv_smem<128>() == 104448 + 512, "header comment");

__device__ __forceinline__ std::uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  std::uint32_t u;
  memcpy(&u, &v, sizeof u);
  return u;
}

// Issues cp.async copies of rows [r0, r0 + ROWS) of one head's D columns of a
// [T, row_stride] bf16 matrix (src = row 0, first column of the head) into
// dst [ROWS][D+8]; rows >= T are zero-filled. All threads of the block take part.
template <int ROWS, int D>
__device__ __forceinline__ void load_tile(bf16* dst, const bf16* src, std::size_t row_stride,
                                          int r0, int T) {
  constexpr int VPR = D / 8; // 16-byte vectors per row
  static_assert(ROWS * VPR % kThreads == 0, "whole vectors per thread");
#pragma unroll
  for (int k = 0; k < ROWS * VPR / kThreads; ++k) {
    const int v = int(threadIdx.x) + k * kThreads;
    const int r = v / VPR, c = (v % VPR) * 8;
    const int t = r0 + r;
    const bool ok = t < T;
    const bf16* p = src + (ok ? std::size_t(t) * row_stride + std::size_t(c) : std::size_t(0));
    ptx::cp_async_cg16(dst + r * ld<D>() + c, p, ok ? 16u : 0u);
  }
}

// A fragment (16 rows x 16 columns) of a row-major shared tile at (row, col).
template <int D>
__device__ __forceinline__ void frag_a(std::uint32_t (&f)[4], const bf16* tile, int row, int col) {
  const int lane = int(threadIdx.x) & 31;
  ptx::ldmatrix_x4(f, tile + (row + (lane & 15)) * ld<D>() + col + (lane >> 4) * 8);
}
// B fragments of two n8 tiles for B[k][n] = tile[n][k]: n = rows row..row+15,
// k = columns col..col+15. f[0], f[1] = (b0, b1) of rows row..+7; f[2], f[3] of +8..+15.
template <int D>
__device__ __forceinline__ void frag_bt(std::uint32_t (&f)[4], const bf16* tile, int row, int col) {
  const int lane = int(threadIdx.x) & 31;
  ptx::ldmatrix_x4(f, tile + (row + (lane & 7) + ((lane >> 4) << 3)) * ld<D>() + col +
                          ((lane >> 3) & 1) * 8);
}
// B fragments of two n8 tiles for B[k][n] = tile[k][n]: k = rows row..row+15,
// n = columns col..col+15 (ldmatrix .trans). f[0], f[1] for columns col..+7; f[2], f[3] +8..+15.
template <int D>
__device__ __forceinline__ void frag_bn(std::uint32_t (&f)[4], const bf16* tile, int row, int col) {
  const int lane = int(threadIdx.x) & 31;
  ptx::ldmatrix_x4_trans(f, tile + (row + (lane & 7) + ((lane >> 3) & 1) * 8) * ld<D>() + col +
                                (lane >> 4) * 8);
}

// Stores a warp's 16 x D fp32 accumulator (times mul) as bf16 rows row0.. of
// dst [T, row_stride] (rows >= T skipped), staged through its 16 rows `stage`
// of shared memory (row stride D+8) for 16-byte global stores.
template <int D>
__device__ __forceinline__ void store_rows(bf16* dst, std::size_t row_stride, int row0, int T,
                                           const float (&acc)[D / 8][4], float mul0, float mul1,
                                           bf16* stage) {
  const int lane = int(threadIdx.x) & 31, g = lane >> 2, tq = lane & 3;
#pragma unroll
  for (int n = 0; n < D / 8; ++n) {
    const std::uint32_t lo = pack_bf16(acc[n][0] * mul0, acc[n][1] * mul0);
    const std::uint32_t hi = pack_bf16(acc[n][2] * mul1, acc[n][3] * mul1);
    *reinterpret_cast<std::uint32_t*>(stage + g * ld<D>() + n * 8 + 2 * tq) = lo;
    *reinterpret_cast<std::uint32_t*>(stage + (g + 8) * ld<D>() + n * 8 + 2 * tq) = hi;
  }
  __syncwarp();
  constexpr int VPR = D / 8;
#pragma unroll
  for (int k = 0; k < 16 * VPR / 32; ++k) {
    const int v = lane + 32 * k, r = v / VPR, c = (v % VPR) * 8;
    if (row0 + r < T)
      *reinterpret_cast<uint4*>(dst + std::size_t(row0 + r) * row_stride + c) =
          *reinterpret_cast<const uint4*>(stage + r * ld<D>() + c);
  }
}

// acc[i][*] = 0 for every n8 tile i.
template <int N> __device__ __forceinline__ void zero_acc(float (&acc)[N][4]) {
#pragma unroll
  for (int n = 0; n < N; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[n][e] = 0.0f;
}
// The A fragment (bf16) of k16 step i from the accumulators of n8 tiles 2i, 2i+1.
template <int N>
__device__ __forceinline__ void acc_to_a(std::uint32_t (&a)[4], const float (&acc)[N][4], int i) {
  a[0] = pack_bf16(acc[2 * i][0], acc[2 * i][1]);
  a[1] = pack_bf16(acc[2 * i][2], acc[2 * i][3]);
  a[2] = pack_bf16(acc[2 * i + 1][0], acc[2 * i + 1][1]);
  a[3] = pack_bf16(acc[2 * i + 1][2], acc[2 * i + 1][3]);
}
// acc[2i], acc[2i+1] += A B, B the two n8 tiles at (row, col) of tile read by
// frag_bn (kTrans: B[k][n] = tile[k][n]) or frag_bt (B[k][n] = tile[n][k]).
template <int D, bool kTrans, int N>
__device__ __forceinline__ void mma_b(float (&acc)[N][4], int i, const std::uint32_t (&a)[4],
                                      const bf16* tile, int row, int col) {
  std::uint32_t f[4];
  if constexpr (kTrans)
    frag_bn<D>(f, tile, row, col);
  else
    frag_bt<D>(f, tile, row, col);
  ptx::mma_bf16_16816(acc[2 * i], a, f[0], f[1]);
  ptx::mma_bf16_16816(acc[2 * i + 1], a, f[2], f[3]);
}

// Query-row warps (forward, dQ): acc [16 x 8N] += A tile^T, A = the warp's
// fragments (16 rows row0.. x D), tile = keys k0.. [8N][D+8]; 16-key blocks
// wholly above the diagonal are skipped (warp-uniform).
template <int D, int N>
__device__ __forceinline__ void rows_mma_bt(float (&acc)[N][4], const std::uint32_t (&a)[D / 16][4],
                                            const bf16* tile, int k0, int row0) {
#pragma unroll
  for (int np = 0; np < N / 2; ++np) {
    if (k0 + 16 * np > row0 + 15) continue;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) mma_b<D, false>(acc, np, a[kk], tile, 16 * np, 16 * kk);
  }
}
// Query-row warps: acc [16 x D] += bf16(p) tile, p [16 x 8N] in accumulator
// layout, tile = keys k0.. [8N][D+8]; blocks where p is zero (causal) skipped.
template <int D, int N>
__device__ __forceinline__ void rows_mma_pn(float (&acc)[D / 8][4], const float (&p)[N][4],
                                            const bf16* tile, int k0, int row0) {
#pragma unroll
  for (int kk = 0; kk < N / 2; ++kk) {
    if (k0 + 16 * kk > row0 + 15) continue;
    std::uint32_t pa[4];
    acc_to_a(pa, p, kk);
#pragma unroll
    for (int d = 0; d < D / 16; ++d) mma_b<D, true>(acc, d, pa, tile, 16 * kk, 16 * d);
  }
}

// K/V pipeline of the forward and dQ kernels at key step j of 0..last: waits
// until at most one newer commit group is pending (none when drain and j ==
// last), syncs the block, then prefetches step j+1 of src into the other half
// of the double buffer buf [2][BC][D+8] as a new commit group.
template <int BC, int D>
__device__ __forceinline__ void pipe_step(bf16* buf, const bf16* src, std::size_t rs, int j,
                                          int last, int T, bool drain) {
  if (drain && j == last)
    ptx::cp_async_wait_group<0>();
  else
    ptx::cp_async_wait_group<1>();
  __syncthreads();
  if (j < last) {
    load_tile<BC, D>(buf + ((j + 1) & 1) * BC * ld<D>(), src, rs, (j + 1) * BC, T);
    ptx::cp_async_commit();
  }
}

__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

// ---- forward -----------------------------------------------------------------------------------
template <int D>
__global__ void __launch_bounds__(kThreads, 1)
    fa2_fwd_kernel(bf16* out, float* lse, const bf16* qkv, int T, int NH, int NKV,
                   float scale_log2) {
  constexpr int LD = ld<D>(), BC = fwd_keys<D>(), NN = BC / 8, ND = D / 8, KD = D / 16;
  extern __shared__ __align__(16) bf16 smem[];
  bf16* sQ = smem;
  bf16* sK = sQ + kRows * LD; // [2][BC][LD]
  bf16* sV = sK + 2 * BC * LD;

  const int ntiles = (T + kRows - 1) / kRows;
  const int q0 = (ntiles - 1 - int(blockIdx.x)) * kRows; // heaviest tile first
  const int bh = int(blockIdx.y), b = bh / NH, h = bh % NH, hk = h / (NH / NKV);
  const std::size_t rs = std::size_t(NH + 2 * NKV) * D;
  const bf16* base = qkv + std::size_t(b) * T * rs;
  const bf16* gQ = base + std::size_t(h) * D;
  const bf16* gK = base + std::size_t(NH + hk) * D;
  const bf16* gV = base + std::size_t(NH + NKV + hk) * D;
  const int warp = int(threadIdx.x) >> 5, lane = int(threadIdx.x) & 31;
  const int g = lane >> 2, tq = lane & 3;
  const int row0 = q0 + 16 * warp; // this warp's first query row
  const int last = min(q0 + kRows - 1, T - 1) / BC;

  // Commit groups: (Q, K 0), (V 0), then per step j < last (K j+1), (V j+1): the
  // scores of step j need only K j, so V j may still be landing meanwhile.
  load_tile<kRows, D>(sQ, gQ, rs, q0, T);
  load_tile<BC, D>(sK, gK, rs, 0, T);
  ptx::cp_async_commit();
  load_tile<BC, D>(sV, gV, rs, 0, T);
  ptx::cp_async_commit();

  std::uint32_t qf[KD][4];
  float o[ND][4];
  zero_acc(o);
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};

  for (int j = 0; j <= last; ++j) {
    // K j (and Q) landed for every thread; V j may be in flight. K j-1 is no
    // longer read: prefetch K j+1.
    pipe_step<BC, D>(sK, gK, rs, j, last, T, false);
    if (j == 0) {
#pragma unroll
      for (int kk = 0; kk < KD; ++kk) frag_a<D>(qf[kk], sQ, 16 * warp, 16 * kk);
    }
    const bf16* tK = sK + (j & 1) * BC * LD;
    const bf16* tV = sV + (j & 1) * BC * LD;
    const int k0 = j * BC;

    // S = Q K^T for this warp's 16 rows, 16 keys at a time (skipped above the diagonal).
    float s[NN][4];
    zero_acc(s);
    rows_mma_bt<D>(s, qf, tK, k0, row0);
    // Online softmax in base 2 (rows g and g+8 of the warp; 4 lanes share a row).
    const bool diag = k0 + BC - 1 > row0;
    float mx[2] = {m[0], m[1]};
#pragma unroll
    for (int n = 0; n < NN; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float x = s[n][e] * scale_log2;
        if (diag && k0 + 8 * n + 2 * tq + (e & 1) > row0 + g + 8 * (e >> 1)) x = -INFINITY;
        s[n][e] = x;
        mx[e >> 1] = fmaxf(mx[e >> 1], x);
      }
    float alpha[2], msub[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      mx[r] = quad_max(mx[r]);
      msub[r] = mx[r] == -INFINITY ? 0.0f : mx[r];
      alpha[r] = exp2f(m[r] - msub[r]);
      m[r] = mx[r];
      l[r] *= alpha[r];
    }
#pragma unroll
    for (int n = 0; n < NN; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float p = exp2f(s[n][e] - msub[e >> 1]);
        s[n][e] = p;
        l[e >> 1] += p;
      }
#pragma unroll
    for (int n = 0; n < ND; ++n) {
      o[n][0] *= alpha[0];
      o[n][1] *= alpha[0];
      o[n][2] *= alpha[1];
      o[n][3] *= alpha[1];
    }
    // V j landed (only K j+1 may remain in flight) for every thread; V j-1 is
    // no longer read: prefetch V j+1.
    pipe_step<BC, D>(sV, gV, rs, j, last, T, true);
    // O += P V: P's A fragments come straight from the S accumulators.
    rows_mma_pn<D>(o, s, tV, k0, row0);
  }

  float inv[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] = quad_sum(l[r]);
    inv[r] = 1.0f / l[r];
    const int t = row0 + g + 8 * r;
    if (tq == 0 && t < T) lse[std::size_t(bh) * T + t] = (m[r] + log2f(l[r])) * (1.0f / kLog2e);
  }
  const std::size_t os = std::size_t(NH) * D;
  store_rows<D>(out + std::size_t(b) * T * os + std::size_t(h) * D, os, row0, T, o, inv[0], inv[1],
                sQ + 16 * warp * LD);
}

// ---- backward: dQ (and Drow) -------------------------------------------------------------------
template <int D>
__global__ void __launch_bounds__(kThreads, 1)
    fa2_dq_kernel(bf16* dqkv, float* Drow, const bf16* dout, const bf16* qkv, const bf16* out,
                  const float* lse, int T, int NH, int NKV, float scale, float scale_log2) {
  constexpr int LD = ld<D>(), BC = dq_keys<D>(), NN = BC / 8, ND = D / 8, KD = D / 16;
  extern __shared__ __align__(16) bf16 smem[];
  bf16* sQ = smem;
  bf16* sdO = sQ + kRows * LD;
  bf16* sK = sdO + kRows * LD; // [2][BC][LD]
  bf16* sV = sK + 2 * BC * LD;
  float* sD = reinterpret_cast<float*>(sV + 2 * BC * LD); // [kRows]

  const int ntiles = (T + kRows - 1) / kRows;
  const int q0 = (ntiles - 1 - int(blockIdx.x)) * kRows;
  const int bh = int(blockIdx.y), b = bh / NH, h = bh % NH, hk = h / (NH / NKV);
  const std::size_t rs = std::size_t(NH + 2 * NKV) * D, os = std::size_t(NH) * D;
  const bf16* base = qkv + std::size_t(b) * T * rs;
  const bf16* gK = base + std::size_t(NH + hk) * D;
  const bf16* gV = base + std::size_t(NH + NKV + hk) * D;
  const bf16* gdO = dout + std::size_t(b) * T * os + std::size_t(h) * D;
  const bf16* gO = out + std::size_t(b) * T * os + std::size_t(h) * D;
  const int warp = int(threadIdx.x) >> 5, lane = int(threadIdx.x) & 31;
  const int g = lane >> 2, tq = lane & 3;
  const int row0 = q0 + 16 * warp;
  const int last = min(q0 + kRows - 1, T - 1) / BC;

  // Commit groups as in the forward: (Q, dO, K 0), (V 0), then (K j+1), (V j+1).
  load_tile<kRows, D>(sQ, base + std::size_t(h) * D, rs, q0, T);
  load_tile<kRows, D>(sdO, gdO, os, q0, T);
  load_tile<BC, D>(sK, gK, rs, 0, T);
  ptx::cp_async_commit();
  load_tile<BC, D>(sV, gV, rs, 0, T);
  ptx::cp_async_commit();

  // Drow = rowsum(dO * O) of the warp's 16 rows (fp32 of the bf16 values).
  for (int r = 0; r < 16; ++r) {
    const int t = row0 + r;
    float acc = 0.0f;
    if (t < T) {
      for (int c = 2 * lane; c < D; c += 64) {
        const __nv_bfloat162 x =
            *reinterpret_cast<const __nv_bfloat162*>(gdO + std::size_t(t) * os + c);
        const __nv_bfloat162 y =
            *reinterpret_cast<const __nv_bfloat162*>(gO + std::size_t(t) * os + c);
        acc += __bfloat162float(x.x) * __bfloat162float(y.x) +
               __bfloat162float(x.y) * __bfloat162float(y.y);
      }
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
    if (lane == 0) {
      sD[16 * warp + r] = acc;
      if (t < T) Drow[std::size_t(bh) * T + t] = acc;
    }
  }
  __syncwarp();
  float drow[2], lse2[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int t = row0 + g + 8 * r;
    drow[r] = sD[16 * warp + g + 8 * r];
    lse2[r] = t < T ? lse[std::size_t(bh) * T + t] * kLog2e : INFINITY; // P = 0 on padding rows
  }

  std::uint32_t qf[KD][4], df[KD][4];
  float dq[ND][4];
  zero_acc(dq);

  for (int j = 0; j <= last; ++j) {
    // K j (with Q, dO) landed; V j may be in flight. K j-1 is no longer read.
    pipe_step<BC, D>(sK, gK, rs, j, last, T, false);
    if (j == 0) {
#pragma unroll
      for (int kk = 0; kk < KD; ++kk) {
        frag_a<D>(qf[kk], sQ, 16 * warp, 16 * kk);
        frag_a<D>(df[kk], sdO, 16 * warp, 16 * kk);
      }
    }
    const bf16* tK = sK + (j & 1) * BC * LD;
    const bf16* tV = sV + (j & 1) * BC * LD;
    const int k0 = j * BC;

    float s[NN][4], dp[NN][4];
    zero_acc(s);
    zero_acc(dp);
    rows_mma_bt<D>(s, qf, tK, k0, row0); // S = Q K^T
    // V j landed (only K j+1 may remain in flight); V j-1 is no longer read.
    pipe_step<BC, D>(sV, gV, rs, j, last, T, true);
    rows_mma_bt<D>(dp, df, tV, k0, row0); // dP = dO V^T
    // dS = P (dP - Drow), P = exp2(S scale log2e - lse log2e), causal mask.
#pragma unroll
    for (int n = 0; n < NN; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = e >> 1;
        const bool masked = k0 + 8 * n + 2 * tq + (e & 1) > row0 + g + 8 * r;
        const float p = masked ? 0.0f : exp2f(s[n][e] * scale_log2 - lse2[r]);
        s[n][e] = p * (dp[n][e] - drow[r]);
      }
    // dQ += dS K.
    rows_mma_pn<D>(dq, s, tK, k0, row0);
  }

  store_rows<D>(dqkv + std::size_t(b) * T * rs + std::size_t(h) * D, rs, row0, T, dq, scale, scale,
                sQ + 16 * warp * LD);
}

// ---- backward: dK, dV --------------------------------------------------------------------------
template <int D>
__global__ void __launch_bounds__(kThreads, 1)
    fa2_dkv_kernel(bf16* dqkv, const float* Drow, const bf16* dout, const bf16* qkv,
                   const float* lse, int T, int NH, int NKV, float scale, float scale_log2) {
  constexpr int LD = ld<D>(), BQ = dkv_rows<D>(), NN = BQ / 8, ND = D / 8, KD = D / 16;
  extern __shared__ __align__(16) bf16 smem[];
  bf16* sK = smem;
  bf16* sV = sK + kRows * LD;
  bf16* sQ = sV + kRows * LD;                              // [2][BQ][LD]
  bf16* sdO = sQ + 2 * BQ * LD;                            // [2][BQ][LD]
  float* sL = reinterpret_cast<float*>(sdO + 2 * BQ * LD); // [2][BQ] lse
  float* sDr = sL + 2 * BQ;                                // [2][BQ] Drow

  const int k0 = int(blockIdx.x) * kRows; // low key tiles (most work) first
  const int bk = int(blockIdx.y), b = bk / NKV, hk = bk % NKV, G = NH / NKV;
  const std::size_t rs = std::size_t(NH + 2 * NKV) * D, os = std::size_t(NH) * D;
  const bf16* base = qkv + std::size_t(b) * T * rs;
  const int warp = int(threadIdx.x) >> 5, lane = int(threadIdx.x) & 31;
  const int g = lane >> 2, tq = lane & 3;
  const int key0 = k0 + 16 * warp; // this warp's first key

  // Steps: (query head h0 + i / per, query tile qt0 + i % per), in this fixed order.
  const int qt0 = k0 / BQ, per = (T + BQ - 1) / BQ - qt0, steps = G * per;
  auto issue = [&](int i) {
    const int h = hk * G + i / per, r0 = (qt0 + i % per) * BQ, buf = i & 1;
    load_tile<BQ, D>(sQ + buf * BQ * LD, base + std::size_t(h) * D, rs, r0, T);
    load_tile<BQ, D>(sdO + buf * BQ * LD, dout + std::size_t(b) * T * os + std::size_t(h) * D, os,
                     r0, T);
    // lse and Drow rows: 4-byte copies, zeros past T (those queries are masked).
    const std::size_t row = (std::size_t(b) * NH + h) * T;
    for (int r = int(threadIdx.x); r < BQ; r += kThreads) {
      const int t = r0 + r;
      const std::size_t at = row + std::size_t(t < T ? t : 0);
      ptx::cp_async_ca4(sL + buf * BQ + r, lse + at, t < T ? 4u : 0u);
      ptx::cp_async_ca4(sDr + buf * BQ + r, Drow + at, t < T ? 4u : 0u);
    }
  };
  load_tile<kRows, D>(sK, base + std::size_t(NH + hk) * D, rs, k0, T);
  load_tile<kRows, D>(sV, base + std::size_t(NH + NKV + hk) * D, rs, k0, T);
  issue(0);
  ptx::cp_async_commit();

  float dk[ND][4], dv[ND][4];
  zero_acc(dk);
  zero_acc(dv);

  for (int i = 0; i < steps; ++i) {
    if (i + 1 < steps) {
      issue(i + 1);
      ptx::cp_async_commit();
      ptx::cp_async_wait_group<1>();
    } else {
      ptx::cp_async_wait_group<0>();
    }
    __syncthreads();
    const int buf = i & 1, q0 = (qt0 + i % per) * BQ;
    const bf16* tQ = sQ + buf * BQ * LD;
    const bf16* tdO = sdO + buf * BQ * LD;
    const float* tL = sL + buf * BQ;
    const float* tDr = sDr + buf * BQ;

    // S^T = K Q^T and dP^T = V dO^T: 16 keys x BQ queries per warp.
    float s[NN][4], dp[NN][4];
    zero_acc(s);
    zero_acc(dp);
#pragma unroll
    for (int kk = 0; kk < KD; ++kk) {
      std::uint32_t ka[4], va[4];
      frag_a<D>(ka, sK, 16 * warp, 16 * kk);
      frag_a<D>(va, sV, 16 * warp, 16 * kk);
#pragma unroll
      for (int np = 0; np < NN / 2; ++np) {
        if (q0 + 16 * np + 15 < key0) continue; // all these queries precede all our keys
        mma_b<D, false>(s, np, ka, tQ, 16 * np, 16 * kk);
        mma_b<D, false>(dp, np, va, tdO, 16 * np, 16 * kk);
      }
    }
    // P^T and dS^T (element (key, query); causal: query >= key).
#pragma unroll
    for (int n = 0; n < NN; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int qc = 8 * n + 2 * tq + (e & 1);
        const bool masked = q0 + qc < key0 + g + 8 * (e >> 1) || q0 + qc >= T;
        const float p = masked ? 0.0f : exp2f(s[n][e] * scale_log2 - tL[qc] * kLog2e);
        s[n][e] = p;
        dp[n][e] = p * (dp[n][e] - tDr[qc]);
      }
      // dV += P^T dO, dK += dS^T Q (k = queries).
#pragma unroll
    for (int kk = 0; kk < NN / 2; ++kk) {
      if (q0 + 16 * kk + 15 < key0) continue;
      std::uint32_t pa[4], da[4];
      acc_to_a(pa, s, kk);
      acc_to_a(da, dp, kk);
#pragma unroll
      for (int d = 0; d < D / 16; ++d) {
        mma_b<D, true>(dv, d, pa, tdO, 16 * kk, 16 * d);
        mma_b<D, true>(dk, d, da, tQ, 16 * kk, 16 * d);
      }
    }
    __syncthreads();
  }

  bf16* gd = dqkv + std::size_t(b) * T * rs;
  store_rows<D>(gd + std::size_t(NH + hk) * D, rs, key0, T, dk, scale, scale, sK + 16 * warp * LD);
  store_rows<D>(gd + std::size_t(NH + NKV + hk) * D, rs, key0, T, dv, 1.0f, 1.0f,
                sV + 16 * warp * LD);
}

// ---- host side ---------------------------------------------------------------------------------
template <typename K> void set_smem(K kernel, std::size_t bytes) {
  if (bytes > 48 * 1024) {
    MYELIN_CUDA_CHECK(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
  }
  MYELIN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout,
                                         int(cudaSharedmemCarveoutMaxShared)));
}

void check_tc(const char* what, int B, int T, int NH, int NKV, int D,
              std::initializer_list<const void*> ptrs) {
  const std::string w(what);
  if (B <= 0 || T <= 0 || NH <= 0 || NKV <= 0)
    throw std::invalid_argument(w + ": B, T, NH and NKV must be positive");
  if (!attention_tc_supported(NH, NKV, D))
    throw std::invalid_argument(
        w + ": needs NKV dividing NH and head size 64 or 128 (NH=" + std::to_string(NH) +
        ", NKV=" + std::to_string(NKV) + ", D=" + std::to_string(D) + ")");
  if (std::int64_t(B) * NH > 65535) throw std::invalid_argument(w + ": B*NH must be <= 65535");
  for (const void* p : ptrs)
    if (!aligned16(p)) throw std::invalid_argument(w + ": pointers must be 16-byte aligned");
}

template <int D>
void fwd_launch(bf16* out, float* lse, const bf16* qkv, int B, int T, int NH, int NKV,
                cudaStream_t s) {
  constexpr std::size_t smem = fwd_smem<D>();
  set_smem(fa2_fwd_kernel<D>, smem);
  const dim3 grid(unsigned((T + kRows - 1) / kRows), unsigned(B * NH));
  fa2_fwd_kernel<D>
      <<<grid, kThreads, smem, s>>>(out, lse, qkv, T, NH, NKV, kLog2e / sqrtf(float(D)));
  MYELIN_CUDA_CHECK_LAUNCH();
}

template <int D>
void bwd_launch(bf16* dqkv, float* Drow, const bf16* dout, const bf16* qkv, const bf16* out,
                const float* lse, int B, int T, int NH, int NKV, cudaStream_t s) {
  const float scale = 1.0f / sqrtf(float(D));
  const unsigned tiles = unsigned((T + kRows - 1) / kRows);
  constexpr std::size_t s1 = dq_smem<D>(), s2 = dkv_smem<D>();
  set_smem(fa2_dq_kernel<D>, s1);
  set_smem(fa2_dkv_kernel<D>, s2);
  // The dQ kernel writes Drow; the dK/dV kernel, next on the stream, reads it.
  fa2_dq_kernel<D><<<dim3(tiles, unsigned(B * NH)), kThreads, s1, s>>>(
      dqkv, Drow, dout, qkv, out, lse, T, NH, NKV, scale, scale * kLog2e);
  MYELIN_CUDA_CHECK_LAUNCH();
  fa2_dkv_kernel<D><<<dim3(tiles, unsigned(B * NKV)), kThreads, s2, s>>>(
      dqkv, Drow, dout, qkv, lse, T, NH, NKV, scale, scale * kLog2e);
  MYELIN_CUDA_CHECK_LAUNCH();
}

} // namespace

bool attention_tc_supported(int NH, int NKV, int D) {
  return NH > 0 && NKV > 0 && NH % NKV == 0 && (D == 64 || D == 128);
}

void attention_forward_tc(bf16* out, float* lse, const bf16* qkv, int B, int T, int NH, int NKV,
                          int D, cudaStream_t s) {
  check_tc("attention_forward_tc", B, T, NH, NKV, D, {out, qkv});
  if (D == 64)
    fwd_launch<64>(out, lse, qkv, B, T, NH, NKV, s);
  else
    fwd_launch<128>(out, lse, qkv, B, T, NH, NKV, s);
}

void attention_backward_tc(bf16* dqkv, float* scratch, const bf16* dout, const bf16* qkv,
                           const bf16* out, const float* lse, int B, int T, int NH, int NKV, int D,
                           cudaStream_t s) {
  check_tc("attention_backward_tc", B, T, NH, NKV, D, {dqkv, dout, qkv, out});
  if (D == 64)
    bwd_launch<64>(dqkv, scratch, dout, qkv, out, lse, B, T, NH, NKV, s);
  else
    bwd_launch<128>(dqkv, scratch, dout, qkv, out, lse, B, T, NH, NKV, s);
}

} // namespace myelin::cuda
