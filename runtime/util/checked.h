// Overflow-checked arithmetic on element and byte counts that come from input
// (model shapes, batch shapes): a product that does not fit in std::size_t is
// reported as std::nullopt instead of wrapping.
#pragma once

#include <cstddef>
#include <initializer_list>
#include <optional>

namespace myelin {

// The product of the factors, or nullopt when it overflows std::size_t.
inline std::optional<std::size_t> checked_mul(std::initializer_list<std::size_t> factors) {
  std::size_t p = 1;
  for (std::size_t f : factors)
    if (__builtin_mul_overflow(p, f, &p)) return std::nullopt;
  return p;
}

// The sum of the terms, or nullopt when it overflows std::size_t.
inline std::optional<std::size_t>
checked_add(std::initializer_list<std::optional<std::size_t>> terms) {
  std::size_t s = 0;
  for (const auto& t : terms)
    if (!t || __builtin_add_overflow(s, *t, &s)) return std::nullopt;
  return s;
}

} // namespace myelin
