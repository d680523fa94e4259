// The data loader: llm.c's sequential order, the split of a global batch
// across data-parallel ranks by rows, and seeded shuffling.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "runtime/data/loader.h"
#include "runtime/data/shard.h"
#include "runtime/data/synthetic.h"
#include "runtime/util/error.h"

namespace fs = std::filesystem;
using namespace myelin;

namespace {
std::string make_shards(const std::string& name, std::vector<std::size_t> sizes) {
  auto dir = fs::temp_directory_path() / ("myelin_loader_" + name + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::uint16_t next = 0;
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    std::vector<std::uint16_t> t(sizes[i]);
    for (auto& x : t) x = next++ % 60000;
    write_shard((dir / ("s_" + std::to_string(i) + ".bin")).string(), t);
  }
  return (dir / "s_*.bin").string();
}
} // namespace

TEST(Loader, SequentialOrderMatchesLlmc) {
  // Shard 0: 100 tokens -> (100-1)/(2*8) = 6 batches; shard 1: 40 tokens -> 2 batches.
  const auto pat = make_shards("seq", {100, 40});
  DataLoader dl(pat, "--train-data", 2, 8, 0, 1, 65536, false, 0);
  EXPECT_EQ(dl.batches_per_epoch(), 8u);
  std::vector<int> in(16), tg(16);
  for (int k = 0; k < 6; ++k) {
    dl.next(in.data(), tg.data());
    for (int i = 0; i < 16; ++i) {
      EXPECT_EQ(in[i], k * 16 + i);
      EXPECT_EQ(tg[i], k * 16 + i + 1);
    }
  }
  for (int k = 0; k < 2; ++k) { // second shard starts at global token 100
    dl.next(in.data(), tg.data());
    EXPECT_EQ(in[0], 100 + k * 16);
    EXPECT_EQ(tg[15], 100 + k * 16 + 16);
  }
  dl.next(in.data(), tg.data()); // wraps to the first shard
  EXPECT_EQ(in[0], 0);
  EXPECT_EQ(dl.position().epoch, 1u);
}

TEST(Loader, DataParallelRanksSplitTheGlobalBatchByRows) {
  const auto pat = make_shards("dp", {257});
  DataLoader whole(pat, "--train-data", 4, 8, 0, 1, 65536, false, 0);
  DataLoader r0(pat, "--train-data", 2, 8, 0, 2, 65536, false, 0);
  DataLoader r1(pat, "--train-data", 2, 8, 1, 2, 65536, false, 0);
  std::vector<int> a(32), at(32), b(16), bt(16), c(16), ct(16);
  for (int step = 0; step < 10; ++step) {
    whole.next(a.data(), at.data());
    r0.next(b.data(), bt.data());
    r1.next(c.data(), ct.data());
    for (int i = 0; i < 16; ++i) {
      EXPECT_EQ(a[i], b[i]);
      EXPECT_EQ(a[16 + i], c[i]);
      EXPECT_EQ(at[16 + i], ct[i]);
    }
  }
}

// What `myelin train --data-slice R/N --data-start-batch K` under --dp D sets
// up: loader rank R*D + d of N*D with B/D rows, at position_at(K). The D ranks
// together read exactly the rows of slice R of N with B rows from batch K.
TEST(Loader, DataSliceSplitOverDpRanksAndStartBatch) {
  const auto pat = make_shards("slice", {300, 200}); // 3 + 2 global batches of 3*4*8 tokens
  const int N = 3, R = 1, D = 2, B = 4, T = 8;
  DataLoader slice(pat, "--train-data", B, T, R, N, 65536, false, 0);
  DataLoader d0(pat, "--train-data", B / D, T, R * D + 0, N * D, 65536, false, 0);
  DataLoader d1(pat, "--train-data", B / D, T, R * D + 1, N * D, 65536, false, 0);
  ASSERT_EQ(slice.batches_per_epoch(), 5u);
  const std::uint64_t K = 11; // epoch 2, shard 0, batch 1
  const auto p = slice.position_at(K);
  EXPECT_EQ(p.epoch, 2u);
  EXPECT_EQ(p.shard, 0u);
  EXPECT_EQ(p.batch, 1u);
  EXPECT_EQ(slice.position_at(4).shard, 1u);
  EXPECT_EQ(slice.position_at(4).batch, 1u);
  slice.set_position(slice.position_at(K));
  d0.set_position(d0.position_at(K));
  d1.set_position(d1.position_at(K));
  std::vector<int> a(B * T), at(B * T), b(B * T / 2), bt(B * T / 2), c(B * T / 2), ct(B * T / 2);
  for (int step = 0; step < 6; ++step) {
    slice.next(a.data(), at.data());
    d0.next(b.data(), bt.data());
    d1.next(c.data(), ct.data());
    for (int i = 0; i < B * T / 2; ++i) {
      EXPECT_EQ(a[i], b[i]);
      EXPECT_EQ(at[i], bt[i]);
      EXPECT_EQ(a[B * T / 2 + i], c[i]);
      EXPECT_EQ(at[B * T / 2 + i], ct[i]);
    }
  }
}

