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
std::string num(const std::optional<double>& v, const char* f = "%.4f") {
  if (!v) return "-";
  char b[64];
  std::snprintf(b, sizeof(b), f, *v);
  return b;
}
} // namespace

void print_status(const json& status, std::ostream& out) {
  const StatusResponse st = status.get<StatusResponse>();
  char line[512];
  out << "JOBS\n";
  // The model's description last, whole (a Llama shape's is long).
  std::snprintf(line, sizeof(line), "%-4s %-18s %-8s %-11s %-8s %-10s %s\n", "id", "name", "status",
                "round", "contrib", "val loss", "model");
  out << line;
  for (const auto& j : st.jobs) {
    std::optional<double> last = j.init_val_loss;
    for (const auto& r : j.history)
      if (r.val_loss) last = r.val_loss;
    std::snprintf(line, sizeof(line), "%-4lld %-18s %-8s %5lld/%-5lld %3lld..%-3lld %-10s ",
                  static_cast<long long>(j.id), j.name.substr(0, 18).c_str(), j.status.c_str(),
                  static_cast<long long>(j.round), static_cast<long long>(j.rounds),
                  static_cast<long long>(j.min_contributors),
                  static_cast<long long>(j.max_contributors), num(last).c_str());
    out << line << j.model.substr(0, 200) << "\n";
  }
  for (const auto& j : st.jobs) {
    out << "\nROUNDS of job " << j.id << " (newest 10)";
    if (j.ledger_head)
      out << "; ledger head: row " << j.ledger_head->seq << " " << j.ledger_head->hash;
    out << "\n";
    std::snprintf(line, sizeof(line), "%-6s %-7s %-8s %-8s %-9s %-10s %-10s %-10s\n", "round",
                  "status", "accepted", "rejected", "tokens", "train", "val", "seconds");
    out << line;
    const auto& h = j.history;
    const std::size_t from = h.size() > 10 ? h.size() - 10 : 0;
    for (std::size_t i = from; i < h.size(); ++i) {
      const auto& r = h[i];
      const std::string secs = r.closed ? num(*r.closed - r.opened, "%.2f") : std::string("-");
      std::snprintf(line, sizeof(line), "%-6lld %-7s %-8lld %-8lld %-9lld %-10s %-10s %-10s\n",
                    static_cast<long long>(r.round), r.status.c_str(),
                    static_cast<long long>(r.accepted), static_cast<long long>(r.rejected),
                    static_cast<long long>(r.tokens), num(r.train_loss).c_str(),
                    num(r.val_loss).c_str(), secs.c_str());
      out << line;
    }
  }
  out << "\nCONTRIBUTORS (compute s: claimed; held s: measured by the coordinator; rating: "
         "reputation, * = benched)\n";
  std::snprintf(line, sizeof(line),
                "%-4s %-16s %-10s %-12s %-8s %-8s %-7s %-10s %-9s %-9s %-9s %s\n", "id", "name",
                "state", "job/round", "accepted", "rejected", "rating", "tokens", "compute", "held",
                "seen", "hardware");
  out << line;
  for (const auto& c : st.contributors) {
    const Hardware& hw = c.hardware;
    std::string hws = hw.device.empty() ? "?" : hw.device;
    if (hw.cores) hws += ", " + std::to_string(*hw.cores) + " cores";
    if (!hw.cpu.empty()) hws += ", " + hw.cpu;
    const std::string jr = (c.job ? std::to_string(*c.job) : std::string("-")) + "/" +
                           (c.round ? std::to_string(*c.round) : std::string("-"));
    std::snprintf(line, sizeof(line),
                  "%-4lld %-16s %-10s %-12s %-8lld %-8lld %5.3f%-2s %-10lld %8.1fs %8.1fs %6.1fs   "
                  "%s\n",
                  static_cast<long long>(c.id), c.name.substr(0, 16).c_str(), c.state.c_str(),
                  jr.c_str(), static_cast<long long>(c.accepted),
                  static_cast<long long>(c.rejected), c.rating, c.benched ? "*" : "",
                  static_cast<long long>(c.tokens), c.compute_s, c.measured_s, c.last_seen_s,
                  hws.c_str());
    out << line;
  }
}

} // namespace myelin::pool
