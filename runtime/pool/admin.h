// Client-side commands of `myelin pool`: submit a job, print the status table,
// export the ledger, cancel a job; and `token create | revoke | list`, which
// work on the state folder directly (the coordinator may be running: SQLite
// WAL allows it, and a revocation takes effect at its next request).
#pragma once

#include <iosfwd>
#include <nlohmann/json.hpp>
#include <string>

namespace myelin::pool {

std::string token_create(const std::string& state_dir, const std::string& name, bool admin);
// Revokes by id (>= 0) or by name; returns how many tokens were revoked
// (InputError when none matched).
int token_revoke(const std::string& state_dir, long long id, const std::string& name);
void token_list(const std::string& state_dir, std::ostream& out);

// Human-readable tables: jobs, the newest rounds of each, contributors.
void print_status(const nlohmann::json& status, std::ostream& out);

} // namespace myelin::pool
