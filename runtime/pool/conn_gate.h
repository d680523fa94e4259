// Accept-side protection of the coordinator's HTTP(S) server against idle,
// slow and numerous clients.
//
// cpp-httplib 0.11 gives each accepted connection a worker thread for its
// whole life, so a few dozen idle or byte-dribbling connections take every
// worker and stall everyone. Here the server's accepted sockets go to a gate
// instead: one poll() thread reads every connection's request line and
// headers (and a body up to `small_body` bytes) without holding a worker,
// and only a complete request goes to one of `workers` threads, which runs
// cpp-httplib's request processing on it. Limits:
//   - at most max_connections open connections, max_per_ip from one
//     address (over that, new connections are closed at once);
//   - a connection with no request under way is closed after idle_timeout_s;
//   - a request's head (+ small body) must arrive within head_timeout_s of
//     its first byte (slowloris clients are dropped, never served);
//   - a larger body must arrive at min_body_rate bytes/s on average (after
//     a 10 s grace), and an answer (a model download) must be read at that
//     rate too; a write waits at most write_timeout_s for the client.
// TLS handshakes and reads run in the gate too (non-blocking OpenSSL).
#pragma once

#include <cstddef>
#include <memory>
#include <string>

namespace httplib {
class Server;
}

namespace myelin::pool {

struct GateOptions {
  int workers = 16;
  int max_connections = 512;
  int max_per_ip = 128;
  double idle_timeout_s = 15;
  double head_timeout_s = 10;
  std::size_t max_head_bytes = 16 * 1024;
  std::size_t small_body = 64 * 1024;
  double min_body_rate = 16 * 1024;
  double write_timeout_s = 60;
};

// A cpp-httplib server (TLS when cert and key are given) whose connections
// go through the gate. Routes and handlers are set on it as usual; listen
// with bind_to_port / listen_after_bind; stop() closes the gate too.
std::unique_ptr<httplib::Server> make_gated_server(const GateOptions& o, const std::string& cert,
                                                   const std::string& key);

// From inside a handler: close this connection once the answer is sent (its
// request body was not read).
void close_connection_after_response();
// From inside a handler: unix time of the first byte of the request being
// served (0 outside the gate).
double request_started_at();

} // namespace myelin::pool
