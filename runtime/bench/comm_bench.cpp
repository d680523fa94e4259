#include "runtime/bench/comm_bench.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>

namespace myelin {

namespace {

using clock_type = std::chrono::steady_clock;

constexpr const char* kOps[] = {"all_reduce", "reduce_scatter", "all_gather", "sendrecv"};

// Element i of rank r's input: small integers, exact in every type and sum.
double input_value(int r, std::size_t i) { return static_cast<double>((r + i) % 5 + 1); }

void store(void* buf, std::size_t i, double v, CommDType t) {
  switch (t) {
  case CommDType::kF32:
    static_cast<float*>(buf)[i] = static_cast<float>(v);
    break;
  case CommDType::kBF16:
    static_cast<std::uint16_t*>(buf)[i] = float_to_bf16(static_cast<float>(v));
    break;
  case CommDType::kF64:
    static_cast<double*>(buf)[i] = v;
    break;
  case CommDType::kI32:
    static_cast<std::int32_t*>(buf)[i] = static_cast<std::int32_t>(v);
    break;
  case CommDType::kU8:
    static_cast<std::uint8_t*>(buf)[i] = static_cast<std::uint8_t>(v);
    break;
  }
}

double load(const void* buf, std::size_t i, CommDType t) {
  switch (t) {
  case CommDType::kF32:
    return static_cast<const float*>(buf)[i];
  case CommDType::kBF16:
    return bf16_to_float(static_cast<const std::uint16_t*>(buf)[i]);
  case CommDType::kF64:
    return static_cast<const double*>(buf)[i];
  case CommDType::kI32:
    return static_cast<const std::int32_t*>(buf)[i];
  case CommDType::kU8:
    return static_cast<const std::uint8_t*>(buf)[i];
  }
  return 0;
}

// The reduction over ranks of element i.
double expected_reduction(int n, std::size_t i, ReduceOp op, CommDType t) {
  double sum = 0, mx = -1e300, mn = 1e300;
  for (int r = 0; r < n; ++r) {
    const double v = input_value(r, i);
    sum += v;
    mx = std::max(mx, v);
    mn = std::min(mn, v);
  }
  switch (op) {
  case ReduceOp::kSum:
    return t == CommDType::kU8 ? std::fmod(sum, 256.0) : sum;
  case ReduceOp::kAvg: {
    if (t == CommDType::kU8) return std::floor(std::fmod(sum, 256.0) / n);
    if (t == CommDType::kI32) return std::floor(sum / n);
    return sum / n;
  }
  case ReduceOp::kMax:
    return mx;
  case ReduceOp::kMin:
    return mn;
  }
  return 0;
}

bool close(double got, double want, CommDType t) {
  const double tol = t == CommDType::kBF16 ? 1e-2 : t == CommDType::kF32 ? 1e-6 : 1e-12;
  return std::fabs(got - want) <= tol * std::max(1.0, std::fabs(want));
}

// Largest value over ranks, through the communicator (its memory space).
void max_over_ranks(Communicator& comm, double* vals, std::size_t n) {
  CommBuffer b(comm, n * sizeof(double));
  comm.copy_from_host(b.data(), vals, n * sizeof(double));
  comm.all_reduce(b.data(), n, CommDType::kF64, ReduceOp::kMax);
  comm.copy_to_host(vals, b.data(), n * sizeof(double));
}

struct Plan {
  std::size_t bytes = 0; // the size column
  std::size_t chunk = 0; // elements per rank (reduce_scatter out, all_gather in)
  std::size_t count = 0; // elements of the buffer the size refers to
};

Plan plan_for(const std::string& op, std::size_t bytes, int n, std::size_t es) {
  Plan p;
  if (op == "reduce_scatter" || op == "all_gather") {
    p.chunk = bytes / (es * static_cast<std::size_t>(n));
    p.count = p.chunk * static_cast<std::size_t>(n);
  } else {
    p.chunk = bytes / es;
    p.count = p.chunk;
  }
  p.bytes = p.count * es;
  return p;
}

class Runner {
 public:
  Runner(Communicator& comm, const CommBenchOptions& o, void* a, void* b)
      : comm_(comm), o_(o), a_(a), b_(b), es_(comm_dtype_size(o.dtype)) {}

