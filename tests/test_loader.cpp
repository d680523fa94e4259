// The data loader: llm.c's sequential order, the split of a global batch
// across data-parallel ranks by rows, and seeded shuffling.
#include <gtest/gtest.h>

#include <filesystem>
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
    EXPECT_NE(std::string(e.what()).find("token 200 at position 200"), std::string::npos) << e.what();
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
    const long x = std::stol(line.substr(0, plus)), y = std::stol(line.substr(plus + 1, eq - plus - 1));
    std::string c = line.substr(eq + 1);
    std::reverse(c.begin(), c.end());
    EXPECT_EQ(std::stol(c), x + y) << line;
    pos = nl + 1;
    ++lines;
  }
  EXPECT_EQ(lines, 50);
}
