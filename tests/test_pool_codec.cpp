// The sparse top-k upload codec (runtime/pool/sparse_codec.h), error
// feedback through it, the job and assignment fields that configure it, the
// coordinator's codec comparison, and the contributor's residual file
// (runtime/pool/residual.h).
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <random>

#include "runtime/pool/compress.h"
#include "runtime/pool/job.h"
#include "runtime/pool/protocol.h"
#include "runtime/pool/residual.h"
#include "runtime/pool/validate.h"
#include "runtime/util/error.h"

using namespace myelin;
using namespace myelin::pool;
namespace fs = std::filesystem;

namespace {
const UploadOrigin kOrigin{7, 11, 0x0123456789abcdefull};

CodecParams sparse(std::uint32_t bits, std::uint32_t chunk, double density = 0.016) {
  CodecParams p;
  p.codec = Codec::kSparse, p.value_bits = bits, p.chunk = chunk, p.density = density;
  return p;
}

std::uint32_t bits_of(float f) { return std::bit_cast<std::uint32_t>(f); }

// Equal as values, and bit for bit unless zero (decoded + residual of -0
// is +0 under round to nearest).
::testing::AssertionResult same(float got, float want, std::size_t i) {
  if (got == want && (want == 0 || bits_of(got) == bits_of(want)))
    return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "element " << i << ": " << got << " (0x" << std::hex << bits_of(got) << ") != " << want
         << " (0x" << bits_of(want) << ")";
}

// Test vectors: each a different shape of distribution.
std::vector<std::pair<std::string, std::function<std::vector<float>(std::mt19937&, std::size_t)>>>
distributions() {
  auto fill = [](auto dist) {
    return [dist](std::mt19937& rng, std::size_t n) mutable {
      std::vector<float> v(n);
      for (auto& x : v) x = float(dist(rng));
      return v;
    };
  };
  return {
      {"normal", fill(std::normal_distribution<double>(0, 1e-3))},
      {"cauchy", fill(std::cauchy_distribution<double>(0, 1e-4))},
      {"student_t2", fill(std::student_t_distribution<double>(2))},
      {"zeros", [](std::mt19937&, std::size_t n) { return std::vector<float>(n, 0.0f); }},
      {"mostly_zero",
       [](std::mt19937& rng, std::size_t n) {
         std::vector<float> v(n, 0.0f);
         std::uniform_int_distribution<std::size_t> at(0, n - 1);
         for (int i = 0; i < 5; ++i) v[at(rng)] = -0.25f * float(i + 1);
         v[n / 2] = -0.0f;
         return v;
       }},
      {"subnormal",
       [](std::mt19937& rng, std::size_t n) {
         std::vector<float> v(n);
         std::uniform_int_distribution<int> k(-(1 << 23) + 1, (1 << 23) - 1);
         for (auto& x : v) x = float(k(rng)) * std::numeric_limits<float>::denorm_min();
         return v;
       }},
      {"huge",
       [](std::mt19937& rng, std::size_t n) {
         std::vector<float> v(n);
         std::uniform_real_distribution<float> u(-1, 1);
         for (auto& x : v) x = u(rng) * FLT_MAX;
         return v;
       }},
      {"wide_range",
       [](std::mt19937& rng, std::size_t n) {
         std::vector<float> v(n);
         std::uniform_real_distribution<float> e(-140, 127), s(-1, 1);
         for (auto& x : v) x = std::ldexp(s(rng), int(e(rng)));
         return v;
       }},
  };
}

// Expected bytes from the documented layout, computed independently.
std::size_t formula_bytes(std::size_t n, std::uint32_t chunk, std::uint32_t bits, double density) {
  const std::size_t ib = std::size_t(std::countr_zero(chunk));
  auto rec = [&](std::size_t len) {
    const std::size_t k = std::max<std::size_t>(1, std::size_t(std::ceil(density * double(len))));
    return 1 + (k * (ib + bits) + 7) / 8;
  };
  return 56 + 12 + (n / chunk) * rec(chunk) + (n % chunk ? rec(n % chunk) : 0);
}

// A hand-built sparse upload: one record per chunk as given, the header's
// checksum correct.
std::string wire(std::size_t n, std::uint32_t chunk, std::uint32_t k, std::uint32_t k_last,
                 std::uint32_t bits, const std::string& records, std::uint8_t reserved = 0) {
  std::string b(56 + 12, '\0');
  const std::uint32_t head[4] = {0x4750594d, 2, 2, chunk};
  std::memcpy(b.data(), head, 16);
  const std::uint64_t n64 = n;
  std::memcpy(b.data() + 16, &n64, 8);
  std::memcpy(b.data() + 32, &kOrigin.job, 8);
  std::memcpy(b.data() + 40, &kOrigin.round, 8);
  std::memcpy(b.data() + 48, &kOrigin.model_checksum, 8);
  std::memcpy(b.data() + 56, &k, 4);
  std::memcpy(b.data() + 60, &k_last, 4);
  b[64] = char(bits);
  b[65] = char(reserved);
  b += records;
  const std::uint64_t sum = upload_checksum(kOrigin, b.data() + 56, b.size() - 56);
  std::memcpy(b.data() + 24, &sum, 8);
  return b;
}
// A chunk-16, 8-bit record with two kept elements (4 + 4 index bits, then 8 + 8 value bits).
std::string rec2(std::int8_t e, unsigned i0, unsigned i1, unsigned v0, unsigned v1) {
  return std::string{char(e), char(i0 | (i1 << 4)), char(v0), char(v1)};
}

void expect_refused(const std::string& b, std::size_t n, const std::string& what) {
  try {
    decode(b, n);
    ADD_FAILURE() << "accepted: " << what;
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
  }
}
} // namespace

