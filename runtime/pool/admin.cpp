#include "runtime/pool/admin.h"

#include <cstdio>
#include <ostream>

#include "runtime/pool/db.h"
#include "runtime/pool/tokens.h"
#include "runtime/util/error.h"

using nlohmann::json;

namespace myelin::pool {

std::string token_create(const std::string& state_dir, const std::string& name, bool admin) {
  require(!state_dir.empty(), "--state-dir", "required");
  require(!name.empty() && name.size() <= 100, "--name", "expected 1..100 characters");
  Db db(db_path(state_dir));
  create_schema(db);
  return create_token(db, name, admin);
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
    const auto& hw = c["hardware"];
    std::string hws = hw.value("device", std::string("?"));
    if (hw.contains("cores")) hws += ", " + hw["cores"].dump() + " cores";
    if (hw.contains("cpu")) hws += ", " + hw["cpu"].get<std::string>();
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
