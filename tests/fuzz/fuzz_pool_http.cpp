// libFuzzer harness for the coordinator's HTTP request handling (PoolApi,
// runtime/pool/http_api.h), without sockets. The input is split at the first
// three newlines into method, target (path?query) and an auth selector (first
// byte: 0 none, 1 a volunteer token, 2 a garbage token); the rest is the
// body. The state is a real PoolState in a temporary folder with one token,
// one joined contributor and one running job of a tiny model (300
// parameters, one 64-token shard), so the work, model, shard and upload
// routes reach their handlers; no admin token is used. Checked: every answer
// is a status in 200..599 and not 500 (an unexpected exception inside the
// coordinator), and a JSON answer parses. MYELIN_FUZZ_VERBOSE=1 prints each
// request and answer (to check what a corpus file reaches).
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "runtime/data/shard.h"
#include "runtime/pool/http_api.h"
#include "runtime/pool/state.h"
#include "tests/fuzz/fuzz_support.h"

namespace {

struct Env {
  std::string dir;
  std::unique_ptr<myelin::pool::PoolState> state;
  std::unique_ptr<myelin::pool::PoolApi> api;
  std::string token;
  Env() = default;
  Env(const Env&) = delete;
  Env& operator=(const Env&) = delete;
  ~Env() {
    api.reset();
    state.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
};

void setup(Env& x) {
  x.dir = (std::filesystem::temp_directory_path() / ("fuzz_pool_http_" + std::to_string(getpid())))
              .string();
  std::filesystem::remove_all(x.dir);
  std::filesystem::create_directories(x.dir + "/data");
  std::vector<std::uint16_t> tokens(64);
  for (std::size_t i = 0; i < tokens.size(); ++i) tokens[i] = std::uint16_t(i % 8);
  myelin::write_shard(x.dir + "/data/train_000.bin", tokens);
  x.state = std::make_unique<myelin::pool::PoolState>(x.dir + "/state", 30, true);
  x.state->submit_job(nlohmann::json{{"name", "fuzz"},
                                     {"model",
                                      {{"layers", 1},
                                       {"heads", 1},
                                       {"channels", 4},
                                       {"vocab", 8},
                                       {"padded_vocab", 8},
                                       {"max_seq_len", 4}}},
                                     {"train_data", x.dir + "/data/train_*.bin"},
                                     {"batch_size", 1},
                                     {"seq_len", 4},
                                     {"inner_steps", 1},
                                     {"rounds", 1000000},
                                     {"max_contributors", 1},
                                     {"block_size", 256}});
  {
    myelin::pool::Db db(myelin::pool::db_path(x.dir + "/state"));
    x.token = myelin::pool::create_token(db, "fuzz", false);
  }
  x.api = std::make_unique<myelin::pool::PoolApi>(*x.state, myelin::pool::ApiOptions{});
  myelin::pool::ApiRequest join;
  join.method = "POST";
  join.path = "/api/join";
  join.authorization = "Bearer " + x.token;
  join.body = R"({"name": "fuzz-box", "hardware": {"device": "cpu"}})";
  x.api->handle(join);
}

Env& env() {
  static Env e; // lives for the whole fuzzing process
  static const bool ready = (setup(e), true);
  (void)ready;
  return e;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  Env& e = env();
  const std::string in(reinterpret_cast<const char*>(data), size);
  std::size_t pos = 0;
  myelin::pool::ApiRequest r;
  r.method = myelin::fuzz::take_line(in, pos);
  const std::string target = myelin::fuzz::take_line(in, pos);
  const std::string auth = myelin::fuzz::take_line(in, pos);
  r.body = in.substr(pos);
  const std::size_t q = target.find('?');
  r.path = target.substr(0, q);
  if (q != std::string::npos) {
    std::string query = target.substr(q + 1);
    std::size_t p = 0;
    while (p <= query.size()) {
      const std::size_t amp = query.find('&', p);
      const std::string kv =
          query.substr(p, amp == std::string::npos ? std::string::npos : amp - p);
      const std::size_t eq = kv.find('=');
      r.query.emplace(kv.substr(0, eq), eq == std::string::npos ? "" : kv.substr(eq + 1));
      if (amp == std::string::npos) break;
      p = amp + 1;
    }
  }
  if (!auth.empty() && auth[0] == '1') r.authorization = "Bearer " + e.token;
  if (!auth.empty() && auth[0] == '2') r.authorization = "Bearer " + auth;
  r.content_length = r.body.size();
  if (r.path.rfind("/api/jobs", 0) == 0 && r.method == "POST" && r.path.size() == 9)
    return 0; // job submission needs an admin token; never reached here anyway
  if (const auto refusal = e.api->precheck(r)) {
    if (refusal->status < 400 || refusal->status > 599) std::abort();
  }
  const myelin::pool::ApiResponse a = e.api->handle(r);
  static const bool verbose = std::getenv("MYELIN_FUZZ_VERBOSE") != nullptr;
  if (verbose)
    std::fprintf(stderr, "%s %s -> %d %.200s\n", r.method.c_str(), r.path.c_str(), a.status,
                 a.body.c_str());
  if (a.status < 200 || a.status > 599 || a.status == 500) {
    std::fprintf(stderr, "status %d: %s\n", a.status, a.body.c_str());
    std::abort();
  }
  if (a.content_type == "application/json" && a.file.empty() && !a.shared &&
      !nlohmann::json::accept(a.body))
    std::abort();
  return 0;
}
