// Bearer tokens: random 32-byte secrets shown once at creation; the database
// keeps only their SHA-256. One token per volunteer: a contributor name
// belongs to the token that registered it. Admin tokens may submit and cancel
// jobs. A revoked token is refused (401) from the next request on, since
// every request looks its token up.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
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

// Revokes the token with this id, or every token with this name (one
// transaction): its contributors are marked left, their slots in open rounds
// freed and their pending uploads rejected ("token revoked"). Returns how
// many tokens were revoked (0: none matched or all were revoked already).
int revoke_tokens(Db& db, std::optional<std::int64_t> id, const std::string& name);

// Every token: id, name, admin, revoked, created, contributors (no secrets).
nlohmann::json list_tokens(Db& db);

} // namespace myelin::pool
