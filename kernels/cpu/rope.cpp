// Rotary position embedding (RoPE), Hugging Face rotate-half convention, with
// optional Llama 3 frequency scaling (the formulas are in kernels/ops.h).
//   table   : cos/sin(pos * inv_freq[i]) for T positions from pos0, i < D/2, in double,
//             rounded once to Real. T*D/2 cos + sin pairs; ~T*D/2*(2 trig).
//   forward : per pair (x0 = x[i], x1 = x[i+D/2]) at position t:
//             out[i] = x0 c - x1 s, out[i+D/2] = x1 c + x0 s;
//             3 FLOPs per element; reads B*T*H*D elements + the table
//             (T*D elements), writes B*T*H*D.
//   backward: the transpose (rotation by -angle):
//             dinp[i] += d0 c + d1 s, dinp[i+D/2] += d1 c - d0 s;
//             4 FLOPs per element; reads 2*B*T*H*D (+ table), writes B*T*H*D
//             (in place: reads and writes B*T*H*D).
// The angles are formed in double from the exact position, so the table stays
// accurate at large positions (transformers forms pos * inv_freq in fp32; its
// table differs from this one by that rounding, growing with the position).
// Parallel layout: the B*T positions are split statically across OpenMP
// threads; the pair loop is vectorised. Each element is written by one thread.
#include <cmath>
#include <cstddef>
#include <numbers>
#include <vector>

#include "kernels/ops.h"

namespace myelin::cpu {

namespace {

// Positions whose total work is below this many elements run on the calling thread.
constexpr long kParallelElems = 32768;

// Applies the rotation (c, s) or its transpose (c, -s) to every head of every
// position: out = R x (accumulate = false) or out += R x (accumulate = true).
// Reading both channels of a pair before writing either makes out == inp safe.
template <typename Real, bool kAccumulate>
void rotate_heads(Real* out, const Real* inp, const Real* cos, const Real* sin, Real sign, int B,
                  int T, int H, int D, int ld) {
  const int half = D / 2;
  const long npos = static_cast<long>(B) * T;
#pragma omp parallel for schedule(static) if (npos * H * D > kParallelElems)
  for (long bt = 0; bt < npos; ++bt) {
    const std::size_t t = static_cast<std::size_t>(bt % T);
    const Real* c = cos + t * half;
    const Real* s = sin + t * half;
    for (int h = 0; h < H; ++h) {
      const std::size_t off = static_cast<std::size_t>(bt) * ld + static_cast<std::size_t>(h) * D;
      const Real* x = inp + off;
      Real* o = out + off;
#pragma omp simd
      for (int i = 0; i < half; ++i) {
        const Real x0 = x[i], x1 = x[i + half];
        const Real si = sign * s[i];
        const Real y0 = x0 * c[i] - x1 * si;
        const Real y1 = x1 * c[i] + x0 * si;
        if constexpr (kAccumulate) {
          o[i] += y0;
          o[i + half] += y1;
        } else {
          o[i] = y0;
          o[i + half] = y1;
        }
      }
    }
  }
}

} // namespace

void rope_inv_freq(double* inv_freq, int D, const RopeParams& p) {
  const int half = D / 2;
  const double low_wavelen = p.original_max_position / p.low_freq_factor;
  const double high_wavelen = p.original_max_position / p.high_freq_factor;
  for (int i = 0; i < half; ++i) {
    const double f = std::pow(p.theta, -2.0 * i / D);
    double scaled = f;
    if (p.llama3) {
      const double wavelen = 2.0 * std::numbers::pi / f;
      if (wavelen > low_wavelen) {
        scaled = f / p.factor;
      } else if (wavelen >= high_wavelen) {
        const double smooth = (p.original_max_position / wavelen - p.low_freq_factor) /
                              (p.high_freq_factor - p.low_freq_factor);
        scaled = (1.0 - smooth) * f / p.factor + smooth * f;
      }
    }
    inv_freq[i] = scaled;
  }
}

template <typename Real>
void rope_table(Real* cos, Real* sin, int pos0, int T, int D, const RopeParams& p) {
  const int half = D / 2;
  std::vector<double> inv_freq(static_cast<std::size_t>(half));
  rope_inv_freq(inv_freq.data(), D, p);
  for (int t = 0; t < T; ++t)
    for (int i = 0; i < half; ++i) {
      const double angle =
          static_cast<double>(pos0 + static_cast<long>(t)) * inv_freq[static_cast<std::size_t>(i)];
      const std::size_t k = static_cast<std::size_t>(t) * half + i;
      cos[k] = static_cast<Real>(std::cos(angle));
      sin[k] = static_cast<Real>(std::sin(angle));
    }
}

template <typename Real>
void rope_forward(Real* out, const Real* inp, const Real* cos, const Real* sin, int B, int T, int H,
                  int D, int ld) {
  rotate_heads<Real, false>(out, inp, cos, sin, Real(1), B, T, H, D, ld);
}

template <typename Real>
void rope_backward(Real* dinp, const Real* dout, const Real* cos, const Real* sin, int B, int T,
                   int H, int D, int ld) {
  if (dinp == dout) {
    rotate_heads<Real, false>(dinp, dout, cos, sin, Real(-1), B, T, H, D, ld);
  } else {
    rotate_heads<Real, true>(dinp, dout, cos, sin, Real(-1), B, T, H, D, ld);
  }
}

template void rope_table<float>(float*, float*, int, int, int, const RopeParams&);
template void rope_table<double>(double*, double*, int, int, int, const RopeParams&);
template void rope_forward<float>(float*, const float*, const float*, const float*, int, int, int,
                                  int, int);
template void rope_forward<double>(double*, const double*, const double*, const double*, int, int,
                                   int, int, int);
template void rope_backward<float>(float*, const float*, const float*, const float*, int, int, int,
                                   int, int);
template void rope_backward<double>(double*, const double*, const double*, const double*, int, int,
                                    int, int, int);

} // namespace myelin::cpu
