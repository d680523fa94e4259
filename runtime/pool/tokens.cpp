#include "runtime/pool/tokens.h"

#include <openssl/evp.h>
#include <openssl/rand.h>

#include <stdexcept>

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

std::optional<TokenInfo> find_token(Db& db, const std::string& secret) {
  if (secret.empty() || secret.size() > 256) return std::nullopt;
  auto st = db.prepare("SELECT id, name, admin FROM tokens WHERE hash = ? AND revoked = 0");
  st.bind(1, sha256_hex(secret));
  if (!st.step()) return std::nullopt;
  return TokenInfo{st.i64(0), st.text(1), st.i64(2) != 0};
}

} // namespace myelin::pool
