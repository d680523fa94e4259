// Client-side commands of `myelin pool`: submit a job, print the status table,
// export the ledger, stop a job; and `token create`, which works on the state
// folder directly (the coordinator may be running: SQLite WAL allows it).
#pragma once

#include <iosfwd>
#include <nlohmann/json.hpp>
#include <string>

namespace myelin::pool {

std::string token_create(const std::string& state_dir, const std::string& name, bool admin);

// Human-readable tables: jobs, the newest rounds of each, contributors.
void print_status(const nlohmann::json& status, std::ostream& out);

} // namespace myelin::pool
