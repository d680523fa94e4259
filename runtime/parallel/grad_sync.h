// Data-parallel gradient synchronisation for one engine (one pipeline stage of
// one replica), and the pipeline-wide pieces of a step that need collectives:
// the tied embedding's gradient, the global gradient norm, the ZeRO-1 update.
//
// Without ZeRO: gradients are averaged over the data-parallel group in
// buckets of consecutive layers. The buckets of the last micro-batch start
// (non-blocking all-reduce) from the engine's backward hook as soon as their
// layers are done, so communication overlaps the rest of the backward pass;
// the embedding and final LayerNorm go last.
// With ZeRO-1: the gradient is reduce-scattered (average) so each rank holds
// its 1/dp slice, AdamW runs on that slice only (its moments are the only
// ones this rank keeps), and the parameters are all-gathered afterwards.
// The collectives run in place on the engine's buffers, padded to dp equal
// chunks (EngineOptions::zero_dp): the same code serves host engines (MPI)
// and device engines (NCCL on device memory, ordered after the engine's
// stream by the communicator's input stream).
// Everything here is in the engine's state space (the parameters its stage
// owns, StateIndex in engine.h): ZeRO slices a stage's state, not the model.
// A tied embedding's gradient is summed between the first and the last stage
// only, over a communicator split off the pipeline group.
#pragma once

#include <cstddef>
#include <memory>
#include <utility>
#include <vector>

#include "runtime/comm/communicator.h"
#include "runtime/comm/mesh.h"
#include "runtime/model/engine.h"

namespace myelin {

class GradSync {
 public:
  // `mesh` carries host scalars (norms) and host copies; `data` carries the
  // engine's gradient buffers (the same mesh on CPU; an NCCL mesh on GPUs).
  GradSync(Engine& engine, Mesh& mesh, Mesh& data, bool zero, std::size_t bucket_bytes = 4u << 20);

  // Arms overlapped bucket reduction for the backward pass that follows (the
  // last micro-batch of a step).
  void arm();
  // After all micro-batches: completes the reduction (tied embedding over the
  // pipeline, buckets, the rest) so that this rank's gradient — or its ZeRO
  // slice — is the global average.
  void finish();
  // Global gradient norm over the whole model (all stages, all slices).
  double global_norm();
  // Whether this rank's gradient alone gives the global norm (no pipeline, no
  // ZeRO slices): then the engine can clip on its own, without a collective
  // (Engine::clip_grad_norm), and the step needs one host synchronisation.
  bool norm_is_local() const { return !zero_ && mesh_.pp_size() == 1; }
  // State range [begin, end) this rank updates: its whole state, or its ZeRO slice.
  std::pair<std::size_t, std::size_t> update_range() const { return range_; }
  // After AdamW: ZeRO all-gathers the parameters; otherwise nothing.
  void after_update();
  // Bytes of AdamW state this rank does not keep thanks to ZeRO.
  std::size_t optimizer_bytes_saved() const;
  // Parameters of the whole model on every rank of a replica (stages fill in
  // what they own), host fp32.
  std::vector<float> gather_full_params();

 private:
  void on_layer(int layer);
  void issue_layers(int lo, int hi); // inclusive layer range
  void reduce_tied_embedding();
  void wait_all();
  float* grads();

  Engine& e_;
  Mesh& mesh_;
  Mesh& data_;
  bool zero_;
  bool armed_ = false;
  std::size_t bucket_elems_;
  int pending_hi_ = -1; // highest layer done but not yet issued
  std::vector<CommHandle> inflight_;
  std::pair<std::size_t, std::size_t> range_;
  std::size_t chunk_ = 0;
  std::unique_ptr<Communicator> tied_; // first and last stage (a tied embedding over a pipeline)
};

} // namespace myelin
