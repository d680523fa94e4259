#include "runtime/pool/http_api.h"

#include <filesystem>
#include <functional>
#include <iostream>
#include <mutex>
#include <tuple>
#include <vector>

#include "runtime/io/model_file.h"
#include "runtime/pool/compress.h"
#include "runtime/pool/dashboard.h"
#include "runtime/pool/protocol.h"
#include "runtime/pool/state.h"
#include "runtime/util/error.h"

using nlohmann::json;

namespace myelin::pool {
namespace {

// kPage: always public (the page holds no data); kPublic: public unless --private.
enum class Auth { kPage, kPublic, kToken, kAdmin };
enum class Body { kNone, kJson, kUpload };

using Ids = std::vector<std::int64_t>;
using Handler = std::function<ApiResponse(const ApiRequest&, const TokenInfo*, const Ids&)>;

struct Route {
  const char* method;
  const char* pattern; // '#' segments match a decimal integer
  Auth auth;
  Body body;
  Handler fn;
};

std::vector<std::string> split_path(const std::string& p) {
  std::vector<std::string> out;
  std::size_t i = 0;
  while (i < p.size()) {
    if (p[i] == '/') {
      ++i;
      continue;
    }
    const std::size_t j = p.find('/', i);
    out.push_back(p.substr(i, j == std::string::npos ? std::string::npos : j - i));
    i = j == std::string::npos ? p.size() : j;
  }
  return out;
}

// Ids, rounds and counts in paths and queries: 1..15 decimal digits.
std::int64_t to_i64(const std::string& s, const char* what) {
  bool ok = !s.empty() && s.size() <= 15;
  for (char c : s) ok = ok && c >= '0' && c <= '9';
  if (!ok) throw Refused(400, std::string(what) + ": expected a non-negative integer");
  std::int64_t v = 0;
  for (char c : s) v = v * 10 + (c - '0');
  return v;
}

// Matches path segments against a pattern; fills the '#' values.
bool match(const std::vector<std::string>& segs, const char* pattern, Ids& ids) {
  const auto pat = split_path(pattern);
  if (pat.size() != segs.size()) return false;
  Ids got;
  for (std::size_t i = 0; i < pat.size(); ++i) {
    if (pat[i] == "#") {
      bool digits = !segs[i].empty() && segs[i].size() <= 15;
      for (char c : segs[i]) digits = digits && c >= '0' && c <= '9';
      if (!digits) return false;
      got.push_back(to_i64(segs[i], "path"));
    } else if (pat[i] != segs[i]) {
      return false;
    }
  }
  ids = std::move(got);
  return true;
}

ApiResponse error_response(int status, const std::string& msg) {
  ApiResponse r;
  r.status = status;
  r.body = dump_json(json{{"error", msg}});
  return r;
}
ApiResponse json_response(const json& j) {
  ApiResponse r;
  r.body = dump_json(j);
  return r;
}

std::string bearer_of(const std::string& h) {
  const std::string p = "Bearer ";
  if (h.size() > p.size() && h.compare(0, p.size(), p) == 0) return h.substr(p.size());
  return {};
}

const std::string* param(const ApiRequest& r, const char* k) {
  auto it = r.query.find(k);
  return it == r.query.end() ? nullptr : &it->second;
}
const std::string& need(const ApiRequest& r, const char* k) {
  const std::string* v = param(r, k);
  if (!v) throw Refused(400, std::string("missing ?") + k + "=");
  return *v;
}

double to_f64(const std::string& s, const char* what) {
  try {
    std::size_t pos = 0;
    const double v = std::stod(s, &pos);
    if (pos != s.size()) throw std::invalid_argument(s);
    return v;
  } catch (const std::exception&) {
    throw Refused(400, std::string(what) + ": expected a number");
  }
}

} // namespace

struct PoolApi::Impl {
  PoolState& state;
  ApiOptions o;
  std::vector<Route> routes;

