// libFuzzer harness for the pseudo-gradient upload wire format
// (runtime/pool/compress.h). The element count the decoder expects is taken
// from the input's own header (bytes 16..23; 0 when shorter). Bit 0 of the
// job field (offset 32) asks the harness to store the correct checksum of
// origin and payload first, so mutations reach the codecs behind it.
// Checked: a decoded upload has the header's element count; re-encoding it
// with the same codec decodes again (codec none: bit-identical values and
// payload; int8: every finite value within half a quantisation step of the
// first decode, a non-finite value stays non-finite; sparse: a chunk with no
// more nonzeros than the re-encoding keeps decodes to bit-identical values,
// since its levels times the new power-of-two step are exact, and a
// non-finite chunk stays NaN throughout). Sparse uploads with more than 2^20
// elements are not tried: the decoder allocates the element count its
// caller expects (the coordinator: its model's), which here comes from the
// input, and a sparse payload can be far smaller than that.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>

#include "runtime/io/file_util.h"
#include "runtime/pool/compress.h"
#include "tests/fuzz/fuzz_support.h"

using myelin::fuzz::check;
namespace pool = myelin::pool;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string bytes = myelin::fuzz::as_string(data, size);
  std::uint64_t n = 0;
  std::uint32_t block = 0, codec = 0;
  if (bytes.size() >= pool::kWireHeaderBytes) {
    std::memcpy(&codec, bytes.data() + 8, 4);
    std::memcpy(&block, bytes.data() + 12, 4);
    std::memcpy(&n, bytes.data() + 16, 8);
    if (codec == std::uint32_t(pool::Codec::kSparse) && n > (1u << 20)) return 0;
    if (bytes[32] & 1) {
      pool::UploadOrigin o;
      std::memcpy(&o.job, bytes.data() + 32, 8);
      std::memcpy(&o.round, bytes.data() + 40, 8);
      std::memcpy(&o.model_checksum, bytes.data() + 48, 8);
      const std::uint64_t sum = pool::upload_checksum(o, bytes.data() + pool::kWireHeaderBytes,
                                                      bytes.size() - pool::kWireHeaderBytes);
      std::memcpy(bytes.data() + 24, &sum, 8);
    }
  }
  pool::Decoded d;
  if (!myelin::fuzz::expect_input_error([&] { d = pool::decode(bytes, n); })) return 0;
  check(d.values.size() == n, "element count");
  const pool::CodecParams p =
      d.codec == pool::Codec::kSparse ? d.params : pool::CodecParams{d.codec, block};
  const std::string again = pool::encode(d.values, d.origin, p);
  const pool::Decoded e = pool::decode(again, n);
  check(e.codec == d.codec && e.values.size() == n && e.origin == d.origin, "re-encoded shape");
  if (d.codec == pool::Codec::kSparse) {
    check(e.params == d.params && e.kept == d.kept, "sparse: re-encoded settings");
    for (std::size_t lo = 0; lo < n; lo += block) {
      const std::size_t hi = std::min<std::size_t>(n, lo + block);
      std::size_t nonzero = 0;
      bool finite = true;
      for (std::size_t i = lo; i < hi; ++i)
        nonzero += d.values[i] != 0, finite = finite && std::isfinite(d.values[i]);
      for (std::size_t i = lo; i < hi; ++i) {
        if (!finite)
          check(std::isnan(d.values[i]) && std::isnan(e.values[i]),
                "sparse: a non-finite chunk is not NaN throughout");
        else if (nonzero <= pool::sparse_kept(p.density, hi - lo))
          check(std::memcmp(&e.values[i], &d.values[i], 4) == 0,
                "sparse: re-encoding changed a kept value");
      }
    }
    return 0;
  }
  if (d.codec == pool::Codec::kNone) {
    check(again.compare(pool::kWireHeaderBytes, std::string::npos, bytes, pool::kWireHeaderBytes) ==
                  0 &&
              myelin::fuzz::same_bits(e.values, d.values),
          "codec none: re-encoding changed the payload");
    return 0;
  }
  for (std::size_t b = 0; b * block < n; ++b) {
    float mx = 0;
    bool finite = true;
    const std::size_t hi = std::min<std::size_t>(n, (b + 1) * std::size_t(block));
    for (std::size_t i = b * block; i < hi; ++i) {
      finite = finite && std::isfinite(d.values[i]);
      mx = std::fmax(mx, std::fabs(d.values[i]));
    }
    for (std::size_t i = b * block; i < hi; ++i) {
      if (!finite) {
        check(!std::isfinite(e.values[i]), "int8: a non-finite block became finite");
        continue;
      }
      // Half a step of mx / 127, plus rounding of the scale and the product
      // (relative 1e-4; absolute 128 ulps of a subnormal scale).
      const double step = double(mx) / 127.0;
      const double slack = 128.0 * std::numeric_limits<float>::denorm_min();
      check(std::fabs(double(e.values[i]) - double(d.values[i])) <= 0.5 * step * 1.0001 + slack,
            "int8: re-encoded value outside half a quantisation step");
    }
  }
  return 0;
}
