// Residual add and small elementwise helpers.
//   residual_forward : out = a + b              bytes 3n*sizeof(T), FLOPs n
//   residual_backward: da += dout; db += dout   bytes 5n*sizeof(T), FLOPs 2n
//   convert          : dst = (Dst) src          bytes n*(sizeof(Dst)+sizeof(Src))
//   fill_uniform     : hashed uniform values       bytes n*sizeof(T)
//   launch: grid-stride, 256 threads, 16-byte packs (scalar tail) when aligned.
#include <type_traits>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops_cuda.h"

namespace myelin::cuda {

namespace {

template <typename T> struct ResFwd {
  T* out;
  const T* a;
  const T* b;
  template <int W> __device__ void apply(std::size_t i) const {
    const Vec<T, W> x = load_vec<W>(a + i);
    const Vec<T, W> y = load_vec<W>(b + i);
    Vec<T, W> o;
#pragma unroll
    for (int k = 0; k < W; ++k) o.v[k] = from_f32<T>(to_f32(x.v[k]) + to_f32(y.v[k]));
    store_vec(out + i, o);
  }
};

template <typename T> struct AccumulateInto {
  T* dst;
  const T* src;
  template <int W> __device__ void apply(std::size_t i) const {
    const Vec<T, W> g = load_vec<W>(src + i);
    Vec<T, W> d = load_vec<W>(dst + i);
#pragma unroll
    for (int k = 0; k < W; ++k) d.v[k] = from_f32<T>(to_f32(d.v[k]) + to_f32(g.v[k]));
    store_vec(dst + i, d);
  }
};

// Element type of the pack loop is the wider of the two so both sides are
// aligned: packs of 16 / max(sizeof) elements are handled as scalar loops.
template <typename Dst, typename Src> struct Convert {
  Dst* dst;
  const Src* src;
  template <int W> __device__ void apply(std::size_t i) const {
#pragma unroll
    for (int k = 0; k < W; ++k) dst[i + k] = from_f32<Dst>(to_f32(src[i + k]));
  }
};

template <typename T> struct FillUniform {
  T* x;
  std::uint32_t seed;
  float lo, scale;
  template <int W> __device__ void apply(std::size_t i) const {
#pragma unroll
    for (int k = 0; k < W; ++k) {
      std::uint64_t z = (std::uint64_t(seed) << 32) ^ (i + k);
      z = (z ^ (z >> 33)) * 0xff51afd7ed558ccdull;
      z = (z ^ (z >> 33)) * 0xc4ceb9fe1a85ec53ull;
      z ^= z >> 33;
      const float u = float(z >> 40) * (1.0f / 16777216.0f); // [0, 1)
      float v = lo + scale * u;
      if (v == 0.0f) v = lo + 0.5f * scale + 1e-3f;
      x[i + k] = from_f32<T>(v);
    }
  }
};

} // namespace

template <typename T>
void fill_uniform(T* x, std::size_t n, std::uint32_t seed, float lo, float hi, cudaStream_t s) {
  launch_elementwise<T>(n, false, FillUniform<T>{x, seed, lo, hi - lo}, s);
}

template <typename T>
void residual_forward(T* out, const T* a, const T* b, std::size_t n, cudaStream_t s) {
  launch_elementwise<T>(n, aligned16(out) && aligned16(a) && aligned16(b), ResFwd<T>{out, a, b}, s);
}

template <typename T>
void residual_backward(T* da, T* db, const T* dout, std::size_t n, cudaStream_t s) {
  if (da)
    launch_elementwise<T>(n, aligned16(da) && aligned16(dout), AccumulateInto<T>{da, dout}, s);
  if (db)
    launch_elementwise<T>(n, aligned16(db) && aligned16(dout), AccumulateInto<T>{db, dout}, s);
}

template <typename Dst, typename Src>
void convert(Dst* dst, const Src* src, std::size_t n, cudaStream_t s) {
  if (std::is_same<Dst, Src>::value) {
    if (n)
      MYELIN_CUDA_CHECK(cudaMemcpyAsync(dst, src, n * sizeof(Dst), cudaMemcpyDeviceToDevice, s));
    return;
  }
  // Packs sized by the wider type (float): 4 elements, plain loads.
  launch_elementwise<float>(n, false, Convert<Dst, Src>{dst, src}, s);
}

#define MYELIN_INST(T)                                                                             \
  template void residual_forward<T>(T*, const T*, const T*, std::size_t, cudaStream_t);            \
  template void residual_backward<T>(T*, T*, const T*, std::size_t, cudaStream_t);                 \
  template void fill_uniform<T>(T*, std::size_t, std::uint32_t, float, float, cudaStream_t);
MYELIN_INST(float)
MYELIN_INST(bf16)
#undef MYELIN_INST
template void convert<float, float>(float*, const float*, std::size_t, cudaStream_t);
template void convert<bf16, float>(bf16*, const float*, std::size_t, cudaStream_t);
template void convert<float, bf16>(float*, const bf16*, std::size_t, cudaStream_t);
template void convert<bf16, bf16>(bf16*, const bf16*, std::size_t, cudaStream_t);

} // namespace myelin::cuda
