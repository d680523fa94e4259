// Token + position embedding.
//   forward : out[b,t,c] = wte[tok[b,t],c] + wpe[t,c]   (wpe null: rotary models, wte only)
//             bytes: 3*N*C*sizeof(T) (+4N for tokens); FLOPs: N*C   (N = B*T)
//             launch: grid-stride, 256 threads, one 16-byte pack per thread when
//             C is a multiple of the pack and rows are aligned, else scalar.
//   backward: dwpe[t,c] += sum_b dout[b,t,c]   (thread per (t,c), b in order)
//             dwte[v,c] += sum over positions of token v (block per (bucket, 256
//             channels), positions in increasing order) -> deterministic, no atomics.
//             bytes: 2*N*C*sizeof(T) read + (T + distinct tokens)*C*8 (fp32 RMW);
//             FLOPs: 2*N*C.
#include <algorithm>
#include <numeric>
#include <stdexcept>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops_cuda.h"

namespace myelin::cuda {

namespace {

template <typename T>
__global__ void encoder_forward_vec(T* out, const int* tokens, const T* wte, const T* wpe, int Tn,
                                    int C, std::size_t npacks) {
  constexpr int VN = kPack<T>;
  const int cp = C / VN; // packs per row
  for (std::size_t p = std::size_t(blockIdx.x) * blockDim.x + threadIdx.x; p < npacks;
       p += std::size_t(gridDim.x) * blockDim.x) {
    const std::size_t n = p / cp;
    const int c = int(p % cp) * VN;
    const int t = int(n % Tn);
    const int tok = tokens[n];
    const Vec<T, VN> a = load_vec<VN>(wte + std::size_t(tok) * C + c);
    Vec<T, VN> o = a;
    if (wpe) {
      const Vec<T, VN> b = load_vec<VN>(wpe + std::size_t(t) * C + c);
#pragma unroll
      for (int k = 0; k < VN; ++k) o.v[k] = from_f32<T>(to_f32(a.v[k]) + to_f32(b.v[k]));
    }
    store_vec(out + n * C + c, o);
  }
}

template <typename T>
__global__ void encoder_forward_scalar(T* out, const int* tokens, const T* wte, const T* wpe,
                                       int Tn, int C, std::size_t total) {
  for (std::size_t i = std::size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += std::size_t(gridDim.x) * blockDim.x) {
    const std::size_t n = i / C;
    const int c = int(i % C);
    const int t = int(n % Tn);
    const T e = wte[std::size_t(tokens[n]) * C + c];
    out[i] = wpe ? from_f32<T>(to_f32(e) + to_f32(wpe[std::size_t(t) * C + c])) : e;
  }
}

template <typename T>
__global__ void encoder_backward_wpe(float* dwpe, const T* dout, int B, int Tn, int C) {
  const std::size_t total = std::size_t(Tn) * C;
  for (std::size_t i = std::size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += std::size_t(gridDim.x) * blockDim.x) {
    float acc = 0.0f;
    for (int b = 0; b < B; ++b) acc += to_f32(dout[std::size_t(b) * total + i]);
    dwpe[i] += acc;
  }
}

// grid.x = bucket, grid.y = channel block of 256.
template <typename T>
__global__ void encoder_backward_wte(float* dwte, const T* dout, const int* btok, const int* boff,
                                     const int* bpos, int C) {
  const int k = blockIdx.x;
  const int c = blockIdx.y * blockDim.x + threadIdx.x;
  if (c >= C) return;
  const int begin = boff[k], end = boff[k + 1];
  float acc = 0.0f;
  for (int j = begin; j < end; ++j) acc += to_f32(dout[std::size_t(bpos[j]) * C + c]);
  dwte[std::size_t(btok[k]) * C + c] += acc;
}

} // namespace

void build_encoder_buckets(const int* tokens, int N, EncoderBuckets& out) {
  out.positions.resize(std::size_t(N));
  std::iota(out.positions.begin(), out.positions.end(), 0);
  std::stable_sort(out.positions.begin(), out.positions.end(),
                   [&](int a, int b) { return tokens[a] < tokens[b]; });
  out.tokens.clear();
  out.offsets.clear();
  for (int i = 0; i < N; ++i) {
    const int tok = tokens[out.positions[std::size_t(i)]];
    if (i == 0 || tok != out.tokens.back()) {
      out.tokens.push_back(tok);
      out.offsets.push_back(i);
    }
  }
  out.offsets.push_back(N);
}

template <typename T>
void encoder_forward(T* out, const int* tokens, const T* wte, const T* wpe, int B, int Tn, int C,
                     cudaStream_t s) {
  if (B <= 0 || Tn <= 0 || C <= 0) throw std::invalid_argument("encoder_forward: bad shape");
  const std::size_t total = std::size_t(B) * Tn * C;
  constexpr int VN = kPack<T>;
  if (C % VN == 0 && aligned16(out) && aligned16(wte) && (!wpe || aligned16(wpe))) {
    const std::size_t np = total / VN;
    encoder_forward_vec<T><<<grid_for(np, 256), 256, 0, s>>>(out, tokens, wte, wpe, Tn, C, np);
  } else {
    encoder_forward_scalar<T>
        <<<grid_for(total, 256), 256, 0, s>>>(out, tokens, wte, wpe, Tn, C, total);
  }
  MYELIN_CUDA_CHECK_LAUNCH();
}

template <typename T>
void encoder_backward(float* dwte, float* dwpe, const T* dout, const int* bucket_tokens,
                      const int* bucket_offsets, const int* bucket_positions, int num_buckets,
                      int B, int Tn, int C, cudaStream_t s) {
  if (B <= 0 || Tn <= 0 || C <= 0) throw std::invalid_argument("encoder_backward: bad shape");
  if (dwpe) {
    encoder_backward_wpe<T>
        <<<grid_for(std::size_t(Tn) * C, 256), 256, 0, s>>>(dwpe, dout, B, Tn, C);
    MYELIN_CUDA_CHECK_LAUNCH();
  }
  if (dwte && num_buckets > 0) {
    if (num_buckets > 0x7fffffff) throw std::invalid_argument("encoder_backward: too many buckets");
    const dim3 grid(unsigned(num_buckets), unsigned((C + 255) / 256));
    encoder_backward_wte<T>
        <<<grid, 256, 0, s>>>(dwte, dout, bucket_tokens, bucket_offsets, bucket_positions, C);
    MYELIN_CUDA_CHECK_LAUNCH();
  }
}

#define MYELIN_INST(T)                                                                             \
  template void encoder_forward<T>(T*, const int*, const T*, const T*, int, int, int,              \
                                   cudaStream_t);                                                  \
  template void encoder_backward<T>(float*, float*, const T*, const int*, const int*, const int*,  \
                                    int, int, int, int, cudaStream_t);
MYELIN_INST(float)
MYELIN_INST(__nv_bfloat16)
#undef MYELIN_INST

} // namespace myelin::cuda
