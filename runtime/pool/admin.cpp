#include "runtime/pool/admin.h"

#include <cstdio>
#include <ostream>

#include "runtime/pool/db.h"
#include "runtime/pool/protocol.h"
#include "runtime/pool/tokens.h"
#include "runtime/util/error.h"

using nlohmann::json;

namespace myelin::pool {

std::string token_create(const std::string& state_dir, const std::string& name, bool admin) {
  require(!state_dir.empty(), "--state-dir", "required");
  require(!name.empty() && name.size() <= 100, "--name", "expected 1..100 characters");
  try {
    (void)json(name).dump();
  } catch (const json::exception&) {
    throw InputError("--name: not valid UTF-8");
  }
  Db db(db_path(state_dir));
  create_schema(db);
  return create_token(db, name, admin);
}

int token_revoke(const std::string& state_dir, long long id, const std::string& name) {
  require(!state_dir.empty(), "--state-dir", "required");
  require((id >= 0) != !name.empty(), "--name", "give --name NAME or --id ID");
  Db db(db_path(state_dir));
  create_schema(db);
  const int n = revoke_tokens(db, id >= 0 ? std::optional<std::int64_t>(id) : std::nullopt, name);
  require(n > 0, id >= 0 ? "--id" : "--name", "no such token (or revoked already)");
  return n;
}

void token_list(const std::string& state_dir, std::ostream& out) {
  require(!state_dir.empty(), "--state-dir", "required");
  Db db(db_path(state_dir));
  create_schema(db);
  char line[256];
  std::snprintf(line, sizeof(line), "%-5s %-24s %-6s %-8s %s\n", "id", "name", "admin", "revoked",
                "contributors");
  out << line;
  for (const auto& t : list_tokens(db)) {
    std::snprintf(line, sizeof(line), "%-5lld %-24s %-6s %-8s %lld\n", t["id"].get<long long>(),
                  t["name"].get<std::string>().substr(0, 24).c_str(),
                  t["admin"].get<bool>() ? "yes" : "no", t["revoked"].get<bool>() ? "yes" : "no",
                  t["contributors"].get<long long>());
    out << line;
  }
}

namespace {
std::string num(const json& v, const char* f = "%.4f") {
  if (v.is_null()) return "-";
  char b[64];
  std::snprintf(b, sizeof(b), f, v.get<double>());
  return b;
}
} // namespace

void print_status(const json& st, std::ostream& out) {
  char line[512];
  out << "JOBS\n";
  std::snprintf(line, sizeof(line), "%-4s %-18s %-8s %-11s %-28s %-8s %-10s\n", "id", "name",
                "status", "round", "model", "contrib", "val loss");
  out << line;
  for (const auto& j : st["jobs"]) {
    json last = j["init_val_loss"];
    for (const auto& r : j["history"])
      if (!r["val_loss"].is_null()) last = r["val_loss"];
    std::snprintf(line, sizeof(line), "%-4lld %-18s %-8s %5lld/%-5lld %-28s %3d..%-3d %-10s\n",
                  j["id"].get<long long>(), j["name"].get<std::string>().substr(0, 18).c_str(),
                  j["status"].get<std::string>().c_str(), j["round"].get<long long>(),
                  j["rounds"].get<long long>(), j["model"].get<std::string>().substr(0, 28).c_str(),
                  j["min_contributors"].get<int>(), j["max_contributors"].get<int>(),
                  num(last).c_str());
    out << line;
  }
  for (const auto& j : st["jobs"]) {
    out << "\nROUNDS of job " << j["id"] << " (newest 10)\n";
    std::snprintf(line, sizeof(line), "%-6s %-7s %-8s %-8s %-9s %-10s %-10s %-10s\n", "round",
                  "status", "accepted", "rejected", "tokens", "train", "val", "seconds");
    out << line;
    const auto& h = j["history"];
    const std::size_t from = h.size() > 10 ? h.size() - 10 : 0;
    for (std::size_t i = from; i < h.size(); ++i) {
      const auto& r = h[i];
      const std::string secs =
          r["closed"].is_null()
              ? "-"
              : num(json(r["closed"].get<double>() - r["opened"].get<double>()), "%.2f");
      std::snprintf(line, sizeof(line), "%-6lld %-7s %-8lld %-8lld %-9lld %-10s %-10s %-10s\n",
                    r["round"].get<long long>(), r["status"].get<std::string>().c_str(),
                    r["accepted"].get<long long>(), r["rejected"].get<long long>(),
                    r["tokens"].get<long long>(), num(r["train_loss"]).c_str(),
                    num(r["val_loss"]).c_str(), secs.c_str());
      out << line;
    }
  }
  out << "\nCONTRIBUTORS\n";
  std::snprintf(line, sizeof(line), "%-4s %-16s %-10s %-12s %-8s %-8s %-10s %-9s %s\n", "id",
                "name", "state", "job/round", "accepted", "rejected", "tokens", "seen", "hardware");
  out << line;
  for (const auto& c : st["contributors"]) {
    // Hardware is a claim: shown as typed, whatever a coordinator sends.
    Hardware hw;
    try {
      hw = c["hardware"].get<Hardware>();
    } catch (const std::exception&) {
    }
    std::string hws = hw.device.empty() ? "?" : hw.device;
    if (hw.cores) hws += ", " + std::to_string(*hw.cores) + " cores";
    if (!hw.cpu.empty()) hws += ", " + hw.cpu;
    const std::string jr = (c["job"].is_null() ? std::string("-") : c["job"].dump()) + "/" +
                           (c["round"].is_null() ? std::string("-") : c["round"].dump());
    std::snprintf(line, sizeof(line),
                  "%-4lld %-16s %-10s %-12s %-8lld %-8lld %-10lld %6.1fs   %s\n",
                  c["id"].get<long long>(), c["name"].get<std::string>().substr(0, 16).c_str(),
                  c["state"].get<std::string>().c_str(), jr.c_str(), c["accepted"].get<long long>(),
                  c["rejected"].get<long long>(), c["tokens"].get<long long>(),
                  c["last_seen_s"].get<double>(), hws.c_str());
    out << line;
  }
}

} // namespace myelin::pool