  // One call of `op` on the plan's buffers.
  CommHandle issue(const std::string& op, const Plan& p) {
    const int r = comm_.rank(), n = comm_.size();
    const CommDType t = o_.dtype;
    char* a = static_cast<char*>(a_);
    char* b = static_cast<char*>(b_);
    if (op == "all_reduce")
      return comm_.all_reduce_async(a, o_.in_place ? a : b, p.count, t, o_.op);
    if (op == "reduce_scatter")
      return comm_.reduce_scatter_async(a, o_.in_place ? a + r * p.chunk * es_ : b, p.chunk, t,
                                        o_.op);
    if (op == "all_gather")
      return comm_.all_gather_async(o_.in_place ? b + r * p.chunk * es_ : a, b, p.chunk, t);
    return comm_.sendrecv_async(a, p.count, (r + 1) % n, b, p.count, (r + n - 1) % n, t);
  }

  // Fills the output buffer with 0xFF bytes (NaN, -1 or 255), so that an
  // element the checked call does not write fails the check.
  void poison(const Plan& p) {
    host_.assign(p.bytes, 0xFF);
    comm_.copy_from_host(b_, host_.data(), p.bytes);
  }

  // Writes this rank's input where the operation reads it.
  void fill(const std::string& op, const Plan& p) {
    const int r = comm_.rank();
    std::size_t elems = p.count, offset = 0;
    void* dst = a_;
    if (op == "all_gather") {
      elems = p.chunk;
      if (o_.in_place) {
        dst = b_;
        offset = r * p.chunk;
      }
    }
    host_.resize(std::max<std::size_t>(1, elems * es_));
    // all_gather: rank r contributes the constant input_value(r, 0).
    for (std::size_t i = 0; i < elems; ++i)
      store(host_.data(), i, input_value(r, op == "all_gather" ? 0 : i), o_.dtype);
    comm_.copy_from_host(static_cast<char*>(dst) + offset * es_, host_.data(), elems * es_);
  }

  // Number of wrong elements of this rank's output.
  std::size_t verify(const std::string& op, const Plan& p) {
    const int r = comm_.rank(), n = comm_.size();
    const CommDType t = o_.dtype;
    std::size_t elems = 0, src_off = 0;
    const char* src = nullptr;
    if (op == "all_reduce") {
      elems = p.count;
      src = static_cast<const char*>(o_.in_place ? a_ : b_);
    } else if (op == "reduce_scatter") {
      elems = p.chunk;
      src = static_cast<const char*>(o_.in_place ? a_ : b_);
      if (o_.in_place) src_off = r * p.chunk;
    } else {
      elems = p.count;
      src = static_cast<const char*>(b_);
    }
    host_.resize(std::max<std::size_t>(1, elems * es_));
    comm_.copy_to_host(host_.data(), src + src_off * es_, elems * es_);
    std::size_t wrong = 0;
    for (std::size_t i = 0; i < elems; ++i) {
      double want = 0;
      if (op == "all_reduce")
        want = expected_reduction(n, i, o_.op, t);
      else if (op == "reduce_scatter")
        want = expected_reduction(n, r * p.chunk + i, o_.op, t);
      else if (op == "all_gather")
        want = input_value(static_cast<int>(i / p.chunk), 0);
      else
        want = input_value((r + n - 1) % n, i);
      if (!close(load(host_.data(), i, t), want, t)) ++wrong;
    }
    return wrong;
  }

