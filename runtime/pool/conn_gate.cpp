#include "runtime/pool/conn_gate.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <httplib.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "runtime/util/error.h"

namespace myelin::pool {
namespace {

thread_local bool t_close_after = false;
thread_local double t_started = 0;

double now_unix() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

struct SslFree {
  void operator()(SSL* s) const { SSL_free(s); }
};

struct Conn {
  int fd = -1;
  std::string ip, local_ip;
  int port = 0, local_port = 0;
  std::unique_ptr<SSL, SslFree> ssl;
  bool handshaken = false, want_write = false;
  std::string buf; // bytes read and not yet consumed, from `pos`
  std::size_t pos = 0;
  double last_active = 0, started = 0; // started: first byte of the current request
  std::size_t need = 0;                // bytes of head (+ small body) once the head is complete
  std::uint64_t body_len = 0;          // the request's Content-Length
  int served = 0;

  std::size_t avail() const { return buf.size() - pos; }
  void compact() {
    if (pos > 0 && (pos == buf.size() || pos > 65536)) {
      buf.erase(0, pos);
      pos = 0;
    }
  }
};

// Waits for fd to become readable (write=false) or writable; false on timeout.
bool wait_fd(int fd, bool write, double timeout_s) {
  pollfd p{fd, short(write ? POLLOUT : POLLIN), 0};
  const double end = now_unix() + timeout_s;
  for (;;) {
    const double left = end - now_unix();
    if (left <= 0) return false;
    const int r = ::poll(&p, 1, int(std::min(left, 1.0) * 1000) + 1);
    if (r > 0) return true;
    if (r < 0 && errno != EINTR) return false;
  }
}

// Case-insensitive search of a header's value in a request head.
std::string header_value(const std::string& head, const char* name) {
  const std::size_t n = std::strlen(name);
  std::size_t i = head.find('\n');
  while (i != std::string::npos && i + 1 < head.size()) {
    const std::size_t start = i + 1, end = head.find('\n', start);
    const std::string line =
        head.substr(start, end == std::string::npos ? std::string::npos : end - start);
    if (line.size() > n && line[n] == ':' &&
        std::equal(name, name + n, line.begin(),
                   [](char a, char b) { return std::tolower(a) == std::tolower(b); })) {
      std::string v = line.substr(n + 1);
      while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.erase(0, 1);
      while (!v.empty() && (v.back() == '\r' || v.back() == ' ')) v.pop_back();
      return v;
    }
    i = end;
  }
  return {};
}

class Gate;

// cpp-httplib's Stream over a gated connection: buffered bytes first, then
// the socket (or TLS), with deadlines.
class GateStream : public httplib::Stream {
 public:
  GateStream(Conn& c, double read_deadline, double write_timeout, double min_rate)
      : c_(c), deadline_(read_deadline), write_timeout_(write_timeout), min_rate_(min_rate) {}
  bool is_readable() const override { return c_.avail() > 0 || wait_fd(c_.fd, false, left()); }
  bool is_writable() const override { return wait_fd(c_.fd, true, write_timeout_); }
  ssize_t read(char* ptr, size_t size) override {
    if (c_.avail() > 0) {
      const std::size_t n = std::min(size, c_.avail());
      std::memcpy(ptr, c_.buf.data() + c_.pos, n);
      c_.pos += n;
      c_.compact();
      return ssize_t(n);
    }
    for (;;) {
      if (left() <= 0) return -1;
      if (c_.ssl) {
        const int r = SSL_read(c_.ssl.get(), ptr, int(std::min<size_t>(size, 1 << 30)));
        if (r > 0) return r;
        const int e = SSL_get_error(c_.ssl.get(), r);
        if (e == SSL_ERROR_ZERO_RETURN) return 0;
        if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) return -1;
        if (!wait_fd(c_.fd, e == SSL_ERROR_WANT_WRITE, std::min(left(), 30.0))) return -1;
      } else {
        const ssize_t r = ::recv(c_.fd, ptr, size, 0);
        if (r >= 0) return r;
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return -1;
        if (!wait_fd(c_.fd, false, std::min(left(), 30.0))) return -1;
      }
    }
  }
  ssize_t write(const char* ptr, size_t size) override {
    std::size_t done = 0;
    if (t0_ == 0) t0_ = last_write_ = now_unix(); // the answer starts
    while (done < size) {
      // A client that reads too slowly (after a 10 s grace) loses the
      // answer rather than holding a worker.
      const double t = now_unix() - t0_;
      if (t > 10 && double(written_ + done) < min_rate_ * (t - 10)) return -1;
      bool want_write = true;
      if (c_.ssl) {
        const int r =
            SSL_write(c_.ssl.get(), ptr + done, int(std::min<size_t>(size - done, 1 << 30)));
        if (r > 0) {
          done += std::size_t(r);
          last_write_ = now_unix();
          continue;
        }
        const int e = SSL_get_error(c_.ssl.get(), r);
        if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) return -1;
        want_write = e == SSL_ERROR_WANT_WRITE;
      } else {
        const ssize_t r = ::send(c_.fd, ptr + done, size - done, MSG_NOSIGNAL);
        if (r >= 0) {
          done += std::size_t(r);
          last_write_ = now_unix();
          continue;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return -1;
      }
      // Wait in short steps, so the rate check above runs; give up when no
      // byte went out for write_timeout_ seconds.
      if (!wait_fd(c_.fd, want_write, 1.0) && now_unix() - last_write_ > write_timeout_) return -1;
    }
    written_ += size;
    return ssize_t(size);
  }
  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    ip = c_.ip;
    port = c_.port;
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    ip = c_.local_ip;
    port = c_.local_port;
  }
  socket_t socket() const override { return c_.fd; }

