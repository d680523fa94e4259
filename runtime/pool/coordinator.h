// `myelin pool serve`: the coordinator. PoolState (state.h) holds the pool,
// PoolApi (http_api.h) answers its HTTP API, and a cpp-httplib server behind
// the connection gate (conn_gate.h) carries it over HTTP(S). Routes, auth
// and body limits are described in http_api.h.
#pragma once

#include <string>

#include "runtime/pool/conn_gate.h"

namespace myelin::pool {

struct ServeOptions {
  std::string listen = "127.0.0.1:8470"; // HOST:PORT; port 0 = any free port
  std::string state_dir;
  std::string tls_cert, tls_key;
  double heartbeat_timeout_s = 5;
  double max_upload_mb = 2048;
  int threads = 1;             // CPU threads for evaluating global models
  bool private_status = false; // status page, /api/status and the ledger need a token
  GateOptions gate;            // connection limits and timeouts
  bool quiet = false;
};

// Serves until SIGINT/SIGTERM. Writes the bound port to STATE_DIR/port.
int serve(const ServeOptions& o);

} // namespace myelin::pool
