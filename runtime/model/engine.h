// Engine: one replica (or one pipeline stage of a replica) of a GPT-2 model on
// one device. The trainer, the data-parallel and pipeline-parallel schedules
// and the pool all drive a model only through this interface; the CPU backend
// (runtime/model/cpu_engine.cpp) and the CUDA backend (cuda_engine.cpp)
// implement it.
//
// Buffers: for the parameters its stage owns (its state space, StateIndex
// below: a stage computes, reads and updates only its own tensors) the engine
// holds the parameters, their gradients and AdamW moments; and `slots`
// activation arenas (one per micro-batch in flight, for pipelining). So a
// pipeline stage's memory shrinks with its share of the model. A tied embedding (wte, also the
// head) is owned by the first and the last stage: both hold its gradient and moments, the pipeline
// sums the two gradient halves between them, and both apply the same update.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "runtime/model/config.h"

namespace myelin {

// Which part of the model an engine computes. A whole model is
// {0, L, true, true}.
struct StageSpec {
  int layer_begin = 0;
  int layer_end = 0;
  bool first = true; // owns the embedding (wte, wpe)
  bool last = true;  // owns lnf, the head (lm_head, or wte when tied) and the loss
  static StageSpec whole(const ModelConfig& c) { return {0, c.num_layers, true, true}; }
  // Does this stage own (compute gradients for / update) tensor k? A tied wte
  // is owned by both the first and the last stage; a tensor of size 0 by none.
  bool owns_tensor(const ParamLayout& lay, int tensor) const;
  // [begin, end) of the stage's slice of a per-layer tensor k.
  std::pair<std::size_t, std::size_t> layer_range(const ParamLayout& lay, int k,
                                                  int num_layers) const;
  // The parts of [begin, end) of the flat buffer this stage owns, one range
  // per tensor. With `count_wte_once`, wte counts on the first stage only (its
  // gradient is shared with the last stage): for norms and for assembling the
  // whole model from stages.
  struct Range {
    std::size_t begin, end;
    int tensor;
  };
  std::vector<Range> owned_ranges(const ParamLayout& lay, int num_layers, std::size_t begin,
                                  std::size_t end, bool count_wte_once) const;
};

// The stage's state space: the parts of the flat parameter buffer the stage
// owns (StageSpec::owned_ranges over the whole buffer), concatenated in flat
// order. Gradients and AdamW moments are stored in this order, and the ranges
// given to Engine::adamw, grad_sum_squares and shard_optimizer are state
// indices [0, size). A whole model's state space is the flat buffer itself.
struct StateIndex {
  std::vector<StageSpec::Range> ranges; // flat ranges, in flat order
  std::vector<std::size_t> starts;      // state index of each range's first element
  std::size_t size = 0;
  StateIndex() = default;
  StateIndex(const StageSpec& st, const ParamLayout& lay, int num_layers);
  // State index of flat element i, which the stage must own (std::logic_error otherwise).
  std::size_t of(std::size_t flat) const;
  // The pieces of state range [begin, end), each inside one tensor.
  struct Piece {
    std::size_t state, flat, count;
    int tensor;
  };
  std::vector<Piece> pieces(std::size_t begin, std::size_t end) const;
};

enum class DType : std::uint8_t { kF32 = 0, kBF16 = 1 };

// A contiguous region of engine memory (host on CPU, device on CUDA).
struct BufferView {
  void* data = nullptr;
  std::size_t count = 0; // elements
  DType dtype = DType::kF32;
  bool on_device = false;
  std::size_t capacity = 0; // elements allocated from data (>= count: ZeRO padding)
};

struct AdamWConfig {
  float lr = 3e-4f, beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f, weight_decay = 0.0f;
};

// Bytes an engine holds, by purpose.
struct MemoryUse {
  std::size_t params = 0, grads = 0, optimizer = 0, activations = 0, scratch = 0;
  std::size_t total() const { return params + grads + optimizer + activations + scratch; }
};

class Engine {
 public:
  virtual ~Engine() = default;

