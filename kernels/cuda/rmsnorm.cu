// RMSNorm over the last dimension C (Llama), no bias, eps from the caller,
// fp32 statistics. The same formulas as the CPU reference (kernels/cpu/rmsnorm.cpp):
//   forward : rrms = 1/sqrt(mean(x^2) + eps); out = x*rrms*w; rrms [N] saved.
//             One warp per row, 8 rows per 256-thread block; two passes over
//             the row (sum of squares, write; the 2nd hits L1/L2). 16-byte
//             packs when C is a multiple of the pack and pointers are aligned.
//             bytes: 2*N*C*sizeof(T) + C*sizeof(T) + 4N; FLOPs ~ 4*N*C.
//   apply   : out from saved rrms (recomputation), bit-identical to the
//             forward's output: one warp per row, one pass.
//             bytes: 2*N*C*sizeof(T) + 4N; FLOPs ~ 2*N*C.
//   residual_rmsnorm_forward: r = a + b (rounded to T, stored), then
//             RMSNorm(r). bytes: 4*N*C*sizeof(T); FLOPs ~ 5*N*C.
//   backward: xhat = x*rrms, g = w*dout;
//             dinp += (g - xhat*mean(g*xhat)) * rrms; dweight += sum_n dout*xhat.
//             Kernel 1: G = min(ceil(N/8), 512) blocks of 256 threads (8 warps);
//             block b takes tiles of 8 rows b, b+G, ... In a tile, warp w
//             reduces row 8*tile+w (16-byte packs: sum g*xhat, butterfly
//             shuffles) and puts rrms and mean(g*xhat) in shared memory
//             (double-buffered: one barrier per tile). Then the threads switch
//             to columns: S row slots (S = 1..8, the largest power of two with
//             S * packs <= 256) of one thread per 16-byte pack; slot s walks
//             the tile's rows s, s+S, ... in order, writes dinp and keeps its
//             dweight partials in registers (C/256 floats, C <= 8192).
//             Partials [G*S, C] go to scratch. Scalar path (1-element packs)
//             when C is not a multiple of the pack or a row is not 16-byte
//             aligned.
//             Kernel 2: one thread per column sums the G*S partials in order.
//             No float atomics; every sum has a fixed order: bit-deterministic.
//             Registers (ptxas, sm_90): 64-80 per thread, no spills.
//             bytes: 4*N*C*sizeof(T) from DRAM (dout and inp once: the column
//             pass re-reads the tile from L1/L2; dinp read and written) +
//             C*sizeof(T)*tiles from cache + 2*G*S*C*4 partials;
//             FLOPs ~ 12*N*C. Launch: <<<G, 256>>> then <<<ceil(C/256), 256>>>.
#include <stdexcept>
#include <string>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops_cuda.h"