 private:
  Communicator& comm_;
  const CommBenchOptions& o_;
  void* a_;
  void* b_;
  std::size_t es_;
  std::vector<unsigned char> host_;
};

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

std::string size_label(std::size_t b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  double v = static_cast<double>(b);
  while (v >= 1024 && u < 4 && std::fmod(v, 1024) == 0) {
    v /= 1024;
    ++u;
  }
  return fmt("%.0f", v) + " " + units[u];
}

} // namespace

double comm_bench_busbw_factor(const std::string& op, int n) {
  if (n <= 1) return op == "sendrecv" ? 1.0 : 0.0;
  if (op == "all_reduce") return 2.0 * (n - 1) / n;
  if (op == "reduce_scatter" || op == "all_gather") return static_cast<double>(n - 1) / n;
  return 1.0;
}

int run_comm_bench(Communicator& comm, const CommBenchOptions& o,
                   std::vector<CommBenchRow>* rows_out) {
  const bool root = comm.rank() == 0;
  const int n = comm.size();
  const std::size_t es = comm_dtype_size(o.dtype);
  // ---- options (the same on every rank, so every rank returns alike) -------
  std::string bad;
  if (o.min_bytes < 1)
    bad = "the smallest size must be at least 1 byte";
  else if (o.max_bytes < o.min_bytes)
    bad = "the largest size is below the smallest";
  else if (o.iters < 1)
    bad = "iterations must be at least 1";
  else if (o.warmup < 0)
    bad = "warmup iterations must be at least 0";
  else if (o.ops.empty())
    bad = "no operation to measure";
  for (const std::string& op : o.ops)
    if (std::find(std::begin(kOps), std::end(kOps), op) == std::end(kOps))
      bad = "unknown operation '" + op +
            "' (expected all_reduce, reduce_scatter, all_gather or sendrecv)";
  if (!bad.empty()) {
    if (root) std::fprintf(stderr, "comm bench: %s\n", bad.c_str());
    return 2;
  }
  // ---- output files, opened by rank 0; all ranks learn whether that worked --
  std::ofstream json, csv;
  double open_failed = 0;
  if (root) {
    if (!o.json_path.empty()) {
      json.open(o.json_path);
      if (!json) {
        std::fprintf(stderr, "comm bench: cannot write %s\n", o.json_path.c_str());
        open_failed = 1;
      }
    }
    if (!o.csv_path.empty()) {
      csv.open(o.csv_path);
      if (!csv) {
        std::fprintf(stderr, "comm bench: cannot write %s\n", o.csv_path.c_str());
        open_failed = 1;
      }
    }
  }
  max_over_ranks(comm, &open_failed, 1);
  if (open_failed != 0) return 2;

  std::ostream& out = o.out != nullptr ? *o.out : std::cout;
  // Two buffers of max_bytes serve every operation.
  CommBuffer a(comm, o.max_bytes), b(comm, o.max_bytes);
  Runner run(comm, o, a.data(), b.data());

  if (root) {
    out << "# comm bench: " << comm.name() << ", " << n << " ranks, "
        << memory_space_name(comm.memory()) << " memory, " << comm_dtype_name(o.dtype) << ", "
        << reduce_op_name(o.op) << ", " << (o.in_place ? "in place" : "out of place") << ", "
        << o.iters << " iterations after " << o.warmup << " warmup\n";
    if (o.peak_busbw_gbps > 0)
      out << "# peak bus bandwidth " << fmt("%.1f", o.peak_busbw_gbps) << " GB/s\n";
    char line[256];
    std::snprintf(line, sizeof line, "%12s %12s %9s %15s %12s %12s %11s %11s %6s%s\n", "size",
                  "count", "type", "op", "time_us", "median_us", "algbw_GB/s", "busbw_GB/s",
                  "check", o.peak_busbw_gbps > 0 ? "  %peak" : "");
    out << line << std::flush;
  }

  std::vector<CommBenchRow> rows;
  int failures = 0;
  for (const std::string& op : o.ops) {
    for (std::size_t bytes = o.min_bytes; bytes <= o.max_bytes;) {
      const Plan p = plan_for(op, bytes, n, es);
      const std::size_t next = bytes > o.max_bytes / 2 ? o.max_bytes + 1 : bytes * 2;
      if (p.chunk == 0) {
        bytes = next;
        continue;
      }
      CommBenchRow row;
      row.op = op;
      row.bytes = p.bytes;
      row.count = p.count;
      // Correctness of one call, then warmup.
      double wrong = 0;
      if (o.check) {
        run.poison(p);
        run.fill(op, p);
        run.issue(op, p).wait();
        wrong = static_cast<double>(run.verify(op, p));
      }
      run.fill(op, p); // in-place calls change their input; values stay finite
      for (int i = 0; i < o.warmup; ++i) run.issue(op, p).wait();
      int iters = o.iters;
      if (o.max_seconds_per_size > 0) {
        comm.barrier();
        const auto t0 = clock_type::now();
        run.issue(op, p).wait();
        double one = std::chrono::duration<double>(clock_type::now() - t0).count();
        max_over_ranks(comm, &one, 1);
        if (one * iters > o.max_seconds_per_size)
          iters = std::max(1, static_cast<int>(o.max_seconds_per_size / std::max(one, 1e-9)));
      }
      std::vector<double> t(iters);
      comm.barrier();
      for (int i = 0; i < iters; ++i) {
        const auto t0 = clock_type::now();
        run.issue(op, p).wait();
        t[i] = std::chrono::duration<double>(clock_type::now() - t0).count();
      }
      double stats[3] = {0, 0, wrong};
      for (double x : t) stats[0] += x;
      stats[0] /= iters;
      std::nth_element(t.begin(), t.begin() + iters / 2, t.end());
      stats[1] = t[iters / 2];
      if (iters % 2 == 0) {
        const double lo = *std::max_element(t.begin(), t.begin() + iters / 2);
        stats[1] = 0.5 * (stats[1] + lo);
      }
      max_over_ranks(comm, stats, 3);
      row.iters = iters;
      row.time_us = stats[0] * 1e6;
      row.median_us = stats[1] * 1e6;
      row.algbw_gbps = stats[0] > 0 ? static_cast<double>(p.bytes) / stats[0] / 1e9 : 0;
      row.busbw_gbps = row.algbw_gbps * comm_bench_busbw_factor(op, n);
      row.ok = stats[2] == 0;
      if (!row.ok) ++failures;
      if (root) {
        char line[256];
        std::snprintf(line, sizeof line, "%12zu %12zu %9s %15s %12.2f %12.2f %11.3f %11.3f %6s",
                      row.bytes, row.count, comm_dtype_name(o.dtype), op.c_str(), row.time_us,
                      row.median_us, row.algbw_gbps, row.busbw_gbps,
                      !o.check ? "-"
                      : row.ok ? "ok"
                               : "WRONG");
        out << line;
        if (o.peak_busbw_gbps > 0)
          out << fmt("  %5.1f", 100.0 * row.busbw_gbps / o.peak_busbw_gbps);
        out << "\n" << std::flush;
      }
      rows.push_back(row);
      bytes = next;
    }
  }
  if (root) {
    // A short summary: the best bus bandwidth of each operation.
    for (const std::string& op : o.ops) {
      const CommBenchRow* best = nullptr;
      for (const CommBenchRow& r : rows)
        if (r.op == op && (best == nullptr || r.busbw_gbps > best->busbw_gbps)) best = &r;
      if (best != nullptr)
        out << "# " << op << ": best busbw " << fmt("%.3f", best->busbw_gbps) << " GB/s at "
            << size_label(best->bytes) << "\n";
    }
    if (failures > 0) out << "# " << failures << " sizes gave WRONG results\n";
    out << std::flush;
    if (json.is_open()) {
      json << "{\"bench\":\"comm\",\"communicator\":\"" << comm.name() << "\",\"ranks\":" << n
           << ",\"memory\":\"" << memory_space_name(comm.memory()) << "\",\"dtype\":\""
           << comm_dtype_name(o.dtype) << "\",\"redop\":\"" << reduce_op_name(o.op)
           << "\",\"in_place\":" << (o.in_place ? "true" : "false") << ",\"warmup\":" << o.warmup
           << ",\"rows\":[";
      for (std::size_t i = 0; i < rows.size(); ++i) {
        const CommBenchRow& r = rows[i];
        json << (i ? "," : "") << "\n {\"op\":\"" << r.op << "\",\"bytes\":" << r.bytes
             << ",\"count\":" << r.count << ",\"iters\":" << r.iters
             << ",\"time_us\":" << fmt("%.3f", r.time_us)
             << ",\"median_us\":" << fmt("%.3f", r.median_us)
             << ",\"algbw_gbps\":" << fmt("%.6f", r.algbw_gbps)
             << ",\"busbw_gbps\":" << fmt("%.6f", r.busbw_gbps)
             << (o.peak_busbw_gbps > 0
                     ? ",\"busbw_share\":" + fmt("%.4f", r.busbw_gbps / o.peak_busbw_gbps)
                     : std::string())
             << ",\"ok\":" << (r.ok ? "true" : "false") << "}";
      }
      json << "\n]}\n";
    }
    if (csv.is_open()) {
      csv << "op,bytes,count,type,redop,iters,time_us,median_us,algbw_gbps,busbw_gbps,ok\n";
      for (const CommBenchRow& r : rows)
        csv << r.op << "," << r.bytes << "," << r.count << "," << comm_dtype_name(o.dtype) << ","
            << reduce_op_name(o.op) << "," << r.iters << "," << fmt("%.3f", r.time_us) << ","
            << fmt("%.3f", r.median_us) << "," << fmt("%.6f", r.algbw_gbps) << ","
            << fmt("%.6f", r.busbw_gbps) << "," << (r.ok ? 1 : 0) << "\n";
    }
    if ((json.is_open() && !json.flush()) || (csv.is_open() && !csv.flush())) {
      std::fprintf(stderr, "comm bench: writing the output files failed\n");
      return 2;
    }
  }
  if (rows_out != nullptr) *rows_out = std::move(rows);
  return failures > 0 ? 1 : 0;
}

} // namespace myelin
