// Training shards between a real coordinator (`myelin pool serve` on
// 127.0.0.1, a child process) and the contributor's shard cache: the
// assignment carries each shard's hash; an interrupted download resumes with
// a Range request (fewer bytes fetched than the shard holds); damaged cached
// or partial files are caught by their hash and fetched again; a shard that
// changed on the coordinator's disk after submission is refused (409).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <thread>

#include "runtime/data/shard.h"
#include "runtime/io/xxh64.h"
#include "runtime/pool/client.h"
#include "runtime/pool/job.h"
#include "runtime/pool/protocol.h"
#include "runtime/pool/shard_cache.h"

namespace fs = std::filesystem;
using nlohmann::json;
using namespace myelin;
using namespace myelin::pool;

extern char** environ;

namespace {

std::string run_out(const std::string& cmd) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return out;
  char buf[256];
  while (fgets(buf, sizeof(buf), p)) out += buf;
  if (pclose(p) != 0) return "";
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  return out;
}

// A coordinator with one job over one training shard of 200k tokens.
struct Coordinator {
  fs::path dir;
  pid_t pid = -1;
  std::string url, admin, tok, shard;

  Coordinator() {
    dir = fs::temp_directory_path() /
          ("myelin_pool_shards_" + std::to_string(getpid()) + "_" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir);
    fs::create_directories(dir / "data");
    shard = (dir / "data" / "train_000.bin").string();
    std::mt19937 rng(7);
    std::vector<std::uint16_t> toks(200000);
    for (auto& t : toks) t = std::uint16_t(rng() % 256);
    write_shard(shard, toks);
    const std::string st = (dir / "st").string();
    const std::string bin = MYELIN_BINARY;
    admin = run_out(bin + " pool token create --state-dir " + st + " --name admin --admin");
    tok = run_out(bin + " pool token create --state-dir " + st + " --name vol");
    std::vector<std::string> args = {bin,           "pool",        "serve", "--listen",
                                     "127.0.0.1:0", "--state-dir", st,      "--quiet"};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, (dir / "serve.log").c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    if (posix_spawn(&pid, bin.c_str(), &fa, nullptr, argv.data(), environ) != 0) pid = -1;
    posix_spawn_file_actions_destroy(&fa);
    for (int i = 0; i < 400 && !fs::exists(dir / "st" / "port"); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    std::ifstream pf(dir / "st" / "port");
    std::string port;
    pf >> port;
    url = "http://127.0.0.1:" + port;
  }
  ~Coordinator() {
    if (pid > 0) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
    fs::remove_all(dir);
  }
  std::string log() const {
    std::ifstream f(dir / "serve.log");
    return std::string(std::istreambuf_iterator<char>(f), {});
  }
  ClientOptions client(const std::string& token, std::uint64_t limit = 0) const {
    ClientOptions o;
    o.url = url;
    o.token = token;
    o.timeout_s = 30;
    o.debug_max_download_bytes = limit;
    return o;
  }
  // Submits the job and returns the shard as a contributor's assignment names it.
  ShardInfo assigned_shard() {
    PoolClient a(client(admin));
    const json job = {
        {"name", "shards"},
        {"model",
         {{"layers", 1}, {"heads", 2}, {"channels", 32}, {"vocab", 256}, {"max_seq_len", 32}}},
        {"train_data", (dir / "data" / "train_*.bin").string()},
        {"batch_size", 2},
        {"seq_len", 32},
        {"inner_steps", 1},
        {"rounds", 1},
        {"max_contributors", 1}};
    a.post_json("/api/jobs", job);
    PoolClient c(client(tok));
    JoinRequest jr;
    jr.name = "tester";
    jr.hardware.device = "cpu";
    const auto j = c.post_json("/api/join", jr).get<JoinResponse>();
    const auto w =
        c.post_json("/api/work", ContributorRequest{j.contributor_id}).get<WorkResponse>();
    if (!w.assignment || w.assignment->shards.size() != 1) return {};
    return w.assignment->shards[0];
  }
};

ShardCache::Download from(PoolClient& c) {
  return [&c](const std::string& part) {
    return std::uint64_t(c.download_resume("/api/jobs/1/shards/0", part));
  };
}

void flip_byte(const std::string& path, std::uint64_t at) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(std::streamoff(at));
  char b = 0;
  f.read(&b, 1);
  b = char(b ^ 0x5a);
  f.seekp(std::streamoff(at));
  f.write(&b, 1);
}

} // namespace

