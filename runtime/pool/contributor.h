// `myelin contribute`: the volunteer's agent. It joins a pool, reports its
// hardware, heartbeats, asks for work, downloads what changed (the training
// shards once, the global model only when its round differs from the one it
// holds, and then only the lossless delta from the older round it holds when
// the coordinator still keeps that snapshot), trains H inner AdamW steps on its data slice with the
// same Trainer as `myelin train` (through pool/inner_train.h, which the coordinator's replays
// share; AdamW restarts every round), uploads the compressed pseudo-gradient (global - local) and
// repeats. SIGINT/SIGTERM leave the pool cleanly (an unfinished round is dropped); a crash costs
// only the unfinished round. With several ranks
// (--ranks, or several --gpus) the inner steps run in an mpirun child
// instead of in-process (see ContributeOptions::ranks).
#pragma once

#include <string>

#include "runtime/pool/client.h"

namespace myelin::pool {

struct ContributeOptions {
  ClientOptions client;
  std::string device = "cpu";
  std::string gpus; // cuda: GPU indices, e.g. "0,1" (CUDA_VISIBLE_DEVICES)
  // Ranks of this contributor (0 = one per listed GPU, else 1). With more
  // than one, each round's inner steps run as `mpirun -np ranks myelin train
  // --dp ranks/pp --pp pp` on the round's model and this contributor's data
  // slice (the dp ranks split it further); the agent uploads the result.
  int ranks = 0;
  int pp = 1;
  std::string mpirun_args;     // extra mpirun arguments, split at spaces
  std::string name;            // default: hostname
  std::string work_dir;        // cache of shards and models
  int threads = 0;             // CPU threads (0 = all cores)
  bool exit_when_idle = false; // exit once a job was worked on and none is left
  int max_rounds = 0;          // stop after this many uploads (0 = no limit)
  double retry_s = 300;        // give up after the coordinator is unreachable this long
  std::string stats_out;       // JSON summary written at exit
  bool quiet = false;
  // Test-only fault injection (hidden flags): corrupt = nan | scale100 |
  // truncate, or an adversary: signflip (-g) | scale3 (3g) | zero | noise (a
  // random direction with g's norm) | replay (re-sends the previous round's
  // upload) | lazy (a third of the inner steps) | otherdata (trains on the
  // next slice's rows) | otherlr (3x the job's inner learning rate); step
  // delay slows each inner step down.
  std::string debug_corrupt;
  int debug_step_delay_ms = 0;
};

int run_contributor(const ContributeOptions& o);

} // namespace myelin::pool
