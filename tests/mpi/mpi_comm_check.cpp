// Multi-process checks of the MPI communicator, the mesh and the comm bench.
// Run under mpirun (tests/mpi/CMakeLists.txt registers the runs):
//
//   mpi_comm_check collectives   every operation, every type, split, mesh, async,
//                                agreement on an input error
//   mpi_comm_check timeout       -np 2: rank 1 stays away, rank 0 must time out
//   mpi_comm_check bench         the comm bench at small sizes prints its rows
//   mpi_comm_check large         counts above 2^30 (split into several MPI calls)
//   mpi_comm_check nccl          NcclComm (needs one GPU per rank; exits 77 =
//                                skipped when there are fewer or no NCCL build)
//   mpi_comm_check bench-run [--max-bytes N] [--iters N] [--warmup N]
//                  [--dtype T] [--op sum] [--in-place] [--no-check]
//                  [--json F] [--csv F] [--ops a,b] [--timeout S] [--peak GBps]
//                               the bench itself, for measurements
//
// Each rank checks its own results, prints one final line, and exits 1 on
// any mismatch (2 on bad usage).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <numeric>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "runtime/bench/comm_bench.h"
#include "runtime/comm/agree.h"
#include "runtime/comm/communicator.h"
#include "runtime/comm/mesh.h"
#include "runtime/comm/mpi_comm.h"
#include "runtime/comm/self_comm.h"
#include "runtime/util/error.h"

#if MYELIN_HAVE_NCCL
#include <cuda_runtime.h>

#include "runtime/comm/nccl_comm.h"
#endif

using namespace myelin;

namespace {

int g_rank = 0, g_size = 1;
long g_checks = 0, g_failures = 0;

bool expect(bool ok, const std::string& what) {
  ++g_checks;
  if (!ok) {
    ++g_failures;
    if (g_failures <= 30) std::fprintf(stderr, "[rank %d] FAILED: %s\n", g_rank, what.c_str());
  }
  return ok;
}

// ---- typed buffers ------------------------------------------------------------

const CommDType kTypes[] = {CommDType::kF32, CommDType::kBF16, CommDType::kF64, CommDType::kI32,
                            CommDType::kU8};
const ReduceOp kOps[] = {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMax, ReduceOp::kMin};

struct Buf {
  CommDType t;
  std::vector<unsigned char> bytes;
  Buf(CommDType type, std::size_t n)
      : t(type), bytes(std::max<std::size_t>(1, n * comm_dtype_size(type)), 0xAB) {}
  void* data() { return bytes.data(); }
  void* at(std::size_t i) { return bytes.data() + i * comm_dtype_size(t); }
  void set(std::size_t i, double v) {
    void* p = at(i);
    switch (t) {
    case CommDType::kF32:
      *static_cast<float*>(p) = static_cast<float>(v);
      break;
    case CommDType::kBF16:
      *static_cast<std::uint16_t*>(p) = float_to_bf16(static_cast<float>(v));
      break;
    case CommDType::kF64:
      *static_cast<double*>(p) = v;
      break;
    case CommDType::kI32:
      *static_cast<std::int32_t*>(p) = static_cast<std::int32_t>(v);
      break;
    case CommDType::kU8:
      *static_cast<std::uint8_t*>(p) = static_cast<std::uint8_t>(v);
      break;
    }
  }
  double get(std::size_t i) {
    void* p = at(i);
    switch (t) {
    case CommDType::kF32:
      return *static_cast<float*>(p);
    case CommDType::kBF16:
      return bf16_to_float(*static_cast<std::uint16_t*>(p));
    case CommDType::kF64:
      return *static_cast<double*>(p);
    case CommDType::kI32:
      return *static_cast<std::int32_t*>(p);
    case CommDType::kU8:
      return *static_cast<std::uint8_t*>(p);
    }
    return 0;
  }
};

// Rank r's element i: small positive integers, exact in every type.
double val(int r, std::size_t i) { return static_cast<double>((3 * r + i) % 7 + 1); }

double reduce_expect(int n, std::size_t i, ReduceOp op, CommDType t) {
  double sum = 0, mx = -1e300, mn = 1e300;
  for (int r = 0; r < n; ++r) {
    sum += val(r, i);
    mx = std::max(mx, val(r, i));
    mn = std::min(mn, val(r, i));
  }
  const bool integer = t == CommDType::kI32 || t == CommDType::kU8;
  switch (op) {
  case ReduceOp::kSum:
    return sum;
  case ReduceOp::kAvg:
    return integer ? std::floor(sum / n) : sum / n;
  case ReduceOp::kMax:
    return mx;
  case ReduceOp::kMin:
    return mn;
  }
  return 0;
}

bool near(double got, double want, CommDType t) {
  const double tol = t == CommDType::kBF16 ? 8e-3 : t == CommDType::kF32 ? 1e-6 : 1e-12;
  return std::fabs(got - want) <= tol * std::max(1.0, std::fabs(want));
}

// Compares n elements of b from offset `off` with want(i); one check.
void expect_values(Buf& b, std::size_t off, std::size_t n,
                   const std::function<double(std::size_t)>& want, const std::string& what) {
  std::size_t wrong = 0, first = 0;
  double got0 = 0, want0 = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const double g = b.get(off + i), w = want(i);
    if (!near(g, w, b.t)) {
      if (wrong++ == 0) {
        first = i;
        got0 = g;
        want0 = w;
      }
    }
  }
  std::ostringstream m;
  m << what << ": " << wrong << " of " << n << " wrong";
  if (wrong > 0) m << " (first at " << first << ": got " << got0 << ", want " << want0 << ")";
  expect(wrong == 0, m.str());
}

