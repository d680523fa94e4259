// Small deterministic random number generators whose whole state is one
// integer, so a training-state file can save and restore them exactly.
#pragma once

#include <cmath>
#include <cstdint>

namespace myelin {

// xorshift64* (Vigna): fast, 64-bit state, good enough for init and sampling.
class Rng64 {
 public:
  explicit Rng64(std::uint64_t seed = 1)
      : s_(seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull) {
    if (s_ == 0) s_ = 0x2545F4914F6CDD1Dull;
  }
  std::uint64_t next() {
    s_ ^= s_ >> 12;
    s_ ^= s_ << 25;
    s_ ^= s_ >> 27;
    return s_ * 0x2545F4914F6CDD1Dull;
  }
  // Uniform in [0, 1) with 24 bits of mantissa.
  float uniform() { return float(next() >> 40) / float(1 << 24); }
  double uniform_double() { return double(next() >> 11) * (1.0 / 9007199254740992.0); }
  // Standard normal via Box-Muller (one draw per call; the pair's twin is dropped
  // so the state stays a single integer).
  double normal() {
    double u1 = uniform_double(), u2 = uniform_double();
    if (u1 < 1e-300) u1 = 1e-300;
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }
  std::uint64_t below(std::uint64_t n) { return next() % n; }
  std::uint64_t state() const { return s_; }
  void set_state(std::uint64_t s) { s_ = s; }

 private:
  std::uint64_t s_;
};

} // namespace myelin
