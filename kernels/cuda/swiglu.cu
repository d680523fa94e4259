// SwiGLU (Llama's MLP activation) on a fused (gate | up) buffer [N, 2I]:
//   forward : out[n,j] = silu(g) * u, g = gate_up[n,j], u = gate_up[n,I+j],
//             silu(g) = g * sig(g), sig(g) = 1/(1 + exp(-g))
//   backward: dgate_up[n,j]   = dout * u * sig * (1 + g*(1 - sig))   (overwritten)
//             dgate_up[n,I+j] = dout * silu(g)
// The same formulas as the CPU reference (kernels/cpu/swiglu.cpp).
// bytes: forward 3*N*I*sizeof(T), backward 5*N*I*sizeof(T); FLOPs ~ 6 / 12 per
// output (+1 exp, 1 division). launch: grid-stride over the N*I outputs, 256
// threads, one 16-byte pack per thread when I is a multiple of the pack and
// the pointers are aligned (a pack then never straddles two rows), else scalar.
#include <stdexcept>
#include <string>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops_cuda.h"

namespace myelin::cuda {

namespace {

__device__ __forceinline__ float sigmoid(float g) { return 1.0f / (1.0f + expf(-g)); }

template <typename T> struct SwigluFwd {
  T* out;
  const T* gate_up;
  int I;
  template <int W> __device__ void apply(std::size_t e) const {
    const std::size_t n = e / I, j = e % I;
    const T* row = gate_up + n * 2 * I;
    const Vec<T, W> g = load_vec<W>(row + j);
    const Vec<T, W> u = load_vec<W>(row + I + j);
    Vec<T, W> y;
#pragma unroll
    for (int k = 0; k < W; ++k) {
      const float gv = to_f32(g.v[k]);
      y.v[k] = from_f32<T>(gv * sigmoid(gv) * to_f32(u.v[k]));
    }
    store_vec(out + e, y);
  }
};

template <typename T> struct SwigluBwd {
  T* dgate_up;
  const T* dout;
  const T* gate_up;
  int I;
  template <int W> __device__ void apply(std::size_t e) const {
    const std::size_t n = e / I, j = e % I;
    const std::size_t row = n * 2 * I;
    const Vec<T, W> g = load_vec<W>(gate_up + row + j);
    const Vec<T, W> u = load_vec<W>(gate_up + row + I + j);
    const Vec<T, W> d = load_vec<W>(dout + e);
    Vec<T, W> dg, du;
#pragma unroll
    for (int k = 0; k < W; ++k) {
      const float gv = to_f32(g.v[k]), dv = to_f32(d.v[k]);
      const float sig = sigmoid(gv);
      dg.v[k] = from_f32<T>(dv * to_f32(u.v[k]) * sig * (1.0f + gv * (1.0f - sig)));
      du.v[k] = from_f32<T>(dv * (gv * sig));
    }
    store_vec(dgate_up + row + j, dg);
    store_vec(dgate_up + row + I + j, du);
  }
};

void check(const char* what, int N, int I) {
  if (N <= 0 || I <= 0) throw std::invalid_argument(std::string(what) + ": bad shape");
}

} // namespace

template <typename T> void swiglu_forward(T* out, const T* gate_up, int N, int I, cudaStream_t s) {
  check("swiglu_forward", N, I);
  const bool vec = I % kPack<T> == 0 && aligned16(out) && aligned16(gate_up);
  launch_elementwise<T>(std::size_t(N) * I, vec, SwigluFwd<T>{out, gate_up, I}, s);
}

template <typename T>
void swiglu_backward(T* dgate_up, const T* dout, const T* gate_up, int N, int I, cudaStream_t s) {
  check("swiglu_backward", N, I);
  const bool vec =
      I % kPack<T> == 0 && aligned16(dgate_up) && aligned16(dout) && aligned16(gate_up);
  launch_elementwise<T>(std::size_t(N) * I, vec, SwigluBwd<T>{dgate_up, dout, gate_up, I}, s);
}

template void swiglu_forward<float>(float*, const float*, int, int, cudaStream_t);
template void swiglu_forward<bf16>(bf16*, const bf16*, int, int, cudaStream_t);
template void swiglu_backward<float>(float*, const float*, const float*, int, int, cudaStream_t);
template void swiglu_backward<bf16>(bf16*, const bf16*, const bf16*, int, int, cudaStream_t);

} // namespace myelin::cuda