std::string tag(const char* op, CommDType t, const char* extra, std::size_t count, bool in_place) {
  std::ostringstream s;
  s << op << " " << comm_dtype_name(t) << " " << extra << " count " << count
    << (in_place ? " in place" : "");
  return s.str();
}

// ---- cases --------------------------------------------------------------------

void test_basics(Communicator& w) {
  expect(w.rank() == g_rank && w.size() == g_size, "world rank/size match MPI");
  expect(w.memory() == MemorySpace::kHost, "MPI memory is host");
  expect(w.name() == "mpi:world", "world name is mpi:world, got " + w.name());
  for (float f : {0.0f, 1.0f, -2.5f, 3.140625f, 65504.0f, 1e-3f}) {
    const float back = bf16_to_float(float_to_bf16(f));
    expect(std::fabs(back - f) <= std::fabs(f) * 4e-3f, "bf16 round trip " + std::to_string(f));
  }
  expect(float_to_bf16(1.00390625f) == 0x3f80, "bf16 ties round to even");
  expect(std::isnan(bf16_to_float(float_to_bf16(std::nanf("")))), "bf16 keeps NaN");
  bool threw = false;
  try {
    w.send(nullptr, 0, CommDType::kF32, g_size, 0);
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  expect(threw, "send to an out-of-range peer throws invalid_argument");
  threw = false;
  try {
    parse_comm_dtype("float16");
  } catch (const InputError&) {
    threw = true;
  }
  expect(threw, "parse_comm_dtype rejects float16");
}

void test_all_reduce(Communicator& c) {
  const int n = c.size(), r = c.rank();
  for (CommDType t : kTypes)
    for (ReduceOp op : kOps)
      for (std::size_t count : {0, 1, 7, 1000, 4097})
        for (bool in_place : {false, true}) {
          Buf s(t, count), d(t, count);
          for (std::size_t i = 0; i < count; ++i) s.set(i, val(r, i));
          Buf& out = in_place ? s : d;
          c.all_reduce(s.data(), out.data(), count, t, op);
          expect_values(
              out, 0, count, [&](std::size_t i) { return reduce_expect(n, i, op, t); },
              tag("all_reduce", t, reduce_op_name(op), count, in_place) + " on " + c.name());
        }
}

void test_reduce_scatter(Communicator& c) {
  const int n = c.size(), r = c.rank();
  for (CommDType t : {CommDType::kF32, CommDType::kBF16, CommDType::kF64, CommDType::kI32})
    for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMax})
      for (std::size_t chunk : {1, 5, 333})
        for (bool in_place : {false, true}) {
          const std::size_t total = chunk * n;
          Buf s(t, total), d(t, chunk);
          for (std::size_t i = 0; i < total; ++i) s.set(i, val(r, i));
          if (in_place)
            c.reduce_scatter(s.data(), s.at(r * chunk), chunk, t, op);
          else
            c.reduce_scatter(s.data(), d.data(), chunk, t, op);
          expect_values(
              in_place ? s : d, in_place ? r * chunk : 0, chunk,
              [&](std::size_t i) { return reduce_expect(n, r * chunk + i, op, t); },
              tag("reduce_scatter", t, reduce_op_name(op), chunk, in_place));
        }
}

void test_all_gather(Communicator& c) {
  const int n = c.size(), r = c.rank();
  for (CommDType t : {CommDType::kF32, CommDType::kBF16, CommDType::kF64, CommDType::kU8})
    for (std::size_t chunk : {1, 3, 1001})
      for (bool in_place : {false, true}) {
        Buf s(t, chunk), d(t, chunk * n);
        for (std::size_t i = 0; i < chunk; ++i)
          (in_place ? d : s).set((in_place ? r * chunk : 0) + i, val(r, i));
        c.all_gather(in_place ? d.at(r * chunk) : s.data(), d.data(), chunk, t);
        expect_values(
            d, 0, chunk * n,
            [&](std::size_t i) { return val(static_cast<int>(i / chunk), i % chunk); },
            tag("all_gather", t, "", chunk, in_place));
      }
}