  Impl(PoolState& s, ApiOptions opt) : state(s), o(opt) { add_routes(); }
  void add_routes();
  // The route of a request, or the refusal (404/405).
  const Route* find(const ApiRequest& r, Ids& ids, std::optional<ApiResponse>& refusal) const {
    const auto segs = split_path(r.path);
    bool path_known = false;
    for (const auto& rt : routes) {
      Ids got;
      if (!match(segs, rt.pattern, got)) continue;
      path_known = true;
      if (r.method == rt.method) {
        ids = std::move(got);
        return &rt;
      }
    }
    refusal = path_known ? error_response(405, "method " + r.method.substr(0, 10) +
                                                   " not allowed on " + r.path.substr(0, 100))
                         : error_response(404, "no such route");
    return nullptr;
  }
  std::uint64_t body_limit(const Route& rt, const Ids& ids) const {
    switch (rt.body) {
    case Body::kNone:
      return 0;
    case Body::kJson:
      return o.max_json_bytes;
    case Body::kUpload:
      // The largest encoding of the job's model (fp32) plus room for the
      // header; never more than --max-upload-mb (an unknown job: 404 later).
      try {
        return std::min<std::uint64_t>(o.max_upload_bytes,
                                       kWireHeaderBytes +
                                           4 * std::uint64_t(state.param_count(ids[0])) + 4096);
      } catch (const Refused&) {
        return o.max_upload_bytes;
      }
    }
    return 0;
  }
  std::optional<ApiResponse> check(const ApiRequest& r, const Route*& rt, Ids& ids,
                                   std::optional<TokenInfo>& who) {
    std::optional<ApiResponse> refusal;
    rt = find(r, ids, refusal);
    if (!rt) return refusal;
    if (r.chunked) return error_response(411, "send a Content-Length (chunked bodies refused)");
    if (!r.authorization.empty()) {
      who = state.authenticate(bearer_of(r.authorization));
      if (!who) return error_response(401, "unknown or revoked token");
    }
    const bool needs_token = rt->auth == Auth::kToken || rt->auth == Auth::kAdmin ||
                             (rt->auth == Auth::kPublic && o.private_status);
    if (needs_token && !who)
      return error_response(401, "this needs a token (Authorization: Bearer)");
    if (rt->auth == Auth::kAdmin && !who->admin)
      return error_response(403, "this needs an admin token");
    const std::uint64_t limit = body_limit(*rt, ids);
    const std::uint64_t len = r.content_length.value_or(r.body.size());
    if (len > limit)
      return error_response(413, "request body of " + std::to_string(len) + " bytes over this " +
                                     "route's limit of " + std::to_string(limit));
    return std::nullopt;
  }
  template <typename F> ApiResponse guarded(const ApiRequest& r, F f) {
    try {
      return f();
    } catch (const Refused& e) {
      return error_response(e.status(), e.what());
    } catch (const InputError& e) {
      return error_response(400, e.what());
    } catch (const json::exception& e) {
      return error_response(400, e.what());
    } catch (const std::exception& e) {
      std::cerr << "pool: error in " << r.method.substr(0, 10) << " " << r.path.substr(0, 200)
                << ": " << e.what() << std::endl;
      return error_response(500, "internal error (see the coordinator's log)");
    }
  }
};

void PoolApi::Impl::add_routes() {
  PoolState& st = state;
  auto add = [&](const char* m, const char* p, Auth a, Body b, Handler fn) {
    routes.push_back({m, p, a, b, std::move(fn)});
  };
  add("GET", "/", Auth::kPage, Body::kNone, [](const ApiRequest&, const TokenInfo*, const Ids&) {
    ApiResponse r;
    r.content_type = "text/html; charset=utf-8";
    r.body = dashboard_html();
    r.no_store = true;
    return r;
  });
  add("GET", "/api/status", Auth::kPublic, Body::kNone,
      [&st](const ApiRequest&, const TokenInfo*, const Ids&) {
        return json_response(st.status_json());
      });
  add("GET", "/api/ledger", Auth::kPublic, Body::kNone,
      [&st](const ApiRequest& r, const TokenInfo*, const Ids&) {
        std::optional<std::int64_t> job;
        if (const auto* j = param(r, "job")) job = to_i64(*j, "job");
        const std::string* f = param(r, "format");
        const std::string fmt = f ? *f : "json";
        if (fmt == "csv") {
          ApiResponse res;
          res.content_type = "text/csv; charset=utf-8";
          res.body = st.ledger_csv(job);
          return res;
        }
        if (fmt != "json") throw Refused(400, "format: expected json or csv");
        return json_response(st.ledger_json(job));
      });
  add("POST", "/api/jobs", Auth::kAdmin, Body::kJson,
      [&st](const ApiRequest& r, const TokenInfo*, const Ids&) {
        json spec;
        try {
          spec = json::parse(r.body);
        } catch (const json::exception& e) {
          throw Refused(400, std::string("malformed JSON body: ") + e.what());
        }
        if (!spec.is_object()) throw Refused(400, "body: expected a JSON object");
        return json_response({{"job", st.submit_job(spec)}});
      });
  for (const char* p : {"/api/jobs/#/cancel", "/api/jobs/#/stop"})
    add("POST", p, Auth::kAdmin, Body::kJson,
        [&st](const ApiRequest&, const TokenInfo*, const Ids& ids) {
          st.stop_job(ids[0]);
          return json_response({{"ok", true}});
        });
  add("POST", "/api/join", Auth::kToken, Body::kJson,
      [&st](const ApiRequest& r, const TokenInfo* who, const Ids&) {
        return json_response(st.join(*who, parse_body_as<JoinRequest>(r.body)));
      });
  add("POST", "/api/heartbeat", Auth::kToken, Body::kJson,
      [&st](const ApiRequest& r, const TokenInfo* who, const Ids&) {
        st.heartbeat(*who, parse_body_as<HeartbeatRequest>(r.body));
        return json_response({{"ok", true}});
      });
  add("POST", "/api/leave", Auth::kToken, Body::kJson,
      [&st](const ApiRequest& r, const TokenInfo* who, const Ids&) {
        st.leave(*who, parse_body_as<ContributorRequest>(r.body).contributor_id);
        return json_response({{"ok", true}});
      });
  add("POST", "/api/work", Auth::kToken, Body::kJson,
      [&st](const ApiRequest& r, const TokenInfo* who, const Ids&) {
        return json_response(
            st.work(*who, parse_body_as<ContributorRequest>(r.body).contributor_id));
      });
  // Downloads: the model of a round, the outer update of a closed round
  // (model_<round> -> model_<round+1>), a training shard. With
  // ?contributor_id= the bytes count as that contributor's bytes_down.
  auto file_route = [&](const char* p, auto path_of) {
    add("GET", p, Auth::kToken, Body::kNone,
        [&st, path_of](const ApiRequest& r, const TokenInfo* who, const Ids& ids) {
          ApiResponse res;
          res.content_type = "application/octet-stream";
          res.file = path_of(st, r, ids);
          if (const auto* c = param(r, "contributor_id")) {
            std::error_code ec;
            const auto bytes = std::filesystem::file_size(res.file, ec);
            st.count_download(*who, to_i64(*c, "contributor_id"), ec ? 0 : bytes);
          }
          return res;
        });
  };
  file_route("/api/jobs/#/model", [](PoolState& st, const ApiRequest& r, const Ids& ids) {
    return st.model_file(ids[0], to_i64(need(r, "round"), "round"));
  });
  file_route("/api/jobs/#/update", [](PoolState& st, const ApiRequest& r, const Ids& ids) {
    return st.update_file(ids[0], to_i64(need(r, "round"), "round"));
  });
  file_route("/api/jobs/#/shards/#", [](PoolState& st, const ApiRequest&, const Ids& ids) {
    return st.shard_file(ids[0], std::size_t(ids[1]));
  });
  add("POST", "/api/jobs/#/rounds/#/upload", Auth::kToken, Body::kUpload,
      [&st](const ApiRequest& r, const TokenInfo* who, const Ids& ids) {
        UploadMeta m;
        m.job = ids[0];
        m.round = ids[1];
        m.contributor = to_i64(need(r, "contributor_id"), "contributor_id");
        m.tokens = to_i64(need(r, "tokens"), "tokens");
        m.compute_s = to_f64(need(r, "compute_s"), "compute_s");
        if (const auto* l = param(r, "loss"))
          if (*l != "nan" && *l != "-nan") m.train_loss = to_f64(*l, "loss");
        if (const auto* v = param(r, "wait_s")) m.wait_s = to_f64(*v, "wait_s");
        m.receive_s = r.receive_s;
        return json_response(st.upload(*who, m, r.body));
      });
}

PoolApi::PoolApi(PoolState& state, ApiOptions o) : impl_(std::make_unique<Impl>(state, o)) {}
PoolApi::~PoolApi() = default;

std::optional<ApiResponse> PoolApi::precheck(const ApiRequest& head) {
  std::optional<ApiResponse> out;
  const ApiResponse r = impl_->guarded(head, [&] {
    const Route* rt = nullptr;
    Ids ids;
    std::optional<TokenInfo> who;
    out = impl_->check(head, rt, ids, who);
    return ApiResponse{};
  });
  if (r.status != 200) out = r;
  if (out && head.content_length.value_or(0) > 0) out->close = true;
  if (out && head.chunked) out->close = true;
  return out;
}

ApiResponse PoolApi::handle(const ApiRequest& req) {
  return impl_->guarded(req, [&] {
    const Route* rt = nullptr;
    Ids ids;
    std::optional<TokenInfo> who;
    if (auto refusal = impl_->check(req, rt, ids, who)) return *refusal;
    return rt->fn(req, who ? &*who : nullptr, ids);
  });
}

} // namespace myelin::pool
