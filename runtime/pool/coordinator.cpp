#include "runtime/pool/coordinator.h"

#include <httplib.h>

#include <atomic>
#include <charconv>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <thread>

#include "runtime/io/file_util.h"
#include "runtime/pool/conn_gate.h"
#include "runtime/pool/db.h"
#include "runtime/pool/http_api.h"
#include "runtime/pool/protocol.h"
#include "runtime/pool/state.h"
#include "runtime/util/error.h"
#include "runtime/util/threads.h"

namespace myelin::pool {
namespace {

std::atomic<int> g_signal{0};
extern "C" void on_signal(int s) { g_signal = s; }

// The request as PoolApi sees it (the body only once cpp-httplib read it).
ApiRequest to_api(const httplib::Request& req, bool with_body) {
  ApiRequest a;
  a.method = req.method;
  a.path = req.path;
  for (const auto& [k, v] : req.params) a.query.emplace(k, v); // the first of a name wins
  a.authorization = req.get_header_value("Authorization");
  if (req.has_header("Content-Length")) {
    try {
      a.content_length = std::stoull(req.get_header_value("Content-Length"));
    } catch (const std::exception&) {
      a.content_length = ~std::uint64_t(0); // refused as too large
    }
  }
  a.chunked = !req.get_header_value("Transfer-Encoding").empty();
  if (with_body) {
    a.body = req.body;
    const double t0 = request_started_at();
    if (t0 > 0) a.receive_s = std::max(0.0, unix_now() - t0);
  }
  return a;
}

// Streams a file as the response body (the open stream keeps the data even
// if the file is replaced or pruned meanwhile). A request with one Range
// inside the file gets 206 and those bytes (downloads resume this way); any
// other Range (several, or past the end) gets 416 without a body.
void send_file(const httplib::Request& req, httplib::Response& res, const std::string& path,
               const std::string& type) {
  auto f = std::make_shared<std::ifstream>(path, std::ios::binary);
  if (!*f) {
    res.status = 404;
    res.set_content(
        dump_json({{"error", "cannot open " + std::filesystem::path(path).filename().string()}}),
        "application/json");
    return;
  }
  const std::size_t size = file_size_or_throw(path);
  if (!req.ranges.empty()) {
    const auto [first, last] = req.ranges.front();
    const bool one_inside = req.ranges.size() == 1 && first >= 0 && std::size_t(first) < size &&
                            (last == -1 || (last >= first && std::size_t(last) < size));
    if (!one_inside || res.status != 200) {
      // No body: cpp-httplib 0.11 applies the request's ranges to any answer.
      res.status = 416;
      return;
    }
    res.status = 206;
  }
  res.set_content_provider(size, type,
                           [f](std::size_t offset, std::size_t length, httplib::DataSink& sink) {
                             std::vector<char> buf(std::min<std::size_t>(length, 1 << 20));
                             f->seekg(std::streamoff(offset));
                             f->read(buf.data(), std::streamsize(buf.size()));
                             const auto got = std::size_t(f->gcount());
                             if (got == 0) return false;
                             return sink.write(buf.data(), got);
                           });
}

void send(const httplib::Request& req, httplib::Response& res, const ApiResponse& r) {
  res.status = r.status;
  if (r.no_store) res.set_header("Cache-Control", "no-store");
  if (r.close) {
    res.set_header("Connection", "close");
    close_connection_after_response();
  }
  if (!r.file.empty()) return send_file(req, res, r.file, r.content_type);
  if (r.shared) {
    auto d = r.shared;
    res.set_content_provider(d->size(), r.content_type,
                             [d](std::size_t offset, std::size_t length, httplib::DataSink& sink) {
                               return sink.write(d->data() + offset,
                                                 std::min(length, d->size() - offset));
                             });
    return;
  }
  res.set_content(r.body, r.content_type);
}

} // namespace

int serve(const ServeOptions& o) {
  require(!o.state_dir.empty(), "--state-dir", "required");
  const auto colon = o.listen.rfind(':');
  require(colon != std::string::npos && colon > 0, "--listen", "expected HOST:PORT");
  const std::string host = o.listen.substr(0, colon);
  const std::string port_arg = o.listen.substr(colon + 1);
  int port = -1;
  const auto [end, ec] = std::from_chars(port_arg.data(), port_arg.data() + port_arg.size(), port);
  require(ec == std::errc() && end == port_arg.data() + port_arg.size() && !port_arg.empty(),
          "--listen", "bad port in '" + o.listen + "' (expected HOST:PORT, PORT a number)");
  require(port >= 0 && port < 65536, "--listen", "port out of range");
  require(o.tls_cert.empty() == o.tls_key.empty(), "--tls-cert",
          "give both --tls-cert and --tls-key");
  require(std::isfinite(o.heartbeat_timeout_s) && o.heartbeat_timeout_s > 0 &&
              o.heartbeat_timeout_s <= 1e7,
          "--heartbeat-timeout", "expected a number of seconds in (0, 1e7]");
  require(std::isfinite(o.max_upload_mb) && o.max_upload_mb > 0 && o.max_upload_mb <= 1 << 20,
          "--max-upload-mb", "expected a number in (0, 1048576]");
  require(o.threads >= 0 && o.threads <= 4096, "--threads", "expected 0..4096");
  require(o.gate.workers >= 1 && o.gate.workers <= 1024, "--http-threads", "expected 1..1024");
  require(o.gate.max_connections >= 1 && o.gate.max_connections <= 900, "--max-connections",
          "expected 1..900");
  require(o.gate.max_per_ip >= 1, "--max-connections-per-ip", "expected a positive number");
  set_cpu_threads(std::max(1, o.threads));

  PoolState state(o.state_dir, o.heartbeat_timeout_s, o.quiet);
  ApiOptions ao;
  ao.private_status = o.private_status;
  ao.max_upload_bytes = std::uint64_t(o.max_upload_mb * 1024 * 1024);
  PoolApi api(state, ao);

  if (!o.tls_cert.empty()) {
    file_size_or_throw(o.tls_cert);
    file_size_or_throw(o.tls_key);
  }
  std::unique_ptr<httplib::Server> srv = make_gated_server(o.gate, o.tls_cert, o.tls_key);
  auto& S = *srv;
  S.set_payload_max_length(std::size_t(ao.max_upload_bytes));

  // Routing, authentication and the route's body limit, before any body
  // byte is read (and before "100 Continue").
  S.set_pre_routing_handler([&](const httplib::Request& req, httplib::Response& res) {
    if (auto refusal = api.precheck(to_api(req, false))) {
      send(req, res, *refusal);
      return httplib::Server::HandlerResponse::Handled;
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  S.set_expect_100_continue_handler([&](const httplib::Request& req, httplib::Response& res) {
    if (auto refusal = api.precheck(to_api(req, false))) {
      send(req, res, *refusal);
      return refusal->status;
    }
    return 100;
  });
  const auto handler = [&](const httplib::Request& req, httplib::Response& res) {
    send(req, res, api.handle(to_api(req, true)));
  };
  S.Get(".*", handler);
  S.Post(".*", handler);
  S.Put(".*", handler);
  S.Delete(".*", handler);
  S.Patch(".*", handler);
  S.Options(".*", handler);
  S.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (res.body.empty())
      res.set_content(dump_json({{"error", res.status == 413   ? "request body too large"
                                           : res.status == 404 ? "no such route"
                                                               : "request refused"}}),
                      "application/json");
  });
  S.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
    res.status = 500;
    res.set_content(dump_json({{"error", "internal error"}}), "application/json");
  });