 private:
  double left() const { return deadline_ - now_unix(); }
  Conn& c_;
  double deadline_, write_timeout_, min_rate_, t0_ = 0, last_write_ = 0;
  std::uint64_t written_ = 0;
};

// Runs one request of a connection: the server's process_request.
using ServeFn = std::function<bool(httplib::Stream&, bool close, bool& closed)>;

class Gate {
 public:
  Gate(const GateOptions& o, SSL_CTX* ctx) : o_(o), ctx_(ctx) {
    if (::pipe(wake_) != 0) throw std::runtime_error("pipe failed");
    for (int fd : wake_) ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  }
  ~Gate() {
    shutdown();
    for (int fd : wake_) ::close(fd);
  }
  Gate(const Gate&) = delete;
  Gate& operator=(const Gate&) = delete;

  void start(ServeFn serve) {
    serve_ = std::move(serve);
    poller_ = std::thread([this] { poll_loop(); });
    for (int i = 0; i < std::max(1, o_.workers); ++i)
      workers_.emplace_back([this] { work_loop(); });
  }

  // An accepted socket (from the accept thread).
  void adopt(int fd) {
    auto c = std::make_unique<Conn>();
    c->fd = fd;
    sockaddr_storage a{};
    socklen_t n = sizeof(a);
    if (::getpeername(fd, reinterpret_cast<sockaddr*>(&a), &n) == 0) c->ip = addr_text(a, c->port);
    n = sizeof(a);
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &n) == 0)
      c->local_ip = addr_text(a, c->local_port);
    {
      std::lock_guard lk(mu_);
      if (stopping_ || open_ >= o_.max_connections || per_ip_[c->ip] >= o_.max_per_ip) {
        ::close(fd);
        ++refused_;
        return;
      }
      ++open_;
      ++per_ip_[c->ip];
    }
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (ctx_) {
      c->ssl.reset(SSL_new(ctx_));
      if (!c->ssl || SSL_set_fd(c->ssl.get(), fd) != 1) return close_conn(std::move(c));
      SSL_set_accept_state(c->ssl.get());
      SSL_set_mode(c->ssl.get(),
                   SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    } else {
      c->handshaken = true;
    }
    c->last_active = now_unix();
    to_poller(std::move(c));
  }

  void shutdown() {
    {
      std::lock_guard lk(mu_);
      if (stopping_) return;
      stopping_ = true;
      for (int fd : busy_) ::shutdown(fd, SHUT_RDWR);
    }
    cv_.notify_all();
    wake();
    if (poller_.joinable()) poller_.join();
    for (auto& t : workers_)
      if (t.joinable()) t.join();
    std::lock_guard lk(mu_);
    for (auto& c : incoming_) ::close(c->fd);
    for (auto& c : ready_) ::close(c->fd);
    incoming_.clear();
    ready_.clear();
  }

 private:
  static std::string addr_text(const sockaddr_storage& a, int& port) {
    char b[INET6_ADDRSTRLEN] = {0};
    if (a.ss_family == AF_INET) {
      const auto* s = reinterpret_cast<const sockaddr_in*>(&a);
      ::inet_ntop(AF_INET, &s->sin_addr, b, sizeof(b));
      port = ntohs(s->sin_port);
    } else if (a.ss_family == AF_INET6) {
      const auto* s = reinterpret_cast<const sockaddr_in6*>(&a);
      ::inet_ntop(AF_INET6, &s->sin6_addr, b, sizeof(b));
      port = ntohs(s->sin6_port);
    }
    return b;
  }
  void wake() {
    const char x = 1;
    [[maybe_unused]] const auto r = ::write(wake_[1], &x, 1);
  }
  void to_poller(std::unique_ptr<Conn> c) {
    {
      std::lock_guard lk(mu_);
      if (!stopping_) {
        incoming_.push_back(std::move(c));
        c = nullptr;
      }
    }
    if (c) return close_conn(std::move(c));
    wake();
  }
  void close_conn(std::unique_ptr<Conn> c) {
    if (c->ssl && c->handshaken) SSL_shutdown(c->ssl.get());
    c->ssl.reset();
    ::close(c->fd);
    std::lock_guard lk(mu_);
    --open_;
    if (--per_ip_[c->ip] <= 0) per_ip_.erase(c->ip);
  }

  // After an SSL call that returned r <= 0: true when it only has to wait
  // for the socket (remembering which direction), false when the connection
  // failed.
  static bool ssl_would_block(Conn& c, int r) {
    const int e = SSL_get_error(c.ssl.get(), r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
      c.want_write = e == SSL_ERROR_WANT_WRITE;
      return true;
    }
    ERR_clear_error();
    return false;
  }

  // Reads what is available; false when the connection is finished (closed
  // by the peer, an error, or a failed handshake).
  bool read_some(Conn& c) {
    char tmp[16384];
    for (;;) {
      if (c.ssl) {
        if (!c.handshaken) {
          const int r = SSL_do_handshake(c.ssl.get());
          if (r == 1) {
            c.handshaken = true;
            c.want_write = false;
            continue;
          }
          return ssl_would_block(c, r);
        }
        const int r = SSL_read(c.ssl.get(), tmp, sizeof(tmp));
        if (r > 0) {
          c.buf.append(tmp, std::size_t(r));
          if (c.avail() > o_.max_head_bytes + o_.small_body) return true;
          continue;
        }
        return ssl_would_block(c, r);
      }
      const ssize_t r = ::recv(c.fd, tmp, sizeof(tmp), 0);
      if (r > 0) {
        c.buf.append(tmp, std::size_t(r));
        if (c.avail() > o_.max_head_bytes + o_.small_body) return true;
        continue;
      }
      if (r == 0) return false;
      return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
    }
  }

  // Whether the buffered bytes hold a whole request (head + small body, or
  // the head of a large one); false = keep reading. Sets c.need.
  enum class Head { kMore, kReady, kBad };
  Head examine(Conn& c) const {
    if (c.avail() == 0) return Head::kMore;
    const std::string_view v(c.buf.data() + c.pos, c.avail());
    std::size_t end = v.find("\r\n\r\n");
    std::size_t skip = 4;
    if (end == std::string_view::npos) {
      end = v.find("\n\n");
      skip = 2;
    }
    if (end == std::string_view::npos)
      return v.size() > o_.max_head_bytes ? Head::kBad : Head::kMore;
    if (end > o_.max_head_bytes) return Head::kBad;
    const std::string head(v.substr(0, end + 2));
    c.body_len = 0;
    const std::string cl = header_value(head, "Content-Length");
    if (!cl.empty()) {
      try {
        c.body_len = std::stoull(cl);
      } catch (const std::exception&) {
        return Head::kReady; // cpp-httplib answers the malformed header
      }
    }
    // Chunked (refused), large, or waiting for "100 Continue": a worker reads
    // the body, with deadlines, once the head passed the route's checks.
    if (!header_value(head, "Transfer-Encoding").empty() || !header_value(head, "Expect").empty() ||
        c.body_len > o_.small_body)
      return Head::kReady;
    c.need = end + skip + c.body_len;
    return v.size() >= c.need ? Head::kReady : Head::kMore;
  }

  void dispatch(std::unique_ptr<Conn> c) {
    {
      std::lock_guard lk(mu_);
      ready_.push_back(std::move(c));
    }
    cv_.notify_one();
  }

  void poll_loop() {
    std::vector<std::unique_ptr<Conn>> conns;
    std::vector<pollfd> fds;
    while (true) {
      {
        std::lock_guard lk(mu_);
        if (stopping_) break;
        for (auto& c : incoming_) conns.push_back(std::move(c));
        incoming_.clear();
      }
      const double now = now_unix();
      // Timeouts, and connections whose buffer already holds a request.
      for (auto& c : conns) {
        if (!c) continue;
        const Head h = examine(*c);
        if (h == Head::kReady) {
          if (c->started == 0) c->started = now;
          dispatch(std::move(c));
        } else if (h == Head::kBad) {
          close_conn(std::move(c));
        } else if ((c->started > 0 && now - c->started > o_.head_timeout_s) ||
                   (c->started == 0 && now - c->last_active > o_.idle_timeout_s)) {
          close_conn(std::move(c));
        }
      }
      conns.erase(std::remove(conns.begin(), conns.end(), nullptr), conns.end());
      fds.assign(1, pollfd{wake_[0], POLLIN, 0});
      for (auto& c : conns) fds.push_back({c->fd, short(c->want_write ? POLLOUT : POLLIN), 0});
      const int r = ::poll(fds.data(), fds.size(), 200);
      if (r < 0 && errno != EINTR) break;
      if (fds[0].revents) {
        char b[256];
        while (::read(wake_[0], b, sizeof(b)) > 0) {
        }
      }
      const double t = now_unix();
      for (std::size_t i = 1; i < fds.size(); ++i) {
        if (!fds[i].revents) continue;
        Conn& c = *conns[i - 1];
        const std::size_t before = c.avail();
        if (!read_some(c)) {
          close_conn(std::move(conns[i - 1]));
          continue;
        }
        if (c.avail() > before) {
          c.last_active = t;
          if (c.started == 0) c.started = t;
        }
      }
      conns.erase(std::remove(conns.begin(), conns.end(), nullptr), conns.end());
    }
    for (auto& c : conns) close_conn(std::move(c));
  }

  void work_loop() {
    for (;;) {
      std::unique_ptr<Conn> c;
      {
        std::unique_lock lk(mu_);
        cv_.wait(lk, [&] { return stopping_ || !ready_.empty(); });
        if (stopping_) return;
        c = std::move(ready_.front());
        ready_.pop_front();
        busy_.insert(c->fd);
      }
      // A large body must come at min_body_rate after a 10 s grace.
      const double deadline =
          now_unix() + o_.head_timeout_s + 10 + double(c->body_len) / o_.min_body_rate;
      GateStream s(*c, deadline, o_.write_timeout_s, o_.min_body_rate);
      t_close_after = false;
      t_started = c->started;
      bool closed = false;
      const bool ok = serve_(s, ++c->served >= 1000, closed);
      {
        std::lock_guard lk(mu_);
        busy_.erase(c->fd);
      }
      if (t_close_after && !c->ssl) {
        // A refused request's body is still coming: stop writing, then
        // discard what arrives for a moment, so that closing does not reset
        // the connection before the client read the answer.
        ::shutdown(c->fd, SHUT_WR);
        char tmp[16384];
        const double end = now_unix() + 0.5;
        std::size_t drained = 0;
        while (now_unix() < end && drained < (std::size_t(8) << 20)) {
          const ssize_t r = ::recv(c->fd, tmp, sizeof(tmp), 0);
          if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) break;
          if (r > 0)
            drained += std::size_t(r);
          else
            wait_fd(c->fd, false, end - now_unix());
        }
      }
      if (!ok || closed || t_close_after) {
        close_conn(std::move(c));
        continue;
      }
      // Keep-alive: bytes TLS already decrypted join the buffer; the next
      // request waits in the gate, not here.
      if (c->ssl) {
        char tmp[16384];
        while (SSL_pending(c->ssl.get()) > 0) {
          const int r = SSL_read(c->ssl.get(), tmp, sizeof(tmp));
          if (r <= 0) break;
          c->buf.append(tmp, std::size_t(r));
        }
      }
      c->started = 0;
      c->need = 0;
      c->body_len = 0;
      c->last_active = now_unix();
      to_poller(std::move(c));
    }
  }

  GateOptions o_;
  SSL_CTX* ctx_;
  ServeFn serve_;
  int wake_[2] = {-1, -1};
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  int open_ = 0;
  long refused_ = 0;
  std::map<std::string, int> per_ip_;
  std::vector<std::unique_ptr<Conn>> incoming_;
  std::deque<std::unique_ptr<Conn>> ready_;
  std::set<int> busy_;
  std::thread poller_;
  std::vector<std::thread> workers_;
};

