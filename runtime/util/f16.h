// IEEE 754 half precision (binary16) <-> float conversion on the host.
// half_to_float is exact for every half value (normals, subnormals, zeros,
// infinities; a NaN stays a NaN with its payload shifted into place).
// float_to_half rounds to nearest even, overflows to infinity, keeps NaN a NaN.
#pragma once

#include <bit>
#include <cstdint>

namespace myelin {

inline float half_to_float(std::uint16_t h) {
  const std::uint32_t sign = std::uint32_t(h & 0x8000u) << 16;
  std::uint32_t exp = (h >> 10) & 0x1fu;
  std::uint32_t man = h & 0x3ffu;
  if (exp == 0x1f) return std::bit_cast<float>(sign | 0x7f800000u | (man << 13));
  if (exp == 0) {
    if (man == 0) return std::bit_cast<float>(sign);
    // Subnormal: shift the mantissa up until its leading 1 is the implicit bit.
    exp = 1;
    while ((man & 0x400u) == 0) {
      man <<= 1;
      --exp;
    }
    man &= 0x3ffu;
    return std::bit_cast<float>(sign | ((exp + 127 - 15) << 23) | (man << 13));
  }
  return std::bit_cast<float>(sign | ((exp + 127 - 15) << 23) | (man << 13));
}

inline std::uint16_t float_to_half(float f) {
  const std::uint32_t u = std::bit_cast<std::uint32_t>(f);
  const std::uint16_t sign = static_cast<std::uint16_t>((u >> 16) & 0x8000u);
  const std::uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return static_cast<std::uint16_t>(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
  if (a >= 0x47800000u) { // >= 65536: infinity (a finite value rounds below it only under 65520)
    return static_cast<std::uint16_t>(sign | 0x7c00u);
  }
  const int e = int(a >> 23) - 127;
  if (e < -25) return sign; // below half the smallest subnormal: zero
  std::uint32_t man = (a & 0x7fffffu) | 0x800000u;
  // Bits to drop: 13 for normals, more for subnormals (e < -14).
  const int shift = e < -14 ? 13 + (-14 - e) : 13;
  const std::uint32_t rest = man & ((1u << shift) - 1);
  const std::uint32_t half_way = 1u << (shift - 1);
  man >>= shift;
  if (rest > half_way || (rest == half_way && (man & 1u))) ++man;
  if (e < -14)
    return static_cast<std::uint16_t>(sign | man); // a carry makes it the smallest normal
  // Normal: exponent field plus mantissa; a carry out of the mantissa bumps the exponent
  // (and 65520 and above become infinity).
  const std::uint32_t bits = (std::uint32_t(e + 15) << 10) + (man - 0x400u);
  return static_cast<std::uint16_t>(sign | (bits >= 0x7c00u ? 0x7c00u : bits));
}

} // namespace myelin
