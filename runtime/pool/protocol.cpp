#include "runtime/pool/protocol.h"

#include <cmath>

#include "runtime/io/xxh64.h"

using nlohmann::json;

namespace myelin::pool {
namespace {

[[noreturn]] void bad(const std::string& field, const std::string& msg) {
  throw ProtocolError(field + ": " + msg);
}

const json* find(const json& j, const char* key, const std::string& field, bool required) {
  if (!j.is_object()) bad(field, "expected a JSON object");
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (required) bad(field.empty() ? key : field + "." + key, "missing");
    return nullptr;
  }
  return &*it;
}

std::string name_of(const std::string& prefix, const char* key) {
  return prefix.empty() ? std::string(key) : prefix + "." + key;
}

std::int64_t int_at(const json& v, const std::string& field, std::int64_t lo, std::int64_t hi) {
  if (!v.is_number_integer()) bad(field, "expected an integer");
  if (v.is_number_unsigned() && v.get<std::uint64_t>() > std::uint64_t(INT64_MAX))
    bad(field, "out of range");
  const auto x = v.get<std::int64_t>();
  if (x < lo || x > hi)
    bad(field, "expected " + std::to_string(lo) + ".." + std::to_string(hi) + ", got " +
                   std::to_string(x));
  return x;
}

double num_at(const json& v, const std::string& field, double lo, double hi) {
  if (!v.is_number()) bad(field, "expected a number");
  const double x = v.get<double>();
  if (!std::isfinite(x) || x < lo || x > hi) bad(field, "out of range");
  return x;
}

std::string str_at(const json& v, const std::string& field, std::size_t max) {
  if (!v.is_string()) bad(field, "expected a string");
  const auto& s = v.get_ref<const std::string&>();
  if (s.size() > max) bad(field, "longer than " + std::to_string(max) + " bytes");
  return s;
}

// Required fields.
std::int64_t req_int(const json& j, const char* k, const std::string& p, std::int64_t lo,
                     std::int64_t hi) {
  return int_at(*find(j, k, p, true), name_of(p, k), lo, hi);
}
double req_num(const json& j, const char* k, const std::string& p, double lo, double hi) {
  return num_at(*find(j, k, p, true), name_of(p, k), lo, hi);
}
std::string req_str(const json& j, const char* k, const std::string& p, std::size_t max) {
  return str_at(*find(j, k, p, true), name_of(p, k), max);
}
// Optional fields (absent or null).
std::optional<std::int64_t> opt_int(const json& j, const char* k, const std::string& p,
                                    std::int64_t lo, std::int64_t hi) {
  const json* v = find(j, k, p, false);
  if (!v) return std::nullopt;
  return int_at(*v, name_of(p, k), lo, hi);
}

constexpr std::int64_t kMaxId = std::int64_t(1) << 53;

void check_keys(const json& j, const std::string& p, std::initializer_list<const char*> known) {
  for (auto it = j.begin(); it != j.end(); ++it) {
    bool ok = false;
    for (const char* k : known) ok = ok || it.key() == k;
    if (!ok) bad(name_of(p, it.key().substr(0, 40).c_str()), "unknown field");
  }
}

} // namespace

std::string dump_json(const json& j, int indent) {
  return j.dump(indent, ' ', false, json::error_handler_t::replace);
}

// ---- hardware ---------------------------------------------------------------

void to_json(json& j, const Hardware& h) {
  j = json::object();
  j["device"] = h.device;
  j["cpu"] = h.cpu;
  if (h.cores) j["cores"] = *h.cores;
  if (h.memory_gb) j["memory_gb"] = *h.memory_gb;
  j["gpus"] = h.gpus;
  if (h.ranks) j["ranks"] = *h.ranks;
  if (h.dp) j["dp"] = *h.dp;
  if (h.pp) j["pp"] = *h.pp;
}

void from_json(const json& j, Hardware& h) {
  const std::string p = "hardware";
  if (!j.is_object()) bad(p, "expected a JSON object");
  check_keys(j, p, {"device", "cpu", "cores", "memory_gb", "gpus", "ranks", "dp", "pp"});
  h = Hardware{};
  if (const json* v = find(j, "device", p, false)) h.device = str_at(*v, p + ".device", 16);
  if (const json* v = find(j, "cpu", p, false)) h.cpu = str_at(*v, p + ".cpu", 200);
  h.cores = opt_int(j, "cores", p, 0, 1 << 20);
  if (const json* v = find(j, "memory_gb", p, false))
    h.memory_gb = num_at(*v, p + ".memory_gb", 0, 1e7);
  if (const json* v = find(j, "gpus", p, false)) {
    if (!v->is_array() || v->size() > 64) bad(p + ".gpus", "expected an array of <= 64 strings");
    for (const auto& g : *v) h.gpus.push_back(str_at(g, p + ".gpus[]", 200));
  }
  h.ranks = opt_int(j, "ranks", p, 1, 1 << 16);
  h.dp = opt_int(j, "dp", p, 1, 1 << 16);
  h.pp = opt_int(j, "pp", p, 1, 1 << 16);
}

