#include "runtime/data/synthetic.h"

#include <algorithm>
#include <stdexcept>

#include "runtime/util/rng.h"

namespace myelin {
namespace {
std::string pad(std::uint64_t v, int width) {
  std::string s = std::to_string(v);
  return std::string(std::size_t(std::max(0, width - int(s.size()))), '0') + s;
}
} // namespace

std::string synthetic_addition(std::uint64_t examples, int digits, std::uint64_t seed) {
  if (digits < 1 || digits > 9) throw std::invalid_argument("--digits must be in 1..9");
  std::uint64_t limit = 1;
  for (int i = 0; i < digits; ++i) limit *= 10;
  Rng64 rng(seed);
  std::string out;
  out.reserve(examples * (3 * digits + 4));
  for (std::uint64_t e = 0; e < examples; ++e) {
    const std::uint64_t a = rng.below(limit), b = rng.below(limit);
    std::string c = pad(a + b, digits + 1);
    std::reverse(c.begin(), c.end());
    out += pad(a, digits) + "+" + pad(b, digits) + "=" + c + "\n";
  }
  return out;
}

} // namespace myelin
