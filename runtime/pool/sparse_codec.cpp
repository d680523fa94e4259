#include "runtime/pool/sparse_codec.h"

#include <algorithm>
#include <bit>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "runtime/util/checked.h"
#include "runtime/util/error.h"

// Why error feedback is exact. For a kept element a (finite) the decoder
// returns d = sign(a) * m * 2^e with m = min(L, round_half_even(|a| / 2^e)).
// (1) d is a multiple of ulp(a): with the chunk's largest kept magnitude in
//     [2^(E-1), 2^E), 2^e >= 2^(E-20) (4 and 8 bits: 2^e >= max / L >
//     2^(E-8) as L < 2^7; 2 bits: the step nearest the mean kept magnitude,
//     raised to 2^(E-20)), while ulp of any |a| <= max is at most 2^(E-24);
//     the bottom clamp only moves 2^e up, and
//     the top clamp keeps it >= 2^121 > ulp(FLT_MAX) = 2^104.
// (2) |a - d| <= |a|: d = 0, or d has a's sign and m >= 1 means
//     |a| / 2^e > 1/2, so m <= round(|a| / 2^e) <= 2 |a| / 2^e, |d| <= 2|a|
//     (a clamped m = L gives |d| <= |a|).
// By (1) a - d is a multiple of ulp(a), by (2) no larger than |a|: it has at
// most 24 significant bits above ulp(a) >= 2^-149, so fp32 represents it and
// fl(a - d) == a - d (the Sterbenz argument, subnormals included). A dropped
// element decodes to 0 and leaves a itself. Hence decoded + residual == a for
// every element (as values: a == -0 gives +0 back). |a| / 2^e is computed as
// |a| * 2^-e, exact unless it underflows, where it is far below 1/2 anyway.

