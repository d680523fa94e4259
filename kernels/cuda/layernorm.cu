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
//   backward: norm_backward.cu.
#include <stdexcept>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops_cuda.h"

namespace myelin::cuda {

namespace {

constexpr float kEps = 1e-5f;
constexpr int kFwdThreads = 256;

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

} // namespace

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

#define MYELIN_INST(T)                                                                             \
  template void layernorm_forward<T>(T*, float*, float*, const T*, const T*, const T*, int, int,   \
                                     cudaStream_t);                                                \
  template void layernorm_apply<T>(T*, const T*, const T*, const T*, const float*, const float*,   \
                                   int, int, cudaStream_t);                                        \
  template void residual_layernorm_forward<T>(T*, T*, float*, float*, const T*, const T*,          \
                                              const T*, const T*, int, int, cudaStream_t);
MYELIN_INST(float)
MYELIN_INST(__nv_bfloat16)
#undef MYELIN_INST

} // namespace myelin::cuda
