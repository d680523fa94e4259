// Vectorisable exp for the CPU kernels (softmax, GeLU, classifier).
#pragma once

#include <bit>
#include <cstdint>

namespace myelin::cpu {

// exp(x) without libm, so that `omp simd` loops vectorise. Cody-Waite range
// reduction x = k*ln2 + r, |r| <= ln2/2, then a Taylor polynomial (degree 7 for
// float, 13 for double: truncation error below half an ulp), times 2^k built
// from the exponent bits. Inputs are clamped to the finite range.
template <typename Real> inline Real vexp(Real x) {
  if constexpr (sizeof(Real) == 4) {
    x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    const float magic = 12582912.0f; // 1.5 * 2^23: adding it rounds to an integer
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
    const double magic = 6755399441055744.0; // 1.5 * 2^52
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

} // namespace myelin::cpu
