// Causal grouped-query self-attention, flash style (no T x T matrix in memory).
//   qkv [B,T,(NH+2*NKV)*hs] = (q: NH heads | k: NKV heads | v: NKV heads) of hs
//   channels; query head h reads key/value head h / (NH/NKV) (GPT-2: NKV = NH);
//   out [B,T,NH*hs];
//   lse [B,NH,T] = m_i + log(l_i), the logsumexp of the scaled scores of row i.
// Forward: one block of 256 threads per (32-query tile, b*NH + h). K/V tiles of
//   32 keys are staged in shared memory (fp32, row stride hs+1 against bank
//   conflicts); each tile: S = scale*Q K^T (thread: query lane, 4 keys), causal
//   mask, online softmax per row (one warp per 4 rows), O = alpha*O + P V
//   (thread: 1 query row x hs/8 channels in registers). Heaviest tiles launch first.
// Backward (FlashAttention-2 recompute, no atomics, deterministic):
//   1. Drow[i] = sum_d dO[i,d] * O[i,d]                       (warp per row)
//   2. dQ kernel, block per (query tile): loop key tiles, P = exp(S - lse),
//      dS = P * (dO V^T - Drow), dQ += dS K; dQ *= scale
//   3. dK/dV kernel, block per (key tile, kv head): loop the group's query
//      heads, in order, and their query tiles: dV += P^T dO, dK += dS^T Q;
//      dK *= scale (the group's sum stays in registers: no atomics)
// FLOPs (causal, K = B*NH*hs*T(T+1)/2 multiply-adds per T x T-triangle GEMM):
//   forward 2 GEMMs = 4K FLOPs; backward useful 5 GEMMs (S, dP, dV, dK, dQ) =
//   10K FLOPs, executed 7 GEMMs = 14K (S and dP are recomputed in both kernels).
// Bytes: forward reads qkv (B*T*(NH+2*NKV)*hs) once per query tile for K,V (from L2),
//   writes out + lse; backward reads qkv, O, dO, lse, writes dqkv.
// Specialised for hs = 64 and 128 (accumulators in registers); other hs <= 256
// use the generic instantiation (HS = 0, runtime hs, slower).
// Fp32 CUDA-core math (FMA): fp32 storage, head sizes other than 64 and 128, and
// MYELIN_CUDA_ATTN=fma; bf16 at head size 64 or 128 runs attention_fa2.cu.
#include <cmath>
#include <stdexcept>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops_cuda.h"