// ---- join, heartbeat, leave, work -------------------------------------------

void to_json(json& j, const JoinRequest& r) { j = {{"name", r.name}, {"hardware", r.hardware}}; }
void from_json(const json& j, JoinRequest& r) {
  r.name = req_str(j, "name", "", 100);
  if (r.name.empty()) bad("name", "expected 1..100 characters");
  for (char c : r.name)
    if (static_cast<unsigned char>(c) < 32 || c == 127) bad("name", "control characters");
  const json* hw = find(j, "hardware", "", false);
  r.hardware = hw ? hw->get<Hardware>() : Hardware{};
}

void to_json(json& j, const JoinResponse& r) {
  j = {{"contributor_id", r.contributor_id}, {"heartbeat_s", r.heartbeat_s}};
}
void from_json(const json& j, JoinResponse& r) {
  r.contributor_id = req_int(j, "contributor_id", "", 1, kMaxId);
  r.heartbeat_s = req_num(j, "heartbeat_s", "", 0.01, 3600);
}

bool valid_contributor_state(const std::string& s) {
  return s == "idle" || s == "downloading" || s == "training" || s == "uploading" || s == "waiting";
}

void to_json(json& j, const HeartbeatRequest& r) {
  j = {{"contributor_id", r.contributor_id}, {"state", r.state}};
}
void from_json(const json& j, HeartbeatRequest& r) {
  r.contributor_id = req_int(j, "contributor_id", "", 1, kMaxId);
  r.state = req_str(j, "state", "", 40);
  if (!valid_contributor_state(r.state)) bad("state", "unknown '" + r.state + "'");
}

void to_json(json& j, const ContributorRequest& r) { j = {{"contributor_id", r.contributor_id}}; }
void from_json(const json& j, ContributorRequest& r) {
  r.contributor_id = req_int(j, "contributor_id", "", 1, kMaxId);
}

void to_json(json& j, const WorkResponse& r) {
  if (!r.assignment) {
    j = {{"wait", r.wait}, {"idle", r.idle}, {"reason", r.reason}};
    return;
  }
  const Assignment& a = *r.assignment;
  const TrainSettings& t = a.train;
  json shards = json::array();
  for (const auto& s : a.shards)
    shards.push_back({{"index", s.index}, {"bytes", s.bytes}, {"hash", xxh64_hex(s.hash)}});
  j = {{"job", a.job},
       {"name", a.name},
       {"round", a.round},
       {"rounds", a.rounds},
       {"slot", a.slot},
       {"slots", a.slots},
       {"inner_steps", a.inner_steps},
       {"base_round", a.base_round},
       {"model_checksum", xxh64_hex(a.model_checksum)},
       {"batch_position", a.batch_position},
       {"param_count", a.param_count},
       {"compression", codec_name(a.codec.codec)},
       {"block_size", a.codec.block},
       {"topk_density", a.codec.density},
       {"value_bits", a.codec.value_bits},
       {"chunk_size", a.codec.chunk},
       {"error_feedback", a.error_feedback},
       {"deadline_s", a.deadline_s},
       {"train",
        {{"batch_size", t.batch_size},
         {"seq_len", t.seq_len},
         {"grad_accum", t.grad_accum},
         {"lr", t.lr},
         {"lr_schedule", t.lr_schedule},
         {"warmup_steps", t.warmup_steps},
         {"weight_decay", t.weight_decay},
         {"grad_clip", t.grad_clip},
         {"beta1", t.beta1},
         {"beta2", t.beta2},
         {"seed", t.seed},
         {"total_steps", t.total_steps},
         {"round_warmup", t.round_warmup}}},
       {"shards", shards}};
}