namespace myelin::cuda {

namespace {

constexpr int kFwdThreads = 256;
constexpr int kBwdThreads = 256;
constexpr int kBwdMaxBlocks = 512;
constexpr int kBwdMaxC = 8192;
constexpr int kRowsPerBlock = kFwdThreads / 32;

template <typename T>
__device__ __forceinline__ float warp_row_sumsq(const T* row, int C, bool vec, int lane) {
  float acc = 0.0f;
  if (vec) {
    constexpr int VN = kPack<T>;
    for (int i = lane * VN; i < C; i += 32 * VN) {
      const Vec<T, VN> p = load_vec<VN>(row + i);
#pragma unroll
      for (int k = 0; k < VN; ++k) {
        const float x = to_f32(p.v[k]);
        acc += x * x;
      }
    }
  } else {
    for (int i = lane; i < C; i += 32) {
      const float x = to_f32(row[i]);
      acc += x * x;
    }
  }
  return warp_sum(acc);
}

// out = x * r * w, the one formula of the forward and the recomputation.
template <typename T>
__device__ __forceinline__ void warp_row_scale(T* out, const T* row, const T* w, int C, bool vec,
                                               int lane, float r) {
  if (vec) {
    constexpr int VN = kPack<T>;
    for (int i = lane * VN; i < C; i += 32 * VN) {
      const Vec<T, VN> x = load_vec<VN>(row + i);
      const Vec<T, VN> wv = load_vec<VN>(w + i);
      Vec<T, VN> o;
#pragma unroll
      for (int k = 0; k < VN; ++k) o.v[k] = from_f32<T>(to_f32(x.v[k]) * r * to_f32(wv.v[k]));
      store_vec(out + i, o);
    }
  } else {
    for (int i = lane; i < C; i += 32) out[i] = from_f32<T>(to_f32(row[i]) * r * to_f32(w[i]));
  }
}

template <typename T>
__global__ void __launch_bounds__(kFwdThreads)
    rmsnorm_forward_kernel(T* out, float* rrms, const T* inp, const T* w, int N, int C, float eps,
                           bool vec) {
  const int lane = threadIdx.x & 31;
  const int row = blockIdx.x * kRowsPerBlock + (threadIdx.x >> 5);
  if (row >= N) return;
  const T* x = inp + std::size_t(row) * C;
  const float r = 1.0f / sqrtf(warp_row_sumsq(x, C, vec, lane) / float(C) + eps);
  warp_row_scale(out + std::size_t(row) * C, x, w, C, vec, lane, r);
  if (lane == 0 && rrms) rrms[row] = r;
}

template <typename T>
__global__ void __launch_bounds__(kFwdThreads)
    rmsnorm_apply_kernel(T* out, const T* inp, const T* w, const float* rrms, int N, int C,
                         bool vec) {
  const int lane = threadIdx.x & 31;
  const int row = blockIdx.x * kRowsPerBlock + (threadIdx.x >> 5);
  if (row >= N) return;
  const std::size_t off = std::size_t(row) * C;
  warp_row_scale(out + off, inp + off, w, C, vec, lane, rrms[row]);
}

template <typename T>
__global__ void __launch_bounds__(kFwdThreads)
    residual_rmsnorm_forward_kernel(T* res, T* out, float* rrms, const T* a, const T* b, const T* w,
                                    int N, int C, float eps, bool vec) {
  const int lane = threadIdx.x & 31;
  const int row = blockIdx.x * kRowsPerBlock + (threadIdx.x >> 5);
  if (row >= N) return;
  const std::size_t off = std::size_t(row) * C;
  // r = a + b, rounded to T and stored; the sum of squares of the stored values.
  const float ss =
      warp_residual_row(res + off, a + off, b + off, C, vec, lane, [](float v) { return v * v; });
  const float r = 1.0f / sqrtf(ss / float(C) + eps);
  warp_row_scale(out + off, res + off, w, C, vec, lane, r);
  if (lane == 0 && rrms) rrms[row] = r;
}

// Row slots of the column pass: the largest power of two S <= 8 with S*P <= 256.
int col_slots(int packs) {
  int s = 1;
  while (s < kRowsPerBlock && 2 * s * packs <= kBwdThreads) s *= 2;
  return s;
}

// VN: elements per pack (kPack<T>, or 1 on the scalar path); NPK: packs per
// thread at the largest C, so that the register partials are C_max/256 floats.
template <typename T, int VN, int NPK>
__global__ void __launch_bounds__(kBwdThreads)
    rmsnorm_backward_kernel(T* dinp, float* partial, const T* dout, const T* inp, const T* w,
                            const float* rrms, int N, int C, int S) {
  __shared__ float stats[2][kRowsPerBlock][2]; // rrms, mean(g*xhat)
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int P = C / VN; // packs per row
  const int Pw = P < kBwdThreads ? P : kBwdThreads;
  const int slot = tid / Pw, p0 = tid % Pw; // column pass: row slot and first pack
  const bool active = slot < S;
  const float invC = 1.0f / float(C);
  float dw[NPK * VN];
#pragma unroll
  for (int k = 0; k < NPK * VN; ++k) dw[k] = 0.0f;

  const int tiles = (N + kRowsPerBlock - 1) / kRowsPerBlock;
  int buf = 0;
  for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x, buf ^= 1) {
    // Row pass: warp `warp` reduces its row.
    const int row = tile * kRowsPerBlock + warp;
    if (row < N) {
      const std::size_t off = std::size_t(row) * C;
      const float r = rrms[row];
      float s = 0.0f;
      for (int p = lane; p < P; p += 32) {
        const Vec<T, VN> dv = load_vec<VN>(dout + off + std::size_t(p) * VN);
        const Vec<T, VN> xv = load_vec<VN>(inp + off + std::size_t(p) * VN);
        const Vec<T, VN> wv = load_vec<VN>(w + std::size_t(p) * VN);
#pragma unroll
        for (int k = 0; k < VN; ++k)
          s += (to_f32(wv.v[k]) * to_f32(dv.v[k])) * (to_f32(xv.v[k]) * r);
      }
      s = warp_sum(s);
      if (lane == 0) {
        stats[buf][warp][0] = r;
        stats[buf][warp][1] = s * invC;
      }
    }
    __syncthreads();
    // Column pass: slot `slot` takes rows slot, slot+S, ... of the tile.
    if (active) {
      for (int rr = slot; rr < kRowsPerBlock; rr += S) {
        const int row2 = tile * kRowsPerBlock + rr;
        if (row2 >= N) break;
        const std::size_t off = std::size_t(row2) * C;
        const float r = stats[buf][rr][0], mgx = stats[buf][rr][1];
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
              const float xh = to_f32(xv.v[k]) * r;
              const float g = to_f32(wv.v[k]) * d;
              di.v[k] = from_f32<T>(to_f32(di.v[k]) + (g - xh * mgx) * r);
              dw[j * VN + k] += xh * d;
            }
            store_vec(dinp + off + c, di);
          }
        }
      }
    }
  }
  if (!active) return;
  float* pw = partial + (std::size_t(blockIdx.x) * S + slot) * C;
