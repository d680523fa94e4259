// libFuzzer harness for the coordinator's HTTP request handling (PoolApi,
// runtime/pool/http_api.h), without sockets. The input is split at the first
// three newlines into method, target (path?query) and an auth selector (first
// byte: 0 none, 1 a volunteer token, 2 a garbage token); the rest is the
// body. The state is a real PoolState in a temporary folder with one token
// and one joined contributor; no admin token is used, so no job is built.
// Checked: every answer is a status in 200..599 and a JSON answer parses.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "runtime/pool/http_api.h"
#include "runtime/pool/state.h"

namespace {

struct Env {
  std::string dir;
  std::unique_ptr<myelin::pool::PoolState> state;
  std::unique_ptr<myelin::pool::PoolApi> api;
  std::string token;
};

void setup(Env& x) {
  x.dir = (std::filesystem::temp_directory_path() / ("fuzz_pool_http_" + std::to_string(getpid())))
              .string();
  std::filesystem::remove_all(x.dir);
  x.state = std::make_unique<myelin::pool::PoolState>(x.dir, 30, true);
  {
    myelin::pool::Db db(myelin::pool::db_path(x.dir));
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

std::string take_line(const std::string& s, std::size_t& pos) {
  const std::size_t e = s.find('\n', pos);
  std::string out = s.substr(pos, e == std::string::npos ? std::string::npos : e - pos);
  pos = e == std::string::npos ? s.size() : e + 1;
  return out;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  Env& e = env();
  const std::string in(reinterpret_cast<const char*>(data), size);
  std::size_t pos = 0;
  myelin::pool::ApiRequest r;
  r.method = take_line(in, pos);
  const std::string target = take_line(in, pos);
  const std::string auth = take_line(in, pos);
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
  if (a.status < 200 || a.status > 599) std::abort();
  if (a.content_type == "application/json" && a.file.empty() && !a.shared &&
      !nlohmann::json::accept(a.body))
    std::abort();
  return 0;
}