void test_broadcast(Communicator& c) {
  const int r = c.rank();
  for (CommDType t : {CommDType::kF32, CommDType::kBF16, CommDType::kF64})
    for (int root = 0; root < c.size(); ++root)
      for (std::size_t count : {1, 1001}) {
        Buf b(t, count);
        for (std::size_t i = 0; i < count; ++i) b.set(i, val(r, i));
        c.broadcast(b.data(), count, t, root);
        expect_values(
            b, 0, count, [&](std::size_t i) { return val(root, i); },
            tag("broadcast", t, ("root " + std::to_string(root)).c_str(), count, false));
      }
}

void test_send_recv(Communicator& c) {
  const int n = c.size(), r = c.rank();
  if (n < 2) return;
  // A chain 0 -> 1 -> ... -> n-1 -> 0: each rank adds its rank + 1 to every element.
  const std::size_t count = 2049;
  for (CommDType t : {CommDType::kF32, CommDType::kBF16, CommDType::kF64}) {
    Buf b(t, count);
    if (r == 0) {
      for (std::size_t i = 0; i < count; ++i) b.set(i, static_cast<double>(i % 11));
      c.send(b.data(), count, t, 1, 7);
      c.recv(b.data(), count, t, n - 1, 7);
      expect_values(
          b, 0, count, [&](std::size_t i) { return (i % 11) + n * (n + 1) / 2.0 - 1.0; },
          std::string("send/recv chain ") + comm_dtype_name(t));
    } else {
      c.recv(b.data(), count, t, r - 1, 7);
      for (std::size_t i = 0; i < count; ++i) b.set(i, b.get(i) + r + 1);
      c.send(b.data(), count, t, (r + 1) % n, 7);
    }
  }
  // Tags: rank 0 sends tag 1 then tag 2; rank 1 receives tag 2 first.
  if (r <= 1) {
    std::int32_t x[2] = {11, 22}, y[2] = {0, 0};
    if (r == 0) {
      CommHandle h1 = c.send_async(&x[0], 1, CommDType::kI32, 1, 1);
      CommHandle h2 = c.send_async(&x[1], 1, CommDType::kI32, 1, 2);
      h1.wait();
      h2.wait();
    } else {
      c.recv(&y[1], 1, CommDType::kI32, 0, 2);
      c.recv(&y[0], 1, CommDType::kI32, 0, 1);
      expect(y[0] == 11 && y[1] == 22, "recv matches by tag");
    }
  }
  // sendrecv ring shift.
  std::vector<double> out(100), in(100);
  for (int i = 0; i < 100; ++i) out[i] = r * 1000 + i;
  c.sendrecv(out.data(), 100, (r + 1) % n, in.data(), 100, (r + n - 1) % n, CommDType::kF64, 3);
  bool ok = true;
  for (int i = 0; i < 100; ++i) ok = ok && in[i] == ((r + n - 1) % n) * 1000 + i;
  expect(ok, "sendrecv ring shift");
  // Count mismatch: rank 0 sends 5, rank 1 expects 6 -> CommError on rank 1.
  if (r <= 1) {
    std::vector<float> v(6, 1.0f);
    if (r == 0) {
      c.send(v.data(), 5, CommDType::kF32, 1, 9);
    } else {
      bool threw = false;
      try {
        c.recv(v.data(), 6, CommDType::kF32, 0, 9);
      } catch (const CommError& e) {
        threw = std::string(e.what()).find("expected") != std::string::npos;
        if (!threw) std::fprintf(stderr, "[rank %d] unexpected message: %s\n", r, e.what());
      }
      expect(threw, "recv of a shorter message throws CommError naming the counts");
    }
  }
  // A recv that times out can be waited for again.
  if (r <= 1) {
    int v = 0;
    if (r == 1) {
      CommHandle h = c.recv_async(&v, 1, CommDType::kI32, 0, 42);
      bool timed_out = false;
      try {
        h.wait_for(0.2);
      } catch (const CommTimeout& e) {
        timed_out = e.op() == "recv" && e.peer() == 0;
      }
      expect(timed_out, "recv without a sender times out, naming op recv and peer 0");
      c.send(&v, 1, CommDType::kI32, 0, 43); // now let rank 0 send
      h.wait();
      expect(v == 4242, "the timed-out recv completes on a second wait");
    } else {
      int go = 0;
      c.recv(&go, 1, CommDType::kI32, 1, 43);
      v = 4242;
      c.send(&v, 1, CommDType::kI32, 1, 42);
    }
  }
  c.barrier();
}

