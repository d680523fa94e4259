#include "runtime/data/synthetic.h"

#include <algorithm>
#include <stdexcept>
#include <unordered_set>

#include "runtime/data/loader.h"
#include "runtime/util/rng.h"

namespace myelin {
namespace {
// The most problems held_out_addition returns; also the most pairs it lists.
constexpr std::uint64_t kMaxHeldOutDraw = 1'000'000;
std::string pad(std::uint64_t v, int width) {
  std::string s = std::to_string(v);
  return std::string(std::size_t(std::max(0, width - int(s.size()))), '0') + s;
}
// 10^digits; callers check digits (the command line names the flag).
std::uint64_t operand_limit(int digits) {
  if (digits < 1 || digits > 9) throw std::out_of_range("addition digits must be in 1..9");
  std::uint64_t limit = 1;
  for (int i = 0; i < digits; ++i) limit *= 10;
  return limit;
}
// splitmix64's finaliser: a well-mixed hash of one integer.
std::uint64_t mix(std::uint64_t x) {
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}
AdditionProblem draw(Rng64& rng, std::uint64_t limit) {
  return {rng.below(limit), rng.below(limit)};
}
} // namespace

std::string addition_prompt(const AdditionProblem& p, int digits) {
  return pad(p.a, digits) + "+" + pad(p.b, digits) + "=";
}

std::string addition_answer(const AdditionProblem& p, int digits) {
  std::string c = pad(p.a + p.b, digits + 1);
  std::reverse(c.begin(), c.end());
  return c;
}

bool addition_held_out(const AdditionProblem& p, int digits) {
  // a, b < 10^9: the pair fits one 64-bit integer without collisions.
  const std::uint64_t limit = operand_limit(digits);
  return mix(p.a * limit + p.b) % 20 == 0;
}

std::string synthetic_addition(std::uint64_t examples, int digits, std::uint64_t seed) {
  const std::uint64_t limit = operand_limit(digits);
  Rng64 rng(seed);
  std::string out;
  out.reserve(examples * (3 * std::size_t(digits) + 4));
  for (std::uint64_t e = 0; e < examples; ++e) {
    AdditionProblem p = draw(rng, limit);
    while (addition_held_out(p, digits)) p = draw(rng, limit);
    out += addition_prompt(p, digits) + addition_answer(p, digits) + "\n";
  }
  return out;
}

std::vector<AdditionProblem> held_out_addition(std::uint64_t count, int digits,
                                               std::uint64_t seed) {
  const std::uint64_t limit = operand_limit(digits);
  if (count > kMaxHeldOutDraw) throw std::out_of_range("held_out_addition: count above 10^6");
  std::vector<AdditionProblem> out;
  if (limit * limit <= kMaxHeldOutDraw) {
    // Few pairs: list the whole held-out set, then take a seeded random order.
    std::vector<AdditionProblem> all;
    for (std::uint64_t a = 0; a < limit; ++a)
      for (std::uint64_t b = 0; b < limit; ++b)
        if (addition_held_out({a, b}, digits)) all.push_back({a, b});
    for (const std::uint64_t i : permutation(all.size(), seed)) {
      if (out.size() == count) break;
      out.push_back(all[i]);
    }
    return out;
  }
  // At least 10^8 pairs, about 5 x 10^6 held out: draw until `count` distinct.
  Rng64 rng(seed);
  std::unordered_set<std::uint64_t> seen;
  while (out.size() < count) {
    const AdditionProblem p = draw(rng, limit);
    if (addition_held_out(p, digits) && seen.insert(p.a * limit + p.b).second) out.push_back(p);
  }
  return out;
}

} // namespace myelin
