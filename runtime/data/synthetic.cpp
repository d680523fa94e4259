#include "runtime/data/synthetic.h"

#include <algorithm>
#include <stdexcept>

#include "runtime/util/rng.h"

namespace myelin {

std::string synthetic_addition(std::uint64_t examples, int digits, std::uint64_t seed) {
  if (digits < 1 || digits > 9) throw std::invalid_argument("--digits must be in 1..9");
  std::uint64_t limit = 1;
  for (int i = 0; i < digits; ++i) limit *= 10;
  Rng64 rng(seed);
  std::string out;
  out.reserve(examples * (3 * digits + 4));
  for (std::uint64_t e = 0; e < examples; ++e) {
    const std::uint64_t a = rng.below(limit), b = rng.below(limit);
    std::string c = std::to_string(a + b);
    std::reverse(c.begin(), c.end());
    out += std::to_string(a) + "+" + std::to_string(b) + "=" + c + "\n";
  }
  return out;
}

} // namespace myelin