  virtual const ModelConfig& config() const = 0;
  virtual const StageSpec& stage() const = 0;
  virtual const ParamLayout& layout() const = 0;
  virtual std::string device_name() const = 0;
  // The largest B*T (rows x seq) one micro-batch may have, fixed at construction.
  virtual int max_batch() const = 0;
  virtual int max_seq() const = 0;
  // The device's peak dense FLOP/s for this engine's math (0 = unknown), for
  // model FLOP utilisation (MFU).
  virtual double peak_flops() const { return 0.0; }
  // Memory this engine allocated (host on CPU, device on CUDA).
  virtual MemoryUse memory_use() const = 0;
  // The stream the engine queues its device work on (a cudaStream_t on CUDA;
  // nullptr on the CPU). Device communicators wait on it before they read
  // engine buffers (Communicator::set_input_stream); copies into engine
  // buffers from outside go on it too.
  virtual void* device_stream() const { return nullptr; }
  // Graphs this engine has captured of its device work and replays (CUDA,
  // see runtime/model/cuda_backend.h; 0 without graphs).
  virtual std::size_t graphs_captured() const { return 0; }

  // ---- parameters and optimizer state, copied through host fp32 -------------
  // The whole flat layout (layout().total): get_params fills what the stage
  // owns and zeroes the rest; set_params takes what the stage owns.
  virtual void get_params(std::span<float> out) const = 0;
  virtual void set_params(std::span<const float> in) = 0; // also resets master copy
  // Moments over optimizer_range() (the whole state space unless sharded).
  virtual void get_moments(std::span<float> m, std::span<float> v) const = 0;
  virtual void set_moments(std::span<const float> m, std::span<const float> v) = 0;

  // ---- one micro-batch through this stage ----------------------------------
  // First stage: `tokens` [B*T] (host). Other stages: `in_act` [B,T,C] fp32 in
  // engine memory (see act_view). The last stage also needs `targets` [B*T]
  // (host) and returns the mean loss over B*T positions; other stages return 0.
  virtual float forward(int slot, const int* tokens, const int* targets, int B, int T) = 0;
  // Loss only (no activations kept for backward), last stage of a whole model;
  // used for validation. Returns mean loss over B*T.
  virtual float eval_loss(const int* tokens, const int* targets, int B, int T) = 0;
  // Backward of the micro-batch in `slot`. Last stage: dloss is d(step loss) /
  // d(mean micro-batch loss), e.g. 1/grad_accum. Other stages: the gradient
  // w.r.t. their output arrives through act_grad_view(slot) first.
  // Gradients accumulate into the gradient buffer.
  virtual void backward(int slot, float dloss) = 0;

  // Activation exchange for pipelining: the residual stream leaving this stage
  // (output of its last layer) and the gradient entering it, both [B,T,C] fp32.
  virtual BufferView output_act(int slot) = 0;  // written by forward (non-last)
  virtual BufferView input_act(int slot) = 0;   // read by forward (non-first)
  virtual BufferView output_grad(int slot) = 0; // read by backward (non-last)
  virtual BufferView input_grad(int slot) = 0;  // written by backward (non-first)

  // Next-token logits of the last position of row 0 of the last forward in
  // slot 0 (last stage), copied to host: padded_vocab_size floats; for sampling.
  virtual void last_logits(int position, std::span<float> out) = 0;

