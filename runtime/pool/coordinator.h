// `myelin pool serve`: the coordinator's HTTP(S) API over PoolState.
//
// Every request carries `Authorization: Bearer TOKEN` (GET requests may pass
// ?token=TOKEN instead, so a browser can open the dashboard). Routes:
//   GET  /                                 dashboard (HTML + JS, no external assets)
//   GET  /api/status                       jobs, rounds, contributors (JSON)
//   GET  /api/ledger?job=ID&format=csv     the contributions ledger (JSON or CSV)
//   POST /api/jobs                         submit a job (admin; body: job JSON)
//   POST /api/jobs/ID/stop                 stop a job (admin)
//   POST /api/join                         {name, hardware} -> {contributor_id, heartbeat_s}
//   POST /api/heartbeat                    {contributor_id, state}
//   POST /api/leave                        {contributor_id}
//   POST /api/work                         {contributor_id} -> assignment or {wait}
//   GET  /api/jobs/ID/model?round=R        global model of round R (llm.c file)
//   GET  /api/jobs/ID/shards/K             training shard K
//   POST /api/jobs/ID/rounds/R/upload?contributor_id=&tokens=&compute_s=&loss=
//                                          pseudo-gradient (wire format, compress.h)
// JSON bodies are limited to 64 KiB, uploads to --max-upload-mb; bad or
// oversized requests get a 4xx answer and change nothing.
#pragma once

#include <string>

namespace myelin::pool {

struct ServeOptions {
  std::string listen = "127.0.0.1:8470"; // HOST:PORT; port 0 = any free port
  std::string state_dir;
  std::string tls_cert, tls_key;
  double heartbeat_timeout_s = 30;
  double max_upload_mb = 2048;
  int threads = 1; // CPU threads for evaluating global models
  bool quiet = false;
};

// Serves until SIGINT/SIGTERM. Writes the bound port to STATE_DIR/port.
int serve(const ServeOptions& o);

} // namespace myelin::pool