TEST(Loader, ShuffleIsSeededAndCoversEveryBatchOncePerEpoch) {
  const auto pat = make_shards("shuf", {161, 81, 97});
  DataLoader a(pat, "--train-data", 1, 16, 0, 1, 65536, true, 5);
  DataLoader b(pat, "--train-data", 1, 16, 0, 1, 65536, true, 5);
  DataLoader c(pat, "--train-data", 1, 16, 0, 1, 65536, true, 6);
  const auto n = a.batches_per_epoch();
  EXPECT_EQ(n, 10u + 5u + 6u);
  std::vector<int> x(16), xt(16), y(16), yt(16), z(16), zt(16);
  std::set<int> starts;
  bool differs = false;
  for (std::uint64_t i = 0; i < n; ++i) {
    a.next(x.data(), xt.data());
    b.next(y.data(), yt.data());
    c.next(z.data(), zt.data());
    EXPECT_EQ(x, y);
    differs |= x != z;
    starts.insert(x[0]);
  }
  EXPECT_EQ(starts.size(), n);
  EXPECT_TRUE(differs);
  // Restoring a saved position continues identically.
  const auto pos = a.position();
  a.next(x.data(), xt.data());
  b.set_position(pos);
  b.next(y.data(), yt.data());
  EXPECT_EQ(x, y);
}

TEST(Loader, BadInputs) {
  EXPECT_THROW(DataLoader("/nonexistent/*.bin", "--train-data", 1, 8, 0, 1, 256, false, 0),
               InputError);
  const auto pat = make_shards("small", {10});
  try {
    DataLoader dl(pat, "--val-data", 2, 8, 0, 1, 65536, false, 0);
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("fewer than one global batch"), std::string::npos);
  }
  // Token ids >= vocab are caught when the shard is read, naming the file.
  const auto big = make_shards("vocab", {300});
  std::vector<int> in(8), tg(8);
  DataLoader ok(big, "--train-data", 1, 8, 0, 1, 300, false, 0);
  ok.next(in.data(), tg.data());
  DataLoader bad(big, "--train-data", 1, 8, 0, 1, 200, false, 0);
  try {
    bad.next(in.data(), tg.data());
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("token 200 at position 200"), std::string::npos)
        << e.what();
  }
}

TEST(Synthetic, AdditionIsDeterministicAndCorrect) {
  const auto a = synthetic_addition(50, 3, 9), b = synthetic_addition(50, 3, 9);
  EXPECT_EQ(a, b);
  std::size_t pos = 0;
  int lines = 0;
  while (pos < a.size()) {
    const auto nl = a.find('\n', pos);
    const std::string line = a.substr(pos, nl - pos);
    const auto plus = line.find('+'), eq = line.find('=');
    const long x = std::stol(line.substr(0, plus)),
               y = std::stol(line.substr(plus + 1, eq - plus - 1));
    std::string c = line.substr(eq + 1);
    std::reverse(c.begin(), c.end());
    EXPECT_EQ(std::stol(c), x + y) << line;
    pos = nl + 1;
    ++lines;
  }
  EXPECT_EQ(lines, 50);
}

TEST(Loader, Uint32ShardsRoundTripAndCarryTokensAbove65535) {
  auto dir = fs::temp_directory_path() / ("myelin_loader_u32_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string path = (dir / "w_0.bin").string();
  std::vector<std::uint32_t> t(49);
  for (std::size_t i = 0; i < t.size(); ++i) t[i] = 65530 + std::uint32_t(i) * 97; // up to 70186
  write_shard32(path, t);
  EXPECT_EQ(shard_token_count(path), t.size());
  EXPECT_EQ(fs::file_size(path), 1024 + 4 * t.size());
  const TokenShard s = read_token_shard(path, 70187);
  ASSERT_TRUE(s.wide);
  EXPECT_EQ(s.u32, t);
  try {
    read_token_shard(path, 70186);
    FAIL() << "a token at the vocabulary size was accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("w_0.bin: token 70186 at position 48"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(read_shard(path, 0), InputError); // a uint16 reader refuses it by name
  // The loader hands the ids through unchanged: 3 batches of 2 x 8.
  DataLoader dl((dir / "w_*.bin").string(), "--train-data", 2, 8, 0, 1, 70187, false, 0);
  EXPECT_EQ(dl.batches_per_epoch(), 3u);
  std::vector<int> in(16), tg(16);
  for (int k = 0; k < 3; ++k) {
    dl.next(in.data(), tg.data());
    for (int i = 0; i < 16; ++i) {
      EXPECT_EQ(in[i], int(t[k * 16 + i]));
      EXPECT_EQ(tg[i], int(t[k * 16 + i + 1]));
    }
  }
  // Magic and version go together: a uint32 magic with version 1 is refused.
  std::vector<int> h(256, 0);
  h[0] = kShard32Magic;
  h[1] = 1;
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(h.data()), 1024);
  EXPECT_THROW(shard_token_count(path), InputError);
}