TEST(PoolSparse, ErrorFeedbackIsExactForEveryDistribution) {
  std::mt19937 rng(12345);
  for (const auto& [name, make] : distributions())
    for (std::uint32_t bits : {2u, 4u, 8u})
      for (std::uint32_t chunk : {16u, 4096u}) {
        const std::size_t n = 3 * chunk + 37; // a shorter last chunk
        const std::vector<float> x = make(rng, n);
        std::vector<float> r = make(rng, n);                 // a residual from "earlier rounds"
        for (auto& v : r) v *= name == "huge" ? 0.0f : 0.5f; // (x + r must stay finite)
        std::vector<float> a(n);
        for (std::size_t i = 0; i < n; ++i) a[i] = x[i] + r[i];
        const CodecParams p = sparse(bits, chunk);
        std::vector<float> got;
        const std::string b = encode_with_feedback(x, r, kOrigin, p, &got);
        ASSERT_EQ(b.size(), encoded_size(p, n)) << name;
        const Decoded d = decode(b, n);
        for (std::size_t i = 0; i < n; ++i) {
          ASSERT_EQ(bits_of(d.values[i]), bits_of(got[i])) << name << " " << i;
          ASSERT_TRUE(std::isfinite(r[i])) << name << " " << i;
          ASSERT_TRUE(same(d.values[i] + r[i], a[i], i)) << name << " bits " << bits;
        }
        // Each chunk holds at most k nonzeros.
        for (std::size_t lo = 0; lo < n; lo += chunk) {
          const std::size_t len = std::min<std::size_t>(chunk, n - lo);
          const auto nz = std::count_if(d.values.begin() + lo, d.values.begin() + lo + len,
                                        [](float v) { return v != 0; });
          EXPECT_LE(std::size_t(nz), sparse_kept(p.density, len)) << name;
        }
      }
}