TEST(PoolShards, ResumedHashCheckedAndRefetchedWhenDamaged) {
  Coordinator co;
  ASSERT_GT(co.pid, 0);
  ASSERT_FALSE(co.admin.empty());
  const ShardInfo s = co.assigned_shard();
  const std::uint64_t bytes = fs::file_size(co.shard);
  ASSERT_EQ(s.bytes, bytes) << co.log();
  ASSERT_EQ(s.hash, xxh64_file(co.shard));

  const std::string root = (co.dir / "cache").string();
  const std::string cached = root + "/" + xxh64_hex(s.hash) + ".bin";
  // A download cut after 100 kB leaves a .part and no cached file.
  constexpr std::uint64_t kCut = 100000;
  {
    PoolClient cut(co.client(co.tok, kCut));
    ShardCache cache(root, true);
    try {
      cache.fetch(s, from(cut));
      FAIL() << "the cut download succeeded";
    } catch (const PoolError& e) {
      EXPECT_EQ(e.status(), 0) << e.what();
    }
    EXPECT_EQ(fs::file_size(cached + ".part"), kCut);
    EXPECT_FALSE(fs::exists(cached));
  }
  PoolClient c(co.client(co.tok));
  {
    // A new process resumes: only the rest comes over the wire (the server
    // answers the Range request with 206).
    ShardCache cache(root, true);
    const auto r = cache.fetch(s, from(c));
    EXPECT_EQ(r.path, cached);
    EXPECT_EQ(r.downloaded, bytes - kCut);
    EXPECT_EQ(xxh64_file(cached), s.hash);
    EXPECT_FALSE(fs::exists(cached + ".part"));
    // Held and unchanged: nothing fetched, nothing hashed again.
    const auto hashed = cache.files_hashed();
    EXPECT_EQ(cache.fetch(s, from(c)).downloaded, 0u);
    EXPECT_EQ(cache.files_hashed(), hashed);
    // A flipped byte (same size) is caught and the shard fetched again.
    flip_byte(cached, bytes / 2);
    EXPECT_EQ(cache.fetch(s, from(c)).downloaded, bytes);
    EXPECT_EQ(xxh64_file(cached), s.hash);
  }
  {
    // A damaged .part (garbage where the start should be): the resumed
    // result fails its hash, is deleted and fetched whole.
    fs::remove(cached);
    std::ofstream(cached + ".part", std::ios::binary) << std::string(1000, 'x');
    ShardCache cache(root, true);
    EXPECT_EQ(cache.fetch(s, from(c)).downloaded, (bytes - 1000) + bytes);
    EXPECT_EQ(xxh64_file(cached), s.hash);
  }
  {
    // A new process with the shard cached: it hashes it once, fetches nothing.
    ShardCache cache(root, true);
    EXPECT_EQ(cache.fetch(s, from(c)).downloaded, 0u);
    EXPECT_EQ(cache.files_hashed(), 1u);
  }
  // A wrong announced hash: every try fails, then an error names the shard.
  ShardInfo wrong = s;
  wrong.hash ^= 1;
  ShardCache cache(root, true);
  try {
    cache.fetch(wrong, from(c));
    FAIL() << "a shard that never matches its hash was accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("shard 0"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("3 tries"), std::string::npos) << e.what();
  }
}