void test_split(Communicator& w) {
  const int n = w.size(), r = w.rank();
  // Even and odd ranks, reversed order inside each group.
  auto sub = w.split(r % 2, -r);
  expect(sub != nullptr, "split returns a communicator");
  if (!sub) return;
  const int my_size = (n + 1 - r % 2) / 2;
  expect(sub->size() == my_size, "split size " + std::to_string(sub->size()));
  // Members of my color in descending world rank: my rank there.
  std::vector<int> members;
  for (int q = n - 1; q >= 0; --q)
    if (q % 2 == r % 2) members.push_back(q);
  const int want_rank =
      static_cast<int>(std::find(members.begin(), members.end(), r) - members.begin());
  expect(sub->rank() == want_rank, "split orders by key");
  expect(sub->timeout() == w.timeout(), "split keeps the timeout");
  // Sum of world ranks in the group.
  double x = r, y = 0;
  sub->all_reduce(&x, &y, 1, CommDType::kF64, ReduceOp::kSum);
  double want = 0;
  for (int q : members) want += q;
  expect(y == want, "all_reduce inside the split group");
  std::vector<double> g(sub->size());
  sub->all_gather(&x, g.data(), 1, CommDType::kF64);
  bool order = true;
  for (int i = 0; i < sub->size(); ++i) order = order && g[i] == members[i];
  expect(order, "all_gather inside the split group follows the key order");
  test_all_reduce(*sub);
  // color < 0 takes no part.
  auto none = w.split(r == 0 ? -1 : 0, r);
  expect((r == 0) == (none == nullptr), "split with negative color gives nullptr");
  if (none) {
    expect(none->size() == n - 1 && none->rank() == r - 1, "split without rank 0");
    auto nested = none->split(0, 0);
    expect(nested && nested->size() == n - 1, "nested split");
  }
}

void test_async(Communicator& c) {
  const int n = c.size(), r = c.rank();
  // Three buckets in flight while computing; waited in reverse order.
  const std::size_t counts[3] = {1 << 20, 12345, 1 << 18};
  std::vector<std::vector<float>> buckets(3);
  std::vector<CommHandle> handles;
  for (int b = 0; b < 3; ++b) {
    buckets[b].resize(counts[b]);
    for (std::size_t i = 0; i < counts[b]; ++i) buckets[b][i] = static_cast<float>(val(r, i + b));
    handles.push_back(c.all_reduce_async(buckets[b].data(), buckets[b].data(), counts[b],
                                         CommDType::kF32, ReduceOp::kAvg));
  }
  // "Backward pass": computation that polls the handles now and then.
  double acc = 0;
  for (int step = 0; step < 200; ++step) {
    for (int k = 0; k < 20000; ++k) acc += std::sin(step * 0.001 + k * 1e-6);
    for (CommHandle& h : handles) (void)h.test(); // progress only; wait() checks below
  }
  expect(std::isfinite(acc), "computation ran");
  for (int b = 2; b >= 0; --b) {
    handles[b].wait();
    expect(handles[b].done(), "handle is done after wait");
    std::size_t wrong = 0;
    for (std::size_t i = 0; i < counts[b]; ++i) {
      double s = 0;
      for (int q = 0; q < n; ++q) s += val(q, i + b);
      if (std::fabs(buckets[b][i] - s / n) > 1e-6 * s) ++wrong;
    }
    expect(wrong == 0,
           "async bucket " + std::to_string(b) + ": " + std::to_string(wrong) + " wrong");
  }
  // Async reduce_scatter and all_gather together (ZeRO-1 pattern).
  const std::size_t chunk = 1001;
  std::vector<float> grads(chunk * n), shard(chunk), params(chunk * n);
  for (std::size_t i = 0; i < grads.size(); ++i) grads[i] = static_cast<float>(val(r, i));
  CommHandle rs =
      c.reduce_scatter_async(grads.data(), shard.data(), chunk, CommDType::kF32, ReduceOp::kSum);
  rs.wait();
  for (float& s : shard) s *= 0.5f;
  c.all_gather_async(shard.data(), params.data(), chunk, CommDType::kF32).wait();
  std::size_t wrong = 0;
  for (std::size_t i = 0; i < params.size(); ++i)
    if (std::fabs(params[i] - 0.5 * reduce_expect(n, i, ReduceOp::kSum, CommDType::kF32)) > 1e-5)
      ++wrong;
  expect(wrong == 0, "async reduce_scatter + all_gather");
  // Several reduce_scatters in flight at once (ring steps of different
  // operations interleave), with user messages on the same communicator.
  {
    const std::size_t k = 4, m = 777;
    std::vector<std::vector<double>> in(k, std::vector<double>(m * n)),
        out(k, std::vector<double>(m));
    std::vector<CommHandle> hs;
    for (std::size_t j = 0; j < k; ++j) {
      for (std::size_t i = 0; i < m * n; ++i) in[j][i] = val(r, i + j);
      hs.push_back(
          c.reduce_scatter_async(in[j].data(), out[j].data(), m, CommDType::kF64, ReduceOp::kSum));
    }
    double token = r, got = -1;
    c.sendrecv(&token, 1, (r + 1) % n, &got, 1, (r + n - 1) % n, CommDType::kF64, 0);
    expect(got == (r + n - 1) % n, "sendrecv while reduce_scatters are in flight");
    std::size_t wrong = 0;
    for (std::size_t j = k; j-- > 0;) {
      hs[j].wait();
      for (std::size_t i = 0; i < m; ++i) {
        double want = 0;
        for (int q = 0; q < n; ++q) want += val(q, r * m + i + j);
        if (out[j][i] != want) ++wrong;
      }
    }
    expect(wrong == 0, "4 concurrent reduce_scatters: " + std::to_string(wrong) + " wrong");
  }
  // A dropped handle completes in its destructor.
  std::vector<float> z(100, 1.0f);
  { CommHandle h = c.all_reduce_async(z.data(), z.data(), 100, CommDType::kF32, ReduceOp::kSum); }
  expect(z[0] == static_cast<float>(n), "dropped handle still completes");
  CommHandle idle;
  expect(idle.done() && idle.test(), "a default handle is complete");
  c.barrier_async().wait();
}