void from_json(const json& j, WorkResponse& r) {
  r = WorkResponse{};
  if (find(j, "wait", "", false)) {
    r.wait = req_num(j, "wait", "", 0, 3600);
    if (const json* v = find(j, "idle", "", false)) {
      if (!v->is_boolean()) bad("idle", "expected true or false");
      r.idle = v->get<bool>();
    }
    if (const json* v = find(j, "reason", "", false)) r.reason = str_at(*v, "reason", 1000);
    return;
  }
  constexpr std::int64_t kBig = std::int64_t(1) << 40;
  Assignment a;
  a.job = req_int(j, "job", "", 1, kMaxId);
  a.name = req_str(j, "name", "", 200);
  a.round = req_int(j, "round", "", 0, kBig);
  a.rounds = req_int(j, "rounds", "", 1, kBig);
  a.slots = req_int(j, "slots", "", 1, 1 << 20);
  a.slot = req_int(j, "slot", "", 0, a.slots - 1);
  a.inner_steps = req_int(j, "inner_steps", "", 1, kBig);
  a.base_round = req_int(j, "base_round", "", 0, a.round);
  const auto sum = parse_xxh64_hex(req_str(j, "model_checksum", "", 16));
  if (!sum) bad("model_checksum", "expected 16 lowercase hex digits");
  a.model_checksum = *sum;
  a.batch_position = std::uint64_t(req_int(j, "batch_position", "", 0, INT64_MAX));
  a.param_count = std::uint64_t(req_int(j, "param_count", "", 1, kBig));
  const std::string codec = req_str(j, "compression", "", 40);
  if (codec != "none" && codec != "int8" && codec != "sparse")
    bad("compression", "expected none, int8 or sparse, got '" + codec + "'");
  a.codec.codec = parse_codec(codec);
  a.codec.block = std::uint32_t(req_int(j, "block_size", "", 1, 1 << 30));
  a.codec.density = req_num(j, "topk_density", "", 0, 1);
  a.codec.value_bits = std::uint32_t(req_int(j, "value_bits", "", 0, 64));
  a.codec.chunk = std::uint32_t(req_int(j, "chunk_size", "", 1, 1 << 30));
  if (const std::string why = codec_params_problem(a.codec); !why.empty()) throw ProtocolError(why);
  const json* ef = find(j, "error_feedback", "", true);
  if (!ef->is_boolean()) bad("error_feedback", "expected true or false");
  a.error_feedback = ef->get<bool>();
  a.deadline_s = req_num(j, "deadline_s", "", 0, 1e9);
  const json& t = *find(j, "train", "", true);
  const std::string p = "train";
  TrainSettings& s = a.train;
  s.batch_size = req_int(t, "batch_size", p, 1, 1 << 24);
  s.seq_len = req_int(t, "seq_len", p, 1, 1 << 24);
  s.grad_accum = req_int(t, "grad_accum", p, 1, 1 << 24);
  s.lr = req_num(t, "lr", p, 0, 1e6);
  s.lr_schedule = req_str(t, "lr_schedule", p, 40);
  s.warmup_steps = req_int(t, "warmup_steps", p, 0, kBig);
  s.weight_decay = req_num(t, "weight_decay", p, 0, 1e6);
  s.grad_clip = req_num(t, "grad_clip", p, 0, 1e30);
  s.beta1 = req_num(t, "beta1", p, 0, 1);
  s.beta2 = req_num(t, "beta2", p, 0, 1);
  const json& seed = *find(t, "seed", p, true);
  if (!seed.is_number_unsigned()) bad("train.seed", "expected a non-negative integer");
  s.seed = seed.get<std::uint64_t>();
  s.total_steps = req_int(t, "total_steps", p, 0, INT64_MAX);
  s.round_warmup = req_int(t, "round_warmup", p, 0, 1'000'000);
  const json& sh = *find(j, "shards", "", true);
  if (!sh.is_array()) bad("shards", "expected an array");
  for (const auto& x : sh) {
    ShardInfo s;
    s.index = std::uint64_t(req_int(x, "index", "shards[]", 0, 1 << 30));
    s.bytes = std::uint64_t(req_int(x, "bytes", "shards[]", 0, INT64_MAX));
    const auto h = parse_xxh64_hex(req_str(x, "hash", "shards[]", 16));
    if (!h) bad("shards[].hash", "expected 16 lowercase hex digits");
    s.hash = *h;
    a.shards.push_back(s);
  }
  r.assignment = std::move(a);
}

// ---- status -----------------------------------------------------------------