// cpp-httplib's accept loop hands each socket to process_and_close_socket
// through the task queue: the queue runs it at once, and the override gives
// the socket to the gate.
class InlineQueue : public httplib::TaskQueue {
 public:
  explicit InlineQueue(std::shared_ptr<Gate> g) : gate_(std::move(g)) {}
  void enqueue(std::function<void()> fn) override { fn(); }
  void shutdown() override { gate_->shutdown(); }

 private:
  std::shared_ptr<Gate> gate_;
};

template <typename Base> class GatedServer : public Base {
 public:
  template <typename... A>
  GatedServer(const GateOptions& o, bool tls, A&&... a) : Base(std::forward<A>(a)...) {
    SSL_CTX* ctx = nullptr;
    if constexpr (std::is_same_v<Base, httplib::SSLServer>)
      ctx = tls ? this->ssl_context() : nullptr;
    gate_ = std::make_shared<Gate>(o, ctx);
    gate_->start([this](httplib::Stream& s, bool close, bool& closed) {
      return this->process_request(s, close, closed, nullptr);
    });
    this->new_task_queue = [g = gate_]() -> httplib::TaskQueue* {
      return std::make_unique<InlineQueue>(g).release(); // cpp-httplib takes ownership
    };
  }
  ~GatedServer() override { gate_->shutdown(); }

 private:
  bool process_and_close_socket(socket_t sock) override {
    gate_->adopt(sock);
    return true;
  }
  std::shared_ptr<Gate> gate_;
};

} // namespace

std::unique_ptr<httplib::Server> make_gated_server(const GateOptions& o, const std::string& cert,
                                                   const std::string& key) {
  if (cert.empty()) return std::make_unique<GatedServer<httplib::Server>>(o, false);
  auto s = std::make_unique<GatedServer<httplib::SSLServer>>(o, true, cert.c_str(), key.c_str());
  require(s->is_valid(), "--tls-cert", "cannot load the certificate or key");
  return s;
}

void close_connection_after_response() { t_close_after = true; }
double request_started_at() { return t_started; }

} // namespace myelin::pool
