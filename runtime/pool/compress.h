// Wire format of a pseudo-gradient upload, and its codecs.
//
// Header (40 bytes, little-endian): magic "MYPG", version 1, codec (0 = none,
// 1 = int8), block size, element count (u64), FNV-1a of the payload (u64),
// 8 reserved bytes. Payload: none = n fp32; int8 = one fp32 scale per block
// (max |x| / 127) followed by n int8 values (x ~ q * scale). A block holding a
// non-finite value gets a NaN scale, so NaN/Inf survive the trip and the
// coordinator's finiteness check sees them. int8 costs n + 4n/block bytes
// instead of 4n (3.9x smaller at block 256).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace myelin::pool {

enum class Codec : std::uint32_t { kNone = 0, kInt8 = 1 };

Codec parse_codec(const std::string& name); // "none" | "int8"; throws InputError
std::string codec_name(Codec c);

constexpr std::size_t kWireHeaderBytes = 40;
// Bytes an encoding of n elements takes.
std::size_t encoded_size(Codec c, std::size_t n, std::uint32_t block);

std::string encode(std::span<const float> x, Codec c, std::uint32_t block = 256);

struct Decoded {
  std::vector<float> values;
  Codec codec = Codec::kNone;
};
// Decodes and checks magic, version, sizes and checksum against the expected
// element count; throws std::invalid_argument with a reason when malformed.
Decoded decode(const std::string& bytes, std::size_t expected_n);

} // namespace myelin::pool
