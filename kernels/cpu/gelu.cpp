// GeLU, tanh approximation (GPT-2):
//   forward : out = 0.5*x*(1 + tanh(u)),  u = sqrt(2/pi)*(x + 0.044715*x^3)
//   backward: dinp += dout * (0.5*(1 + tanh(u))
//                             + 0.5*x*(1 - tanh(u)^2)*sqrt(2/pi)*(1 + 3*0.044715*x^2))
// Traffic (elements): forward reads n, writes n; backward reads 3n, writes n.
// About 20 FLOPs, one exp and one division per element. Evaluated through the
// identities 0.5*(1 + tanh(u)) = sig = 1/(1 + e), e = exp(-2u), and
// 1 - tanh(u)^2 = 4*sig*(1 - sig) = 4*e*sig^2, so nothing cancels:
//   out = x*sig,  dinp += dout * (sig + 2*x*e*sig^2*sqrt(2/pi)*(1 + 3*0.044715*x^2)).
// exp is a vectorisable polynomial (~1 ulp in float), so the loops vectorise
// without -ffast-math.
// Parallel layout: the n elements are split statically across OpenMP threads;
// the inner loop is vectorised (#pragma omp parallel for simd).
#include <bit>
#include <cstddef>
#include <cstdint>

#include "kernels/ops.h"

namespace myelin::cpu {

namespace {

// exp(x) without libm, so that `omp simd` loops vectorise. Cody-Waite range
// reduction x = k*ln2 + r, |r| <= ln2/2, then a Taylor polynomial (degree 7 for
// float, 13 for double: truncation error below half an ulp), times 2^k built
// from the exponent bits. Inputs are clamped to the finite range.
template <typename Real>
inline Real vexp(Real x) {
  if constexpr (sizeof(Real) == 4) {
    x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    const float magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
    const float k = (x * 1.44269504088896341f + magic) - magic;
    const float r = x - k * 0.693145751953125f - k * 1.428606765330187045e-06f;
    float p = 1.0f / 5040 + r * (1.0f / 40320);
    p = 1.0f / 720 + r * p;
    p = 1.0f / 120 + r * p;
    p = 1.0f / 24 + r * p;
    p = 1.0f / 6 + r * p;
    p = 0.5f + r * p;
    p = 1.0f + r * p;
    p = 1.0f + r * p;
    const auto ki = static_cast<std::int32_t>(k);
    return p * std::bit_cast<float>(static_cast<std::int32_t>((ki + 127) << 23));
  } else {
    x = x < -708.0 ? -708.0 : (x > 709.0 ? 709.0 : x);
    const double magic = 6755399441055744.0;  // 1.5 * 2^52
    const double k = (x * 1.4426950408889634074 + magic) - magic;
    const double r = x - k * 6.93147180369123816490e-01 - k * 1.90821492927058770002e-10;
    double p = 1.0 / 6227020800.0;
    p = 1.0 / 479001600.0 + r * p;
    p = 1.0 / 39916800.0 + r * p;
    p = 1.0 / 3628800.0 + r * p;
    p = 1.0 / 362880.0 + r * p;
    p = 1.0 / 40320.0 + r * p;
    p = 1.0 / 5040.0 + r * p;
    p = 1.0 / 720.0 + r * p;
    p = 1.0 / 120.0 + r * p;
    p = 1.0 / 24.0 + r * p;
    p = 1.0 / 6.0 + r * p;
    p = 0.5 + r * p;
    p = 1.0 + r * p;
    p = 1.0 + r * p;
    const auto ki = static_cast<std::int64_t>(k);
    return p * std::bit_cast<double>(static_cast<std::int64_t>((ki + 1023) << 52));
  }
}

constexpr double kSqrt2OverPi = 0.79788456080286535588;  // sqrt(2/pi)
constexpr double kCubic = 0.044715;

} // namespace

template <typename Real>
void gelu_forward(Real* out, const Real* inp, std::size_t n) {
  const Real s = static_cast<Real>(kSqrt2OverPi);
  const Real c = static_cast<Real>(kCubic);
#pragma omp parallel for simd schedule(static) if (n > 32768)
  for (std::size_t i = 0; i < n; ++i) {
    const Real x = inp[i];
    const Real u = s * (x + c * x * x * x);
    out[i] = x / (Real(1) + vexp(Real(-2) * u));
  }
}

template <typename Real>
void gelu_backward(Real* dinp, const Real* inp, const Real* dout, std::size_t n) {
  const Real s = static_cast<Real>(kSqrt2OverPi);
  const Real c = static_cast<Real>(kCubic);
#pragma omp parallel for simd schedule(static) if (n > 32768)
  for (std::size_t i = 0; i < n; ++i) {
    const Real x = inp[i];
    const Real u = s * (x + c * x * x * x);
    const Real e = vexp(Real(-2) * u);
    const Real sig = Real(1) / (Real(1) + e);
    const Real grad = sig + Real(2) * x * e * sig * sig * s * (Real(1) + Real(3) * c * x * x);
    dinp[i] += grad * dout[i];
  }
}

template void gelu_forward<float>(float*, const float*, std::size_t);
template void gelu_forward<double>(double*, const double*, std::size_t);
template void gelu_backward<float>(float*, const float*, const float*, std::size_t);
template void gelu_backward<double>(double*, const double*, const double*, std::size_t);

} // namespace myelin::cpu
