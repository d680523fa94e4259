#include "runtime/pool/client.h"

#include <httplib.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "runtime/util/error.h"

namespace myelin::pool {

struct PoolClient::Impl {
  std::string url;
  std::unique_ptr<httplib::Client> cli;
  std::uint64_t max_download = 0;
};

PoolClient::PoolClient(const ClientOptions& o) : impl_(std::make_unique<Impl>()) {
  require(o.url.rfind("http://", 0) == 0 || o.url.rfind("https://", 0) == 0, "--pool",
          "expected http://HOST:PORT or https://HOST:PORT, got '" + o.url + "'");
  std::string url = o.url;
  while (!url.empty() && url.back() == '/') url.pop_back();
  impl_->url = url;
  impl_->max_download = o.debug_max_download_bytes;
  impl_->cli = std::make_unique<httplib::Client>(url);
  require(impl_->cli->is_valid(), "--pool", "cannot use '" + o.url + "'");
  auto& c = *impl_->cli;
  if (!o.token.empty()) c.set_bearer_token_auth(o.token.c_str());
  c.set_connection_timeout(5, 0);
  const auto t = std::time_t(o.timeout_s);
  c.set_read_timeout(t, 0);
  c.set_write_timeout(t, 0);
  c.set_keep_alive(true);
  if (url.rfind("https://", 0) == 0) {
    if (!o.ca_cert.empty()) c.set_ca_cert_path(o.ca_cert.c_str());
    c.enable_server_certificate_verification(!o.insecure);
  }
}

PoolClient::~PoolClient() = default;

std::string resolve_token(const std::string& flag, const std::string& file) {
  if (!flag.empty()) {
    std::cerr << "warning: --token is visible to other users of this machine (ps); prefer "
                 "--token-file FILE or the MYELIN_POOL_TOKEN environment variable"
              << std::endl;
    return flag;
  }
  if (!file.empty()) {
    std::ifstream f(file);
    require(bool(f), "--token-file", "cannot open " + file);
    std::string t;
    std::getline(f, t);
    while (!t.empty() && (t.back() == '\r' || t.back() == ' ' || t.back() == '\t')) t.pop_back();
    require(!t.empty(), "--token-file", file + " holds no token on its first line");
    return t;
  }
  const char* env = std::getenv("MYELIN_POOL_TOKEN");
  return env ? std::string(env) : std::string();
}

namespace {
std::string reason_of(const httplib::Response& r) {
  try {
    auto j = nlohmann::json::parse(r.body);
    if (j.contains("error")) return j["error"].get<std::string>();
  } catch (...) {
  }
  return r.body.substr(0, 200);
}

const httplib::Response& check(const httplib::Result& r, const std::string& what) {
  if (!r) throw PoolError(0, what + ": no answer (" + httplib::to_string(r.error()) + ")");
  if (r->status >= 400)
    throw PoolError(r->status, what + ": HTTP " + std::to_string(r->status) + ": " + reason_of(*r));
  return *r;
}

nlohmann::json parse(const httplib::Response& r, const std::string& what) {
  try {
    return nlohmann::json::parse(r.body);
  } catch (const nlohmann::json::exception& e) {
    throw PoolError(r.status, what + ": answer is not JSON: " + e.what());
  }
}
} // namespace

nlohmann::json PoolClient::get_json(const std::string& path) {
  const std::string what = "GET " + path;
  return parse(check(impl_->cli->Get(path.c_str()), what), what);
}

std::string PoolClient::get_text(const std::string& path) {
  return check(impl_->cli->Get(path.c_str()), "GET " + path).body;
}

nlohmann::json PoolClient::post_json(const std::string& path, const nlohmann::json& body) {
  const std::string what = "POST " + path;
  return parse(check(impl_->cli->Post(path.c_str(), body.dump(), "application/json"), what), what);
}

nlohmann::json PoolClient::post_bytes(const std::string& path, const std::string& body) {
  const std::string what = "POST " + path;
  return parse(check(impl_->cli->Post(path.c_str(), body, "application/octet-stream"), what), what);
}

namespace {
// GETs `path` into `file`: the whole body (truncating it) when from = 0, else
// `Range: bytes=from-`, appended when the server answers 206 for exactly that
// range and written from the start when it answers 200. Returns the bytes
// received; what arrived stays in the file when the transfer breaks.
std::size_t fetch_into(httplib::Client& cli, const std::string& path, const std::string& file,
                       std::uint64_t from, std::uint64_t limit) {
  std::ofstream out;
  int status = 0;
  bool bad_range = false, cut = false;
  std::string err_body;
  std::size_t n = 0;
  httplib::Headers headers;
  if (from > 0) headers.emplace("Range", "bytes=" + std::to_string(from) + "-");
  auto r = cli.Get(
      path.c_str(), headers,
      [&](const httplib::Response& resp) {
        status = resp.status;
        if (status >= 400) return true;
        const bool append = from > 0 && status == 206;
        if (status == 206 && resp.get_header_value("Content-Range")
                                     .rfind("bytes " + std::to_string(from) + "-", 0) != 0) {
          bad_range = true;
          return false;
        }
        out.open(file, std::ios::binary | (append ? std::ios::app : std::ios::trunc));
        return bool(out);
      },
      [&](const char* data, std::size_t len) {
        if (status >= 400) {
          if (err_body.size() < 4096) err_body.append(data, len);
          return true;
        }
        if (limit > 0 && n + len >= limit) {
          len = std::size_t(limit - n);
          cut = true;
        }
        out.write(data, std::streamsize(len));
        n += len;
        return bool(out) && !cut;
      });
  if (out.is_open()) out.flush();
  const std::string what = "GET " + path;
  if (bad_range) throw PoolError(206, what + ": the server answered another range than asked");
  if (status > 0 && status < 400 && !out) throw std::runtime_error(file + ": cannot write");
  if (cut)
    throw PoolError(0, what + ": stopped after " + std::to_string(n) + " bytes (test limit)");
  if (!r) throw PoolError(0, what + ": no answer (" + httplib::to_string(r.error()) + ")");
  if (r->status >= 400) {
    httplib::Response e;
    e.body = err_body;
    throw PoolError(r->status, what + ": HTTP " + std::to_string(r->status) + ": " + reason_of(e));
  }
  return n;
}
} // namespace

std::size_t PoolClient::download(const std::string& path, const std::string& dest) {
  const std::string tmp = dest + ".part";
  std::size_t n = 0;
  try {
    n = fetch_into(*impl_->cli, path, tmp, 0, impl_->max_download);
  } catch (...) {
    std::remove(tmp.c_str());
    throw;
  }
  std::filesystem::rename(tmp, dest);
  return n;
}

std::size_t PoolClient::download_resume(const std::string& path, const std::string& part) {
  std::error_code ec;
  const auto have = std::filesystem::file_size(part, ec);
  return fetch_into(*impl_->cli, path, part, ec ? 0 : std::uint64_t(have), impl_->max_download);
}

} // namespace myelin::pool
