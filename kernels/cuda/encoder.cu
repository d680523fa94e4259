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
//   buckets : the token grouping for the backward, on the device
//             (build_encoder_buckets_device): keys token << 32 | position, unique,
//             bitonic-sorted over P = next power of two >= N (log2(P) (log2(P)+1) / 2
//             launches of P threads, grid-stride, 256 per block; 16 B per compare-
//             exchange, no FLOPs), then one block of 1024 threads scans the sorted
//             keys in chunks of 1024 (bucket starts, Hillis-Steele scan of the start
//             flags for their numbers): bytes 8N read + 12N written. Deterministic:
//             the keys are unique, so their sorted order is, and no atomics.
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
  if (begin == end) return; // past the last bucket of a device-built grouping
  float acc = 0.0f;
  for (int j = begin; j < end; ++j) acc += to_f32(dout[std::size_t(bpos[j]) * C + c]);
  dwte[std::size_t(btok[k]) * C + c] += acc;
}

constexpr unsigned long long kPadKey = ~0ull; // sorts after every real key

__global__ void bucket_keys_kernel(unsigned long long* keys, const int* tokens, int n, int p) {
  for (int i = int(blockIdx.x * blockDim.x + threadIdx.x); i < p; i += int(gridDim.x * blockDim.x))
    keys[i] = i < n ? (static_cast<unsigned long long>(unsigned(tokens[i])) << 32) | unsigned(i)
                    : kPadKey;
}

// One compare-exchange step (k, j) of the bitonic sort, ascending overall.
__global__ void bitonic_step_kernel(unsigned long long* keys, int p, int j, int k) {
  for (int i = int(blockIdx.x * blockDim.x + threadIdx.x); i < p;
       i += int(gridDim.x * blockDim.x)) {
    const int l = i ^ j;
    if (l <= i) continue;
    const unsigned long long a = keys[i], b = keys[l];
    const bool ascending = (i & k) == 0;
    if ((a > b) == ascending && a != b) {
      keys[i] = b;
      keys[l] = a;
    }
  }
}

constexpr int kScanThreads = 1024;

// One block: bucket starts of the sorted keys, numbered by an inclusive scan of
// the start flags, chunk by chunk with a running carry.
__global__ void __launch_bounds__(kScanThreads)
    bucket_scan_kernel(int* btok, int* boff, int* bpos, const unsigned long long* keys, int n) {
  __shared__ int sh[kScanThreads];
  __shared__ int carry;
  const int t = int(threadIdx.x);
  if (t == 0) carry = 0;
  __syncthreads();
  for (int base = 0; base < n; base += kScanThreads) {
    const int i = base + t;
    int flag = 0, tok = 0;
    if (i < n) {
      const unsigned long long key = keys[i];
      tok = int(key >> 32);
      bpos[i] = int(key & 0xffffffffull);
      flag = (i == 0 || int(keys[i - 1] >> 32) != tok) ? 1 : 0;
    }
    sh[t] = flag;
    __syncthreads();
    for (int o = 1; o < kScanThreads; o <<= 1) {
      const int v = t >= o ? sh[t - o] : 0;
      __syncthreads();
      sh[t] += v;
      __syncthreads();
    }
    if (flag) {
      const int b = carry + sh[t] - 1;
      btok[b] = tok;
      boff[b] = i;
    }
    __syncthreads(); // every thread has read carry
    if (t == kScanThreads - 1) carry += sh[t];
    __syncthreads();
  }
  for (int b = carry + t; b <= n; b += kScanThreads) boff[b] = n;
}

int pow2_at_least(int n) {
  int p = 1;
  while (p < n) p <<= 1;
  return p;
}

} // namespace

std::size_t encoder_buckets_scratch(int N) {
  if (N <= 0 || N > (1 << 30)) throw std::invalid_argument("encoder_buckets_scratch: bad N");
  return std::size_t(pow2_at_least(N));
}

void build_encoder_buckets_device(int* bucket_tokens, int* bucket_offsets, int* bucket_positions,
                                  const int* tokens, int N, unsigned long long* scratch,
                                  cudaStream_t s) {
  const int p = int(encoder_buckets_scratch(N));
  const unsigned grid = grid_for(std::size_t(p), 256);
  bucket_keys_kernel<<<grid, 256, 0, s>>>(scratch, tokens, N, p);
  MYELIN_CUDA_CHECK_LAUNCH();
  for (int k = 2; k <= p; k <<= 1)
    for (int j = k >> 1; j > 0; j >>= 1) {
      bitonic_step_kernel<<<grid, 256, 0, s>>>(scratch, p, j, k);
      MYELIN_CUDA_CHECK_LAUNCH();
    }
  bucket_scan_kernel<<<1, kScanThreads, 0, s>>>(bucket_tokens, bucket_offsets, bucket_positions,
                                                scratch, N);
  MYELIN_CUDA_CHECK_LAUNCH();
}

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
