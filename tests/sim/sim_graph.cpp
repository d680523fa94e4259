// CPU SIMULATION: streams, stream capture and graphs (see sim_runtime.h).
//
// A stream is an object of its own (the engine's streams must be told apart:
// only the capturing one records). Work queued on a capturing stream becomes
// a node: a closure that does the work when a graph made from the capture is
// launched, and returns the error of that run. Nodes run in the order they
// were queued (a capture on one stream is a chain). Instantiating copies the
// nodes, so an executable graph outlives its graph.
//
// Capture rules modelled on the CUDA runtime's documentation
// (cudaStreamBeginCapture, cudaThreadExchangeStreamCaptureMode): only a
// created stream captures (not the legacy default stream); the thread that
// began a capture in mode global or thread-local must end it, and while it
// captures, calls that may wait or allocate fail with
// cudaErrorStreamCaptureUnsupported and invalidate the capture
// (cudaStreamEndCapture then returns cudaErrorStreamCaptureInvalidated and no
// graph); synchronising a capturing stream does the same from any thread.
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "sim_runtime.h"

namespace sim {
namespace {

using Node = std::function<cudaError_t()>;

struct StreamObj {
  bool capturing = false, invalidated = false;
  cudaStreamCaptureMode mode = cudaStreamCaptureModeGlobal;
  std::thread::id owner;
  std::vector<Node> nodes;
};
struct GraphObj {
  std::vector<Node> nodes;
};

struct Registry {
  std::mutex m;
  std::map<const void*, std::unique_ptr<StreamObj>> streams;
  std::map<const void*, std::unique_ptr<GraphObj>> graphs, execs;
  std::uint64_t captures = 0, launches = 0, nodes_run = 0;
  bool fail_next = false; // invalidate_next_capture
};
Registry& reg() {
  static Registry r;
  return r;
}
// The stream this thread captures in mode global or thread-local, if any.
thread_local StreamObj* t_capture = nullptr;

StreamObj* find_stream(Registry& r, cudaStream_t s) {
  auto it = r.streams.find(s);
  return it == r.streams.end() ? nullptr : it->second.get();
}

void invalidate(StreamObj& st, const char* what) {
  if (!st.invalidated)
    std::fprintf(stderr, "sim: %s during stream capture: the capture is invalidated\n", what);
  st.invalidated = true;
}

} // namespace

namespace detail {
bool is_capturing(cudaStream_t s) {
  if (!s) return false;
  Registry& r = reg();
  std::lock_guard<std::mutex> lk(r.m);
  const StreamObj* st = find_stream(r, s);
  return st && st->capturing;
}
bool capture(cudaStream_t s, Node node) {
  if (!s) return false;
  Registry& r = reg();
  std::lock_guard<std::mutex> lk(r.m);
  StreamObj* st = find_stream(r, s);
  if (!st || !st->capturing) return false;
  if (!st->invalidated) st->nodes.push_back(std::move(node));
  return true;
}
cudaError_t unsafe_during_capture(const char* what) {
  if (!t_capture) return cudaSuccess;
  Registry& r = reg();
  std::lock_guard<std::mutex> lk(r.m);
  invalidate(*t_capture, what);
  set_api_error(cudaErrorStreamCaptureUnsupported);
  return cudaErrorStreamCaptureUnsupported;
}
} // namespace detail

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) {
  if (!s) return cudaErrorInvalidValue;
  Registry& r = reg();
  std::lock_guard<std::mutex> lk(r.m);
  auto obj = std::make_unique<StreamObj>();
  *s = reinterpret_cast<cudaStream_t>(obj.get());
  r.streams[*s] = std::move(obj);
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t s) {
  Registry& r = reg();
  std::lock_guard<std::mutex> lk(r.m);
  auto it = r.streams.find(s);
  if (it == r.streams.end()) return cudaErrorInvalidValue;
  if (t_capture == it->second.get()) t_capture = nullptr;
  r.streams.erase(it);
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s) {
  {
    Registry& r = reg();
    std::lock_guard<std::mutex> lk(r.m);
    if (StreamObj* st = find_stream(r, s); st && st->capturing) {
      invalidate(*st, "cudaStreamSynchronize of the capturing stream");
      detail::set_api_error(cudaErrorStreamCaptureUnsupported);
      return cudaErrorStreamCaptureUnsupported;
    }
  }
  if (const cudaError_t e = detail::unsafe_during_capture("cudaStreamSynchronize")) return e;
  detail::count_host_sync();
  return cudaSuccess;
}

cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode mode) {
  Registry& r = reg();
  std::lock_guard<std::mutex> lk(r.m);
  StreamObj* st = find_stream(r, s);
  if (!st) return cudaErrorStreamCaptureUnsupported; // the legacy stream or no stream
  if (st->capturing) return cudaErrorIllegalState;
  st->capturing = true;
  st->invalidated = false;
  if (r.fail_next) {
    r.fail_next = false;
    invalidate(*st, "a refused call (sim::invalidate_next_capture)");
  }
  st->mode = mode;
  st->owner = std::this_thread::get_id();
  st->nodes.clear();
  if (mode != cudaStreamCaptureModeRelaxed) t_capture = st;
  return cudaSuccess;
}
cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t* graph) {
  if (!graph) return cudaErrorInvalidValue;
  *graph = nullptr;
  Registry& r = reg();
  std::lock_guard<std::mutex> lk(r.m);
  StreamObj* st = find_stream(r, s);
  if (!st || !st->capturing) return cudaErrorIllegalState;
  if (st->mode != cudaStreamCaptureModeRelaxed && st->owner != std::this_thread::get_id())
    return cudaErrorStreamCaptureWrongThread;
  st->capturing = false;
  if (t_capture == st) t_capture = nullptr;
  std::vector<Node> nodes = std::move(st->nodes);
  st->nodes.clear();
  if (st->invalidated) {
    detail::set_api_error(cudaErrorStreamCaptureInvalidated);
    return cudaErrorStreamCaptureInvalidated;
  }
  auto g = std::make_unique<GraphObj>();
  g->nodes = std::move(nodes);
  *graph = reinterpret_cast<cudaGraph_t>(g.get());
  r.graphs[*graph] = std::move(g);
  ++r.captures;
  return cudaSuccess;
}
cudaError_t cudaStreamIsCapturing(cudaStream_t s, cudaStreamCaptureStatus* status) {
  if (!status) return cudaErrorInvalidValue;
  Registry& r = reg();
  std::lock_guard<std::mutex> lk(r.m);
  const StreamObj* st = find_stream(r, s);
  *status = !st || !st->capturing ? cudaStreamCaptureStatusNone
            : st->invalidated     ? cudaStreamCaptureStatusInvalidated
                                  : cudaStreamCaptureStatusActive;
  return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long) {
  if (!exec) return cudaErrorInvalidValue;
  Registry& r = reg();
  std::lock_guard<std::mutex> lk(r.m);
  auto it = r.graphs.find(graph);
  if (it == r.graphs.end()) return cudaErrorInvalidValue;
  auto e = std::make_unique<GraphObj>(*it->second);
  *exec = reinterpret_cast<cudaGraphExec_t>(e.get());
  r.execs[*exec] = std::move(e);
  return cudaSuccess;
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t s) {
  std::vector<Node> nodes;
  {
    Registry& r = reg();
    std::lock_guard<std::mutex> lk(r.m);
    auto it = r.execs.find(exec);
    if (it == r.execs.end()) return cudaErrorInvalidValue;
    nodes = it->second->nodes; // the exec may be destroyed by a node's caller later
  }
  const auto run = [nodes] {
    std::size_t ran = 0;
    cudaError_t e = cudaSuccess;
    while (ran < nodes.size() && e == cudaSuccess) e = nodes[ran++]();
    Registry& r = reg();
    std::lock_guard<std::mutex> lk(r.m);
    ++r.launches;
    r.nodes_run += ran;
    return e;
  };
  if (detail::capture(s, run)) return cudaSuccess; // a graph launched into a capture
  return run();
}
cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  Registry& r = reg();
  std::lock_guard<std::mutex> lk(r.m);
  return r.graphs.erase(graph) ? cudaSuccess : cudaErrorInvalidValue;
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  Registry& r = reg();
  std::lock_guard<std::mutex> lk(r.m);
  return r.execs.erase(exec) ? cudaSuccess : cudaErrorInvalidValue;
}
void invalidate_next_capture() {
  Registry& r = reg();
  std::lock_guard<std::mutex> lk(r.m);
  r.fail_next = true;
}
GraphStats graph_stats() {
  Registry& r = reg();
  std::lock_guard<std::mutex> lk(r.m);
  return {r.captures, r.launches, r.nodes_run, long(r.graphs.size() + r.execs.size())};
}

} // namespace sim
