// HTTP(S) client for the pool API: bearer-token requests that return JSON,
// binary uploads, and streamed downloads to a file (written atomically, or
// resumed with an HTTP Range request from what an earlier try left).
// HTTP errors throw PoolError with the status and the server's reason;
// network failures throw PoolError with status 0 (the caller may retry).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

namespace myelin::pool {

class PoolError : public std::runtime_error {
 public:
  PoolError(int status, const std::string& msg) : std::runtime_error(msg), status_(status) {}
  int status() const { return status_; } // 0 = no answer (network)
 private:
  int status_;
};

struct ClientOptions {
  std::string url;       // http://host:port or https://host:port
  std::string token;     // empty: no Authorization header (public routes only)
  std::string ca_cert;   // https: trust this CA (e.g. a self-signed cert)
  bool insecure = false; // https: skip certificate verification
  double timeout_s = 120;
  // Test hook: a download stops after this many bytes as if the connection
  // broke (PoolError status 0); 0 = no limit.
  std::uint64_t debug_max_download_bytes = 0;
};

// The bearer token from --token (flag), else --token-file (file; its first
// line), else the MYELIN_POOL_TOKEN environment variable; empty if none.
// Warns on stderr that a flag is visible to other users in `ps`. Throws
// InputError when the file cannot be read or is empty.
std::string resolve_token(const std::string& flag, const std::string& file);

class PoolClient {
 public:
  explicit PoolClient(const ClientOptions& o);
  ~PoolClient();
  PoolClient(const PoolClient&) = delete;
  PoolClient& operator=(const PoolClient&) = delete;

  nlohmann::json get_json(const std::string& path);
  std::string get_text(const std::string& path);
  nlohmann::json post_json(const std::string& path, const nlohmann::json& body);
  nlohmann::json post_bytes(const std::string& path, const std::string& body);
  // Streams the response body to dest (via a temporary file and rename);
  // returns the bytes received.
  std::size_t download(const std::string& path, const std::string& dest);
  // Resumable: continues `part` from its current size with `Range: bytes=N-`
  // (appending when the server answers 206 with that range, rewriting it from
  // the start when it answers 200 with the whole body). On a network failure
  // what arrived stays in `part` for the next call. Returns the bytes this
  // call received; verifying and renaming the result is the caller's.
  std::size_t download_resume(const std::string& path, const std::string& part);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

} // namespace myelin::pool