void test_mesh(std::unique_ptr<Communicator> world_owner) {
  Communicator& probe = *world_owner;
  const int n = probe.size(), r = probe.rank();
  // Invalid layouts: InputError naming the flags, on every rank.
  for (auto [dp, pp] : {std::pair{n + 1, 1}, std::pair{0, n}, std::pair{n, 2}}) {
    if (dp * pp == n && dp >= 1) continue;
    bool threw = false;
    try {
      Mesh::validate(dp, pp, n);
    } catch (const InputError& e) {
      threw = std::string(e.what()).find("--dp") != std::string::npos &&
              std::string(e.what()).find("--pp") != std::string::npos;
    }
    expect(threw, "Mesh rejects dp " + std::to_string(dp) + " pp " + std::to_string(pp));
  }
  // Every factorization of n.
  for (int pp = 1; pp <= n; ++pp) {
    if (n % pp != 0) continue;
    const int dp = n / pp;
    auto w = probe.split(0, r); // a fresh world for this mesh
    Mesh m(std::move(w), dp, pp);
    const std::string what = "mesh dp " + std::to_string(dp) + " pp " + std::to_string(pp) + ": ";
    expect(m.pp_rank() == r % pp && m.dp_rank() == r / pp,
           what + "stage = r % pp, replica = r / pp");
    expect(m.dp_size() == dp && m.pp_size() == pp, what + "group sizes");
    expect(m.dp().size() == dp && m.pp().size() == pp, what + "communicator sizes");
    expect(m.prev_stage() == (m.pp_rank() == 0 ? -1 : m.pp_rank() - 1) &&
               m.next_stage() == (m.pp_rank() == pp - 1 ? -1 : m.pp_rank() + 1),
           what + "prev/next stage");
    // dp group: same stage; the sum of its world ranks.
    double x = r, s = 0;
    m.dp().all_reduce(&x, &s, 1, CommDType::kF64, ReduceOp::kSum);
    double want = 0;
    for (int q = 0; q < n; ++q)
      if (q % pp == r % pp) want += q;
    expect(s == want, what + "dp group holds the ranks of one stage");
    // Pipeline: stage 0 starts a value, each stage adds its world rank.
    double act = 0;
    if (!m.first_stage()) m.pp().recv(&act, 1, CommDType::kF64, m.prev_stage(), 1);
    act += r;
    if (!m.last_stage()) m.pp().send(&act, 1, CommDType::kF64, m.next_stage(), 1);
    if (m.last_stage()) {
      double want_act = 0;
      for (int st = 0; st < pp; ++st) want_act += Mesh::world_rank_of(m.dp_rank(), st, pp);
      expect(act == want_act, what + "activations flow down the pipeline");
    }
    expect(m.describe().find("stage") != std::string::npos, what + "describe");
  }
}