// 50 rounds of error feedback: what was sent plus what is left equals what
// went in, up to the one rounding of each round's x + r. Inputs lie on a
// 2^-20 grid below 1, so every value (inputs, decoded, residuals) is a
// multiple of 2^-27 below 2^8, and the double sums below are exact: the
// comparison is exact, not within a tolerance.
TEST(PoolSparse, FiftyRoundsOfFeedbackLoseNothing) {
  std::mt19937 rng(99);
  std::uniform_int_distribution<int> k(-(1 << 20) + 1, (1 << 20) - 1);
  const std::size_t n = 5000;
  for (std::uint32_t bits : {2u, 4u, 8u}) {
    const CodecParams p = sparse(bits, 256);
    std::vector<float> r(n, 0.0f);
    std::vector<double> sent(n, 0.0), in(n, 0.0), rounding(n, 0.0);
    double sent_total = 0;
    for (int t = 0; t < 50; ++t) {
      std::vector<float> x(n);
      for (auto& v : x) v = std::ldexp(float(k(rng)), -20);
      const std::vector<float> before = r;
      std::vector<float> d;
      encode_with_feedback(x, r, {1, t, 0}, p, &d);
      for (std::size_t i = 0; i < n; ++i) {
        const float a = x[i] + before[i]; // the round's one rounding
        rounding[i] += double(a) - double(x[i]) - double(before[i]);
        sent[i] += d[i], in[i] += x[i];
        sent_total += std::fabs(d[i]);
      }
    }
    for (std::size_t i = 0; i < n; ++i)
      ASSERT_EQ(sent[i] + double(r[i]), in[i] + rounding[i]) << "bits " << bits << " at " << i;
    EXPECT_GT(sent_total, 0.0);
  }
}

TEST(PoolSparse, KeepsTheLargestKPerChunkAndBreaksTiesByIndex) {
  std::mt19937 rng(5);
  // Magnitudes in [1.01, 1.99): every kept value decodes nonzero at any
  // width, so the nonzeros are exactly the kept set.
  std::uniform_real_distribution<float> mag(1.01f, 1.99f);
  std::bernoulli_distribution neg(0.5);
  for (std::uint32_t bits : {2u, 4u, 8u})
    for (double density : {0.016, 0.1, 1.0}) {
      const std::uint32_t chunk = 512;
      const std::size_t n = 2 * chunk + 100;
      std::vector<float> x(n);
      for (auto& v : x) v = neg(rng) ? -mag(rng) : mag(rng);
      const CodecParams p = sparse(bits, chunk, density);
      const Decoded d = decode(encode(x, kOrigin, p), n);
      EXPECT_EQ(d.kept, sparse_kept(density, chunk));
      for (std::size_t lo = 0; lo < n; lo += chunk) {
        const std::size_t len = std::min<std::size_t>(chunk, n - lo);
        float min_kept = INFINITY, max_dropped = 0;
        std::size_t nz = 0;
        for (std::size_t i = lo; i < lo + len; ++i) {
          if (d.values[i] != 0) {
            ++nz, min_kept = std::min(min_kept, std::fabs(x[i]));
            EXPECT_EQ(std::signbit(d.values[i]), std::signbit(x[i])) << i;
          } else {
            max_dropped = std::max(max_dropped, std::fabs(x[i]));
          }
        }
        EXPECT_EQ(nz, sparse_kept(density, len)) << "bits " << bits << " density " << density;
        EXPECT_GE(min_kept, max_dropped);
      }
    }
  // Ties: equal magnitudes keep the lowest indices of each chunk.
  std::vector<float> flat(64, 1.5f);
  for (std::size_t i = 1; i < flat.size(); i += 2) flat[i] = -1.5f;
  const Decoded d = decode(encode(flat, kOrigin, sparse(8, 16, 0.25)), flat.size());
  for (std::size_t i = 0; i < flat.size(); ++i) EXPECT_EQ(d.values[i] != 0, i % 16 < 4) << i;
}