namespace myelin::cuda {

namespace {

constexpr int BR = 32;  // query rows per tile
constexpr int BC = 32;  // keys per tile (== BR: tile kt is on the diagonal of tile qt == kt)
constexpr int NT = 256; // threads per block
constexpr int PLD = BC + 1;

template <int HS> __host__ __device__ constexpr int nacc() { return HS > 0 ? HS / 8 : 32; }

// Loads rows [r0, r0 + 32) of one head's slice (columns col0 .. col0 + hs) of a
// [B*T, ld] matrix into shared tile dst [32][hs+1] as fp32; rows >= Tn are zero.
template <typename T>
__device__ __forceinline__ void load_tile(float* dst, const T* base, std::size_t row_stride, int r0,
                                          int Tn, int hs) {
  const int ld = hs + 1;
  for (int idx = threadIdx.x; idx < 32 * hs; idx += NT) {
    const int r = idx / hs, d = idx - r * hs;
    const int t = r0 + r;
    dst[r * ld + d] = t < Tn ? to_f32(base[std::size_t(t) * row_stride + d]) : 0.0f;
  }
}

template <typename T, int HS>
__global__ void __launch_bounds__(NT) attn_fwd_kernel(T* out, float* lse, const T* qkv, int Tn,
                                                      int NH, int NKV, int hs_rt, float scale) {
  const int hs = HS > 0 ? HS : hs_rt;
  const int ld = hs + 1;
  extern __shared__ float smem[];
  float* sQ = smem;
  float* sK = sQ + BR * ld;
  float* sV = sK + BC * ld;
  float* sP = sV + BC * ld;
  float* sM = sP + BR * PLD;
  float* sL = sM + BR;
  float* sA = sL + BR;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int qt = gridDim.x - 1 - blockIdx.x;
  const int bh = blockIdx.y, b = bh / NH, h = bh - b * NH;
  const int q0 = qt * BR;
  const int C = NH * hs;
  const std::size_t rs = std::size_t(NH + 2 * NKV) * hs;
  const T* base = qkv + std::size_t(b) * Tn * rs + std::size_t(h) * hs;
  const T* kbase = qkv + std::size_t(b) * Tn * rs + std::size_t(NH + h / (NH / NKV)) * hs;
  const T* vbase = kbase + std::size_t(NKV) * hs;

  load_tile(sQ, base, rs, q0, Tn, hs);
  if (tid < BR) {
    sM[tid] = -INFINITY;
    sL[tid] = 0.0f;
  }
  constexpr int NA = nacc<HS>();
  float acc[NA];
#pragma unroll
  for (int k = 0; k < NA; ++k) acc[k] = 0.0f;
  const int orow = tid >> 3, dg = tid & 7; // output: row, channel group
  const int si = lane, sj0 = warp * 4;     // scores: query row, first of 4 keys

  for (int kt = 0; kt <= qt; ++kt) {
    const int k0 = kt * BC;
    __syncthreads(); // previous tile fully consumed
    load_tile(sK, kbase, rs, k0, Tn, hs);
    load_tile(sV, vbase, rs, k0, Tn, hs);
    __syncthreads();
    float s[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int d = 0; d < hs; ++d) {
      const float q = sQ[si * ld + d];
#pragma unroll
      for (int c = 0; c < 4; ++c) s[c] += q * sK[(sj0 + c) * ld + d];
    }
    const int i = q0 + si;
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      const int j = k0 + sj0 + c;
      sP[si * PLD + sj0 + c] = (j <= i && i < Tn) ? s[c] * scale : -INFINITY;
    }
    __syncthreads();
#pragma unroll
    for (int rr = 0; rr < 4; ++rr) {
      const int r = warp * 4 + rr;
      const float v = sP[r * PLD + lane];
      const float mx = warp_max(v);
      const float m_old = sM[r];
      const float m_new = fmaxf(m_old, mx);
      float p = 0.0f, alpha = 1.0f;
      if (m_new != -INFINITY) {
        p = expf(v - m_new);         // masked: exp(-inf) = 0
        alpha = expf(m_old - m_new); // first tile: exp(-inf) = 0
      }
      const float ps = warp_sum(p);
      sP[r * PLD + lane] = p;
      if (lane == 0) {
        sL[r] = sL[r] * alpha + ps;
        sM[r] = m_new;
        sA[r] = alpha;
      }
    }
    __syncthreads();
    const float alpha = sA[orow];
#pragma unroll
    for (int k = 0; k < NA; ++k) acc[k] *= alpha;
    for (int j = 0; j < BC; ++j) {
      const float p = sP[orow * PLD + j];
#pragma unroll
      for (int k = 0; k < NA; ++k) {
        const int d = dg + 8 * k;
        if (HS > 0 || d < hs) acc[k] += p * sV[j * ld + d];
      }
    }
  }
  // sL/sM were last written before the final __syncthreads of the loop.
  const int i = q0 + orow;
  if (i < Tn) {
    const float inv = 1.0f / sL[orow];
    T* o = out + (std::size_t(b) * Tn + i) * C + std::size_t(h) * hs;
#pragma unroll
    for (int k = 0; k < NA; ++k) {
      const int d = dg + 8 * k;
      if (HS > 0 || d < hs) o[d] = from_f32<T>(acc[k] * inv);
    }
  }
  if (tid < BR && q0 + tid < Tn) lse[std::size_t(bh) * Tn + q0 + tid] = sM[tid] + logf(sL[tid]);
}

// Drow[bh, i] = sum_d dO * O over one head's channels. One warp per (b, t, h).
template <typename T>
__global__ void attn_bwd_rowdot_kernel(float* Drow, const T* dout, const T* out, int B, int Tn,
                                       int C, int NH, int hs) {
  const int lane = threadIdx.x & 31;
  const std::size_t w = (std::size_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const std::size_t rows = std::size_t(B) * Tn * NH;
  if (w >= rows) return;
  const int h = int(w % NH);
  const std::size_t bt = w / NH; // b*T + t
  const int b = int(bt / Tn), t = int(bt % Tn);
  const std::size_t off = bt * C + std::size_t(h) * hs;
  float acc = 0.0f;
  for (int d = lane; d < hs; d += 32) acc += to_f32(dout[off + d]) * to_f32(out[off + d]);
  acc = warp_sum(acc);
  if (lane == 0) Drow[(std::size_t(b) * NH + h) * Tn + t] = acc;
}

// Computes, for the thread's (query row si, keys sj0..sj0+3) of the current tile
// pair: p = exp(scale * q.k - lse) (causal, 0 outside) and ds = p * (dO.v - D).
template <int HS>
__device__ __forceinline__ void scores_and_grads(const float* sQ, const float* sdO, const float* sK,
                                                 const float* sV, int ld, int hs, int si, int sj0,
                                                 int i, int k0, int Tn, float lse_i, float D_i,
                                                 float scale, float p[4], float ds[4]) {
  float s[4] = {0.0f, 0.0f, 0.0f, 0.0f}, dp[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  for (int d = 0; d < hs; ++d) {
    const float q = sQ[si * ld + d];
    const float g = sdO[si * ld + d];
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      s[c] += q * sK[(sj0 + c) * ld + d];
      dp[c] += g * sV[(sj0 + c) * ld + d];
    }
  }
#pragma unroll
  for (int c = 0; c < 4; ++c) {
    const int j = k0 + sj0 + c;
    const bool valid = j <= i && i < Tn;
    p[c] = valid ? expf(s[c] * scale - lse_i) : 0.0f;
    ds[c] = p[c] * (dp[c] - D_i);
  }
}

template <typename T, int HS>
__global__ void __launch_bounds__(NT)
    attn_bwd_dq_kernel(T* dqkv, const T* dout, const T* qkv, const float* lse, const float* Drow,
                       int Tn, int NH, int NKV, int hs_rt, float scale) {
  const int hs = HS > 0 ? HS : hs_rt;
  const int ld = hs + 1;
  extern __shared__ float smem[];
  float* sQ = smem;
  float* sdO = sQ + BR * ld;
  float* sK = sdO + BR * ld;
  float* sV = sK + BC * ld;
  float* sS = sV + BC * ld;
  float* sLse = sS + BR * PLD;
  float* sD = sLse + BR;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int qt = gridDim.x - 1 - blockIdx.x;
  const int bh = blockIdx.y, b = bh / NH, h = bh - b * NH;
  const int q0 = qt * BR;
  const int C = NH * hs;
  const std::size_t rs = std::size_t(NH + 2 * NKV) * hs;
  const T* base = qkv + std::size_t(b) * Tn * rs + std::size_t(h) * hs;
  const T* kbase = qkv + std::size_t(b) * Tn * rs + std::size_t(NH + h / (NH / NKV)) * hs;
  const T* vbase = kbase + std::size_t(NKV) * hs;
  const T* obase = dout + std::size_t(b) * Tn * C + std::size_t(h) * hs;

  load_tile(sQ, base, rs, q0, Tn, hs);
  load_tile(sdO, obase, std::size_t(C), q0, Tn, hs);
  if (tid < BR) {
    const int i = q0 + tid;
    sLse[tid] = i < Tn ? lse[std::size_t(bh) * Tn + i] : 0.0f;
    sD[tid] = i < Tn ? Drow[std::size_t(bh) * Tn + i] : 0.0f;
  }
  constexpr int NA = nacc<HS>();
  float acc[NA];
#pragma unroll
  for (int k = 0; k < NA; ++k) acc[k] = 0.0f;
  const int orow = tid >> 3, dg = tid & 7;
  const int si = lane, sj0 = warp * 4;

  for (int kt = 0; kt <= qt; ++kt) {
    const int k0 = kt * BC;
    __syncthreads();
    load_tile(sK, kbase, rs, k0, Tn, hs);
    load_tile(sV, vbase, rs, k0, Tn, hs);
    __syncthreads();
    float p[4], ds[4];
    scores_and_grads<HS>(sQ, sdO, sK, sV, ld, hs, si, sj0, q0 + si, k0, Tn, sLse[si], sD[si], scale,
                         p, ds);
#pragma unroll
    for (int c = 0; c < 4; ++c) sS[si * PLD + sj0 + c] = ds[c];
    __syncthreads();
    for (int j = 0; j < BC; ++j) {
      const float g = sS[orow * PLD + j];
#pragma unroll
      for (int k = 0; k < NA; ++k) {
        const int d = dg + 8 * k;
        if (HS > 0 || d < hs) acc[k] += g * sK[j * ld + d];
      }
    }
  }
  const int i = q0 + orow;
  if (i < Tn) {
    T* o = dqkv + (std::size_t(b) * Tn + i) * rs + std::size_t(h) * hs;
#pragma unroll
    for (int k = 0; k < NA; ++k) {
      const int d = dg + 8 * k;
      if (HS > 0 || d < hs) o[d] = from_f32<T>(acc[k] * scale);
    }
  }
}

template <typename T, int HS>
__global__ void __launch_bounds__(NT)
    attn_bwd_dkv_kernel(T* dqkv, const T* dout, const T* qkv, const float* lse, const float* Drow,
                        int Tn, int NH, int NKV, int hs_rt, float scale) {
  const int hs = HS > 0 ? HS : hs_rt;
  const int ld = hs + 1;
  extern __shared__ float smem[];
  float* sK = smem;
  float* sV = sK + BC * ld;
  float* sQ = sV + BC * ld;
  float* sdO = sQ + BR * ld;
  float* sP = sdO + BR * ld;
  float* sS = sP + BR * PLD;
  float* sLse = sS + BR * PLD;
  float* sD = sLse + BR;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int kt = blockIdx.x; // low key tiles see the most query tiles: they start first
  const int nq = (Tn + BR - 1) / BR;
  const int bg = blockIdx.y, b = bg / NKV, g = bg - b * NKV; // kv head g
  const int group = NH / NKV;
  const int k0 = kt * BC;
  const int C = NH * hs;
  const std::size_t rs = std::size_t(NH + 2 * NKV) * hs;
  const T* kbase = qkv + std::size_t(b) * Tn * rs + std::size_t(NH + g) * hs;
  const T* vbase = kbase + std::size_t(NKV) * hs;

  load_tile(sK, kbase, rs, k0, Tn, hs);
  load_tile(sV, vbase, rs, k0, Tn, hs);
  constexpr int NA = nacc<HS>();
  float dk[NA], dv[NA];
#pragma unroll
  for (int k = 0; k < NA; ++k) dk[k] = dv[k] = 0.0f;
  const int krow = tid >> 3, dg = tid & 7;
  const int si = lane, sj0 = warp * 4;

  for (int it = 0; it < group * (nq - kt); ++it) {
    const int h = g * group + it / (nq - kt), qt = kt + it % (nq - kt);
    const int bh = b * NH + h;
    const T* base = qkv + std::size_t(b) * Tn * rs + std::size_t(h) * hs;
    const T* obase = dout + std::size_t(b) * Tn * C + std::size_t(h) * hs;
    const int q0 = qt * BR;
    __syncthreads();
    load_tile(sQ, base, rs, q0, Tn, hs);
    load_tile(sdO, obase, std::size_t(C), q0, Tn, hs);
    if (tid < BR) {
      const int i = q0 + tid;
      sLse[tid] = i < Tn ? lse[std::size_t(bh) * Tn + i] : 0.0f;
      sD[tid] = i < Tn ? Drow[std::size_t(bh) * Tn + i] : 0.0f;
    }
    __syncthreads();
    float p[4], ds[4];
    scores_and_grads<HS>(sQ, sdO, sK, sV, ld, hs, si, sj0, q0 + si, k0, Tn, sLse[si], sD[si], scale,
                         p, ds);
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      sP[si * PLD + sj0 + c] = p[c];
      sS[si * PLD + sj0 + c] = ds[c];
    }
    __syncthreads();
    for (int r = 0; r < BR; ++r) {
      const float pv = sP[r * PLD + krow];
      const float sv = sS[r * PLD + krow];
#pragma unroll
      for (int k = 0; k < NA; ++k) {
        const int d = dg + 8 * k;
        if (HS > 0 || d < hs) {
          dv[k] += pv * sdO[r * ld + d];
          dk[k] += sv * sQ[r * ld + d];
        }
      }
    }
  }
  const int j = k0 + krow;
  if (j < Tn) {
    T* o = dqkv + (std::size_t(b) * Tn + j) * rs + std::size_t(NH + g) * hs;
#pragma unroll
    for (int k = 0; k < NA; ++k) {
      const int d = dg + 8 * k;
      if (HS > 0 || d < hs) {
        o[d] = from_f32<T>(dk[k] * scale);
        o[std::size_t(NKV) * hs + d] = from_f32<T>(dv[k]);
      }
    }
  }
}

std::size_t fwd_smem(int hs) {
  return sizeof(float) * (std::size_t(BR + 2 * BC) * (hs + 1) + BR * PLD + 3 * BR);
}
std::size_t dq_smem(int hs) {
  return sizeof(float) * (std::size_t(2 * BR + 2 * BC) * (hs + 1) + BR * PLD + 2 * BR);
}
std::size_t dkv_smem(int hs) {
  return sizeof(float) * (std::size_t(2 * BR + 2 * BC) * (hs + 1) + 2 * BR * PLD + 2 * BR);
}

template <typename K> void allow_smem(K kernel, std::size_t bytes) {
  if (bytes > 48 * 1024) {
    MYELIN_CUDA_CHECK(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
  }
}

void check(const char* what, int B, int Tn, int NH, int NKV, int hs) {
  if (B <= 0 || Tn <= 0 || NH <= 0 || NKV <= 0 || hs <= 0 || NH % NKV != 0)
    throw std::invalid_argument(std::string(what) + ": bad shape");
  if (hs > 256) throw std::invalid_argument(std::string(what) + ": head size must be <= 256");
  if (B * NH > 65535) throw std::invalid_argument(std::string(what) + ": B*NH must be <= 65535");
}

template <typename T, int HS>
void fwd_launch(T* out, float* lse, const T* qkv, int B, int Tn, int NH, int NKV, int hs,
                cudaStream_t s) {
  const std::size_t smem = fwd_smem(hs);
  allow_smem(attn_fwd_kernel<T, HS>, smem);
  const dim3 grid(unsigned((Tn + BR - 1) / BR), unsigned(B * NH));
  attn_fwd_kernel<T, HS>
      <<<grid, NT, smem, s>>>(out, lse, qkv, Tn, NH, NKV, hs, 1.0f / sqrtf(float(hs)));
  MYELIN_CUDA_CHECK_LAUNCH();
}

template <typename T, int HS>
void bwd_launch(T* dqkv, const float* Drow, const T* dout, const T* qkv, const float* lse, int B,
                int Tn, int NH, int NKV, int hs, cudaStream_t s) {
  const float scale = 1.0f / sqrtf(float(hs));
  const dim3 grid(unsigned((Tn + BR - 1) / BR), unsigned(B * NH));
  const dim3 grid_kv(unsigned((Tn + BR - 1) / BR), unsigned(B * NKV));
  const std::size_t s1 = dq_smem(hs), s2 = dkv_smem(hs);
  allow_smem(attn_bwd_dq_kernel<T, HS>, s1);
  allow_smem(attn_bwd_dkv_kernel<T, HS>, s2);
  attn_bwd_dq_kernel<T, HS>
      <<<grid, NT, s1, s>>>(dqkv, dout, qkv, lse, Drow, Tn, NH, NKV, hs, scale);
  MYELIN_CUDA_CHECK_LAUNCH();
  attn_bwd_dkv_kernel<T, HS>
      <<<grid_kv, NT, s2, s>>>(dqkv, dout, qkv, lse, Drow, Tn, NH, NKV, hs, scale);
  MYELIN_CUDA_CHECK_LAUNCH();
}

} // namespace

template <typename T>
void attention_forward(T* out, float* lse, const T* qkv, int B, int Tn, int NH, int NKV, int D,
                       cudaStream_t s) {
  check("attention_forward", B, Tn, NH, NKV, D);
  switch (D) {
  case 64:
    fwd_launch<T, 64>(out, lse, qkv, B, Tn, NH, NKV, D, s);
    break;
  case 128:
    fwd_launch<T, 128>(out, lse, qkv, B, Tn, NH, NKV, D, s);
    break;
  default:
    fwd_launch<T, 0>(out, lse, qkv, B, Tn, NH, NKV, D, s);
    break;
  }
}

template <typename T>
void attention_backward(T* dqkv, float* scratch, const T* dout, const T* qkv, const T* out,
                        const float* lse, int B, int Tn, int NH, int NKV, int D, cudaStream_t s) {
  check("attention_backward", B, Tn, NH, NKV, D);
  const std::size_t rows = std::size_t(B) * Tn * NH;
  attn_bwd_rowdot_kernel<T>
      <<<unsigned((rows * 32 + 255) / 256), 256, 0, s>>>(scratch, dout, out, B, Tn, NH * D, NH, D);
  MYELIN_CUDA_CHECK_LAUNCH();
  switch (D) {
  case 64:
    bwd_launch<T, 64>(dqkv, scratch, dout, qkv, lse, B, Tn, NH, NKV, D, s);
    break;
  case 128:
    bwd_launch<T, 128>(dqkv, scratch, dout, qkv, lse, B, Tn, NH, NKV, D, s);
    break;
  default:
    bwd_launch<T, 0>(dqkv, scratch, dout, qkv, lse, B, Tn, NH, NKV, D, s);
    break;
  }
}

#define MYELIN_INST(T)                                                                             \
  template void attention_forward<T>(T*, float*, const T*, int, int, int, int, int, cudaStream_t); \
  template void attention_backward<T>(T*, float*, const T*, const T*, const T*, const float*, int, \
                                      int, int, int, int, cudaStream_t);
MYELIN_INST(float)
MYELIN_INST(__nv_bfloat16)
#undef MYELIN_INST

} // namespace myelin::cuda
