#include "runtime/pool/coordinator.h"

#include <httplib.h>

#include <atomic>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <mutex>
#include <thread>
#include <tuple>

#include "runtime/io/file_util.h"
#include "runtime/io/model_file.h"
#include "runtime/pool/compress.h"
#include "runtime/pool/dashboard.h"
#include "runtime/pool/state.h"
#include "runtime/util/error.h"
#include "runtime/util/threads.h"

using nlohmann::json;

namespace myelin::pool {
namespace {

std::atomic<int> g_signal{0};
extern "C" void on_signal(int s) { g_signal = s; }

constexpr std::size_t kMaxJsonBody = 64 * 1024;

void send_error(httplib::Response& res, int status, const std::string& msg) {
  res.status = status;
  res.set_content(json{{"error", msg}}.dump(), "application/json");
}

std::string bearer(const httplib::Request& req) {
  const std::string h = req.get_header_value("Authorization");
  const std::string p = "Bearer ";
  if (h.size() > p.size() && h.compare(0, p.size(), p) == 0) return h.substr(p.size());
  if (req.method == "GET" && req.has_param("token")) return req.get_param_value("token");
  return {};
}

std::int64_t to_i64(const std::string& s, const char* what) {
  try {
    std::size_t pos = 0;
    const long long v = std::stoll(s, &pos);
    if (pos != s.size()) throw std::invalid_argument(s);
    return v;
  } catch (const std::exception&) {
    throw Refused(400, std::string(what) + ": expected an integer, got '" + s.substr(0, 40) + "'");
  }
}
double to_f64(const std::string& s, const char* what) {
  try {
    std::size_t pos = 0;
    const double v = std::stod(s, &pos);
    if (pos != s.size()) throw std::invalid_argument(s);
    return v;
  } catch (const std::exception&) {
    throw Refused(400, std::string(what) + ": expected a number, got '" + s.substr(0, 40) + "'");
  }
}

json parse_body(const httplib::Request& req) {
  if (req.body.size() > kMaxJsonBody)
    throw Refused(413, "request body over " + std::to_string(kMaxJsonBody) + " bytes");
  try {
    json j = json::parse(req.body);
    if (!j.is_object()) throw Refused(400, "expected a JSON object");
    return j;
  } catch (const json::exception& e) {
    throw Refused(400, std::string("malformed JSON: ") + e.what());
  }
}

template <typename T> T field(const json& j, const char* key) {
  if (!j.contains(key)) throw Refused(400, std::string("missing field '") + key + "'");
  try {
    return j.at(key).get<T>();
  } catch (const json::exception&) {
    throw Refused(400, std::string("field '") + key + "' has the wrong type");
  }
}

// Streams a file as the response body (the open stream keeps the data even
// if the file is replaced or pruned meanwhile).
void send_file(httplib::Response& res, const std::string& path) {
  auto f = std::make_shared<std::ifstream>(path, std::ios::binary);
  if (!*f) throw Refused(404, "cannot open " + std::filesystem::path(path).filename().string());
  const std::size_t size = file_size_or_throw(path);
  res.set_content_provider(size, "application/octet-stream",
                           [f](std::size_t offset, std::size_t length, httplib::DataSink& sink) {
                             std::vector<char> buf(std::min<std::size_t>(length, 1 << 20));
                             f->seekg(std::streamoff(offset));
                             f->read(buf.data(), std::streamsize(buf.size()));
                             const auto got = std::size_t(f->gcount());
                             if (got == 0) return false;
                             return sink.write(buf.data(), got);
                           });
}

// Model deltas (GET .../model?round=R&since=S): built from the two snapshots
// on first request and kept for the next contributors asking for the same
// pair (every contributor of a round asks for the same one).
class DeltaCache {
 public:
  std::shared_ptr<const std::string> get(PoolState& state, std::int64_t job, std::int64_t from,
                                         std::int64_t to) {
    std::lock_guard lk(mu_);
    const auto key = std::make_tuple(job, from, to);
    for (const auto& e : entries_)
      if (e.first == key) return e.second;
    // Paths first (404 when a snapshot is gone); a snapshot pruned while it
    // is read is a 404 too, and the client falls back to the full model.
    const std::string old_path = state.model_file(job, from), new_path = state.model_file(job, to);
    ModelFile a, b;
    try {
      a = load_model(old_path);
      b = load_model(new_path);
    } catch (const std::exception&) {
      throw Refused(404, "no snapshot of job " + std::to_string(job) + " round " +
                             std::to_string(from) + " any more");
    }
    if (a.params.size() != b.params.size())
      throw Refused(409, "snapshots of rounds " + std::to_string(from) + " and " +
                             std::to_string(to) + " differ in shape");
    auto d = std::make_shared<const std::string>(encode_model_delta(a.params, b.params, from, to));
    entries_.emplace_back(key, d);
    if (entries_.size() > kKeep) entries_.erase(entries_.begin());
    return d;
  }