TEST(PoolSparse, SizeMatchesTheDocumentedLayout) {
  for (std::size_t n : {std::size_t(0), std::size_t(1), std::size_t(4095), std::size_t(4096),
                        std::size_t(10000), std::size_t(1000000)})
    for (std::uint32_t bits : {2u, 4u, 8u})
      for (std::uint32_t chunk : {16u, 256u, 4096u})
        for (double density : {0.016, 0.3}) {
          const CodecParams p = sparse(bits, chunk, density);
          const std::size_t want = formula_bytes(n, chunk, bits, density);
          EXPECT_EQ(encoded_size(p, n), want) << n << " " << bits << " " << chunk;
          if (n <= 10000) {
            EXPECT_EQ(encode(std::vector<float>(n, 1.0f), kOrigin, p).size(), want);
          }
        }
  // The figure in compress.h's header comment: 1M elements, density 0.016,
  // 2 bits, chunk 4096.
  EXPECT_EQ(encoded_size(sparse(2, 4096), 1000000), 28635u);
}

TEST(PoolSparse, NonFiniteChunksDecodeToNaN) {
  std::vector<float> x(100, 0.5f);
  x[40] = NAN;
  x[98] = -INFINITY;
  const Decoded d = decode(encode(x, kOrigin, sparse(4, 32)), x.size());
  EXPECT_FALSE(check_finite(d.values).empty());
  for (std::size_t i = 32; i < 64; ++i) EXPECT_TRUE(std::isnan(d.values[i])) << i;
  for (std::size_t i = 96; i < 100; ++i) EXPECT_TRUE(std::isnan(d.values[i])) << i;
  for (std::size_t i = 0; i < 32; ++i) EXPECT_TRUE(std::isfinite(d.values[i])) << i;
  for (std::size_t i = 64; i < 96; ++i) EXPECT_TRUE(std::isfinite(d.values[i])) << i;
}

TEST(PoolSparse, HandBuiltUploadsDecodeAndMalformedOnesAreRefused) {
  // Chunk 16, 8-bit values, k = 2: step 2^-3; +5 * 2^-3 at index 1, -7 * 2^-3 at index 9.
  const std::string good = wire(16, 16, 2, 0, 8, rec2(-3, 1, 9, 5, 0x80 | 7));
  const Decoded d = decode(good, 16);
  for (std::size_t i = 0; i < 16; ++i)
    EXPECT_EQ(d.values[i], i == 1 ? 0.625f : i == 9 ? -0.875f : 0.0f) << i;
  EXPECT_EQ(d.params.value_bits, 8u);
  EXPECT_EQ(d.params.chunk, 16u);
  EXPECT_EQ(d.kept, 2u);

  expect_refused(wire(16, 16, 2, 0, 8, rec2(-3, 9, 1, 5, 7)), 16, "not strictly ascending");
  expect_refused(wire(16, 16, 2, 0, 8, rec2(-3, 4, 4, 5, 7)), 16, "not strictly ascending");
  // n = 12: one shorter chunk of 12; index 13 lies outside it.
  expect_refused(wire(12, 16, 2, 2, 8, rec2(-3, 1, 13, 5, 7)), 12, "outside");
  expect_refused(wire(16, 16, 2, 0, 8, rec2(126, 1, 9, 5, 7)), 16, "exponent");
  expect_refused(wire(16, 16, 2, 0, 8, rec2(-3, 1, 9, 0x80, 7)), 16, "negative zero");
  expect_refused(wire(16, 16, 2, 0, 8, rec2(-128, 1, 9, 0, 7)), 16, "zero-chunk marker");
  expect_refused(wire(16, 16, 2, 0, 8, rec2(127, 1, 9, 1, 0)), 16, "non-finite-chunk marker");
  // Chunk 16, 2-bit values, k = 1: 6 bits, so 2 bits of padding that must be zero.
  EXPECT_NO_THROW(decode(wire(16, 16, 1, 0, 2, std::string{char(0), char(3 | (1 << 4))}), 16));
  expect_refused(wire(16, 16, 1, 0, 2, std::string{char(0), char(3 | (1 << 4) | 0x80)}), 16,
                 "padding");
  // Every sub-header and header field.
  expect_refused(wire(16, 16, 2, 0, 3, rec2(-3, 1, 9, 5, 7)), 16, "value bits");
  expect_refused(wire(16, 16, 2, 0, 16, rec2(-3, 1, 9, 5, 7)), 16, "value bits");
  expect_refused(wire(16, 16, 2, 0, 8, rec2(-3, 1, 9, 5, 7), 1), 16, "reserved");
  expect_refused(wire(16, 16, 0, 0, 8, rec2(-3, 1, 9, 5, 7)), 16, "k 0");
  expect_refused(wire(16, 16, 17, 0, 8, rec2(-3, 1, 9, 5, 7)), 16, "k 17");
  expect_refused(wire(16, 16, 2, 1, 8, rec2(-3, 1, 9, 5, 7)), 16, "last chunk");
  expect_refused(wire(12, 16, 2, 13, 8, rec2(-3, 1, 9, 5, 7)), 12, "last chunk");
  expect_refused(wire(12, 16, 2, 0, 8, rec2(-3, 1, 9, 5, 7)), 12, "last chunk");
  expect_refused(wire(16, 24, 2, 0, 8, rec2(-3, 1, 9, 5, 7)), 16, "chunk size 24");
  expect_refused(wire(16, 8, 2, 0, 8, rec2(-3, 1, 9, 5, 7)), 16, "chunk size 8");
  expect_refused(wire(16, 1u << 21, 2, 0, 8, rec2(-3, 1, 9, 5, 7)), 16, "chunk size");
  expect_refused(wire(16, 16, 2, 0, 8, rec2(-3, 1, 9, 5, 7).substr(0, 3)), 16, "truncated");
  expect_refused(wire(16, 16, 2, 0, 8, rec2(-3, 1, 9, 5, 7) + "x"), 16, "padded");
  expect_refused(good.substr(0, 60), 16, "truncated");
  // A forged element count with the biggest chunks: the size overflows or
  // mismatches, never wraps.
  expect_refused(wire(~std::size_t(0), 1u << 20, 1u << 20, (1u << 20) - 1, 8, ""), ~std::size_t(0),
                 "sparse upload");
  std::string flipped = good;
  flipped[70] ^= 1;
  expect_refused(flipped, 16, "checksum");
  expect_refused(good, 17, "shape mismatch");
}