// agree_on_input_error: nothing happens when no rank has an error; otherwise
// every rank throws the message of the lowest rank that has one.
void test_agree(Communicator& w) {
  auto outcome = [&](const std::string& mine) -> std::string {
    try {
      agree_on_input_error(w, mine);
      return "none";
    } catch (const InputError& e) {
      return e.what();
    }
  };
  expect(outcome("") == "none", "agree: no error on any rank");
  const int last = g_size - 1;
  const std::string only = outcome(g_rank == last ? "state_" + std::to_string(last) + " bad" : "");
  expect(only == "state_" + std::to_string(last) + " bad", "agree: one rank's error: " + only);
  const std::string lowest =
      outcome(g_rank >= 1 ? "rank " + std::to_string(g_rank) + " " + std::string(g_rank, 'x') : "");
  expect(lowest == (g_size > 1 ? "rank 1 x" : "none"), "agree: lowest rank's error: " + lowest);
}

void test_self() {
  SelfComm s;
  float a[3] = {1, 2, 3}, b[3] = {};
  s.all_reduce(a, b, 3, CommDType::kF32, ReduceOp::kAvg);
  expect(b[2] == 3 && s.size() == 1, "SelfComm all_reduce copies");
  s.send(a, 3, CommDType::kF32, 0, 5);
  float c[3] = {};
  s.recv(c, 3, CommDType::kF32, 0, 5);
  expect(c[1] == 2, "SelfComm send/recv to itself");
  bool threw = false;
  try {
    s.recv(c, 3, CommDType::kF32, 0, 6);
  } catch (const CommError&) {
    threw = true;
  }
  expect(threw, "SelfComm recv without send throws");
  auto sub = s.split(0, 0);
  expect(sub && sub->size() == 1, "SelfComm split");
  Mesh m(std::make_unique<SelfComm>(), 1, 1);
  expect(m.first_stage() && m.last_stage() && m.prev_stage() == -1, "Mesh over SelfComm");
}

void test_large(Communicator& c) {
  // Above the 2^30-element chunk: broadcast and all_reduce in pieces.
  const std::size_t count = (std::size_t{1} << 30) + 3;
  std::vector<std::uint8_t> b(count, static_cast<std::uint8_t>(c.rank() + 1));
  c.broadcast(b.data(), count, CommDType::kU8, c.size() - 1);
  expect(b.front() == c.size() && b[std::size_t{1} << 30] == c.size() && b.back() == c.size(),
         "broadcast of 2^30 + 3 bytes");
  std::fill(b.begin(), b.end(), std::uint8_t{1});
  c.all_reduce(b.data(), count, CommDType::kU8, ReduceOp::kSum);
  expect(b.front() == c.size() && b.back() == c.size() && b[(std::size_t{1} << 30) - 1] == c.size(),
         "all_reduce of 2^30 + 3 bytes");
}

// ---- timeout: -np 2, rank 1 never joins ---------------------------------------

void run_timeout(Communicator& w) {
  if (w.size() != 2) {
    expect(false, "the timeout check needs exactly 2 ranks");
    return;
  }
  auto ctl = w.split(0, w.rank()); // reports travel here, not on the stuck communicator
  ctl->set_timeout(60);
  const double limit = 2.0;
  w.set_timeout(limit);
  if (w.rank() == 0) {
    std::vector<float> x(1000, 1.0f);
    const auto t0 = std::chrono::steady_clock::now();
    bool caught = false;
    try {
      w.all_reduce(x.data(), x.size(), CommDType::kF32, ReduceOp::kSum);
    } catch (const CommTimeout& e) {
      const double dt =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      caught = true;
      std::printf("[rank 0] caught after %.2f s: %s\n", dt, e.what());
      expect(dt >= limit && dt < limit + 1.5,
             "timeout within bounds (" + std::to_string(dt) + " s)");
      expect(e.op() == "all_reduce", "CommTimeout::op() is all_reduce");
      expect(std::string(e.what()).find("all_reduce") != std::string::npos,
             "message names all_reduce");
      expect(e.peer() == 1 && std::string(e.what()).find("rank 1") != std::string::npos,
             "message names the missing rank 1");
    }
    expect(caught, "blocking all_reduce threw CommTimeout");
    // The non-blocking form, with an explicit deadline.
    caught = false;
    CommHandle h = w.barrier_async();
    try {
      h.wait_for(0.5);
    } catch (const CommTimeout& e) {
      caught = e.op() == "barrier";
    }
    expect(caught, "barrier wait_for(0.5) threw CommTimeout naming barrier");
    int report = caught ? 1 : 0;
    ctl->send(&report, 1, CommDType::kI32, 1, 1);
  } else {
    // Stay away from w; wait for rank 0's report, then leave.
    int report = -1;
    ctl->recv(&report, 1, CommDType::kI32, 0, 1);
    expect(report == 1, "rank 0 reported its timeouts");
  }
}

// ---- bench --------------------------------------------------------------------

