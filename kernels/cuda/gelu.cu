// GeLU, tanh approximation (GPT-2):
//   forward : out = 0.5*x*(1 + tanh(u)), u = sqrt(2/pi)*(x + 0.044715 x^3)
//   backward: dinp = dout * (0.5*(1 + tanh(u)) + 0.5*x*(1 - tanh(u)^2)*sqrt(2/pi)*(1 + 3*0.044715
//   x^2)) bytes: forward 2n*sizeof(T), backward 3n*sizeof(T); FLOPs ~ 10n / 18n (+1 tanh). launch:
//   grid-stride, 256 threads, one 16-byte pack per thread (scalar tail). In place is allowed (out
//   == inp; dinp == dout).
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops_cuda.h"

namespace myelin::cuda {

namespace {

constexpr float kS = 0.7978845608028654f; // sqrt(2/pi)
constexpr float kK = 0.044715f;

template <typename T> struct GeluFwd {
  T* out;
  const T* inp;
  template <int W> __device__ void apply(std::size_t i) const {
    const Vec<T, W> x = load_vec<W>(inp + i);
    Vec<T, W> y;
#pragma unroll
    for (int k = 0; k < W; ++k) {
      const float v = to_f32(x.v[k]);
      const float t = tanhf(kS * (v + kK * v * v * v));
      y.v[k] = from_f32<T>(0.5f * v * (1.0f + t));
    }
    store_vec(out + i, y);
  }
};

template <typename T> struct GeluBwd {
  T* dinp;
  const T* inp;
  const T* dout;
  template <int W> __device__ void apply(std::size_t i) const {
    const Vec<T, W> x = load_vec<W>(inp + i);
    const Vec<T, W> g = load_vec<W>(dout + i);
    Vec<T, W> y;
#pragma unroll
    for (int k = 0; k < W; ++k) {
      const float v = to_f32(x.v[k]);
      const float t = tanhf(kS * (v + kK * v * v * v));
      const float local =
          0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * kS * (1.0f + 3.0f * kK * v * v);
      y.v[k] = from_f32<T>(local * to_f32(g.v[k]));
    }
    store_vec(dinp + i, y);
  }
};

} // namespace

template <typename T> void gelu_forward(T* out, const T* inp, std::size_t n, cudaStream_t s) {
  launch_elementwise<T>(n, aligned16(out) && aligned16(inp), GeluFwd<T>{out, inp}, s);
}

template <typename T>
void gelu_backward(T* dinp, const T* inp, const T* dout, std::size_t n, cudaStream_t s) {
  launch_elementwise<T>(n, aligned16(dinp) && aligned16(inp) && aligned16(dout),
                        GeluBwd<T>{dinp, inp, dout}, s);
}

template void gelu_forward<float>(float*, const float*, std::size_t, cudaStream_t);
template void gelu_forward<bf16>(bf16*, const bf16*, std::size_t, cudaStream_t);
template void gelu_backward<float>(float*, const float*, const float*, std::size_t, cudaStream_t);
template void gelu_backward<bf16>(bf16*, const bf16*, const bf16*, std::size_t, cudaStream_t);

} // namespace myelin::cuda