TEST(PoolSparse, CoordinatorComparesCodecSettings) {
  const std::size_t n = 10000;
  const std::vector<float> x(n, 1.0f);
  const CodecParams job = sparse(2, 4096);
  EXPECT_EQ(codec_mismatch(decode(encode(x, kOrigin, job), n), job, n), "");
  // Fewer kept elements is allowed, more is not.
  EXPECT_EQ(codec_mismatch(decode(encode(x, kOrigin, sparse(2, 4096, 0.001)), n), job, n), "");
  EXPECT_NE(
      codec_mismatch(decode(encode(x, kOrigin, sparse(2, 4096, 0.02)), n), job, n).find("allows"),
      std::string::npos);
  EXPECT_NE(codec_mismatch(decode(encode(x, kOrigin, sparse(4, 4096)), n), job, n), "");
  EXPECT_NE(codec_mismatch(decode(encode(x, kOrigin, sparse(2, 2048)), n), job, n), "");
  EXPECT_NE(codec_mismatch(decode(encode(x, kOrigin, {Codec::kInt8}), n), job, n), "");
  const CodecParams int8{Codec::kInt8, 256};
  EXPECT_EQ(codec_mismatch(decode(encode(x, kOrigin, int8), n), int8, n), "");
  EXPECT_NE(codec_mismatch(decode(encode(x, kOrigin, {Codec::kInt8, 128}), n), int8, n), "");
  EXPECT_NE(codec_mismatch(decode(encode(x, kOrigin, {Codec::kNone}), n), int8, n), "");
}

