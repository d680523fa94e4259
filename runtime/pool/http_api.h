// The coordinator's HTTP API as a function of a request object, without
// sockets: the HTTP(S) server (coordinator.cpp) and the fuzz harness
// (tests/fuzz/fuzz_pool_http.cpp) both call it.
//
// Routes (auth: "public" answers without a token unless --private; "page" is
// always public (it holds no data); a request that carries an Authorization
// header must carry a valid token anyway):
//   GET  /                                 dashboard (HTML + JS)            page
//   GET  /api/status                       jobs, rounds, contributors       public
//   GET  /api/ledger?job=ID&format=csv     hash-chained ledger (JSON/CSV)   public
//   POST /api/jobs                         submit a job (body: job JSON)    admin
//   POST /api/jobs/ID/cancel               cancel (stop) a job              admin
//   POST /api/jobs/ID/stop                 the same, older name             admin
//   POST /api/join | heartbeat | leave | work   typed bodies (protocol.h)   token
//   GET  /api/jobs/ID/model?round=R[&since=S]  global model or delta       token
//   GET  /api/jobs/ID/shards/K             training shard K                 token
//        (files answer one Range inside them with 206, others with 416;
//        a shard whose bytes changed since submission: 409, state.h)
//   POST /api/jobs/ID/rounds/R/upload?contributor_id=&tokens=&compute_s=&loss=
//                                          pseudo-gradient (compress.h)     token
// Tokens travel only in `Authorization: Bearer TOKEN`, never in URLs.
//
// precheck() runs on the request line and headers alone, before any body
// byte is read: it routes, authenticates, refuses chunked bodies (411) and
// bodies over the route's limit (413: 64 KiB for JSON routes, the largest
// encoding of the job's model for uploads, none for GET). handle() runs
// precheck() again and then the route. Bad input gets a 4xx answer with one
// JSON line {"error": ...} and changes nothing; answers never carry
// exception text in headers, and JSON answers are valid UTF-8 whatever the
// stored strings hold.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>

namespace myelin::pool {

class PoolState;

struct ApiRequest {
  std::string method; // "GET", "POST", ...
  std::string path;   // without the query
  std::map<std::string, std::string> query;
  std::string authorization; // the Authorization header's value
  std::optional<std::uint64_t> content_length;
  bool chunked = false; // Transfer-Encoding: chunked
  std::string body;
  double receive_s = 0; // measured: seconds the server spent reading the body
};

struct ApiResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::string file;                          // non-empty: stream this file instead of body
  std::shared_ptr<const std::string> shared; // non-null: send this buffer instead of body
  bool close = false; // close the connection after answering (its body was not read)
  bool no_store = false;
};

struct ApiOptions {
  bool private_status = false; // --private: status, ledger and page need a token
  std::uint64_t max_json_bytes = 64 * 1024;
  std::uint64_t max_upload_bytes = std::uint64_t(2048) << 20; // --max-upload-mb
};

class PoolApi {
 public:
  PoolApi(PoolState& state, ApiOptions o);
  ~PoolApi();
  PoolApi(const PoolApi&) = delete;
  PoolApi& operator=(const PoolApi&) = delete;

  // nullopt: go on and read the body; else the refusal to send (close set).
  std::optional<ApiResponse> precheck(const ApiRequest& head);
  ApiResponse handle(const ApiRequest& req);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

} // namespace myelin::pool
