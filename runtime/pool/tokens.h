// Bearer tokens: random 32-byte secrets shown once at creation; the database
// keeps only their SHA-256. Admin tokens may submit and stop jobs.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "runtime/pool/db.h"

namespace myelin::pool {

struct TokenInfo {
  std::int64_t id = 0;
  std::string name;
  bool admin = false;
};

std::string sha256_hex(const std::string& data);
// Creates a token and returns its secret ("myl_" + 64 hex digits).
std::string create_token(Db& db, const std::string& name, bool admin);
// The token a secret belongs to, if any (and not revoked).
std::optional<TokenInfo> find_token(Db& db, const std::string& secret);

} // namespace myelin::pool
