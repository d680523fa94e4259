// The embedding backward's token grouping built on the device
// (cuda::build_encoder_buckets_device) against the host version
// (cuda::build_encoder_buckets), for the simulation (tests/sim) and a GPU
// (tests/gpu): the same distinct ids, offsets and positions, every offset past
// the last bucket equal to N.
#pragma once

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "kernels/cuda/ops_cuda.h"

namespace myelin::bucket_check {

// What the device wrote: tokens [N], offsets [N + 1], positions [N].
struct DeviceBuckets {
  std::vector<int> tokens, offsets, positions;
};

// Token sequences with the shapes that matter: one token; all equal; all
// distinct (reversed); ids near 2^31 (the key's upper half); lengths around
// powers of two and past one scan chunk of 1024; many repeats.
inline std::vector<std::vector<int>> bucket_cases() {
  std::vector<std::vector<int>> cases = {{5}, {7, 7}, {3, 1}, std::vector<int>(33, 9)};
  std::vector<int> rev(257);
  for (std::size_t i = 0; i < rev.size(); ++i) rev[i] = int(rev.size() - i);
  cases.push_back(rev);
  cases.push_back({2147483646, 0, 2147483646, 17, 0});
  std::mt19937 g(5);
  for (int n : {64, 1000, 1024, 1025, 3001}) {
    std::uniform_int_distribution<int> u(0, n / 3 + 1);
    std::vector<int> t(static_cast<std::size_t>(n));
    for (auto& x : t) x = u(g) % 5 == 0 ? 2 : u(g); // a frequent token among rare ones
    cases.push_back(t);
  }
  return cases;
}

// build(tokens) runs the device grouping and returns what it wrote.
template <class Build> void expect_device_buckets_match_host(Build build) {
  for (const auto& tok : bucket_cases()) {
    const int N = int(tok.size());
    const std::string tag = "N=" + std::to_string(N);
    cuda::EncoderBuckets ref;
    cuda::build_encoder_buckets(tok.data(), N, ref);
    const DeviceBuckets got = build(tok);
    const int k = ref.num_buckets();
    ASSERT_EQ(got.tokens.size(), std::size_t(N)) << tag;
    ASSERT_EQ(got.offsets.size(), std::size_t(N) + 1) << tag;
    EXPECT_EQ(got.positions, ref.positions) << tag;
    EXPECT_EQ(std::vector<int>(got.tokens.begin(), got.tokens.begin() + k), ref.tokens) << tag;
    EXPECT_EQ(std::vector<int>(got.offsets.begin(), got.offsets.begin() + k + 1), ref.offsets)
        << tag;
    for (int b = k; b <= N; ++b) ASSERT_EQ(got.offsets[std::size_t(b)], N) << tag << " b=" << b;
  }
}

} // namespace myelin::bucket_check
