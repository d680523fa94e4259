// SQLite access for the pool coordinator: RAII handles for the connection and
// statements, a transaction guard, and the coordinator's schema. Every SQLite
// return code is checked; failures throw std::runtime_error naming the call.
// The database runs in WAL mode with synchronous=FULL, so a committed
// transaction survives kill -9 (and power loss, as far as fsync allows).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

struct sqlite3;
struct sqlite3_stmt;

namespace myelin::pool {

class Stmt {
 public:
  Stmt(sqlite3* db, const std::string& sql);
  ~Stmt();
  Stmt(Stmt&& o) noexcept : db_(o.db_), st_(o.st_) { o.st_ = nullptr; }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  Stmt& operator=(Stmt&&) = delete;

  // Parameters are 1-based, as in SQLite.
  Stmt& bind(int i, std::int64_t v);
  Stmt& bind(int i, int v) { return bind(i, std::int64_t(v)); }
  Stmt& bind(int i, double v);
  Stmt& bind(int i, const std::string& v);
  Stmt& bind(int i, const char* v) { return bind(i, std::string(v)); }
  Stmt& bind_null(int i);
  // nullopt binds NULL.
  Stmt& bind(int i, const std::optional<double>& v);
  Stmt& bind(int i, const std::optional<std::int64_t>& v);
  Stmt& bind(int i, const std::optional<std::string>& v);
  // Binds all arguments in order, starting at parameter 1.
  template <typename... A> Stmt& bind_all(const A&... a) {
    int i = 1;
    (bind(i++, a), ...);
    return *this;
  }
  // true: a row is available; false: done. Throws on error.
  bool step();
  // Runs a statement that returns no rows.
  void run() {
    while (step()) {
    }
  }
  void reset();

  std::int64_t i64(int col) const;
  double f64(int col) const;
  std::string text(int col) const;
  bool is_null(int col) const;
  // NULL -> nullopt
  std::optional<double> opt_f64(int col) const;

 private:
  sqlite3* db_;
  sqlite3_stmt* st_ = nullptr;
};

class Db {
 public:
  // Opens (creating if needed) the database file; enables WAL, FULL sync,
  // a busy timeout (other processes such as `pool token create` may write).
  explicit Db(const std::string& path);
  ~Db();
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;

  void exec(const std::string& sql);
  Stmt prepare(const std::string& sql) { return Stmt(db_, sql); }
  std::int64_t last_insert_id() const;
  int changes() const;
  sqlite3* handle() { return db_; }

 private:
  sqlite3* db_ = nullptr;
};

// BEGIN IMMEDIATE ... COMMIT; rolls back in the destructor unless committed.
class Tx {
 public:
  explicit Tx(Db& db);
  ~Tx();
  Tx(const Tx&) = delete;
  Tx& operator=(const Tx&) = delete;
  void commit();

 private:
  Db& db_;
  bool done_ = false;
};

// Opens state_dir/pool.db (creating the folder) and creates the schema.
std::string db_path(const std::string& state_dir);
void create_schema(Db& db);
// ALTER TABLE ... ADD COLUMN unless the table has that column already.
void add_column_if_missing(Db& db, const std::string& table, const std::string& column,
                           const std::string& decl);

double unix_now();

} // namespace myelin::pool
