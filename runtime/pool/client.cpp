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
};

PoolClient::PoolClient(const ClientOptions& o) : impl_(std::make_unique<Impl>()) {
  require(o.url.rfind("http://", 0) == 0 || o.url.rfind("https://", 0) == 0, "--pool",
          "expected http://HOST:PORT or https://HOST:PORT, got '" + o.url + "'");
  std::string url = o.url;
  while (!url.empty() && url.back() == '/') url.pop_back();
  impl_->url = url;
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

std::size_t PoolClient::download(const std::string& path, const std::string& dest) {
  const std::string tmp = dest + ".part";
  std::size_t n = 0;
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw std::runtime_error(tmp + ": cannot create");
    int status = 0;
    std::string err_body;
    auto r = impl_->cli->Get(
        path.c_str(),
        [&](const httplib::Response& resp) {
          status = resp.status;
          return true;
        },
        [&](const char* data, std::size_t len) {
          if (status >= 400) {
            if (err_body.size() < 4096) err_body.append(data, len);
            return true;
          }
          out.write(data, std::streamsize(len));
          n += len;
          return bool(out);
        });
    if (!r) {
      std::remove(tmp.c_str());
      throw PoolError(0, "GET " + path + ": no answer (" + httplib::to_string(r.error()) + ")");
    }
    if (r->status >= 400) {
      std::remove(tmp.c_str());
      httplib::Response e;
      e.body = err_body;
      throw PoolError(r->status,
                      "GET " + path + ": HTTP " + std::to_string(r->status) + ": " + reason_of(e));
    }
    out.flush();
    if (!out) throw std::runtime_error(tmp + ": write failed");
  }
  std::filesystem::rename(tmp, dest);
  return n;
}

} // namespace myelin::pool
