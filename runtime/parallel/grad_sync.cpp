#include "runtime/parallel/grad_sync.h"

#include <algorithm>
#include <stdexcept>

#include "runtime/model/memory_plan.h"

namespace myelin {

GradSync::GradSync(Engine& engine, Mesh& mesh, Mesh& data, bool zero, std::size_t bucket_bytes)
    : e_(engine), mesh_(mesh), data_(data), zero_(zero && mesh.dp_size() > 1) {
  const auto& cfg = e_.config();
  const ParamLayout& lay = e_.layout();
  // Elements of one layer across the 12 per-layer tensors.
  std::size_t per_layer = 0;
  for (int k = 0; k < kNumParamTensors; ++k)
    if (ParamLayout::is_layer_tensor(k)) per_layer += lay.per_layer(k, cfg.num_layers);
  bucket_elems_ = std::max<std::size_t>(per_layer, bucket_bytes / sizeof(float));
  if (e_.grads().on_device != (data_.dp().memory() == MemorySpace::kDevice) &&
      mesh_.world_size() > 1)
    throw std::runtime_error("parallel training: the engine's memory and the communicator's "
                             "(host or device) differ");
  const std::size_t S = e_.state().size;
  range_ = {0, S};
  if (mesh_.pp_size() > 1 && cfg.tied_head) {
    const StageSpec& st = e_.stage();
    tied_ = data_.pp().split(st.first || st.last ? 0 : 1, mesh_.pp_rank());
  }
  if (zero_) {
    // The engine's parameter and gradient buffers hold dp whole chunks
    // (EngineOptions::zero_dp): the collectives run in place on them.
    const std::size_t n = std::size_t(mesh_.dp_size());
    chunk_ = zero_padded_state(S, mesh_.dp_size()) / n;
    if (e_.grads().capacity < chunk_ * n || e_.params().capacity < chunk_ * n)
      throw std::logic_error("--zero 1: the engine was not built with zero_dp = " +
                             std::to_string(n) + " (its state is not padded to dp chunks)");
    const std::size_t b = std::min(S, chunk_ * std::size_t(mesh_.dp_rank()));
    range_ = {b, std::min(S, b + chunk_)};
    e_.shard_optimizer(range_.first, range_.second);
  }
  e_.set_backward_hook(nullptr);
}

float* GradSync::grads() { return static_cast<float*>(e_.grads().data); }

void GradSync::arm() {
  if (mesh_.dp_size() == 1 || zero_) return;
  armed_ = true;
  pending_hi_ = -1;
  e_.set_backward_hook([this](int l) { on_layer(l); });
}

void GradSync::on_layer(int layer) {
  if (!armed_) return;
  if (pending_hi_ < 0) pending_hi_ = layer;
  const auto& cfg = e_.config();
  const ParamLayout& lay = e_.layout();
  std::size_t elems = 0;
  for (int k = 0; k < kNumParamTensors; ++k)
    if (ParamLayout::is_layer_tensor(k))
      elems += lay.per_layer(k, cfg.num_layers) * std::size_t(pending_hi_ - layer + 1);
  if (elems >= bucket_elems_) {
    issue_layers(layer, pending_hi_);
    pending_hi_ = -1;
  }
  for (auto& h : inflight_) h.test(); // let MPI progress between layers
}

void GradSync::issue_layers(int lo, int hi) {
  const auto& cfg = e_.config();
  const ParamLayout& lay = e_.layout();
  for (int k = 0; k < kNumParamTensors; ++k) {
    if (!ParamLayout::is_layer_tensor(k)) continue;
    const std::size_t per = lay.per_layer(k, cfg.num_layers);
    if (per == 0) continue; // a tensor this family lacks
    float* p = grads() + e_.state().of(lay.offsets[k] + per * lo);
    inflight_.push_back(
        data_.dp().all_reduce_async(p, p, per * (hi - lo + 1), CommDType::kF32, ReduceOp::kAvg));
  }
}

void GradSync::reduce_tied_embedding() {
  if (!tied_) return;
  // wte's gradient has a part from the embedding (first stage) and one from
  // the classifier (last stage); middle stages own no wte. Sum the two.
  const StageSpec& st = e_.stage();
  if (!st.first && !st.last) return;
  const ParamLayout& lay = e_.layout();
  float* p = grads() + e_.state().of(lay.offsets[kWte]);
  tied_->all_reduce(p, lay.sizes[kWte], CommDType::kF32, ReduceOp::kSum);
}

void GradSync::wait_all() {
  for (auto& h : inflight_) h.wait();
  inflight_.clear();
}

void GradSync::finish() {
  e_.set_backward_hook(nullptr);
  armed_ = false;
  reduce_tied_embedding();
  if (mesh_.dp_size() == 1) return;
  const ParamLayout& lay = e_.layout();
  const StageSpec& st = e_.stage();
  if (zero_) {
    // In place: this rank's chunk of the gradient becomes the average; the
    // other chunks (and the padding past the state) are left undefined and
    // never read: the update, the norm and the next zero_grad use the state
    // range only, and only this rank's slice.
    float* g = grads();
    data_.dp().reduce_scatter(g, g + chunk_ * std::size_t(mesh_.dp_rank()), chunk_, CommDType::kF32,
                              ReduceOp::kAvg);
    return;
  }
  if (pending_hi_ >= 0) {
    issue_layers(st.layer_begin, pending_hi_);
    pending_hi_ = -1;
  }
  // Layers whose hook never fired (backward without arm()) are issued here.
  if (inflight_.empty() && st.layer_end > st.layer_begin)
    issue_layers(st.layer_begin, st.layer_end - 1);
  for (int k : {kWte, kWpe, kLnfw, kLnfb, kLmHead}) {
    if (!st.owns_tensor(lay, k)) continue;
    float* p = grads() + e_.state().of(lay.offsets[k]);
    inflight_.push_back(
        data_.dp().all_reduce_async(p, p, lay.sizes[k], CommDType::kF32, ReduceOp::kAvg));
  }
  wait_all();
}

double GradSync::global_norm() {
  double ss = e_.grad_sum_squares(range_.first, range_.second);
  if (zero_) {
    mesh_.world().all_reduce(&ss, 1, CommDType::kF64, ReduceOp::kSum);
  } else if (mesh_.pp_size() > 1) {
    mesh_.pp().all_reduce(&ss, 1, CommDType::kF64, ReduceOp::kSum);
  }
  return ss;
}

void GradSync::after_update() {
  if (!zero_) return;
  // In place on the engine's fp32 parameters (its state space, as the slices
  // are): every rank's updated chunk reaches every rank. The last chunk's
  // padding past the state carries nothing the model reads.
  float* params = static_cast<float*>(e_.params().data);
  data_.dp().all_gather(params + chunk_ * std::size_t(mesh_.dp_rank()), params, chunk_,
                        CommDType::kF32);
  e_.params_changed();
}

std::size_t GradSync::optimizer_bytes_saved() const {
  if (!zero_) return 0;
  return (e_.state().size - (range_.second - range_.first)) * 2 * sizeof(float);
}

std::vector<float> GradSync::gather_full_params() {
  const ParamLayout& lay = e_.layout();
  std::vector<float> p(lay.total);
  e_.get_params(p);
  if (mesh_.pp_size() == 1) return p;
  std::vector<float> mine(lay.total, 0.0f);
  for (const auto& r :
       e_.stage().owned_ranges(lay, e_.config().num_layers, 0, lay.total, /*count_wte_once=*/true))
    std::copy(p.begin() + r.begin, p.begin() + r.end, mine.begin() + r.begin);
  mesh_.pp().all_reduce(mine.data(), mine.size(), CommDType::kF32, ReduceOp::kSum);
  return mine;
}

} // namespace myelin
