// Fused classifier: softmax over the first V of Vp logits + cross-entropy loss
// + its gradient, in place, without a probabilities buffer.
//   pass 1: per-thread online (max, sum exp) over the row, fixed-order block
//           merge -> lse; loss = lse - logit[target].
//   pass 2: logits[j] = (exp(logit[j] - max) / sum - [j == target]) * dloss,
//           padding columns (j >= V) = 0.
//   One block of 512 threads per row; 16-byte packs when Vp*sizeof(T) is a
//   multiple of 16 and the buffer is aligned, scalar otherwise.
//   bytes: N*Vp*sizeof(T) (loss only) or 3*N*Vp*sizeof(T) (with dlogits), + 8N;
//   FLOPs ~ 5*N*V plus 2 exp per element.
#include <cmath>
#include <stdexcept>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops_cuda.h"

namespace myelin::cuda {

namespace {

constexpr int kThreads = 512;

struct MaxSum {
  float m, s;
};

__device__ __forceinline__ MaxSum merge(MaxSum a, MaxSum b) {
  const float m = fmaxf(a.m, b.m);
  if (m == -INFINITY) return {m, 0.0f};
  return {m, a.s * expf(a.m - m) + b.s * expf(b.m - m)};
}

__device__ __forceinline__ void online(MaxSum& st, float x) {
  if (x > st.m) {
    st.s = st.s * expf(st.m - x) + 1.0f;
    st.m = x;
  } else {
    st.s += expf(x - st.m);
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    classifier_kernel(float* losses, T* logits, const int* targets, int V, int Vp, float dloss,
                      bool write, bool vec) {
  constexpr int VN = kPack<T>;
  __shared__ MaxSum sh[kThreads / 32];
  __shared__ MaxSum tot;
  __shared__ float target_logit;
  const int row = blockIdx.x;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  T* x = logits + std::size_t(row) * Vp;
  const int target = targets[row];
  const bool tvalid = target >= 0 && target < V;
  if (tid == 0) target_logit = tvalid ? to_f32(x[target]) : NAN; // read before any write

  MaxSum st{-INFINITY, 0.0f};
  if (vec) {
    for (int j = tid * VN; j < V; j += kThreads * VN) {
      const Vec<T, VN> p = load_vec<VN>(x + j);
#pragma unroll
      for (int k = 0; k < VN; ++k)
        if (j + k < V) online(st, to_f32(p.v[k]));
    }
  } else {
    for (int j = tid; j < V; j += kThreads) online(st, to_f32(x[j]));
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    MaxSum other{__shfl_xor_sync(0xffffffffu, st.m, o), __shfl_xor_sync(0xffffffffu, st.s, o)};
    st = merge(st, other);
  }
  if (lane == 0) sh[warp] = st;
  __syncthreads();
  if (tid == 0) {
    MaxSum a = sh[0];
    for (int w = 1; w < kThreads / 32; ++w) a = merge(a, sh[w]);
    tot = a;
    losses[row] = a.m + logf(a.s) - target_logit;
  }
  __syncthreads();
  if (!write) return;
  const float m = tot.m, inv = 1.0f / tot.s;
  if (vec) {
    for (int j = tid * VN; j < Vp; j += kThreads * VN) {
      Vec<T, VN> p = load_vec<VN>(x + j);
#pragma unroll
      for (int k = 0; k < VN; ++k) {
        const int c = j + k;
        const float g =
            c < V ? (expf(to_f32(p.v[k]) - m) * inv - (c == target ? 1.0f : 0.0f)) * dloss : 0.0f;
        p.v[k] = from_f32<T>(g);
      }
      store_vec(x + j, p);
    }
  } else {
    for (int c = tid; c < Vp; c += kThreads) {
      const float g =
          c < V ? (expf(to_f32(x[c]) - m) * inv - (c == target ? 1.0f : 0.0f)) * dloss : 0.0f;
      x[c] = from_f32<T>(g);
    }
  }
}

} // namespace

template <typename T>
void classifier_forward_backward(float* losses, T* logits, const int* targets, int N, int V, int Vp,
                                 float dloss, bool write_dlogits, cudaStream_t s) {
  if (N <= 0 || V <= 0 || Vp < V) throw std::invalid_argument("classifier: bad shape");
  const bool vec = (std::size_t(Vp) * sizeof(T)) % 16 == 0 && aligned16(logits);
  classifier_kernel<T>
      <<<unsigned(N), kThreads, 0, s>>>(losses, logits, targets, V, Vp, dloss, write_dlogits, vec);
  MYELIN_CUDA_CHECK_LAUNCH();
}

template void classifier_forward_backward<float>(float*, float*, const int*, int, int, int, float,
                                                 bool, cudaStream_t);
template void classifier_forward_backward<bf16>(float*, bf16*, const int*, int, int, int, float,
                                                bool, cudaStream_t);

} // namespace myelin::cuda
