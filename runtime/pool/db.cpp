#include "runtime/pool/db.h"

#include <sqlite3.h>

#include <chrono>
#include <filesystem>
#include <stdexcept>

namespace myelin::pool {
namespace {
[[noreturn]] void fail(sqlite3* db, const std::string& what, int rc) {
  std::string msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  throw std::runtime_error("sqlite: " + what + ": " + msg + " (code " + std::to_string(rc) + ")");
}
void check(sqlite3* db, int rc, const std::string& what) {
  if (rc != SQLITE_OK) fail(db, what, rc);
}
} // namespace

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

Stmt::Stmt(sqlite3* db, const std::string& sql) : db_(db) {
  check(db_, sqlite3_prepare_v2(db_, sql.c_str(), int(sql.size()), &st_, nullptr),
        "prepare '" + sql.substr(0, 60) + "'");
}

Stmt::~Stmt() {
  if (st_) sqlite3_finalize(st_); // its return code repeats the last step's error
}

Stmt& Stmt::bind(int i, std::int64_t v) {
  check(db_, sqlite3_bind_int64(st_, i, v), "bind");
  return *this;
}
Stmt& Stmt::bind(int i, double v) {
  check(db_, sqlite3_bind_double(st_, i, v), "bind");
  return *this;
}
Stmt& Stmt::bind(int i, const std::string& v) {
  check(db_, sqlite3_bind_text(st_, i, v.data(), int(v.size()), SQLITE_TRANSIENT), "bind");
  return *this;
}
Stmt& Stmt::bind(int i, const std::optional<double>& v) {
  if (v.has_value()) return bind(i, v.value());
  return bind_null(i);
}
Stmt& Stmt::bind(int i, const std::optional<std::int64_t>& v) {
  if (v.has_value()) return bind(i, v.value());
  return bind_null(i);
}
Stmt& Stmt::bind(int i, const std::optional<std::string>& v) {
  if (v.has_value()) return bind(i, v.value());
  return bind_null(i);
}
Stmt& Stmt::bind_null(int i) {
  check(db_, sqlite3_bind_null(st_, i), "bind");
  return *this;
}

bool Stmt::step() {
  const int rc = sqlite3_step(st_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  fail(db_, std::string("step '") + std::string(sqlite3_sql(st_)).substr(0, 60) + "'", rc);
}

void Stmt::reset() {
  check(db_, sqlite3_reset(st_), "reset");
  check(db_, sqlite3_clear_bindings(st_), "clear bindings");
}

std::int64_t Stmt::i64(int col) const { return sqlite3_column_int64(st_, col); }
double Stmt::f64(int col) const { return sqlite3_column_double(st_, col); }
bool Stmt::is_null(int col) const { return sqlite3_column_type(st_, col) == SQLITE_NULL; }
std::optional<double> Stmt::opt_f64(int col) const {
  if (is_null(col)) return std::nullopt;
  return f64(col);
}
std::string Stmt::text(int col) const {
  const auto* p = sqlite3_column_text(st_, col);
  const int n = sqlite3_column_bytes(st_, col);
  return p ? std::string(reinterpret_cast<const char*>(p), std::size_t(n)) : std::string();
}

Db::Db(const std::string& path) {
  const int rc =
      sqlite3_open_v2(path.c_str(), &db_,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
    if (db_) sqlite3_close(db_);
    db_ = nullptr;
    throw std::runtime_error(path + ": cannot open database: " + msg);
  }
  check(db_, sqlite3_busy_timeout(db_, 10000), "busy_timeout");
  exec("PRAGMA journal_mode=WAL");
  exec("PRAGMA synchronous=FULL");
  exec("PRAGMA foreign_keys=ON");
}

Db::~Db() {
  if (db_) sqlite3_close_v2(db_);
}

void Db::exec(const std::string& sql) {
  char* err = nullptr;
  const int rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err);
  if (rc != SQLITE_OK) {
    std::string msg = err ? err : sqlite3_errstr(rc);
    sqlite3_free(err);
    throw std::runtime_error("sqlite: exec '" + sql.substr(0, 60) + "': " + msg);
  }
}

std::int64_t Db::last_insert_id() const { return sqlite3_last_insert_rowid(db_); }
int Db::changes() const { return sqlite3_changes(db_); }

Tx::Tx(Db& db) : db_(db) { db_.exec("BEGIN IMMEDIATE"); }
Tx::~Tx() {
  if (!done_) {
    try {
      db_.exec("ROLLBACK");
    } catch (...) {
    }
  }
}
void Tx::commit() {
  db_.exec("COMMIT");
  done_ = true;
}

std::string db_path(const std::string& state_dir) {
  std::filesystem::create_directories(state_dir);
  return (std::filesystem::path(state_dir) / "pool.db").string();
}

void add_column_if_missing(Db& db, const std::string& table, const std::string& column,
                           const std::string& decl) {
  auto q = db.prepare("SELECT 1 FROM pragma_table_info(?) WHERE name = ?");
  q.bind_all(table, column);
  if (!q.step()) db.exec("ALTER TABLE " + table + " ADD COLUMN " + column + " " + decl);
}

void create_schema(Db& db) {
  Tx tx(db);
  db.exec(R"sql(
CREATE TABLE IF NOT EXISTS tokens(
  id INTEGER PRIMARY KEY, name TEXT NOT NULL, hash TEXT NOT NULL UNIQUE,
  admin INTEGER NOT NULL, created REAL NOT NULL, revoked INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS jobs(
  id INTEGER PRIMARY KEY, name TEXT NOT NULL, spec TEXT NOT NULL, status TEXT NOT NULL,
  round INTEGER NOT NULL, param_count INTEGER NOT NULL, init_val_loss REAL,
  created REAL NOT NULL, finished REAL);
CREATE TABLE IF NOT EXISTS rounds(
  job_id INTEGER NOT NULL REFERENCES jobs(id), round INTEGER NOT NULL, status TEXT NOT NULL,
  opened REAL NOT NULL, closed REAL, model TEXT NOT NULL,
  accepted INTEGER NOT NULL DEFAULT 0, rejected INTEGER NOT NULL DEFAULT 0,
  tokens INTEGER NOT NULL DEFAULT 0, train_loss REAL, val_loss REAL, median_norm REAL,
  update_norm REAL, PRIMARY KEY(job_id, round));
CREATE TABLE IF NOT EXISTS contributors(
  id INTEGER PRIMARY KEY, token_id INTEGER NOT NULL REFERENCES tokens(id), name TEXT NOT NULL,
  hardware TEXT NOT NULL, state TEXT NOT NULL, joined REAL NOT NULL, last_seen REAL NOT NULL,
  job_id INTEGER, round INTEGER, slot INTEGER, UNIQUE(token_id, name));
CREATE TABLE IF NOT EXISTS assignments(
  job_id INTEGER NOT NULL, round INTEGER NOT NULL, slot INTEGER NOT NULL,
  contributor_id INTEGER NOT NULL REFERENCES contributors(id), assigned REAL NOT NULL,
  PRIMARY KEY(job_id, round, slot), UNIQUE(job_id, round, contributor_id));
CREATE TABLE IF NOT EXISTS contributions(
  id INTEGER PRIMARY KEY, job_id INTEGER NOT NULL, round INTEGER NOT NULL,
  contributor_id INTEGER NOT NULL REFERENCES contributors(id), slot INTEGER,
  tokens INTEGER NOT NULL, compute_s REAL NOT NULL, train_loss REAL, bytes INTEGER NOT NULL,
  raw_bytes INTEGER NOT NULL, norm REAL, status TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '',
  file TEXT, created REAL NOT NULL, UNIQUE(job_id, round, contributor_id));
)sql");
  // Columns added since the first schema (older databases gain them here):
  // the coordinator's own measurements of an upload, and the ledger chain.
  add_column_if_missing(db, "contributions", "receive_s", "REAL");
  add_column_if_missing(db, "contributions", "since_assigned_s", "REAL");
  add_column_if_missing(db, "contributions", "seq", "INTEGER");
  add_column_if_missing(db, "contributions", "hash", "TEXT");
  // Scoring, replays and ratings (score.h, rating.h): a contribution's loss
  // changes on its own and on other rows, its replay's relative difference,
  // its share of the outer average and the contributor's rating after it.
  add_column_if_missing(db, "contributions", "weight", "REAL");
  add_column_if_missing(db, "contributions", "score_assigned", "REAL");
  add_column_if_missing(db, "contributions", "score_other", "REAL");
  add_column_if_missing(db, "contributions", "replay_diff", "REAL");
  add_column_if_missing(db, "contributions", "rating", "REAL");
  add_column_if_missing(db, "contributors", "rating_alpha", "REAL NOT NULL DEFAULT 1");
  add_column_if_missing(db, "contributors", "rating_beta", "REAL NOT NULL DEFAULT 1");
  add_column_if_missing(db, "contributors", "benched", "INTEGER NOT NULL DEFAULT 0");
  // Traffic and time per contribution: bytes served to the contributor since
  // its previous upload, its claimed waiting seconds; the outer update's size.
  add_column_if_missing(db, "contributions", "bytes_down", "INTEGER");
  add_column_if_missing(db, "contributions", "wait_s", "REAL");
  add_column_if_missing(db, "contributors", "bytes_down_pending", "INTEGER NOT NULL DEFAULT 0");
  add_column_if_missing(db, "contributors", "last_upload", "REAL");
  add_column_if_missing(db, "rounds", "update_bytes", "INTEGER");
  // The key of a job's replay draws (score.h replay_drawn).
  add_column_if_missing(db, "jobs", "replay_secret", "INTEGER");
  add_column_if_missing(db, "rounds", "score_s", "REAL");
  add_column_if_missing(db, "rounds", "replay_s", "REAL");
  add_column_if_missing(db, "rounds", "replays", "INTEGER");
  db.exec("CREATE INDEX IF NOT EXISTS contributions_unsealed ON contributions(id) WHERE hash IS "
          "NULL");
  tx.commit();
}

} // namespace myelin::pool