 private:
  static constexpr std::size_t kKeep = 8;
  std::mutex mu_;
  std::vector<std::pair<std::tuple<std::int64_t, std::int64_t, std::int64_t>,
                        std::shared_ptr<const std::string>>>
      entries_;
};

} // namespace

int serve(const ServeOptions& o) {
  require(!o.state_dir.empty(), "--state-dir", "required");
  const auto colon = o.listen.rfind(':');
  require(colon != std::string::npos && colon > 0, "--listen", "expected HOST:PORT");
  const std::string host = o.listen.substr(0, colon);
  int port = 0;
  try {
    port = std::stoi(o.listen.substr(colon + 1));
  } catch (...) {
    throw InputError("--listen: bad port in '" + o.listen + "'");
  }
  require(port >= 0 && port < 65536, "--listen", "port out of range");
  require(o.tls_cert.empty() == o.tls_key.empty(), "--tls-cert",
          "give both --tls-cert and --tls-key");
  require(std::isfinite(o.heartbeat_timeout_s) && o.heartbeat_timeout_s > 0 &&
              o.heartbeat_timeout_s <= 1e7,
          "--heartbeat-timeout", "expected a number of seconds in (0, 1e7]");
  require(std::isfinite(o.max_upload_mb) && o.max_upload_mb > 0 && o.max_upload_mb <= 1 << 20,
          "--max-upload-mb", "expected a number in (0, 1048576]");
  require(o.threads >= 0 && o.threads <= 4096, "--threads", "expected 0..4096");
  set_cpu_threads(std::max(1, o.threads));

  PoolState state(o.state_dir, o.heartbeat_timeout_s, o.quiet);
  DeltaCache deltas;

  std::unique_ptr<httplib::Server> srv;
  if (!o.tls_cert.empty()) {
    file_size_or_throw(o.tls_cert);
    file_size_or_throw(o.tls_key);
    auto s = std::make_unique<httplib::SSLServer>(o.tls_cert.c_str(), o.tls_key.c_str());
    require(s->is_valid(), "--tls-cert", "cannot load the certificate or key");
    srv = std::move(s);
  } else {
    srv = std::make_unique<httplib::Server>();
  }
  auto& S = *srv;
  S.set_payload_max_length(std::size_t(o.max_upload_mb * 1024 * 1024));
  S.set_read_timeout(120, 0);
  S.set_write_timeout(120, 0);

  // Authentication of every request.
  S.set_pre_routing_handler([&](const httplib::Request& req, httplib::Response& res) {
    try {
      if (!state.authenticate(bearer(req))) {
        send_error(res, 401, "missing or unknown token");
        return httplib::Server::HandlerResponse::Handled;
      }
    } catch (const std::exception& e) {
      send_error(res, 500, e.what());
      return httplib::Server::HandlerResponse::Handled;
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });

  using Fn = std::function<void(const httplib::Request&, httplib::Response&, const TokenInfo&)>;
  auto route = [&](Fn fn, bool admin) {
    return [&state, fn, admin](const httplib::Request& req, httplib::Response& res) {
      try {
        auto who = state.authenticate(bearer(req));
        if (!who) return send_error(res, 401, "missing or unknown token");
        if (admin && !who->admin) return send_error(res, 403, "this needs an admin token");
        fn(req, res, *who);
      } catch (const Refused& e) {
        send_error(res, e.status(), e.what());
      } catch (const InputError& e) {
        send_error(res, 400, e.what());
      } catch (const std::exception& e) {
        std::cerr << "pool: error in " << req.method << " " << req.path << ": " << e.what()
                  << std::endl;
        send_error(res, 500, e.what());
      }
    };
  };
  auto reply = [](httplib::Response& res, const json& j) {
    res.set_content(j.dump(), "application/json");
  };

  S.Get("/", route(
                 [](const httplib::Request&, httplib::Response& res, const TokenInfo&) {
                   res.set_header("Cache-Control", "no-store");
                   res.set_content(dashboard_html(), "text/html; charset=utf-8");
                 },
                 false));
  S.Get("/api/status", route([&](const httplib::Request&, httplib::Response& res,
                                 const TokenInfo&) { reply(res, state.status_json()); },
                             false));
  S.Get("/api/ledger",
        route(
            [&](const httplib::Request& req, httplib::Response& res, const TokenInfo&) {
              std::optional<std::int64_t> job;
              if (req.has_param("job")) job = to_i64(req.get_param_value("job"), "job");
              const std::string fmt =
                  req.has_param("format") ? req.get_param_value("format") : "json";
              if (fmt == "csv")
                res.set_content(state.ledger_csv(job), "text/csv");
              else if (fmt == "json")
                reply(res, state.ledger_json(job));
              else
                throw Refused(400, "format: expected json or csv");
            },
            false));
  S.Post("/api/jobs",
         route(
             [&](const httplib::Request& req, httplib::Response& res, const TokenInfo&) {
               const auto id = state.submit_job(parse_body(req));
               reply(res, {{"job", id}});
             },
             true));
  S.Post(R"(/api/jobs/(\d+)/stop)",
         route(
             [&](const httplib::Request& req, httplib::Response& res, const TokenInfo&) {
               state.stop_job(to_i64(req.matches[1], "job"));
               reply(res, {{"ok", true}});
             },
             true));
  S.Post("/api/join",
         route(
             [&](const httplib::Request& req, httplib::Response& res, const TokenInfo& who) {
               const json b = parse_body(req);
               const json hw = b.contains("hardware") ? b["hardware"] : json::object();
               reply(res, state.join(who, field<std::string>(b, "name"), hw));
             },
             false));
  S.Post("/api/heartbeat",
         route(
             [&](const httplib::Request& req, httplib::Response& res, const TokenInfo& who) {
               const json b = parse_body(req);
               reply(res, state.heartbeat(who, field<std::int64_t>(b, "contributor_id"),
                                          field<std::string>(b, "state")));
             },
             false));
  S.Post("/api/leave",
         route(
             [&](const httplib::Request& req, httplib::Response& res, const TokenInfo& who) {
               const json b = parse_body(req);
               state.leave(who, field<std::int64_t>(b, "contributor_id"));
               reply(res, {{"ok", true}});
             },
             false));
  S.Post("/api/work",
         route(
             [&](const httplib::Request& req, httplib::Response& res, const TokenInfo& who) {
               const json b = parse_body(req);
               reply(res, state.work(who, field<std::int64_t>(b, "contributor_id")));
             },
             false));
  S.Get(R"(/api/jobs/(\d+)/model)",
        route(
            [&](const httplib::Request& req, httplib::Response& res, const TokenInfo&) {
              const auto job = to_i64(req.matches[1], "job");
              if (!req.has_param("round")) throw Refused(400, "missing ?round=");
              const auto round = to_i64(req.get_param_value("round"), "round");
              if (!req.has_param("since")) return send_file(res, state.model_file(job, round));
              // Delta from an older round the contributor holds (404 when that
              // snapshot is gone or either round is unknown: download it whole).
              const auto since = to_i64(req.get_param_value("since"), "since");
              if (since < 0 || since >= round)
                throw Refused(400, "since: expected a round in 0.." + std::to_string(round - 1));
              const auto d = deltas.get(state, job, since, round);
              res.set_content_provider(
                  d->size(), "application/octet-stream",
                  [d](std::size_t offset, std::size_t length, httplib::DataSink& sink) {
                    return sink.write(d->data() + offset, std::min(length, d->size() - offset));
                  });
            },
            false));
  S.Get(R"(/api/jobs/(\d+)/shards/(\d+))",
        route(
            [&](const httplib::Request& req, httplib::Response& res, const TokenInfo&) {
              send_file(res, state.shard_file(to_i64(req.matches[1], "job"),
                                              std::size_t(to_i64(req.matches[2], "shard"))));
            },
            false));
  S.Post(R"(/api/jobs/(\d+)/rounds/(\d+)/upload)",
         route(
             [&](const httplib::Request& req, httplib::Response& res, const TokenInfo& who) {
               auto param = [&](const char* k) {
                 if (!req.has_param(k)) throw Refused(400, std::string("missing ?") + k + "=");
                 return req.get_param_value(k);
               };
               UploadMeta m;
               m.job = to_i64(req.matches[1], "job");
               m.round = to_i64(req.matches[2], "round");
               m.contributor = to_i64(param("contributor_id"), "contributor_id");
               m.tokens = to_i64(param("tokens"), "tokens");
               m.compute_s = to_f64(param("compute_s"), "compute_s");
               if (req.has_param("loss")) {
                 const std::string l = req.get_param_value("loss");
                 if (l != "nan" && l != "-nan") m.train_loss = to_f64(l, "loss");
               }
               reply(res, state.upload(who, m, req.body));
             },
             false));
  S.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (res.body.empty())
      send_error(res, res.status,
                 res.status == 413   ? "request body too large"
                 : res.status == 404 ? "no such route"
                                     : "request refused");
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