  // ---- gradients and update -------------------------------------------------
  virtual void zero_grad() = 0;
  // The stage's state space (see StateIndex).
  virtual const StateIndex& state() const = 0;
  virtual BufferView grads() = 0; // the gradient buffer: state().size elements
  // The gradients in the flat layout, copied to the host (zero where the stage
  // owns nothing): for tests and tools.
  std::vector<float> flat_grads();
  // Sum of squares of the gradient over state range [begin, end) (wte: only
  // on the first stage, so that pipeline stages can add their partial sums
  // without counting a tied embedding twice).
  virtual double grad_sum_squares(std::size_t begin, std::size_t end) = 0;
  virtual void scale_grads(float s) = 0;
  // AdamW on state range [begin, end) (ZeRO shards pass their slice). step t >= 1.
  virtual void adamw(const AdamWConfig& cfg, float lr, int t, std::size_t begin,
                     std::size_t end) = 0;
  // ---- a training step with one host synchronisation ------------------------
  // begin_step() ... end_step() bracket one optimizer step. In between: the
  // last stage's forward() (with targets) adds its micro-batch's mean loss to
  // a sum kept in engine memory and returns 0 instead of reading it back; the
  // first stage's backward() and every adamw() return without waiting for the
  // device (a backward hook still sees its layer complete; a later stage's
  // backward still waits, its input_grad leaves through a communicator);
  // clip_grad_norm() computes the gradient's sum of squares over state range
  // [begin, end) (as grad_sum_squares) in engine memory and, when max_norm > 0
  // and the norm exceeds it, scales the whole gradient by max_norm / norm
  // there too (float arithmetic, as scale_grads(max_norm / norm) would).
  // end_step() waits for the device once and returns the two sums (the sum of
  // squares is 0 without a clip_grad_norm call). Other calls keep their own
  // waits (eval_loss, get_*, last_logits). begin_step() drops a step that an
  // exception left open (its sums restart from zero).
  struct StepSums {
    double loss_sum = 0.0;         // sum of the micro-batches' mean losses
    double grad_sum_squares = 0.0; // before clipping
  };
  virtual void begin_step() = 0;
  virtual void clip_grad_norm(float max_norm, std::size_t begin, std::size_t end) = 0;
  virtual StepSums end_step() = 0;
  // Called during backward() right after the gradients of layer l (global
  // index) are complete for this micro-batch, so a data-parallel runtime can
  // start reducing them while earlier layers still compute. Empty = none.
  virtual void set_backward_hook(std::function<void(int layer)> hook) = 0;
  // ZeRO-1: keep AdamW moments only for state range [begin, end); later
  // adamw() calls must stay inside it, and get/set_moments take that slice.
  virtual void shard_optimizer(std::size_t begin, std::size_t end) = 0;
  virtual std::pair<std::size_t, std::size_t> optimizer_range() const = 0;
  // The gradient buffer copied to the host (state().size elements).
  virtual void get_grads(std::span<float> out) const = 0;
  // Parameters in engine memory (for all-gather / broadcast).
  // state().size elements, in state order.
  virtual BufferView params() = 0;
  // After params() was overwritten externally, refresh derived copies (e.g. bf16).
  virtual void params_changed() = 0;
};

struct EngineOptions {
  std::string device = "cpu"; // cpu | cuda
  std::string dtype = "fp32"; // fp32 | bf16 (cuda)
  int device_index = 0;
  // 0: store all activations; 1: recompute the GeLU output in the backward;
  // 2: also recompute the LayerNorm outputs (see runtime/model/memory_plan.h).
  int recompute = 0;
  int slots = 1;
  // ZeRO-1 over this many data-parallel ranks: the fp32 parameter (master) and
  // gradient buffers hold the state padded to a multiple of it (the padding
  // is never read as state), so the reduce-scatter of the gradient and the
  // all-gather of the parameters run in place, without staging copies.
  int zero_dp = 1;
};

// Both engines check every token and target id of a micro-batch with this
// before reading wte or the logits: ids must lie in [0, vocab). Callers
// validate their input first (the loader names the shard, the trainer the
// sampling prompt), so a bad id here is a program error: std::out_of_range.
void check_token_ids(const int* ids, std::size_t n, int vocab, const char* what);

// Builds the engine for `device`; throws std::runtime_error if the backend is
// not compiled in or no device exists.
std::unique_ptr<Engine> make_engine(const ModelConfig& cfg, const StageSpec& stage, int max_B,
                                    int max_T, const EngineOptions& opt);

// Implemented in cpu_engine.cpp / cuda_engine.cpp.
std::unique_ptr<Engine> make_cpu_engine(const ModelConfig& cfg, const StageSpec& stage, int max_B,
                                        int max_T, const EngineOptions& opt);
std::unique_ptr<Engine> make_cpu_engine(const ModelConfig& cfg, const StageSpec& stage, int max_B,
                                        int max_T, int slots, int recompute = 0);
#ifdef MYELIN_HAVE_CUDA
std::unique_ptr<Engine> make_cuda_engine(const ModelConfig& cfg, const StageSpec& stage, int max_B,
                                         int max_T, const EngineOptions& opt);
#endif

} // namespace myelin