#pragma unroll
  for (int j = 0; j < NPK; ++j) {
    const int p = p0 + j * kBwdThreads;
    if (p < P) {
#pragma unroll
      for (int k = 0; k < VN; ++k) pw[p * VN + k] = dw[j * VN + k];
    }
  }
}

__global__ void rmsnorm_partial_reduce(float* dweight, const float* partial, int G, int C) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float acc = 0.0f;
  for (int g = 0; g < G; ++g) acc += partial[std::size_t(g) * C + c];
  dweight[c] += acc;
}

int bwd_blocks(int N) {
  const int tiles = (N + kRowsPerBlock - 1) / kRowsPerBlock;
  return tiles < kBwdMaxBlocks ? tiles : kBwdMaxBlocks;
}

void check_shape(const char* what, int N, int C, float eps) {
  if (N <= 0 || C <= 0) throw std::invalid_argument(std::string(what) + ": bad shape");
  if (!(eps > 0.0f)) throw std::invalid_argument(std::string(what) + ": eps must be > 0");
}

unsigned fwd_blocks(int N) { return unsigned((N + kRowsPerBlock - 1) / kRowsPerBlock); }

} // namespace

std::size_t rmsnorm_backward_scratch(int N, int C) {
  if (N <= 0 || C <= 0) return 0;
  // The most row slots any path takes: packs of 8 elements (bf16) give the fewest packs.
  const int S = col_slots(C / 8 > 0 ? C / 8 : 1);
  return std::size_t(bwd_blocks(N)) * std::size_t(S) * std::size_t(C);
}