void run_bench_check(Communicator& w) {
  std::ostringstream table;
  CommBenchOptions o;
  o.max_bytes = 64 << 10;
  o.warmup = 2;
  o.iters = 5;
  o.out = &table;
  const std::string json = "comm_bench_check." + std::to_string(w.size()) + ".json";
  o.json_path = json;
  std::vector<CommBenchRow> rows;
  const int rc = run_comm_bench(w, o, &rows);
  expect(rc == 0, "run_comm_bench returns 0, got " + std::to_string(rc));
  // 8 B .. 64 KiB: 14 sizes; reduce_scatter / all_gather skip sizes below n floats.
  std::size_t per_op[4] = {};
  for (const CommBenchRow& row : rows) {
    for (int k = 0; k < 4; ++k)
      if (row.op == o.ops[k]) ++per_op[k];
    expect(row.ok, "bench check of " + row.op + " at " + std::to_string(row.bytes));
    expect(row.time_us > 0 && row.algbw_gbps > 0, "bench timing of " + row.op);
    expect(std::fabs(row.busbw_gbps - row.algbw_gbps * comm_bench_busbw_factor(row.op, w.size())) <
               1e-9 * (1 + row.busbw_gbps),
           "busbw factor of " + row.op);
  }
  expect(per_op[0] == 14 && per_op[3] == 14, "all_reduce and sendrecv have 14 sizes");
  expect(per_op[1] >= 11 && per_op[2] >= 11, "reduce_scatter and all_gather have their sizes");
  if (w.rank() == 0) {
    const std::string t = table.str();
    std::fputs(t.c_str(), stdout);
    std::size_t lines = 0;
    for (char ch : t) lines += ch == '\n';
    expect(t.find("busbw_GB/s") != std::string::npos, "table header printed");
    expect(t.find("reduce_scatter") != std::string::npos, "table has reduce_scatter rows");
    expect(lines >= rows.size() + 2, "table has a line per row");
    FILE* f = std::fopen(json.c_str(), "r");
    expect(f != nullptr, "JSON written");
    if (f) {
      char buf[64] = {};
      expect(std::fread(buf, 1, 16, f) == 16 &&
                 std::string(buf).rfind("{\"bench\":\"comm\"", 0) == 0,
             "JSON starts with the bench object");
      std::fclose(f);
      std::remove(json.c_str());
    }
  }
  CommBenchOptions bad = o;
  bad.ops = {"all_to_all"};
  bad.out = &table;
  expect(run_comm_bench(w, bad) == 2, "unknown bench op returns 2");
}

int run_bench_cli(Communicator& w, int argc, char** argv) {
  CommBenchOptions o;
  o.max_seconds_per_size = 5;
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw InputError(a + ": missing value");
      return argv[++i];
    };
    if (a == "--max-bytes")
      o.max_bytes = std::stoull(next());
    else if (a == "--min-bytes")
      o.min_bytes = std::stoull(next());
    else if (a == "--iters")
      o.iters = std::stoi(next());
    else if (a == "--warmup")
      o.warmup = std::stoi(next());
    else if (a == "--dtype")
      o.dtype = parse_comm_dtype(next());
    else if (a == "--op")
      o.op = parse_reduce_op(next());
    else if (a == "--in-place")
      o.in_place = true;
    else if (a == "--no-check")
      o.check = false;
    else if (a == "--json")
      o.json_path = next();
    else if (a == "--csv")
      o.csv_path = next();
    else if (a == "--timeout")
      w.set_timeout(std::stod(next()));
    else if (a == "--max-seconds")
      o.max_seconds_per_size = std::stod(next());
    else if (a == "--peak")
      o.peak_busbw_gbps = std::stod(next());
    else if (a == "--ops") {
      o.ops.clear();
      std::stringstream ss(next());
      for (std::string s; std::getline(ss, s, ',');) o.ops.push_back(s);
    } else
      throw InputError(a + ": unknown option");
  }
  return run_comm_bench(w, o);
}

// ---- NCCL: the bench's own checks cover every collective on device memory ----

constexpr int kSkipped = 77;

