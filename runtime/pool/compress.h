// Wire format of a pseudo-gradient upload, and its codecs.
//
// Header (56 bytes, little-endian): magic "MYPG", version 2, codec (0 = none,
// 1 = int8, 2 = sparse), block size (sparse: the chunk size), element count
// (u64), FNV-1a of the origin fields and the payload (u64), then the upload's
// origin: job id (i64), round (i64) and the checksum (params_checksum) of the
// global model the contributor started from (u64). The coordinator refuses an
// upload whose origin is not the round it is posted to (a replayed or
// re-targeted upload) and version 1 uploads, which carry no origin. Payload:
// none = n fp32; int8 = one fp32 scale per block
// (max |x| / 127) followed by n int8 values (x ~ q * scale). A block holding a
// non-finite value gets a NaN scale, so NaN/Inf survive the trip and the
// coordinator's finiteness check sees them. int8 costs n + 4n/block bytes
// instead of 4n (3.9x smaller at block 256).
//
// sparse (layout in sparse_codec.h): per chunk of `chunk` elements (a power of
// two in 16..2^20; the last chunk may be shorter), the k = max(1,
// ceil(density * chunk length)) largest magnitudes (ties: lower index first),
// each as log2(chunk) index bits + value_bits (2, 4 or 8: a sign bit and a
// level m <= L = 2^(value_bits-1) - 1) times one power-of-two step per chunk.
// Bits per kept element: log2(chunk) + value_bits (14 at chunk 4096, 2 bits);
// per chunk: one exponent byte plus padding to a byte; per upload: a 12-byte
// sub-header. 1M elements at density 0.016, 2 bits, chunk 4096: 28,635 bytes,
// 0.72% of fp32. Since every step is a power of two and 0 is a level,
// a - decoded is exact in fp32, so error feedback (encode_with_feedback)
// carries exactly what an upload dropped into the next one.
//
// Downloads use the same format: the coordinator's outer update of a round
// (its origin: job, round and the checksum of the model it applies to),
// applied as model - decoded, element by element (state.h update_file).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace myelin::pool {

enum class Codec : std::uint32_t { kNone = 0, kInt8 = 1, kSparse = 2 };

Codec parse_codec(const std::string& name); // "none" | "int8" | "sparse"; throws InputError
std::string codec_name(Codec c);

// How a vector is encoded: the codec and its settings (a job's
// "compression", "block_size", "topk_density", "value_bits", "chunk_size").
struct CodecParams {
  Codec codec = Codec::kInt8;
  std::uint32_t block = 256;    // int8: elements per fp32 scale
  double density = 0.016;       // sparse: share of each chunk kept (top-k by magnitude)
  std::uint32_t value_bits = 2; // sparse: 2, 4 or 8 bits per kept value
  std::uint32_t chunk = 4096;   // sparse: elements per chunk
  bool operator==(const CodecParams&) const = default;
};

// "" when every setting is in bounds, else "<job field>: <reason>" (fields:
// block_size 1..2^20; topk_density in (0, 1]; value_bits 2, 4 or 8;
// chunk_size a power of two in 16..2^20). Every setting is checked, whatever
// the codec. The job, the assignment and the encoder use this one check.
std::string codec_params_problem(const CodecParams& p);
// Kept elements of a sparse chunk of len elements: max(1, ceil(density *
// len)), at most len (0 for len 0).
std::uint32_t sparse_kept(double density, std::size_t len);

constexpr std::size_t kWireHeaderBytes = 56;
// Bytes an encoding of n elements takes.
std::size_t encoded_size(const CodecParams& p, std::size_t n);

// Where an upload comes from: the job, the round and the global model it
// started from.
struct UploadOrigin {
  std::int64_t job = 0, round = 0;
  std::uint64_t model_checksum = 0;
  bool operator==(const UploadOrigin&) const = default;
};

std::string encode(std::span<const float> x, const UploadOrigin& origin, const CodecParams& p);
// Error feedback: encodes x + residual and leaves in `residual` what the
// encoding dropped, (x + residual) - decoded, so nothing is lost over rounds.
// `decoded` (when given) receives the decoded values, exactly as decode()
// returns them. residual.size() == x.size().
std::string encode_with_feedback(std::span<const float> x, std::span<float> residual,
                                 const UploadOrigin& origin, const CodecParams& p,
                                 std::vector<float>* decoded = nullptr);
// The checksum an upload's header carries: FNV-1a over the origin fields
// (job, round, model checksum, in that order) and the payload.
std::uint64_t upload_checksum(const UploadOrigin& origin, const char* payload, std::size_t bytes);

struct Decoded {
  std::vector<float> values;
  CodecParams params; // codec and its settings, as the header says (sparse:
                      // chunk, value_bits, density = kept / chunk)
  Codec codec = Codec::kNone;
  UploadOrigin origin;
  std::uint32_t kept = 0, kept_last = 0; // sparse: k per full chunk, in the last shorter one
};
// Decodes and checks magic, version, sizes and checksum against the expected
// element count; throws InputError (runtime/util/error.h) with a reason when
// malformed. The origin is returned, not judged (the coordinator compares it).
Decoded decode(const std::string& bytes, std::size_t expected_n);
// "" when a decoded upload of n elements was made with the job's codec
// settings, else the difference: the same codec; int8: the same block;
// sparse: the same value bits and chunk, and at most the job's k per chunk
// (per full chunk and in the last, shorter one).
std::string codec_mismatch(const Decoded& d, const CodecParams& job, std::size_t n);

// FNV-1a 64 of the fp32 bytes of a model's parameters.
std::uint64_t params_checksum(std::span<const float> p);

} // namespace myelin::pool
