#include "runtime/io/xxh64.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>

#include "runtime/util/error.h"

namespace myelin {
namespace {
constexpr std::uint64_t kP1 = 0x9E3779B185EBCA87ull;
constexpr std::uint64_t kP2 = 0xC2B2AE3D27D4EB4Full;
constexpr std::uint64_t kP3 = 0x165667B19E3779F9ull;
constexpr std::uint64_t kP4 = 0x85EBCA77C2B2AE63ull;
constexpr std::uint64_t kP5 = 0x27D4EB2F165667C5ull;

constexpr std::uint64_t rotl(std::uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
std::uint64_t read64(const unsigned char* p) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i]; // little-endian on every host
  return v;
}
std::uint32_t read32(const unsigned char* p) {
  return std::uint32_t(p[0]) | std::uint32_t(p[1]) << 8 | std::uint32_t(p[2]) << 16 |
         std::uint32_t(p[3]) << 24;
}
constexpr std::uint64_t lane_round(std::uint64_t acc, std::uint64_t lane) {
  return rotl(acc + lane * kP2, 31) * kP1;
}
constexpr std::uint64_t merge(std::uint64_t h, std::uint64_t acc) {
  return (h ^ lane_round(0, acc)) * kP1 + kP4;
}
void stripe(std::array<std::uint64_t, 4>& acc, const unsigned char* p) {
  for (int i = 0; i < 4; ++i) acc[i] = lane_round(acc[i], read64(p + 8 * i));
}
} // namespace

Xxh64::Xxh64() : acc_{kP1 + kP2, kP2, 0, 0 - kP1} {}

void Xxh64::add(const void* data, std::size_t n) {
  if (n == 0) return; // an empty span's data() may be null, which memcpy may not take
  auto* p = static_cast<const unsigned char*>(data);
  total_ += n;
  if (buffered_ > 0) {
    const std::size_t take = std::min(n, buf_.size() - buffered_);
    std::memcpy(buf_.data() + buffered_, p, take);
    buffered_ += take;
    p += take;
    n -= take;
    if (buffered_ < buf_.size()) return;
    stripe(acc_, buf_.data());
    buffered_ = 0;
  }
  for (; n >= 32; p += 32, n -= 32) stripe(acc_, p);
  std::memcpy(buf_.data(), p, n);
  buffered_ = n;
}

std::uint64_t Xxh64::digest() const {
  std::uint64_t h;
  if (total_ >= 32) {
    h = rotl(acc_[0], 1) + rotl(acc_[1], 7) + rotl(acc_[2], 12) + rotl(acc_[3], 18);
    for (const auto a : acc_) h = merge(h, a);
  } else {
    h = kP5; // acc_[2] holds the seed (0)
  }
  h += total_;
  const unsigned char* p = buf_.data();
  std::size_t n = buffered_;
  for (; n >= 8; p += 8, n -= 8) h = rotl(h ^ lane_round(0, read64(p)), 27) * kP1 + kP4;
  if (n >= 4) {
    h = rotl(h ^ (std::uint64_t(read32(p)) * kP1), 23) * kP2 + kP3;
    p += 4;
    n -= 4;
  }
  for (; n > 0; ++p, --n) h = rotl(h ^ (*p * kP5), 11) * kP1;
  h ^= h >> 33;
  h *= kP2;
  h ^= h >> 29;
  h *= kP3;
  h ^= h >> 32;
  return h;
}

std::uint64_t xxh64(const void* data, std::size_t n) {
  Xxh64 x;
  x.add(data, n);
  return x.digest();
}

std::uint64_t xxh64_file(const std::string& path) {
  struct Closer {
    void operator()(std::FILE* f) const { std::fclose(f); }
  };
  std::unique_ptr<std::FILE, Closer> f(std::fopen(path.c_str(), "rb"));
  if (!f) throw InputError(path + ": cannot open: " + std::strerror(errno));
  std::vector<unsigned char> chunk(std::size_t(1) << 20);
  Xxh64 x;
  std::size_t got;
  while ((got = std::fread(chunk.data(), 1, chunk.size(), f.get())) > 0) x.add(chunk.data(), got);
  if (std::ferror(f.get())) throw InputError(path + ": read error: " + std::strerror(errno));
  return x.digest();
}

std::string xxh64_hex(std::uint64_t h) {
  char s[17];
  std::snprintf(s, sizeof(s), "%016llx", static_cast<unsigned long long>(h));
  return s;
}

std::optional<std::uint64_t> parse_xxh64_hex(std::string_view s) {
  if (s.size() != 16) return std::nullopt;
  std::uint64_t v = 0;
  for (const char c : s) {
    int d;
    if (c >= '0' && c <= '9')
      d = c - '0';
    else if (c >= 'a' && c <= 'f')
      d = c - 'a' + 10;
    else
      return std::nullopt;
    v = (v << 4) | std::uint64_t(d);
  }
  return v;
}

} // namespace myelin
