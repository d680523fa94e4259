#include "runtime/pool/compress.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include "runtime/io/file_util.h"
#include "runtime/pool/sparse_codec.h"
#include "runtime/util/error.h"

namespace myelin::pool {
namespace {
constexpr std::uint32_t kMagic = 0x4750594d; // "MYPG"
constexpr std::uint32_t kVersion = 2;
constexpr std::uint32_t kMaxBlock = 1u << 20;

struct Header {
  std::uint32_t magic, version, codec, block;
  std::uint64_t n, checksum;
  std::int64_t job, round;
  std::uint64_t model;
};

static_assert(sizeof(Header) == kWireHeaderBytes);

std::size_t blocks(std::size_t n, std::uint32_t block) { return (n + block - 1) / block; }

} // namespace

Codec parse_codec(const std::string& name) {
  if (name == "none") return Codec::kNone;
  if (name == "int8") return Codec::kInt8;
  if (name == "sparse") return Codec::kSparse;
  throw InputError("compression: expected none, int8 or sparse, got '" + name + "'");
}

std::string codec_name(Codec c) {
  return c == Codec::kInt8 ? "int8" : c == Codec::kSparse ? "sparse" : "none";
}

std::string codec_params_problem(const CodecParams& p) {
  if (p.codec != Codec::kNone && p.codec != Codec::kInt8 && p.codec != Codec::kSparse)
    return "compression: unknown codec " + std::to_string(std::uint32_t(p.codec));
  if (p.block < 1 || p.block > kMaxBlock)
    return "block_size: expected 1.." + std::to_string(kMaxBlock) + ", got " +
           std::to_string(p.block);
  if (!(p.density > 0 && p.density <= 1))
    return "topk_density: expected a number in (0, 1], got " + std::to_string(p.density);
  if (!sparse::valid_value_bits(p.value_bits))
    return "value_bits: expected 2, 4 or 8, got " + std::to_string(p.value_bits);
  if (!sparse::valid_chunk(p.chunk))
    return "chunk_size: expected a power of two in " + std::to_string(sparse::kMinChunk) + ".." +
           std::to_string(sparse::kMaxChunk) + ", got " + std::to_string(p.chunk);
  return "";
}

std::uint32_t sparse_kept(double density, std::size_t len) {
  if (len == 0) return 0;
  const double k = std::ceil(density * double(len));
  return std::uint32_t(std::clamp(k, 1.0, double(len)));
}

std::size_t encoded_size(const CodecParams& p, std::size_t n) {
  if (p.codec == Codec::kNone) return kWireHeaderBytes + 4 * n;
  if (p.codec == Codec::kInt8) return kWireHeaderBytes + 4 * blocks(n, p.block) + n;
  if (const std::string why = codec_params_problem(p); !why.empty())
    throw std::invalid_argument("sparse codec: " + why);
  return kWireHeaderBytes + sparse::payload_bytes(sparse::layout(p, n));
}

std::string codec_mismatch(const Decoded& d, const CodecParams& job, std::size_t n) {
  const std::string got = codec_name(d.codec);
  if (d.codec != job.codec) return "codec " + got + ", the job uses " + codec_name(job.codec);
  if (d.codec == Codec::kInt8 && d.params.block != job.block)
    return "int8 block " + std::to_string(d.params.block) + ", the job uses " +
           std::to_string(job.block);
  if (d.codec != Codec::kSparse) return "";
  if (d.params.value_bits != job.value_bits || d.params.chunk != job.chunk)
    return "sparse " + std::to_string(d.params.value_bits) + "-bit values in chunks of " +
           std::to_string(d.params.chunk) + ", the job uses " + std::to_string(job.value_bits) +
           "-bit values in chunks of " + std::to_string(job.chunk);
  const sparse::Layout want = sparse::layout(job, n);
  if (d.kept > want.k || d.kept_last > want.k_last)
    return "sparse upload keeps " + std::to_string(d.kept) + " per chunk (" +
           std::to_string(d.kept_last) + " in the last), the job allows " + std::to_string(want.k) +
           " (" + std::to_string(want.k_last) + ")";
  return "";
}

std::uint64_t upload_checksum(const UploadOrigin& origin, const char* payload, std::size_t bytes) {
  Fnv1a h;
  h.add(&origin.job, sizeof(origin.job));
  h.add(&origin.round, sizeof(origin.round));
  h.add(&origin.model_checksum, sizeof(origin.model_checksum));
  h.add(payload, bytes);
  return h.h;
}

std::string encode(std::span<const float> x, const UploadOrigin& origin, const CodecParams& p) {
  const Codec c = p.codec;
  std::uint32_t block = p.block;
  if (c == Codec::kInt8 && (block == 0 || block > kMaxBlock))
    throw std::invalid_argument("int8 block size must be 1.." + std::to_string(kMaxBlock));
  if (c == Codec::kNone) block = 0;
  if (c == Codec::kSparse) block = p.chunk;
  const std::size_t n = x.size();
  std::string out(encoded_size(c == Codec::kSparse ? p : CodecParams{c, block}, n), '\0');
  char* payload = out.data() + kWireHeaderBytes;
  if (c == Codec::kSparse) {
    sparse::encode(x, sparse::layout(p, n), payload);
  } else if (c == Codec::kNone) {
    if (n != 0) std::memcpy(payload, x.data(), 4 * n); // an empty span's data() may be null
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
      // Rounded to nearest, 127 * scale can exceed FLT_MAX when mx is near
      // it, and the block's largest value would decode as inf: step down.
      float scale = mx / 127.0f;
      while (std::isinf(127.0f * scale)) scale = std::nextafter(scale, 0.0f);
      scales[b] = scale;
      // A subnormal scale (mx below about 127 / FLT_MAX) has no finite
      // reciprocal (0 * inf would be NaN, and NaN -> int8 is undefined):
      // divide instead. A scale of 0 quantises the block to 0.
      const float inv = scale > 0 ? 1.0f / scale : 0.0f;
      const bool use_inv = std::isfinite(inv);
      for (std::size_t i = lo; i < hi; ++i) {
        const float v = std::nearbyint(use_inv ? x[i] * inv : x[i] / scale);
        q[i] = std::int8_t(std::clamp(v, -127.0f, 127.0f));
      }
    }
  }
  const std::uint64_t sum = upload_checksum(origin, payload, out.size() - kWireHeaderBytes);
  Header hd{kMagic,     kVersion,     std::uint32_t(c),     block, n, sum,
            origin.job, origin.round, origin.model_checksum};
  std::memcpy(out.data(), &hd, sizeof(hd));
  return out;
}

