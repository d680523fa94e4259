#include "runtime/pool/tokens.h"

#include <openssl/evp.h>
#include <openssl/rand.h>

#include <stdexcept>
#include <vector>

namespace myelin::pool {
namespace {
std::string hex(const unsigned char* p, std::size_t n) {
  static const char* d = "0123456789abcdef";
  std::string s(2 * n, '0');
  for (std::size_t i = 0; i < n; ++i) {
    s[2 * i] = d[p[i] >> 4];
    s[2 * i + 1] = d[p[i] & 15];
  }
  return s;
}
} // namespace

std::string sha256_hex(const std::string& data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr) != 1)
    throw std::runtime_error("openssl: SHA-256 failed");
  return hex(md, len);
}

std::string create_token(Db& db, const std::string& name, bool admin) {
  unsigned char raw[32];
  if (RAND_bytes(raw, sizeof(raw)) != 1) throw std::runtime_error("openssl: RAND_bytes failed");
  const std::string secret = "myl_" + hex(raw, sizeof(raw));
  db.prepare("INSERT INTO tokens(name, hash, admin, created) VALUES(?,?,?,?)")
      .bind_all(name, sha256_hex(secret), admin ? 1 : 0, unix_now())
      .run();
  return secret;
}

int revoke_tokens(Db& db, std::optional<std::int64_t> id, const std::string& name) {
  Tx tx(db);
  std::vector<std::int64_t> ids;
  {
    auto q = db.prepare("SELECT id FROM tokens WHERE revoked = 0 AND (id = ?1 OR (?1 IS NULL AND "
                        "name = ?2))");
    q.bind(1, id).bind(2, name);
    while (q.step()) ids.push_back(q.i64(0));
  }
  const double now = unix_now();
  for (const auto t : ids) {
    db.prepare("UPDATE tokens SET revoked = 1 WHERE id = ?").bind(1, t).run();
    db.prepare("UPDATE contributions SET status = 'rejected', reason = 'token revoked' "
               "WHERE status = 'pending' AND contributor_id IN (SELECT id FROM contributors WHERE "
               "token_id = ?)")
        .bind(1, t)
        .run();
    db.prepare("DELETE FROM assignments WHERE contributor_id IN (SELECT id FROM contributors "
               "WHERE token_id = ?) AND NOT EXISTS (SELECT 1 FROM contributions x WHERE x.job_id "
               "= assignments.job_id AND x.round = assignments.round AND x.contributor_id = "
               "assignments.contributor_id)")
        .bind(1, t)
        .run();
    db.prepare("UPDATE contributors SET state = 'left', last_seen = ? WHERE token_id = ?")
        .bind_all(now, t)
        .run();
  }
  tx.commit();
  return int(ids.size());
}

nlohmann::json list_tokens(Db& db) {
  nlohmann::json out = nlohmann::json::array();
  auto q = db.prepare("SELECT t.id, t.name, t.admin, t.revoked, t.created, (SELECT COUNT(*) FROM "
                      "contributors c WHERE c.token_id = t.id) FROM tokens t ORDER BY t.id");
  while (q.step())
    out.push_back({{"id", q.i64(0)},
                   {"name", q.text(1)},
                   {"admin", q.i64(2) != 0},
                   {"revoked", q.i64(3) != 0},
                   {"created", q.f64(4)},
                   {"contributors", q.i64(5)}});
  return out;
}

std::optional<TokenInfo> find_token(Db& db, const std::string& secret) {
  if (secret.empty() || secret.size() > 256) return std::nullopt;
  auto st = db.prepare("SELECT id, name, admin FROM tokens WHERE hash = ? AND revoked = 0");
  st.bind(1, sha256_hex(secret));
  if (!st.step()) return std::nullopt;
  return TokenInfo{st.i64(0), st.text(1), st.i64(2) != 0};
}

} // namespace myelin::pool
