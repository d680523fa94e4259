#include "runtime/pool/ledger.h"

#include <algorithm>
#include <map>
#include <sstream>
#include <vector>

#include "runtime/pool/tokens.h"
#include "runtime/util/error.h"

using nlohmann::json;

namespace myelin::pool {
namespace {

// Columns in the order the CSV export shows them first.
const std::vector<std::string>& lead_columns() {
  static const std::vector<std::string> c = {
      "seq",         "id",     "job",       "round",      "contributor_id",
      "contributor", "tokens", "compute_s", "train_loss", "bytes",
      "raw_bytes",   "norm",   "status",    "reason",     "time"};
  return c;
}

// The columns the rows have (a column no row has is not written: an empty
// cell would read back as a null field and change the hash).
std::vector<std::string> columns_of(const json& rows) {
  std::vector<std::string> cols;
  for (const auto& c : lead_columns())
    for (const auto& r : rows)
      if (r.contains(c)) {
        cols.push_back(c);
        break;
      }
  std::vector<std::string> extra;
  for (const auto& r : rows)
    for (auto it = r.begin(); it != r.end(); ++it)
      if (std::find(lead_columns().begin(), lead_columns().end(), it.key()) ==
              lead_columns().end() &&
          std::find(extra.begin(), extra.end(), it.key()) == extra.end() && it.key() != "hash")
        extra.push_back(it.key());
  std::sort(extra.begin(), extra.end());
  cols.insert(cols.end(), extra.begin(), extra.end());
  cols.push_back("hash");
  return cols;
}

std::string csv_quote(const std::string& s) {
  if (s.find_first_of(",\"\r\n") == std::string::npos) return s;
  std::string r = "\"";
  for (char c : s) r += (c == '"') ? std::string("\"\"") : std::string(1, c);
  return r + "\"";
}

// RFC 4180 records (quoted fields may hold commas, quotes and newlines).
std::vector<std::vector<std::string>> parse_csv(const std::string& t) {
  std::vector<std::vector<std::string>> out;
  std::vector<std::string> rec;
  std::string f;
  bool quoted = false, any = false;
  for (std::size_t i = 0; i < t.size(); ++i) {
    const char c = t[i];
    if (quoted) {
      if (c == '"' && i + 1 < t.size() && t[i + 1] == '"') {
        f += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        f += c;
      }
      continue;
    }
    if (c == '"') {
      quoted = true;
      any = true;
    } else if (c == ',') {
      rec.push_back(std::move(f));
      f.clear();
      any = true;
    } else if (c == '\n' || c == '\r') {
      if (c == '\r' && i + 1 < t.size() && t[i + 1] == '\n') ++i;
      if (any || !f.empty()) {
        rec.push_back(std::move(f));
        out.push_back(std::move(rec));
      }
      rec.clear();
      f.clear();
      any = false;
    } else {
      f += c;
      any = true;
    }
  }
  if (quoted) throw InputError("ledger CSV: unterminated quoted field");
  if (any || !f.empty()) {
    rec.push_back(std::move(f));
    out.push_back(std::move(rec));
  }
  return out;
}

// A row as (key, cell) pairs, keys sorted; the hash column apart.
using Cells = std::map<std::string, std::string>;

std::string hash_cells(const std::string& prev, const Cells& cells) {
  std::string s = prev + "\n";
  for (const auto& [k, v] : cells)
    if (k != "hash") s += k + "=" + v + "\n";
  return sha256_hex(s);
}

} // namespace

std::string ledger_cell(const json& v) {
  if (v.is_null()) return {};
  if (v.is_string()) return v.get<std::string>();
  if (v.is_boolean()) return v.get<bool>() ? "true" : "false";
  return v.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string ledger_hash(const std::string& prev_hash, const json& row) {
  Cells c;
  for (auto it = row.begin(); it != row.end(); ++it) c[it.key()] = ledger_cell(it.value());
  return hash_cells(prev_hash, c);
}

std::string ledger_to_csv(const json& rows) {
  const auto cols = columns_of(rows);
  std::ostringstream o;
  for (std::size_t i = 0; i < cols.size(); ++i) o << (i ? "," : "") << cols[i];
  o << '\n';
  for (const auto& r : rows) {
    for (std::size_t i = 0; i < cols.size(); ++i) {
      auto it = r.find(cols[i]);
      o << (i ? "," : "") << csv_quote(it == r.end() ? std::string() : ledger_cell(*it));
    }
    o << '\n';
  }
  return o.str();
}

LedgerCheck verify_ledger(const std::string& text) {
  // Both formats become rows of cells.
  std::vector<Cells> rows;
  const auto first = text.find_first_not_of(" \t\r\n");
  if (first != std::string::npos && text[first] == '[') {
    json j;
    try {
      j = json::parse(text);
    } catch (const json::exception& e) {
      throw InputError(std::string("ledger JSON: ") + e.what());
    }
    for (const auto& r : j) {
      if (!r.is_object()) throw InputError("ledger JSON: expected an array of objects");
      Cells c;
      for (auto it = r.begin(); it != r.end(); ++it) c[it.key()] = ledger_cell(it.value());
      rows.push_back(std::move(c));
    }
  } else {
    const auto recs = parse_csv(text);
    if (recs.empty()) throw InputError("ledger CSV: no header line");
    const auto& head = recs[0];
    if (std::find(head.begin(), head.end(), "hash") == head.end())
      throw InputError("ledger: neither a JSON array nor a CSV with a hash column");
    for (std::size_t i = 1; i < recs.size(); ++i) {
      if (recs[i].size() != head.size())
        throw InputError("ledger CSV: line " + std::to_string(i + 1) + " has " +
                         std::to_string(recs[i].size()) + " fields, the header " +
                         std::to_string(head.size()));
      Cells c;
      for (std::size_t k = 0; k < head.size(); ++k) c[head[k]] = recs[i][k];
      rows.push_back(std::move(c));
    }
  }
  LedgerCheck out;
  std::map<std::string, std::pair<std::string, std::int64_t>> heads; // job -> (hash, seq)
  bool pending_seen = false;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const Cells& c = rows[i];
    auto get = [&](const char* k) {
      auto it = c.find(k);
      return it == c.end() ? std::string() : it->second;
    };
    const std::string where = "row " + std::to_string(i + 1) + " (id " + get("id") + ")";
    auto fail = [&](const std::string& why) {
      out.ok = false;
      out.message = where + ": " + why;
      return out;
    };
    ++out.rows;
    const std::string hash = get("hash");
    if (hash.empty()) {
      if (get("status") != "pending") return fail("not sealed but " + get("status"));
      pending_seen = true;
      ++out.pending;
      continue;
    }
    if (pending_seen) return fail("sealed row after a pending one");
    auto& [prev, seq] = heads[get("job")];
    std::int64_t want = seq + 1, got = -1;
    try {
      got = std::stoll(get("seq"));
    } catch (const std::exception&) {
    }
    if (got != want)
      return fail("seq " + get("seq") + " where " + std::to_string(want) +
                  " was due (a row is missing, inserted or moved)");
    if (hash_cells(prev, c) != hash)
      return fail("hash mismatch (the row or the one before it was edited)");
    prev = hash;
    seq = got;
    ++out.sealed;
  }
  out.ok = true;
  out.message = std::to_string(out.sealed) + " sealed rows in " + std::to_string(heads.size()) +
                " chain(s) verified, " + std::to_string(out.pending) + " pending";
  return out;
}

} // namespace myelin::pool