template <typename T>
void rmsnorm_forward(T* out, float* rrms, const T* inp, const T* weight, int N, int C, float eps,
                     cudaStream_t s) {
  check_shape("rmsnorm_forward", N, C, eps);
  const bool vec = rows_vectorisable<T>(C, {out, inp, weight});
  rmsnorm_forward_kernel<T>
      <<<fwd_blocks(N), kFwdThreads, 0, s>>>(out, rrms, inp, weight, N, C, eps, vec);
  MYELIN_CUDA_CHECK_LAUNCH();
}

template <typename T>
void rmsnorm_apply(T* out, const T* inp, const T* weight, const float* rrms, int N, int C,
                   cudaStream_t s) {
  check_shape("rmsnorm_apply", N, C, 1.0f);
  if (!rrms) throw std::invalid_argument("rmsnorm_apply: null rrms");
  const bool vec = rows_vectorisable<T>(C, {out, inp, weight});
  rmsnorm_apply_kernel<T><<<fwd_blocks(N), kFwdThreads, 0, s>>>(out, inp, weight, rrms, N, C, vec);
  MYELIN_CUDA_CHECK_LAUNCH();
}

template <typename T>
void residual_rmsnorm_forward(T* residual, T* out, float* rrms, const T* a, const T* b,
                              const T* weight, int N, int C, float eps, cudaStream_t s) {
  check_shape("residual_rmsnorm_forward", N, C, eps);
  const bool vec = rows_vectorisable<T>(C, {residual, out, a, b, weight});
  residual_rmsnorm_forward_kernel<T>
      <<<fwd_blocks(N), kFwdThreads, 0, s>>>(residual, out, rrms, a, b, weight, N, C, eps, vec);
  MYELIN_CUDA_CHECK_LAUNCH();
}

template <typename T>
void rmsnorm_backward(T* dinp, float* dweight, const T* dout, const T* inp, const T* weight,
                      const float* rrms, int N, int C, float* scratch, cudaStream_t s) {
  check_shape("rmsnorm_backward", N, C, 1.0f);
  if (C > kBwdMaxC) throw std::invalid_argument("rmsnorm_backward: C must be <= 8192");
  if (!dinp || !dweight || !scratch || !rrms)
    throw std::invalid_argument("rmsnorm_backward: null output, rrms or scratch");
  const int G = bwd_blocks(N);
  constexpr int VN = kPack<T>;
  constexpr int kVecNpk = kBwdMaxC / kBwdThreads / VN, kScalarNpk = kBwdMaxC / kBwdThreads;
  const bool vec = rows_vectorisable<T>(C, {dinp, dout, inp, weight});
  const int S = col_slots(vec ? C / VN : C);
  if (vec)
    rmsnorm_backward_kernel<T, VN, kVecNpk>
        <<<G, kBwdThreads, 0, s>>>(dinp, scratch, dout, inp, weight, rrms, N, C, S);
  else
    rmsnorm_backward_kernel<T, 1, kScalarNpk>
        <<<G, kBwdThreads, 0, s>>>(dinp, scratch, dout, inp, weight, rrms, N, C, S);
  MYELIN_CUDA_CHECK_LAUNCH();
  rmsnorm_partial_reduce<<<unsigned((C + 255) / 256), 256, 0, s>>>(dweight, scratch, G * S, C);
  MYELIN_CUDA_CHECK_LAUNCH();
}

#define MYELIN_INST(T)                                                                             \
  template void rmsnorm_forward<T>(T*, float*, const T*, const T*, int, int, float, cudaStream_t); \
  template void rmsnorm_apply<T>(T*, const T*, const T*, const float*, int, int, cudaStream_t);    \
  template void residual_rmsnorm_forward<T>(T*, T*, float*, const T*, const T*, const T*, int,     \
                                            int, float, cudaStream_t);                             \
  template void rmsnorm_backward<T>(T*, float*, const T*, const T*, const T*, const float*, int,   \
                                    int, float*, cudaStream_t);
MYELIN_INST(float)
MYELIN_INST(__nv_bfloat16)
#undef MYELIN_INST

} // namespace myelin::cuda
