// LayerNorm over the last dimension C (eps 1e-5), fp32 statistics.
//   forward : out = (x - mean) * rstd * w + b; mean, rstd [N] saved (float).
//             One warp per row, 8 rows per 256-thread block; three passes over
//             the row (sum, centred sum of squares, write), the 2nd and 3rd hit
//             L1/L2. 16-byte packs when C is a multiple of the pack.
//             bytes: 2*N*C*sizeof(T) + 2*C*sizeof(T) + 8N; FLOPs ~ 8*N*C.
//   apply   : out from saved mean/rstd (recomputation): one warp per row, one
//             pass; bytes: 2*N*C*sizeof(T) + 8N; FLOPs ~ 4*N*C.
//   residual_layernorm_forward: r = a + b (stored), then LayerNorm(r); saves
//             one read of r compared with separate kernels.
//             bytes: 4*N*C*sizeof(T); FLOPs ~ 9*N*C.
//   backward: dinp += (g - mean(g) - xhat*mean(g*xhat)) * rstd with g = dout*w;
//             dweight += sum_n dout*xhat, dbias += sum_n dout.
//             Kernel 1: G = min(ceil(N/8), 512) blocks of 256 threads (8 warps);
//             block b takes tiles of 8 rows b, b+G, ... In a tile, warp w
//             reduces row 8*tile+w (16-byte packs: sum g, sum g*xhat, butterfly
//             shuffles) and puts the row's four statistics in shared memory
//             (double-buffered: one barrier per tile). Then the threads switch
//             to columns: S row slots (S = 1..8, the largest power of two with
//             S * packs <= 256) of one thread per 16-byte pack; slot s walks
//             the tile's rows s, s+S, ... in order, writes dinp and keeps its
//             dweight/dbias partials in registers (C/256 floats each, C <= 4096).
//             Partials [G*S, 2C] go to scratch. Scalar path (1-element packs)
//             when C is not a multiple of the pack or a row is not 16-byte
//             aligned.
//             Kernel 2: one thread per column sums the G*S partials in order.
//             No float atomics; every sum has a fixed order: bit-deterministic.
//             Registers (ptxas, sm_90): 64-80 per thread, no spills.
//             bytes: 4*N*C*sizeof(T) from DRAM (dout and inp once: the column
//             pass re-reads the tile from L1/L2; dinp read and written) +
//             2*C*sizeof(T)*tiles from cache + 2*G*S*2C*4 partials;
//             FLOPs ~ 17*N*C. Launch: <<<G, 256>>> then <<<ceil(2C/256), 256>>>.
#include <stdexcept>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops_cuda.h"

