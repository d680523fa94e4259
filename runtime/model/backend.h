// What a backend gives the model (runtime/model/transformer.h): memory, an
// order of execution (a stream or the calling thread) and kernels. The
// transformer, for every family and every stage, is written once over this
// contract; runtime/model/cpu_backend.h and cuda_backend.h implement it.
//
// Types. `T` is the storage type of parameters (as the kernels read them) and
// activations: float on the CPU, float or bf16 on CUDA. Master parameters,
// parameter gradients, optimizer moments, norm statistics and the attention
// state are float. `Buffer<U>` owns backend memory (RAII; allocate(n) gives n
// zeroed elements, get() is null when empty).
//
// Order. Every call only enqueues work in the backend's order; sync() waits
// for all of it. Host memory handed to upload() may be reused when it
// returns; download() returns when the data are on the host.
//
// One convention for gradients, whatever the backend:
//   * parameter gradients (float) ACCUMULATE (+=);
//   * activation gradients are WRITTEN (overwritten), except the norm
//     backwards, which ADD their input gradient into `dinp`: the residual
//     stream's gradient, to which the skip connection already contributed;
//   * ops documented "in place allowed" may be given the same pointer twice.
//
// Ops (shapes as in kernels/ops.h; N = B*T rows):
//   encoder_forward(out, tokens, wte, wpe|null, B, T, C)
//   index_tokens(index, tokens, host_tokens, N) -> int   groups a micro-batch's
//       tokens (backend copy `tokens`, host copy `host_tokens`) for
//       encoder_backward, without waiting for the device (CUDA: on the
//       device); returns a count the backward passes back
//   encoder_backward(dwte, dwpe|null, dout, tokens, index, count, B, T, C, Vp)
//   layernorm_forward / rmsnorm_forward(out, stats.., inp, w, [b], N, C, [eps])
//   residual_layernorm_forward / residual_rmsnorm_forward(res, out, stats..,
//       a, b, w, [bias], N, C, [eps])       res = a + b, out = norm(res)
//   layernorm_apply / rmsnorm_apply         recompute a forward's output,
//       bit-identical, from its saved statistics
//   layernorm_backward / rmsnorm_backward   dinp +=, dw +=, [db +=]
//   residual_forward(out, a, b, n)
//   matmul_forward(out, inp, w, bias|null, N, IC, OC)
//   matmul_backward(dinp|null, dw, db|null, dout, inp, w, N, IC, OC, scale)
//       dinp = scale dout w; dw += scale dout^T inp; db += scale sum dout
//   fc_gelu_forward(pre, act, inp, w, b, N, IC, OC)   pre = inp w^T + b,
//       act = gelu(pre) (a backend may fuse the two)
//   gelu_forward(out, inp, n)
//   fcproj_gelu_backward(dpre, dact, dw, db, dout, act, w, pre, N, IC, OC)
//       dpre = gelu'(pre) * (dout w) through dact (which may be dpre)
//   swiglu_forward(out, gate_up, N, I); swiglu_backward(dgate_up, dout, gate_up, N, I)
//   rope_forward(x, cos, sin, B, T, H, D, ld)    in place
//   rope_backward(dx, cos, sin, B, T, H, D, ld)  in place: dx = R^T dx
//   attention_forward(out, state, qkv, B, T, NH, NKV, D)
//   attention_backward(dqkv, scratch, dout, qkv, out, state, B, T, NH, NKV, D)
//   classifier(losses, logits, targets, N, V, Vp, write_dlogits): losses[n];
//       with write_dlogits, logits become (softmax - onehot) / N in place
//   update_scalars(args) before the adamw calls of a step: lr, betas and t
//       (a backend may keep them in its memory, where adamw reads them:
//       CUDA, so that a captured update uses each step's values)
//   adamw(lowp|null, master, grads, m, v, n, args), sum_squares(ranges),
//   scale(x, n, s), convert<D, S>(dst, src, n)
// Step scalars, kept in backend memory so that a training step reads the host
// only once (ModelEngine::end_step):
//   sum_squares_into(out, ranges)   *out = sum_squares(ranges), same value
//   clip_by_norm(x, n, sumsq, max)  norm = float(sqrt(*sumsq)); x *= max / norm
//       when max > 0 and norm > max (float arithmetic, as the host would)
//   accumulate_mean_loss(acc, losses, N)   *acc += float(sum losses / N)
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <string>

namespace myelin {

// One AdamW call's settings (step t >= 1). seed != 0 asks a bf16 backend for
// stochastic rounding of the low-precision copy, hashed on index_base + i.
struct UpdateArgs {
  float lr, beta1, beta2, eps, weight_decay;
  int t;
  std::uint32_t seed = 0;
  std::uint64_t index_base = 0;
};

// A range of a float buffer, for sum_squares.
struct FloatRange {
  const float* data;
  std::size_t count;
};

// Graphs (optional; the CUDA backend): a backend that can record the device
// work a callable queues and replay it as one unit. capture(f) runs f once,
// recording instead of running its device work (f may not wait for the
// device or allocate); launch(g) queues the recorded work in the backend's
// order; graphs() says whether to use them (a switch of the backend).
template <class B>
concept GraphBackend = requires(B& b, const typename B::Graph& g, void (*f)()) {
  { b.graphs() } -> std::convertible_to<bool>;
  { b.capture(f) } -> std::same_as<typename B::Graph>;
  b.launch(g);
};
// The graph type of a backend (an empty placeholder for one without graphs).
struct NoGraph {
  explicit operator bool() const { return false; }
};
template <class B> struct graph_of { using type = NoGraph; };
template <GraphBackend B> struct graph_of<B> { using type = typename B::Graph; };

template <class B>
concept ModelBackend = requires(B& b, const B& cb) {
  typename B::T;
  typename B::template Buffer<float>;
  { cb.name() } -> std::convertible_to<std::string>;
  { cb.on_device() } -> std::convertible_to<bool>;
  { cb.stream() } -> std::convertible_to<void*>;
  b.sync();
};

} // namespace myelin