TEST(PoolSparse, JobFieldsParseAndNameBadValues) {
  const nlohmann::json j = {
      {"train_data", "x_*.bin"},
      {"model",
       {{"layers", 1}, {"heads", 2}, {"channels", 32}, {"vocab", 256}, {"max_seq_len", 32}}},
      {"seq_len", 32}};
  const JobSpec def = parse_job(j);
  EXPECT_EQ(def.codec.codec, Codec::kInt8);
  EXPECT_FALSE(def.error_feedback);
  auto with = [&](nlohmann::json extra) {
    auto k = j;
    k.update(extra);
    return k;
  };
  const JobSpec s = parse_job(with({{"compression", "sparse"}}));
  EXPECT_EQ(s.codec, sparse(2, 4096, 0.016));
  EXPECT_TRUE(s.error_feedback); // on by default for sparse
  const JobSpec t = parse_job(with({{"compression", "sparse"},
                                    {"topk_density", 0.05},
                                    {"value_bits", 4},
                                    {"chunk_size", 1024},
                                    {"error_feedback", false}}));
  EXPECT_EQ(t.codec, sparse(4, 1024, 0.05));
  EXPECT_FALSE(t.error_feedback);
  EXPECT_TRUE(parse_job(with({{"error_feedback", true}})).error_feedback); // int8 allows it
  // The stored form carries every field and parses back to the same job.
  const nlohmann::json stored = job_to_json(t);
  for (const char* key :
       {"compression", "block_size", "topk_density", "value_bits", "chunk_size", "error_feedback"})
    EXPECT_TRUE(stored.contains(key)) << key;
  const JobSpec back = parse_job(stored);
  EXPECT_EQ(back.codec, t.codec);
  EXPECT_EQ(back.error_feedback, t.error_feedback);

  auto refused = [&](const char* key, const nlohmann::json& v, const std::string& field = "") {
    auto k = with({{"compression", "sparse"}});
    k[key] = v;
    try {
      parse_job(k);
      ADD_FAILURE() << key << " = " << v.dump() << " accepted";
    } catch (const InputError& e) {
      EXPECT_EQ(std::string(e.what()).rfind("job." + (field.empty() ? key : field) + ": ", 0), 0u)
          << e.what();
    }
  };
  refused("compression", "zstd");
  refused("topk_density", 0);
  refused("topk_density", 1.5);
  refused("topk_density", "0.1");
  refused("value_bits", 3);
  refused("value_bits", 16);
  refused("value_bits", 4.0);
  refused("chunk_size", 1000);
  refused("chunk_size", 8);
  refused("chunk_size", 1 << 21);
  refused("error_feedback", 1);
  auto none = with({{"compression", "none"}, {"error_feedback", true}});
  EXPECT_THROW(parse_job(none), InputError);
}

TEST(PoolSparse, AssignmentCarriesTheCodecSettings) {
  Assignment a;
  a.job = 1, a.name = "j", a.rounds = 3, a.slots = 2, a.inner_steps = 4, a.param_count = 100;
  a.train.batch_size = 1, a.train.seq_len = 1, a.train.lr = 1e-3;
  a.codec = sparse(8, 512, 0.03);
  a.error_feedback = true;
  WorkResponse w;
  w.assignment = a;
  const nlohmann::json j = w;
  const WorkResponse back = j.get<WorkResponse>();
  ASSERT_TRUE(back.assignment);
  EXPECT_EQ(back.assignment->codec, a.codec);
  EXPECT_TRUE(back.assignment->error_feedback);
  auto refused = [&](const char* key, const nlohmann::json& v) {
    nlohmann::json k = j;
    k[key] = v;
    try {
      (void)k.get<WorkResponse>();
      ADD_FAILURE() << key << " accepted";
    } catch (const ProtocolError& e) {
      EXPECT_EQ(std::string(e.what()).rfind(std::string(key) + ": ", 0), 0u) << e.what();
    }
  };
  refused("compression", "gzip");
  refused("value_bits", 5);
  refused("chunk_size", 100);
  refused("topk_density", 0);
  refused("error_feedback", "yes");
  nlohmann::json missing = j;
  missing.erase("chunk_size");
  EXPECT_THROW((void)missing.get<WorkResponse>(), ProtocolError);
}