namespace {
json opt(const std::optional<double>& v) { return v ? json(*v) : json(nullptr); }
json opt(const std::optional<std::int64_t>& v) { return v ? json(*v) : json(nullptr); }
std::optional<double> opt_num(const json& j, const char* k, const std::string& p) {
  const json* v = find(j, k, p, false);
  if (!v) return std::nullopt;
  return num_at(*v, name_of(p, k), -1e300, 1e300);
}
double num0(const json& j, const char* k, const std::string& p) {
  return opt_num(j, k, p).value_or(0);
}
std::int64_t int0(const json& j, const char* k, const std::string& p) {
  return opt_int(j, k, p, INT64_MIN, INT64_MAX).value_or(0);
}
std::string str0(const json& j, const char* k, const std::string& p) {
  const json* v = find(j, k, p, false);
  return v ? str_at(*v, name_of(p, k), 1 << 20) : std::string();
}
} // namespace

void to_json(json& j, const RoundStatus& r) {
  j = {{"round", r.round},
       {"status", r.status},
       {"opened", r.opened},
       {"closed", opt(r.closed)},
       {"accepted", r.accepted},
       {"rejected", r.rejected},
       {"tokens", r.tokens},
       {"train_loss", opt(r.train_loss)},
       {"val_loss", opt(r.val_loss)},
       {"median_norm", opt(r.median_norm)},
       {"update_norm", opt(r.update_norm)},
       {"update_bytes", opt(r.update_bytes)}};
}
void from_json(const json& j, RoundStatus& r) {
  const std::string p = "history[]";
  r.round = req_int(j, "round", p, 0, INT64_MAX);
  r.status = req_str(j, "status", p, 40);
  r.opened = num0(j, "opened", p);
  r.closed = opt_num(j, "closed", p);
  r.accepted = int0(j, "accepted", p);
  r.rejected = int0(j, "rejected", p);
  r.tokens = int0(j, "tokens", p);
  r.train_loss = opt_num(j, "train_loss", p);
  r.val_loss = opt_num(j, "val_loss", p);
  r.median_norm = opt_num(j, "median_norm", p);
  r.update_norm = opt_num(j, "update_norm", p);
  r.update_bytes = opt_int(j, "update_bytes", p, 0, INT64_MAX);
}

void to_json(json& j, const JobStatus& r) {
  j = {{"id", r.id},
       {"name", r.name},
       {"status", r.status},
       {"model", r.model},
       {"compression", r.compression},
       {"round", r.round},
       {"rounds", r.rounds},
       {"param_count", r.param_count},
       {"inner_steps", r.inner_steps},
       {"min_contributors", r.min_contributors},
       {"max_contributors", r.max_contributors},
       {"uploads_this_round", r.uploads_this_round},
       {"tokens_per_round", r.tokens_per_round},
       {"outer_lr", r.outer_lr},
       {"outer_momentum", r.outer_momentum},
       {"created", r.created},
       {"init_val_loss", opt(r.init_val_loss)},
       {"finished", opt(r.finished)},
       {"queue_position", opt(r.queue_position)},
       {"ledger_head", r.ledger_head
                           ? json{{"seq", r.ledger_head->seq}, {"hash", r.ledger_head->hash}}
                           : json(nullptr)},
       {"history", r.history}};
}
void from_json(const json& j, JobStatus& r) {
  const std::string p = "jobs[]";
  r.id = req_int(j, "id", p, 0, INT64_MAX);
  r.name = str0(j, "name", p);
  r.status = req_str(j, "status", p, 40);
  r.model = str0(j, "model", p);
  r.compression = str0(j, "compression", p);
  r.round = int0(j, "round", p);
  r.rounds = int0(j, "rounds", p);
  r.param_count = int0(j, "param_count", p);
  r.inner_steps = int0(j, "inner_steps", p);
  r.min_contributors = int0(j, "min_contributors", p);
  r.max_contributors = int0(j, "max_contributors", p);
  r.uploads_this_round = int0(j, "uploads_this_round", p);
  r.tokens_per_round = std::uint64_t(opt_int(j, "tokens_per_round", p, 0, INT64_MAX).value_or(0));
  r.outer_lr = num0(j, "outer_lr", p);
  r.outer_momentum = num0(j, "outer_momentum", p);
  r.created = num0(j, "created", p);
  r.init_val_loss = opt_num(j, "init_val_loss", p);
  r.finished = opt_num(j, "finished", p);
  r.queue_position = opt_int(j, "queue_position", p, 0, INT64_MAX);
  if (const json* h = find(j, "ledger_head", p, false))
    r.ledger_head = LedgerHead{req_int(*h, "seq", p + ".ledger_head", 0, INT64_MAX),
                               req_str(*h, "hash", p + ".ledger_head", 64)};
  r.history.clear();
  if (const json* h = find(j, "history", p, false)) {
    if (!h->is_array()) bad(p + ".history", "expected an array");
    for (const auto& x : *h) r.history.push_back(x.get<RoundStatus>());
  }
}