namespace myelin::pool::sparse {
namespace {
constexpr int kZeroExp = -128; // marker: the chunk's kept values are all zero
constexpr int kNanExp = 127;   // marker: the chunk held NaN or Inf
constexpr int kMinExp = -127;  // smallest step 2^-127 (a subnormal step)

std::uint32_t index_bits(std::uint32_t chunk) { return std::uint32_t(std::countr_zero(chunk)); }
std::uint32_t levels(std::uint32_t value_bits) { return (1u << (value_bits - 1)) - 1; }

// The largest exponent whose top level L * 2^e is a finite float (and not
// the NaN marker).
int max_exp(std::uint32_t L) {
  int e = kNanExp - 1;
  while (std::ldexp(double(L), e) > double(FLT_MAX)) --e;
  return e;
}

std::size_t record_bytes(const Layout& l, std::uint32_t k) {
  return 1 + (std::size_t(k) * (index_bits(l.chunk) + l.value_bits) + 7) / 8;
}

// LSB-first bit packing within one chunk's record.
struct BitWriter {
  unsigned char* p;
  std::uint64_t acc = 0;
  unsigned fill = 0;
  void put(std::uint32_t v, unsigned bits) {
    acc |= std::uint64_t(v) << fill;
    fill += bits;
    for (; fill >= 8; fill -= 8, acc >>= 8) *p++ = static_cast<unsigned char>(acc);
  }
  void flush() {
    if (fill) *p++ = static_cast<unsigned char>(acc);
    acc = 0, fill = 0;
  }
};
struct BitReader {
  const unsigned char* p;
  std::uint64_t acc = 0;
  unsigned fill = 0;
  std::uint32_t get(unsigned bits) {
    for (; fill < bits; fill += 8) acc |= std::uint64_t(*p++) << fill;
    const auto v = static_cast<std::uint32_t>(acc & ((std::uint64_t(1) << bits) - 1));
    acc >>= bits, fill -= bits;
    return v;
  }
  bool padding_is_zero() const { return acc == 0; }
};

// The chunk's step 2^e (mx, the largest kept magnitude, > 0 and finite;
// mean the mean of the nonzero kept magnitudes: a decoded chunk encodes to
// itself), clamped to [kMinExp, top]. With L > 1 the
// smallest e with L * 2^e >= mx: no kept value is clamped. With L = 1 (2-bit
// values: sign and one magnitude bit) the power of two nearest the mean,
// so that a typical kept value decodes to +-step instead of rounding to 0
// (what the levels cannot hold is carried by error feedback), but at least
// 2^(E-20) (exactness, above).
int step_exponent(float mx, double mean, std::uint32_t L, int top) {
  int E;
  std::frexp(mx, &E); // mx < 2^E
  int e = E - 8;      // L * 2^(E-8) < 2^(E-1) <= mx
  if (L == 1)
    e = std::max(E - 20, int(std::lround(std::log2(mean))));
  else
    while (std::ldexp(double(L), e) < double(mx)) ++e;
  return std::clamp(e, kMinExp, top);
}

[[noreturn]] void malformed(std::size_t chunk_no, const std::string& what) {
  throw InputError("sparse upload: chunk " + std::to_string(chunk_no) + ": " + what);
}
} // namespace

Layout layout(const CodecParams& p, std::size_t n) {
  Layout l;
  l.n = n, l.chunk = p.chunk, l.value_bits = p.value_bits;
  l.k = sparse_kept(p.density, p.chunk);
  l.k_last = sparse_kept(p.density, n % p.chunk);
  return l;
}

std::size_t payload_bytes(const Layout& l) {
  const std::size_t full = l.n / l.chunk;
  const auto total = checked_add({kSubHeaderBytes, checked_mul({full, record_bytes(l, l.k)}),
                                  l.n % l.chunk ? record_bytes(l, l.k_last) : std::size_t(0)});
  if (!total) throw std::overflow_error("sparse upload size overflows");
  return *total;
}

void encode(std::span<const float> x, const Layout& l, char* out) {
  const std::uint32_t L = levels(l.value_bits), ib = index_bits(l.chunk);
  const int top = max_exp(L);
  std::uint32_t head[2] = {l.k, l.k_last};
  std::memcpy(out, head, 8);
  const unsigned char vb[4] = {static_cast<unsigned char>(l.value_bits), 0, 0, 0};
  std::memcpy(out + 8, vb, 4);
  auto* rec = reinterpret_cast<unsigned char*>(out + kSubHeaderBytes);
  // Key: magnitude bits above, the complement of the index below, so the
  // largest keys are the largest magnitudes, lower index first on a tie
  // (for finite floats, magnitude order is the order of |bits|).
  std::vector<std::uint64_t> keys(std::min<std::size_t>(l.chunk, l.n));
  std::vector<std::uint32_t> idx;
  for (std::size_t lo = 0; lo < l.n; lo += l.chunk) {
    const std::size_t len = std::min<std::size_t>(l.chunk, l.n - lo);
    const std::uint32_t k = len == l.chunk ? l.k : l.k_last;
    const float* a = x.data() + lo;
    bool finite = true;
    for (std::size_t i = 0; i < len; ++i) finite = finite && std::isfinite(a[i]);
    idx.resize(k);
    int e = kZeroExp;
    float mx = 0;
    if (!finite) {
      e = kNanExp;
      for (std::uint32_t j = 0; j < k; ++j) idx[j] = j;
    } else {
      for (std::size_t i = 0; i < len; ++i) {
        std::uint32_t bits;
        std::memcpy(&bits, &a[i], 4);
        keys[i] = (std::uint64_t(bits & 0x7fffffffu) << 32) | (0xffffffffu - std::uint32_t(i));
      }
      std::nth_element(keys.begin(), keys.begin() + (k - 1), keys.begin() + len,
                       std::greater<std::uint64_t>());
      double sum = 0;
      std::uint32_t nonzero = 0;
      for (std::uint32_t j = 0; j < k; ++j) {
        idx[j] = 0xffffffffu - std::uint32_t(keys[j]);
        mx = std::max(mx, std::fabs(a[idx[j]]));
        sum += std::fabs(a[idx[j]]);
        nonzero += a[idx[j]] != 0;
      }
      std::sort(idx.begin(), idx.end());
      if (mx > 0) e = step_exponent(mx, sum / nonzero, L, top);
    }
    *rec = static_cast<unsigned char>(static_cast<std::int8_t>(e));
    BitWriter w{rec + 1};
    for (std::uint32_t j = 0; j < k; ++j) w.put(idx[j], ib);
    const bool coded = e != kZeroExp && e != kNanExp;
    const float inv = coded ? std::ldexp(1.0f, -e) : 0.0f;
    for (std::uint32_t j = 0; j < k; ++j) {
      std::uint32_t code = 0;
      if (coded) {
        const float v = a[idx[j]];
        const auto m = std::min(L, static_cast<std::uint32_t>(std::nearbyint(std::fabs(v) * inv)));
        code = m | (m > 0 && std::signbit(v) ? 1u << (l.value_bits - 1) : 0u);
      }
      w.put(code, l.value_bits);
    }
    w.flush();
    rec += record_bytes(l, k);
  }
}

Layout read_layout(const char* payload, std::size_t bytes, std::uint32_t chunk, std::size_t n) {
  auto bad = [](const std::string& what) { throw InputError("sparse upload: " + what); };
  if (!valid_chunk(chunk))
    bad("chunk size " + std::to_string(chunk) + " is not a power of two in " +
        std::to_string(kMinChunk) + ".." + std::to_string(kMaxChunk));
  if (bytes < kSubHeaderBytes)
    bad("truncated: " + std::to_string(bytes) + " payload bytes, shorter than the sub-header");
  std::uint32_t head[2];
  unsigned char vb[4];
  std::memcpy(head, payload, 8);
  std::memcpy(vb, payload + 8, 4);
  Layout l;
  l.n = n, l.chunk = chunk, l.value_bits = vb[0], l.k = head[0], l.k_last = head[1];
  if (!valid_value_bits(l.value_bits))
    bad("value bits " + std::to_string(l.value_bits) + ", expected 2, 4 or 8");
  if (vb[1] || vb[2] || vb[3]) bad("nonzero reserved bytes in the sub-header");
  if (l.k < 1 || l.k > chunk)
    bad("k " + std::to_string(l.k) + " per chunk, expected 1.." + std::to_string(chunk));
  const std::size_t rem = n % chunk;
  if (rem ? l.k_last < 1 || l.k_last > rem : l.k_last != 0)
    bad("k " + std::to_string(l.k_last) + " in the last chunk of " + std::to_string(rem) +
        " elements, expected " + (rem ? "1.." + std::to_string(rem) : std::string("0")));
  std::size_t want = 0;
  try {
    want = payload_bytes(l);
  } catch (const std::overflow_error&) {
    bad("size overflows for " + std::to_string(n) + " elements");
  }
  if (bytes != want)
    bad("truncated or padded: " + std::to_string(bytes) + " payload bytes, expected " +
        std::to_string(want));
  return l;
}

void decode(const char* payload, const Layout& l, std::span<float> out) {
  const std::uint32_t L = levels(l.value_bits), ib = index_bits(l.chunk);
  const int top = max_exp(L);
  const auto* rec = reinterpret_cast<const unsigned char*>(payload + kSubHeaderBytes);
  std::vector<std::uint32_t> idx;
  std::fill(out.begin(), out.end(), 0.0f);
  for (std::size_t lo = 0, c = 0; lo < l.n; lo += l.chunk, ++c) {
    const std::size_t len = std::min<std::size_t>(l.chunk, l.n - lo);
    const std::uint32_t k = len == l.chunk ? l.k : l.k_last;
    const int e = static_cast<std::int8_t>(*rec);
    if (e != kZeroExp && e != kNanExp && e > top)
      malformed(c, "exponent " + std::to_string(e) + " above " + std::to_string(top) + " for " +
                       std::to_string(l.value_bits) + "-bit values (would overflow)");
    BitReader r{rec + 1};
    idx.resize(k);
    for (std::uint32_t j = 0; j < k; ++j) {
      idx[j] = r.get(ib);
      if (idx[j] >= len)
        malformed(c, "index " + std::to_string(idx[j]) + " outside its " + std::to_string(len) +
                         " elements");
      if (j > 0 && idx[j] <= idx[j - 1])
        malformed(c, "indices not strictly ascending at " + std::to_string(j));
    }
    const float step = e == kZeroExp || e == kNanExp ? 0.0f : std::ldexp(1.0f, e);
    const std::uint32_t sign_bit = 1u << (l.value_bits - 1);
    float* o = out.data() + lo;
    for (std::uint32_t j = 0; j < k; ++j) {
      const std::uint32_t code = r.get(l.value_bits), m = code & (sign_bit - 1);
      if (code == sign_bit) malformed(c, "negative zero level at " + std::to_string(j));
      if (code && (e == kZeroExp || e == kNanExp))
        malformed(c, "nonzero value under a " +
                         std::string(e == kZeroExp ? "zero-chunk" : "non-finite-chunk") +
                         " marker");
      const float v = float(m) * step; // exact: m < 2^7 and step a power of two
      o[idx[j]] = code & sign_bit ? -v : v;
    }
    if (!r.padding_is_zero()) malformed(c, "nonzero padding bits");
    if (e == kNanExp) std::fill(o, o + len, NAN);
    rec += record_bytes(l, k);
  }
}

} // namespace myelin::pool::sparse