namespace myelin::cuda {

namespace {

constexpr float kEps = 1e-5f;
constexpr int kFwdThreads = 256;
constexpr int kBwdThreads = 256;
constexpr int kBwdMaxC = 4096;
constexpr int kBwdMaxBlocks = 512;
constexpr int kTileRows = kBwdThreads / 32; // rows per tile: one per warp

// Sum over the row of f(x) for x in row (fp32), by one warp.
template <typename T, typename F>
__device__ __forceinline__ float warp_row_sum(const T* row, int C, bool vec, int lane, F f) {
  float acc = 0.0f;
  if (vec) {
    constexpr int VN = kPack<T>;
    for (int i = lane * VN; i < C; i += 32 * VN) {
      const Vec<T, VN> p = load_vec<VN>(row + i);
#pragma unroll
      for (int k = 0; k < VN; ++k) acc += f(to_f32(p.v[k]));
    }
  } else {
    for (int i = lane; i < C; i += 32) acc += f(to_f32(row[i]));
  }
  return warp_sum(acc);
}

template <typename T>
__device__ __forceinline__ void warp_row_normalize(T* out, const T* row, const T* w, const T* b,
                                                   int C, bool vec, int lane, float m, float r) {
  if (vec) {
    constexpr int VN = kPack<T>;
    for (int i = lane * VN; i < C; i += 32 * VN) {
      const Vec<T, VN> x = load_vec<VN>(row + i);
      const Vec<T, VN> wv = load_vec<VN>(w + i);
      const Vec<T, VN> bv = load_vec<VN>(b + i);
      Vec<T, VN> o;
#pragma unroll
      for (int k = 0; k < VN; ++k)
        o.v[k] = from_f32<T>((to_f32(x.v[k]) - m) * r * to_f32(wv.v[k]) + to_f32(bv.v[k]));
      store_vec(out + i, o);
    }
  } else {
    for (int i = lane; i < C; i += 32)
      out[i] = from_f32<T>((to_f32(row[i]) - m) * r * to_f32(w[i]) + to_f32(b[i]));
  }
}

template <typename T>
__global__ void __launch_bounds__(kFwdThreads)
    layernorm_forward_kernel(T* out, float* mean, float* rstd, const T* inp, const T* w, const T* b,
                             int N, int C, bool vec) {
  const int lane = threadIdx.x & 31;
  const int row = blockIdx.x * (kFwdThreads / 32) + (threadIdx.x >> 5);
  if (row >= N) return;
  const T* x = inp + std::size_t(row) * C;
  const float m = warp_row_sum(x, C, vec, lane, [](float v) { return v; }) / float(C);
  const float var =
      warp_row_sum(x, C, vec, lane, [m](float v) { return (v - m) * (v - m); }) / float(C);
  const float r = 1.0f / sqrtf(var + kEps);
  warp_row_normalize(out + std::size_t(row) * C, x, w, b, C, vec, lane, m, r);
  if (lane == 0) {
    if (mean) mean[row] = m;
    if (rstd) rstd[row] = r;
  }
}

template <typename T>
__global__ void __launch_bounds__(kFwdThreads)
    layernorm_apply_kernel(T* out, const T* inp, const T* w, const T* b, const float* mean,
                           const float* rstd, int N, int C, bool vec) {
  const int lane = threadIdx.x & 31;
  const int row = blockIdx.x * (kFwdThreads / 32) + (threadIdx.x >> 5);
  if (row >= N) return;
  const std::size_t off = std::size_t(row) * C;
  warp_row_normalize(out + off, inp + off, w, b, C, vec, lane, mean[row], rstd[row]);
}

template <typename T>
__global__ void __launch_bounds__(kFwdThreads)
    residual_layernorm_forward_kernel(T* res, T* out, float* mean, float* rstd, const T* a,
                                      const T* bb, const T* w, const T* b, int N, int C, bool vec) {
  const int lane = threadIdx.x & 31;
  const int row = blockIdx.x * (kFwdThreads / 32) + (threadIdx.x >> 5);
  if (row >= N) return;
  const std::size_t off = std::size_t(row) * C;
  // Pass 1: r = a + b, rounded to T and stored; the sum of the stored values.
  const float m =
      warp_residual_row(res + off, a + off, bb + off, C, vec, lane, [](float v) { return v; }) /
      float(C);
  const T* x = res + off;
  const float var =
      warp_row_sum(x, C, vec, lane, [m](float v) { return (v - m) * (v - m); }) / float(C);
  const float r = 1.0f / sqrtf(var + kEps);
  warp_row_normalize(out + off, x, w, b, C, vec, lane, m, r);
  if (lane == 0) {
    if (mean) mean[row] = m;
    if (rstd) rstd[row] = r;
  }
}

// Row slots of the column pass: the largest power of two S <= 8 with S*P <= 256.
int col_slots(int packs) {
  int s = 1;
  while (s < kTileRows && 2 * s * packs <= kBwdThreads) s *= 2;
  return s;
}

// VN: elements per pack (kPack<T>, or 1 on the scalar path); NPK: packs per
// thread at the largest C, so that the register partials are C_max/256 floats.
template <typename T, int VN, int NPK>
__global__ void __launch_bounds__(kBwdThreads)
    layernorm_backward_kernel(T* dinp, float* partial, const T* dout, const T* inp, const T* w,
                              const float* mean, const float* rstd, int N, int C, int S) {
  __shared__ float stats[2][kTileRows][4]; // mean, rstd, mean(g), mean(g*xhat)
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int P = C / VN; // packs per row
  const int Pw = P < kBwdThreads ? P : kBwdThreads;
  const int slot = tid / Pw, p0 = tid % Pw; // column pass: row slot and first pack
  const bool active = slot < S;
  const float invC = 1.0f / float(C);
  float dw[NPK * VN], db[NPK * VN];
#pragma unroll
  for (int k = 0; k < NPK * VN; ++k) dw[k] = db[k] = 0.0f;

  const int tiles = (N + kTileRows - 1) / kTileRows;
  int buf = 0;
  for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x, buf ^= 1) {
    // Row pass: warp `warp` reduces its row.
    const int row = tile * kTileRows + warp;
    if (row < N) {
      const std::size_t off = std::size_t(row) * C;
      const float m = mean[row], r = rstd[row];
      float s1 = 0.0f, s2 = 0.0f;
      for (int p = lane; p < P; p += 32) {
        const Vec<T, VN> dv = load_vec<VN>(dout + off + std::size_t(p) * VN);
        const Vec<T, VN> xv = load_vec<VN>(inp + off + std::size_t(p) * VN);
        const Vec<T, VN> wv = load_vec<VN>(w + std::size_t(p) * VN);
#pragma unroll
        for (int k = 0; k < VN; ++k) {
          const float g = to_f32(dv.v[k]) * to_f32(wv.v[k]);
          s1 += g;
          s2 += g * ((to_f32(xv.v[k]) - m) * r);
        }
      }
      s1 = warp_sum(s1);
      s2 = warp_sum(s2);
      if (lane == 0) {
        stats[buf][warp][0] = m;
        stats[buf][warp][1] = r;
        stats[buf][warp][2] = s1 * invC;
        stats[buf][warp][3] = s2 * invC;
      }
    }
    __syncthreads();
    // Column pass: slot `slot` takes rows slot, slot+S, ... of the tile.
    if (active) {
      for (int rr = slot; rr < kTileRows; rr += S) {
        const int row2 = tile * kTileRows + rr;
        if (row2 >= N) break;
        const std::size_t off = std::size_t(row2) * C;
        const float m = stats[buf][rr][0], r = stats[buf][rr][1];
        const float mg = stats[buf][rr][2], mgx = stats[buf][rr][3];
#pragma unroll
        for (int j = 0; j < NPK; ++j) {
          const int p = p0 + j * kBwdThreads;
          if (p < P) {
            const std::size_t c = std::size_t(p) * VN;
            const Vec<T, VN> dv = load_vec<VN>(dout + off + c);
            const Vec<T, VN> xv = load_vec<VN>(inp + off + c);
            const Vec<T, VN> wv = load_vec<VN>(w + c);
            Vec<T, VN> di = load_vec<VN>(dinp + off + c);
#pragma unroll
            for (int k = 0; k < VN; ++k) {
              const float d = to_f32(dv.v[k]);
              const float xh = (to_f32(xv.v[k]) - m) * r;
              const float g = d * to_f32(wv.v[k]);
              di.v[k] = from_f32<T>(to_f32(di.v[k]) + (g - mg - xh * mgx) * r);
              dw[j * VN + k] += d * xh;
              db[j * VN + k] += d;
            }
            store_vec(dinp + off + c, di);
          }
        }
      }
    }
  }
  if (!active) return;
  float* pw = partial + (std::size_t(blockIdx.x) * S + slot) * 2 * C;
#pragma unroll
  for (int j = 0; j < NPK; ++j) {
    const int p = p0 + j * kBwdThreads;
    if (p < P) {
#pragma unroll
      for (int k = 0; k < VN; ++k) {
        pw[p * VN + k] = dw[j * VN + k];
        pw[C + p * VN + k] = db[j * VN + k];
      }
    }
  }
}

__global__ void layernorm_partial_reduce(float* dweight, float* dbias, const float* partial, int G,
                                         int C) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= 2 * C) return;
  float acc = 0.0f;
  for (int g = 0; g < G; ++g) acc += partial[std::size_t(g) * 2 * C + c];
  if (c < C) {
    dweight[c] += acc;
  } else {
    dbias[c - C] += acc;
  }
}

