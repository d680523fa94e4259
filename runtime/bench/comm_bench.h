// Collective bandwidth benchmark over any Communicator (`myelin bench comm`).
//
// For each operation and each size from min_bytes to max_bytes (doubling) it
// runs `warmup` untimed calls, then `iters` timed calls (each issued and
// waited for on its own). time = the largest over ranks of each rank's mean
// time per call; median = the largest over ranks of each rank's median.
// Bandwidths follow nccl-tests (bytes = the size column):
//   all_reduce      bytes = the buffer        busbw = algbw * 2(n-1)/n
//   reduce_scatter  bytes = the whole input   busbw = algbw * (n-1)/n
//                   (n * per-rank chunk)
//   all_gather      bytes = the whole output  busbw = algbw * (n-1)/n
//   sendrecv        bytes = one message       busbw = algbw
//                   (ring: every rank sends to rank+1 and receives from rank-1)
// with algbw = bytes / time. Sizes that do not hold at least one element per
// rank are skipped; others are rounded down to whole elements per rank.
//
// Rank 0 prints an aligned table (with the share of peak_busbw_gbps, if
// given) and optionally writes JSON and CSV. With
// `check`, one extra call per size is verified against the expected values
// before timing.
#pragma once

#include <cstddef>
#include <iosfwd>
#include <string>
#include <vector>

#include "runtime/comm/communicator.h"

namespace myelin {

struct CommBenchOptions {
  std::size_t min_bytes = 8;
  std::size_t max_bytes = std::size_t{1} << 30; // 1 GiB
  int warmup = 5;
  int iters = 20;
  // Fewer timed calls at a size where `iters` calls would take longer than
  // this many seconds (at least 1 call); <= 0: always `iters`.
  double max_seconds_per_size = 0;
  // Any of all_reduce, reduce_scatter, all_gather, sendrecv.
  std::vector<std::string> ops = {"all_reduce", "reduce_scatter", "all_gather", "sendrecv"};
  CommDType dtype = CommDType::kF32;
  ReduceOp op = ReduceOp::kSum;
  bool in_place = false;
  bool check = true;
  // The hardware's bus bandwidth limit in GB/s (e.g. NVLink or memory
  // bandwidth); when > 0 the table shows the share of it each size reaches.
  double peak_busbw_gbps = 0;
  std::string json_path;       // empty: no JSON
  std::string csv_path;        // empty: no CSV
  std::ostream* out = nullptr; // rank 0's table; nullptr: std::cout
};

struct CommBenchRow {
  std::string op;
  std::size_t bytes = 0;
  std::size_t count = 0; // elements per rank's buffer (the all_reduce buffer, the
                         // reduce_scatter input, the all_gather output, one message)
  double time_us = 0;
  double median_us = 0;
  double algbw_gbps = 0;
  double busbw_gbps = 0;
  int iters = 0;
  bool ok = true; // false if the check found a wrong value on some rank
};

// Collective over comm. Returns 0 on success, 1 if a check failed, 2 if the
// options are invalid or an output file cannot be written (message on
// stderr). Rows, if asked for, are filled on every rank. CommError and
// CommTimeout propagate.
int run_comm_bench(Communicator& comm, const CommBenchOptions& options,
                   std::vector<CommBenchRow>* rows = nullptr);

// The busbw factor of an operation on n ranks (see above).
double comm_bench_busbw_factor(const std::string& op, int n);

} // namespace myelin