TEST(PoolShards, CoordinatorRefusesAShardThatChangedAfterSubmission) {
  Coordinator co;
  ASSERT_GT(co.pid, 0);
  const ShardInfo s = co.assigned_shard();
  ASSERT_EQ(s.hash, xxh64_file(co.shard)) << co.log();
  PoolClient c(co.client(co.tok));
  const std::string dest = (co.dir / "got.bin").string();
  EXPECT_EQ(c.download("/api/jobs/1/shards/0", dest), s.bytes);
  flip_byte(co.shard, 12345);
  try {
    c.download("/api/jobs/1/shards/0", dest);
    FAIL() << "a changed shard was served";
  } catch (const PoolError& e) {
    EXPECT_EQ(e.status(), 409) << e.what();
  }
  EXPECT_NE(co.log().find("changed on disk since the job was submitted"), std::string::npos)
      << co.log();
  // The same size and content again: served again.
  flip_byte(co.shard, 12345);
  EXPECT_EQ(c.download("/api/jobs/1/shards/0", dest), s.bytes);
  EXPECT_EQ(xxh64_file(dest), s.hash);
}

TEST(PoolShards, HashesParseStrictly) {
  EXPECT_EQ(parse_xxh64_hex("00000000000000ff"), std::optional<std::uint64_t>(255));
  EXPECT_EQ(parse_xxh64_hex(xxh64_hex(0x0123456789abcdefull)), 0x0123456789abcdefull);
  for (const char* bad : {"", "ff", "00000000000000FF", "0x000000000000ff", " 00000000000000f",
                          "00000000000000ff0", "-0000000000000ff", "000000000000000g"})
    EXPECT_FALSE(parse_xxh64_hex(bad)) << bad;

  WorkResponse w;
  w.assignment = Assignment{};
  auto& a = *w.assignment;
  a.job = 1, a.name = "j", a.rounds = 1, a.slots = 1, a.inner_steps = 1, a.param_count = 1;
  a.train.batch_size = a.train.seq_len = 1;
  a.shards = {{0, 10, 0xfeedull}};
  json j = w;
  EXPECT_EQ(j["shards"][0]["hash"], "000000000000feed");
  EXPECT_EQ(j.get<WorkResponse>().assignment->shards[0].hash, 0xfeedull);
  for (const json& bad : {json("000000000000FEED"), json(65261), json(nullptr)}) {
    j["shards"][0]["hash"] = bad;
    try {
      (void)j.get<WorkResponse>();
      ADD_FAILURE() << "accepted hash " << bad.dump();
    } catch (const ProtocolError& e) {
      EXPECT_NE(std::string(e.what()).find("shards[].hash"), std::string::npos) << e.what();
    }
  }
  j["shards"][0].erase("hash");
  EXPECT_THROW((void)j.get<WorkResponse>(), ProtocolError);

  // The job keeps one size and hash per training file, strictly typed.
  json job = {{"train_data", "d/*.bin"}, {"train_files", {"a.bin", "b.bin"}}};
  job["train_shards"] = {{{"bytes", 4}, {"hash", "00000000000000aa"}},
                         {{"bytes", 5}, {"hash", "00000000000000bb"}}};
  const JobSpec s = parse_job(job);
  ASSERT_EQ(s.train_shards.size(), 2u);
  EXPECT_EQ(s.train_shards[1].bytes, 5u);
  EXPECT_EQ(s.train_shards[1].hash, 0xbbu);
  EXPECT_EQ(parse_job(job_to_json(s)).train_shards[0].hash, 0xaau);
  job["train_shards"].erase(1);
  EXPECT_THROW(parse_job(job), myelin::InputError);
  job["train_shards"] = {{{"bytes", 4}, {"hash", "00000000000000AA"}},
                         {{"bytes", 5}, {"hash", "00000000000000bb"}}};
  EXPECT_THROW(parse_job(job), myelin::InputError);
  job["train_shards"] = {{{"bytes", -4}, {"hash", "00000000000000aa"}},
                         {{"bytes", 5}, {"hash", "00000000000000bb"}}};
  EXPECT_THROW(parse_job(job), myelin::InputError);
}