int bwd_blocks(int N) {
  const int tiles = (N + kTileRows - 1) / kTileRows;
  return tiles < kBwdMaxBlocks ? tiles : kBwdMaxBlocks;
}

} // namespace

std::size_t layernorm_backward_scratch(int N, int C) {
  if (N <= 0 || C <= 0) return 0;
  // The most row slots any path takes: packs of 8 elements (bf16) give the fewest packs.
  const int S = col_slots(C / 8 > 0 ? C / 8 : 1);
  return std::size_t(bwd_blocks(N)) * std::size_t(S) * 2 * std::size_t(C);
}

template <typename T>
void layernorm_forward(T* out, float* mean, float* rstd, const T* inp, const T* weight,
                       const T* bias, int N, int C, cudaStream_t s) {
  if (N <= 0 || C <= 0) throw std::invalid_argument("layernorm_forward: bad shape");
  const bool vec = rows_vectorisable<T>(C, {out, inp, weight, bias});
  const unsigned blocks = unsigned((N + kFwdThreads / 32 - 1) / (kFwdThreads / 32));
  layernorm_forward_kernel<T>
      <<<blocks, kFwdThreads, 0, s>>>(out, mean, rstd, inp, weight, bias, N, C, vec);
  MYELIN_CUDA_CHECK_LAUNCH();
}