Decoded decode(const std::string& bytes, std::size_t expected_n) {
  if (bytes.size() < kWireHeaderBytes)
    throw InputError("upload truncated: " + std::to_string(bytes.size()) +
                     " bytes, shorter than the header");
  Header hd;
  std::memcpy(&hd, bytes.data(), sizeof(hd));
  if (hd.magic != kMagic) throw InputError("not a pseudo-gradient (bad magic)");
  if (hd.version != kVersion)
    throw InputError("unsupported wire version " + std::to_string(hd.version) + " (expected " +
                     std::to_string(kVersion) + ": job, round and model checksum in the header)");
  if (hd.codec > 2) throw InputError("unknown codec " + std::to_string(hd.codec));
  const Codec c = Codec(hd.codec);
  if (hd.n != expected_n)
    throw InputError("shape mismatch: " + std::to_string(hd.n) + " elements, the model has " +
                     std::to_string(expected_n));
  if (c == Codec::kInt8 && (hd.block == 0 || hd.block > kMaxBlock))
    throw InputError("bad int8 block size " + std::to_string(hd.block));
  const char* payload = bytes.data() + kWireHeaderBytes;
  sparse::Layout layout;
  if (c == Codec::kSparse) {
    // Sizes from the sub-header, computed with overflow checks.
    layout = sparse::read_layout(payload, bytes.size() - kWireHeaderBytes, hd.block, hd.n);
  } else {
    // none and int8 take at least one byte per element; checking that first
    // keeps encoded_size from overflowing on a forged element count.
    if (hd.n > bytes.size())
      throw InputError("upload truncated: " + std::to_string(bytes.size()) + " bytes for " +
                       std::to_string(hd.n) + " elements");
    const std::size_t want = encoded_size({c, hd.block}, hd.n);
    if (bytes.size() != want)
      throw InputError("upload truncated or padded: " + std::to_string(bytes.size()) +
                       " bytes, expected " + std::to_string(want));
  }
  if (upload_checksum({hd.job, hd.round, hd.model}, payload, bytes.size() - kWireHeaderBytes) !=
      hd.checksum)
    throw InputError("checksum mismatch (corrupted upload)");
  Decoded d;
  d.codec = c;
  d.params.codec = c, d.params.block = hd.block;
  d.origin = {hd.job, hd.round, hd.model};
  d.values.resize(hd.n);
  if (c == Codec::kSparse) {
    d.params.chunk = layout.chunk, d.params.value_bits = layout.value_bits;
    d.params.density = double(layout.k) / layout.chunk;
    d.kept = layout.k, d.kept_last = layout.k_last;
    sparse::decode(payload, layout, d.values);
  } else if (c == Codec::kNone) {
    if (hd.n != 0) std::memcpy(d.values.data(), payload, 4 * hd.n); // empty: data() is null
  } else {
    const std::size_t nb = blocks(hd.n, hd.block);
    std::vector<float> scales(nb);
    if (nb != 0) std::memcpy(scales.data(), payload, 4 * nb);
    const auto* q = reinterpret_cast<const std::int8_t*>(payload + 4 * nb);
    for (std::size_t b = 0; b < nb; ++b) {
      const std::size_t lo = b * hd.block, hi = std::min<std::size_t>(hd.n, lo + hd.block);
      for (std::size_t i = lo; i < hi; ++i) d.values[i] = float(q[i]) * scales[b];
    }
  }
  return d;
}

std::string encode_with_feedback(std::span<const float> x, std::span<float> residual,
                                 const UploadOrigin& origin, const CodecParams& p,
                                 std::vector<float>* decoded) {
  if (residual.size() != x.size())
    throw std::invalid_argument("error feedback: residual has " + std::to_string(residual.size()) +
                                " elements, the vector " + std::to_string(x.size()));
  std::vector<float> a(x.size());
  for (std::size_t i = 0; i < a.size(); ++i) a[i] = x[i] + residual[i];
  std::string bytes = encode(a, origin, p);
  std::vector<float> d = decode(bytes, a.size()).values;
  for (std::size_t i = 0; i < a.size(); ++i) residual[i] = a[i] - d[i];
  if (decoded) *decoded = std::move(d);
  return bytes;
}

std::uint64_t params_checksum(std::span<const float> p) {
  Fnv1a h;
  h.add(p.data(), 4 * p.size());
  return h.h;
}

} // namespace myelin::pool
