// The tamper-evident ledger: every finished contribution row (accepted or
// rejected) is sealed into a per-job SHA-256 hash chain, in the order rows
// are sealed (`seq` = 1, 2, ... within a job):
//
//   hash = SHA-256(prev_hash "\n" key "=" cell "\n" key "=" cell ...)
//
// over every field of the exported row except `hash` itself, keys in
// alphabetical order; prev_hash is the hash of the job's previous row ("" for
// the first). A cell is the field as text: a string as is, a number as JSON
// writes it, true/false, and "" for null. The CSV export writes exactly these
// cells, so a chain verifies from the JSON export and from the CSV export
// alike. Editing, deleting, inserting or reordering rows breaks the chain at
// the first row affected; `/api/status` shows each job's head (seq and hash)
// so a published head pins the chain's end too. Rows still pending come
// after the chain without a hash. A row is sealed (PoolState::tick) once its
// status is no longer 'pending': every field it shows must be written in the
// same transaction that sets its final status.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

namespace myelin::pool {

// A field as hashed and as written to CSV.
std::string ledger_cell(const nlohmann::json& v);
// The chain hash of a row (its "hash" field, if any, is left out).
std::string ledger_hash(const std::string& prev_hash, const nlohmann::json& row);

// CSV of ledger rows (objects): a header line, then one line per row. The
// usual columns come first in a fixed order, any others after them in
// alphabetical order.
std::string ledger_to_csv(const nlohmann::json& rows);

struct LedgerCheck {
  bool ok = false;
  std::int64_t rows = 0, sealed = 0, pending = 0;
  std::string message; // on failure names the first bad row: "row 7 (id 12): ..."
};
// Recomputes the chains of an export (JSON array or CSV, told apart by the
// first character). Throws InputError when the text is neither.
LedgerCheck verify_ledger(const std::string& text);

} // namespace myelin::pool