template <typename T>
void layernorm_apply(T* out, const T* inp, const T* weight, const T* bias, const float* mean,
                     const float* rstd, int N, int C, cudaStream_t s) {
  if (N <= 0 || C <= 0 || !mean || !rstd) throw std::invalid_argument("layernorm_apply: bad shape");
  const bool vec = rows_vectorisable<T>(C, {out, inp, weight, bias});
  const unsigned blocks = unsigned((N + kFwdThreads / 32 - 1) / (kFwdThreads / 32));
  layernorm_apply_kernel<T>
      <<<blocks, kFwdThreads, 0, s>>>(out, inp, weight, bias, mean, rstd, N, C, vec);
  MYELIN_CUDA_CHECK_LAUNCH();
}

template <typename T>
void residual_layernorm_forward(T* residual, T* out, float* mean, float* rstd, const T* a,
                                const T* b, const T* weight, const T* bias, int N, int C,
                                cudaStream_t s) {
  if (N <= 0 || C <= 0) throw std::invalid_argument("residual_layernorm_forward: bad shape");
  const bool vec = rows_vectorisable<T>(C, {residual, out, a, b, weight, bias});
  const unsigned blocks = unsigned((N + kFwdThreads / 32 - 1) / (kFwdThreads / 32));
  residual_layernorm_forward_kernel<T>
      <<<blocks, kFwdThreads, 0, s>>>(residual, out, mean, rstd, a, b, weight, bias, N, C, vec);
  MYELIN_CUDA_CHECK_LAUNCH();
}

template <typename T>
void layernorm_backward(T* dinp, float* dweight, float* dbias, const T* dout, const T* inp,
                        const T* weight, const float* mean, const float* rstd, int N, int C,
                        float* scratch, cudaStream_t s) {
  if (N <= 0 || C <= 0) throw std::invalid_argument("layernorm_backward: bad shape");
  if (C > kBwdMaxC) throw std::invalid_argument("layernorm_backward: C must be <= 4096");
  if (!dinp || !dweight || !dbias || !scratch || !mean || !rstd)
    throw std::invalid_argument("layernorm_backward: null output, statistics or scratch");
  const int G = bwd_blocks(N);
  constexpr int VN = kPack<T>;
  constexpr int kVecNpk = kBwdMaxC / kBwdThreads / VN, kScalarNpk = kBwdMaxC / kBwdThreads;
  const bool vec = rows_vectorisable<T>(C, {dinp, dout, inp, weight});
  const int S = col_slots(vec ? C / VN : C);
  if (vec)
    layernorm_backward_kernel<T, VN, kVecNpk>
        <<<G, kBwdThreads, 0, s>>>(dinp, scratch, dout, inp, weight, mean, rstd, N, C, S);
  else
    layernorm_backward_kernel<T, 1, kScalarNpk>
        <<<G, kBwdThreads, 0, s>>>(dinp, scratch, dout, inp, weight, mean, rstd, N, C, S);
  MYELIN_CUDA_CHECK_LAUNCH();
  layernorm_partial_reduce<<<unsigned((2 * C + 255) / 256), 256, 0, s>>>(dweight, dbias, scratch,
                                                                         G * S, C);
  MYELIN_CUDA_CHECK_LAUNCH();
}

#define MYELIN_INST(T)                                                                             \
  template void layernorm_forward<T>(T*, float*, float*, const T*, const T*, const T*, int, int,   \
                                     cudaStream_t);                                                \
  template void layernorm_apply<T>(T*, const T*, const T*, const T*, const float*, const float*,   \
                                   int, int, cudaStream_t);                                        \
  template void residual_layernorm_forward<T>(T*, T*, float*, float*, const T*, const T*,          \
                                              const T*, const T*, int, int, cudaStream_t);         \
  template void layernorm_backward<T>(T*, float*, float*, const T*, const T*, const T*,            \
                                      const float*, const float*, int, int, float*, cudaStream_t);
MYELIN_INST(float)
MYELIN_INST(__nv_bfloat16)
#undef MYELIN_INST

} // namespace myelin::cuda