  int bound = port;
  if (port == 0) {
    bound = S.bind_to_any_port(host);
    require(bound > 0, "--listen", "cannot bind " + host);
  } else {
    require(S.bind_to_port(host, port), "--listen", "cannot bind " + o.listen + " (in use?)");
  }
  const std::string port_file = (std::filesystem::path(o.state_dir) / "port").string();
  const std::string port_text = std::to_string(bound) + "\n";
  write_atomic(port_file, [&](const ByteSink& out) { out(port_text.data(), port_text.size()); });
  std::cout << "pool: serving " << (o.tls_cert.empty() ? "http" : "https") << "://" << host << ":"
            << bound << " (state in " << o.state_dir << ")" << std::endl;

  g_signal = 0;
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  std::atomic<bool> stop{false};
  std::thread ticker([&] {
    while (!stop) {
      if (g_signal) {
        S.stop();
        break;
      }
      try {
        state.tick();
      } catch (const std::exception& e) {
        std::cerr << "pool: error closing rounds: " << e.what() << std::endl;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });
  const bool ok = S.listen_after_bind();
  stop = true;
  ticker.join();
  std::signal(SIGINT, SIG_DFL);
  std::signal(SIGTERM, SIG_DFL);
  std::cout << "pool: coordinator stopped" << std::endl;
  return ok || g_signal ? 0 : 1;
}

} // namespace myelin::pool