void to_json(json& j, const ContributorStatus& r) {
  j = {{"id", r.id},
       {"name", r.name},
       {"state", r.state},
       {"hardware", r.hardware},
       {"job", opt(r.job)},
       {"round", opt(r.round)},
       {"slot", opt(r.slot)},
       {"accepted", r.accepted},
       {"rejected", r.rejected},
       {"tokens", r.tokens},
       {"bytes_received", r.bytes_received},
       {"bytes_up", r.bytes_received},
       {"bytes_down", r.bytes_down},
       {"joined", r.joined},
       {"last_seen_s", r.last_seen_s},
       {"compute_s", r.compute_s},
       {"measured_s", r.measured_s},
       {"wait_s", r.wait_s},
       {"rating", r.rating},
       {"benched", r.benched}};
}
void from_json(const json& j, ContributorStatus& r) {
  const std::string p = "contributors[]";
  r.id = req_int(j, "id", p, 0, INT64_MAX);
  r.name = str0(j, "name", p);
  r.state = str0(j, "state", p);
  r.hardware = Hardware{};
  if (const json* h = find(j, "hardware", p, false)) {
    try {
      r.hardware = h->get<Hardware>();
    } catch (const ProtocolError&) {
    }
  }
  r.job = opt_int(j, "job", p, 0, INT64_MAX);
  r.round = opt_int(j, "round", p, 0, INT64_MAX);
  r.slot = opt_int(j, "slot", p, 0, INT64_MAX);
  r.accepted = int0(j, "accepted", p);
  r.rejected = int0(j, "rejected", p);
  r.tokens = int0(j, "tokens", p);
  r.bytes_received = int0(j, "bytes_received", p);
  r.bytes_down = int0(j, "bytes_down", p);
  r.joined = num0(j, "joined", p);
  r.last_seen_s = num0(j, "last_seen_s", p);
  r.compute_s = num0(j, "compute_s", p);
  r.measured_s = num0(j, "measured_s", p);
  r.wait_s = num0(j, "wait_s", p);
  r.rating = 0.5;
  if (find(j, "rating", p, false)) r.rating = num0(j, "rating", p);
  r.benched = false;
  if (const json* b = find(j, "benched", p, false)) {
    if (!b->is_boolean()) bad("contributors[].benched", "expected true or false");
    r.benched = b->get<bool>();
  }
}

void to_json(json& j, const StatusResponse& r) {
  j = {{"time", r.time},
       {"heartbeat_timeout_s", r.heartbeat_timeout_s},
       {"job_order", r.job_order},
       {"jobs", r.jobs},
       {"contributors", r.contributors}};
}
void from_json(const json& j, StatusResponse& r) {
  r.time = num0(j, "time", "");
  r.heartbeat_timeout_s = num0(j, "heartbeat_timeout_s", "");
  r.job_order = str0(j, "job_order", "");
  r.jobs.clear();
  r.contributors.clear();
  if (const json* v = find(j, "jobs", "", false)) {
    if (!v->is_array()) bad("jobs", "expected an array");
    for (const auto& x : *v) r.jobs.push_back(x.get<JobStatus>());
  }
  if (const json* v = find(j, "contributors", "", false)) {
    if (!v->is_array()) bad("contributors", "expected an array");
    for (const auto& x : *v) r.contributors.push_back(x.get<ContributorStatus>());
  }
}

void check_claims(const UploadClaims& c) {
  if (c.tokens < 0) bad("tokens", "expected a non-negative integer");
  if (!std::isfinite(c.compute_s) || c.compute_s < 0 || c.compute_s > 1e6)
    bad("compute_s", "expected seconds in 0..1e6");
  if (c.wait_s && (!std::isfinite(*c.wait_s) || *c.wait_s < 0 || *c.wait_s > 1e7))
    bad("wait_s", "expected seconds in 0..1e7");
  if (c.loss && (!std::isfinite(*c.loss) || *c.loss < 0 || *c.loss > 1e3))
    bad("loss", "expected a finite loss in 0..1000 (or nan for none)");
}

} // namespace myelin::pool
