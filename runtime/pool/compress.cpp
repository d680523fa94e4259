#include "runtime/pool/compress.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include "runtime/io/file_util.h"
#include "runtime/util/error.h"

namespace myelin::pool {
namespace {
constexpr std::uint32_t kMagic = 0x4750594d; // "MYPG"
constexpr std::uint32_t kVersion = 1;
constexpr std::uint32_t kMaxBlock = 1u << 20;

struct Header {
  std::uint32_t magic, version, codec, block;
  std::uint64_t n, checksum, reserved;
};
static_assert(sizeof(Header) == kWireHeaderBytes);

std::size_t blocks(std::size_t n, std::uint32_t block) { return (n + block - 1) / block; }
} // namespace

Codec parse_codec(const std::string& name) {
  if (name == "none") return Codec::kNone;
  if (name == "int8") return Codec::kInt8;
  throw InputError("compression: expected none or int8, got '" + name + "'");
}

std::string codec_name(Codec c) { return c == Codec::kInt8 ? "int8" : "none"; }

std::size_t encoded_size(Codec c, std::size_t n, std::uint32_t block) {
  if (c == Codec::kNone) return kWireHeaderBytes + 4 * n;
  return kWireHeaderBytes + 4 * blocks(n, block) + n;
}

std::string encode(std::span<const float> x, Codec c, std::uint32_t block) {
  if (c == Codec::kInt8 && (block == 0 || block > kMaxBlock))
    throw std::invalid_argument("int8 block size must be 1.." + std::to_string(kMaxBlock));
  if (c == Codec::kNone) block = 0;
  const std::size_t n = x.size();
  std::string out(encoded_size(c, n, block), '\0');
  char* payload = out.data() + kWireHeaderBytes;
  if (c == Codec::kNone) {
    std::memcpy(payload, x.data(), 4 * n);
  } else {
    const std::size_t nb = blocks(n, block);
    auto* scales = reinterpret_cast<float*>(payload);
    auto* q = reinterpret_cast<std::int8_t*>(payload + 4 * nb);
    for (std::size_t b = 0; b < nb; ++b) {
      const std::size_t lo = b * block, hi = std::min(n, lo + block);
      float mx = 0;
      bool finite = true;
      for (std::size_t i = lo; i < hi; ++i) {
        if (!std::isfinite(x[i])) finite = false;
        mx = std::max(mx, std::fabs(x[i]));
      }
      if (!finite) {
        scales[b] = NAN;
        std::fill(q + lo, q + hi, std::int8_t(0));
        continue;
      }
      const float scale = mx / 127.0f;
      scales[b] = scale;
      const float inv = scale > 0 ? 1.0f / scale : 0.0f;
      for (std::size_t i = lo; i < hi; ++i) {
        const float v = std::nearbyint(x[i] * inv);
        q[i] = std::int8_t(std::clamp(v, -127.0f, 127.0f));
      }
    }
  }
  Fnv1a h;
  h.add(payload, out.size() - kWireHeaderBytes);
  Header hd{kMagic, kVersion, std::uint32_t(c), block, n, h.h, 0};
  std::memcpy(out.data(), &hd, sizeof(hd));
  return out;
}

Decoded decode(const std::string& bytes, std::size_t expected_n) {
  if (bytes.size() < kWireHeaderBytes)
    throw std::invalid_argument("upload truncated: " + std::to_string(bytes.size()) +
                                " bytes, shorter than the header");
  Header hd;
  std::memcpy(&hd, bytes.data(), sizeof(hd));
  if (hd.magic != kMagic) throw std::invalid_argument("not a pseudo-gradient (bad magic)");
  if (hd.version != kVersion)
    throw std::invalid_argument("unsupported wire version " + std::to_string(hd.version));
  if (hd.codec > 1) throw std::invalid_argument("unknown codec " + std::to_string(hd.codec));
  const Codec c = Codec(hd.codec);
  if (hd.n != expected_n)
    throw std::invalid_argument("shape mismatch: " + std::to_string(hd.n) +
                                " elements, the model has " + std::to_string(expected_n));
  if (c == Codec::kInt8 && (hd.block == 0 || hd.block > kMaxBlock))
    throw std::invalid_argument("bad int8 block size " + std::to_string(hd.block));
  const std::size_t want = encoded_size(c, hd.n, hd.block);
  if (bytes.size() != want)
    throw std::invalid_argument("upload truncated or padded: " + std::to_string(bytes.size()) +
                                " bytes, expected " + std::to_string(want));
  const char* payload = bytes.data() + kWireHeaderBytes;
  Fnv1a h;
  h.add(payload, bytes.size() - kWireHeaderBytes);
  if (h.h != hd.checksum) throw std::invalid_argument("checksum mismatch (corrupted upload)");
  Decoded d;
  d.codec = c;
  d.values.resize(hd.n);
  if (c == Codec::kNone) {
    std::memcpy(d.values.data(), payload, 4 * hd.n);
  } else {
    const std::size_t nb = blocks(hd.n, hd.block);
    std::vector<float> scales(nb);
    std::memcpy(scales.data(), payload, 4 * nb);
    const auto* q = reinterpret_cast<const std::int8_t*>(payload + 4 * nb);
    for (std::size_t b = 0; b < nb; ++b) {
      const std::size_t lo = b * hd.block, hi = std::min<std::size_t>(hd.n, lo + hd.block);
      for (std::size_t i = lo; i < hi; ++i) d.values[i] = float(q[i]) * scales[b];
    }
  }
  return d;
}

} // namespace myelin::pool
