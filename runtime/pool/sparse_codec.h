// The payload of a "sparse" pseudo-gradient upload (the 56-byte header
// around it is compress.cpp's). Guarantees: per chunk, the k largest
// magnitudes are kept (ties: lower index first), each as a fixed-width index
// and a sign-magnitude level times the chunk's power-of-two step, so that
// a - decoded is exact in fp32 for every element (error feedback loses
// nothing); the layout's size is a function of (n, chunk, value bits, k,
// k_last) alone; the decoder checks every field and every index and throws
// InputError with a reason on anything malformed.
//
// Layout after the wire header (whose block field is the chunk size):
//   sub-header (12 bytes): k per full chunk (u32), k of the last, shorter
//   chunk (u32, 0 when n is a multiple of the chunk), value bits (u8), three
//   zero bytes;
//   then one record per chunk: the step's exponent e (i8), the k indices
//   (log2(chunk) bits each, ascending), the k value codes (value bits each:
//   sign bit on top, magnitude level m below), zero bits up to a byte.
//   e = -128: the chunk's kept values are all zero; e = 127: the chunk held a
//   NaN or an infinity and decodes to NaN throughout (indices 0..k-1 and zero
//   codes are written; the finiteness check sees the NaN).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "runtime/pool/compress.h"

namespace myelin::pool::sparse {

constexpr std::uint32_t kMinChunk = 16, kMaxChunk = 1u << 20; // chunk: a power of two in between
constexpr std::size_t kSubHeaderBytes = 12;
constexpr bool valid_chunk(std::uint32_t c) {
  return c >= kMinChunk && c <= kMaxChunk && (c & (c - 1)) == 0;
}
constexpr bool valid_value_bits(std::uint32_t b) { return b == 2 || b == 4 || b == 8; }

struct Layout {
  std::size_t n = 0;
  std::uint32_t chunk = 0, value_bits = 0;
  std::uint32_t k = 0;      // kept per full chunk
  std::uint32_t k_last = 0; // kept in the last, shorter chunk (0 when there is none)
};

// The layout an encoder with settings p uses for n elements (p in bounds).
Layout layout(const CodecParams& p, std::size_t n);
// Bytes of the payload (sub-header included) under l; std::overflow_error
// when it does not fit in std::size_t.
std::size_t payload_bytes(const Layout& l);
// Writes the payload of x (x.size() == l.n) to out (payload_bytes(l) bytes).
void encode(std::span<const float> x, const Layout& l, char* out);
// Reads the sub-header of a payload of `bytes` bytes whose wire header says
// `chunk` and n, checks every field and that the payload has exactly the
// size they imply; throws InputError naming what is wrong.
Layout read_layout(const char* payload, std::size_t bytes, std::uint32_t chunk, std::size_t n);
// Decodes a payload read_layout accepted into out (l.n elements); throws
// InputError on an index out of its chunk or not strictly ascending, an
// exponent out of range, a negative zero level or nonzero padding.
void decode(const char* payload, const Layout& l, std::span<float> out);

} // namespace myelin::pool::sparse