int run_nccl(Communicator& world) {
#if MYELIN_HAVE_NCCL
  int ndev = 0;
  if (cudaGetDeviceCount(&ndev) != cudaSuccess) ndev = 0;
  if (ndev < world.size()) {
    if (g_rank == 0)
      std::printf("skipped: %d CUDA devices for %d ranks (NCCL needs one per rank)\n", ndev,
                  world.size());
    return kSkipped;
  }
  auto nccl = NcclComm::create(world);
  expect(nccl->size() == world.size() && nccl->rank() == world.rank(), "NCCL rank and size");
  expect(nccl->memory() == MemorySpace::kDevice, "NCCL memory is device");
  nccl->set_timeout(60);
  auto bench = [&](Communicator& c, CommDType t, ReduceOp op, bool in_place) {
    std::ostringstream table;
    CommBenchOptions o;
    o.max_bytes = 1 << 20;
    o.warmup = 1;
    o.iters = 3;
    o.dtype = t;
    o.op = op;
    o.in_place = in_place;
    o.out = &table;
    const int rc = run_comm_bench(c, o);
    expect(rc == 0, std::string("NCCL bench ") + c.name() + " " + comm_dtype_name(t) + " " +
                        reduce_op_name(op) + (in_place ? " in place" : "") + ": " +
                        std::to_string(rc) + "\n" + table.str());
  };
  for (CommDType t : {CommDType::kF32, CommDType::kBF16, CommDType::kF64})
    for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMax})
      for (bool in_place : {false, true}) bench(*nccl, t, op, in_place);
  auto sub = nccl->split(g_rank % 2, g_rank);
  if (sub) bench(*sub, CommDType::kF32, ReduceOp::kSum, false);
  // Timeout: rank 1 stays away from an all-reduce; rank 0 aborts after 2 s.
  if (world.size() == 2) {
    auto ctl = world.split(0, g_rank);
    nccl->set_timeout(2);
    CommBuffer b(*nccl, 4096);
    if (g_rank == 0) {
      bool caught = false;
      try {
        nccl->all_reduce(b.data(), 1024, CommDType::kF32, ReduceOp::kSum);
      } catch (const CommTimeout& e) {
        caught = e.op() == "all_reduce";
        std::printf("[rank 0] %s\n", e.what());
      }
      expect(caught, "NCCL all_reduce times out");
      expect(nccl->aborted(), "NCCL communicator aborted after the timeout");
      int done = 1;
      ctl->send(&done, 1, CommDType::kI32, 1, 1);
    } else {
      int done = 0;
      ctl->recv(&done, 1, CommDType::kI32, 0, 1);
    }
  }
  return 0;
#else
  (void)world;
  if (g_rank == 0) std::printf("skipped: built without NCCL\n");
  return kSkipped;
#endif
}

} // namespace

int main(int argc, char** argv) {
  MpiRuntime mpi(&argc, &argv);
  g_rank = mpi.world_rank();
  g_size = mpi.world_size();
  const std::string mode = argc > 1 ? argv[1] : "collectives";
  int rc = 0;
  try {
    auto world = MpiComm::world();
    world->set_timeout(30); // a broken check fails in bounded time instead of hanging
    if (mode == "collectives") {
      const std::pair<const char*, std::function<void()>> cases[] = {
          {"basics", [&] { test_basics(*world); }},
          {"all_reduce", [&] { test_all_reduce(*world); }},
          {"reduce_scatter", [&] { test_reduce_scatter(*world); }},
          {"all_gather", [&] { test_all_gather(*world); }},
          {"broadcast", [&] { test_broadcast(*world); }},
          {"send_recv", [&] { test_send_recv(*world); }},
          {"split", [&] { test_split(*world); }},
          {"async", [&] { test_async(*world); }},
          {"mesh", [&] { test_mesh(world->split(0, g_rank)); }},
          {"agree", [&] { test_agree(*world); }},
          {"self", [&] { test_self(); }},
      };
      for (const auto& [name, fn] : cases) {
        const long before = g_failures;
        try {
          fn();
        } catch (const std::exception& e) {
          expect(false, std::string(name) + " threw: " + e.what());
        }
        if (g_rank == 0) std::printf("  %-15s %s\n", name, g_failures == before ? "ok" : "FAILED");
      }
    } else if (mode == "timeout") {
      run_timeout(*world);
    } else if (mode == "bench") {
      run_bench_check(*world);
    } else if (mode == "large") {
      test_large(*world);
    } else if (mode == "nccl") {
      rc = run_nccl(*world);
      if (rc == kSkipped) return kSkipped;
    } else if (mode == "bench-run") {
      rc = run_bench_cli(*world, argc, argv);
    } else {
      if (g_rank == 0) std::fprintf(stderr, "mpi_comm_check: unknown mode '%s'\n", mode.c_str());
      return 2;
    }
  } catch (const InputError& e) {
    std::fprintf(stderr, "[rank %d] %s\n", g_rank, e.what());
    return 2;
  } catch (const std::exception& e) {
    expect(false, std::string("uncaught: ") + e.what());
  }
  std::fflush(stdout);
  std::printf("mpi_comm_check %s rank %d/%d: %ld checks, %ld failures: %s\n", mode.c_str(), g_rank,
              g_size, g_checks, g_failures, g_failures == 0 ? "PASS" : "FAIL");
  std::fflush(stdout);
  if (g_failures > 0) return 1;
  return rc;
}