namespace {
struct TempDir {
  std::string path;
  TempDir() {
    path = (fs::temp_directory_path() /
            ("myelin_residual_" + std::to_string(getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name()))
               .string();
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
};
} // namespace

TEST(PoolResidual, FileRoundTripsAndMismatchesAreDroppedWithAReason) {
  TempDir t;
  const std::string f = t.path + "/residual.bin";
  std::vector<float> r = {1.5f, -0.0f, 3e-40f, -7.25f};
  save_residual(f, 4, 9, r);
  std::string why = "x";
  const auto back = load_residual(f, 4, 9, r.size(), why);
  ASSERT_TRUE(back);
  EXPECT_EQ(why, "");
  for (std::size_t i = 0; i < r.size(); ++i) EXPECT_EQ(bits_of((*back)[i]), bits_of(r[i]));
  EXPECT_FALSE(load_residual(f, 5, 9, r.size(), why));
  EXPECT_NE(why.find("job 4"), std::string::npos) << why;
  EXPECT_FALSE(load_residual(f, 4, 10, r.size(), why));
  EXPECT_NE(why.find("round 9"), std::string::npos) << why;
  EXPECT_FALSE(load_residual(f, 4, 9, r.size() + 1, why));
  EXPECT_NE(why.find("elements"), std::string::npos) << why;
  EXPECT_FALSE(load_residual(t.path + "/none.bin", 4, 9, r.size(), why));
  EXPECT_EQ(why, ""); // no file: nothing dropped
  {
    std::fstream io(f, std::ios::in | std::ios::out | std::ios::binary);
    io.seekp(kResidualHeaderBytes + 5);
    io.put('\x55');
  }
  EXPECT_FALSE(load_residual(f, 4, 9, r.size(), why));
  EXPECT_NE(why.find("checksum"), std::string::npos) << why;
  fs::resize_file(f, kResidualHeaderBytes + 3);
  EXPECT_FALSE(load_residual(f, 4, 9, r.size(), why));
  EXPECT_NE(why.find("bytes"), std::string::npos) << why;
}

TEST(PoolResidual, ErrorFeedbackSurvivesARestartOnlyForTheNextRound) {
  TempDir t;
  const std::vector<float> r = {0.25f, -1.0f, 0.0f};
  {
    ErrorFeedback ef;
    std::string note;
    EXPECT_EQ(ef.take(t.path, 2, 0, 3, note), std::vector<float>(3, 0.0f));
    EXPECT_EQ(note, "");
    EXPECT_EQ(ef.keep(t.path, 2, 1, r), "");
    EXPECT_EQ(ef.take(t.path, 2, 1, 3, note), r); // from memory
    EXPECT_EQ(note, "");
  }
  std::string dropped;
  { // a restarted contributor about to upload round 1: the file's residual
    ErrorFeedback ef;
    EXPECT_EQ(ef.take(t.path, 2, 1, 3, dropped), r);
    EXPECT_EQ(dropped, "residual for round 1 read from " + ErrorFeedback::file_in(t.path));
  }
  { // ... about to upload round 2 (it skipped round 1): dropped
    ErrorFeedback ef;
    EXPECT_EQ(ef.take(t.path, 2, 2, 3, dropped), std::vector<float>(3, 0.0f));
    EXPECT_EQ(dropped.rfind("residual dropped: ", 0), 0u) << dropped;
    EXPECT_NE(dropped.find("round 1"), std::string::npos) << dropped;
  }
  { // in memory, a skipped round drops it too
    ErrorFeedback ef;
    ASSERT_EQ(ef.keep(t.path, 2, 1, r), "");
    EXPECT_EQ(ef.take(t.path, 2, 3, 3, dropped), std::vector<float>(3, 0.0f));
    EXPECT_EQ(dropped.rfind("residual dropped: ", 0), 0u) << dropped;
    EXPECT_NE(dropped.find("round 1"), std::string::npos) << dropped;
    // A non-finite residual is never kept, and its file goes.
    EXPECT_NE(ef.keep(t.path, 2, 4, {1.0f, NAN, 0.0f}), "");
    EXPECT_FALSE(fs::exists(ErrorFeedback::file_in(t.path)));
    EXPECT_EQ(ef.take(t.path, 2, 4, 3, dropped), std::vector<float>(3, 0.0f));
  }
}
