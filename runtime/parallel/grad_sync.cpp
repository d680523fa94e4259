#include "runtime/parallel/grad_sync.h"

#include <algorithm>
#include <stdexcept>

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
    // Staging in the data communicator's memory (host, or the device for
    // NCCL): the state padded with zeros to dp equal chunks, and this rank's chunk.
    Communicator& dp = data_.dp();
    const std::size_t n = std::size_t(mesh_.dp_size());
    chunk_ = (S + n - 1) / n;
    const std::size_t b = std::min(S, chunk_ * std::size_t(mesh_.dp_rank()));
    range_ = {b, std::min(S, b + chunk_)};
    stage_ = CommBuffer(dp, chunk_ * n * sizeof(float));
    mine_ = CommBuffer(dp, chunk_ * sizeof(float));
    const std::vector<float> zeros(chunk_ * n, 0.0f);
    dp.copy_from_host(stage_.data(), zeros.data(), stage_.bytes());
    dp.copy_from_host(mine_.data(), zeros.data(), mine_.bytes());
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
    // The padding past the state stays zero: only [0, S) is ever written.
    Communicator& dp = data_.dp();
    dp.copy_buffer(stage_.data(), grads(), e_.state().size * sizeof(float));
    dp.reduce_scatter(stage_.data(), mine_.data(), chunk_, CommDType::kF32, ReduceOp::kAvg);
    dp.copy_buffer(grads() + range_.first, mine_.data(),
                   (range_.second - range_.first) * sizeof(float));
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
  // The engine's parameters (fp32 master copy) are in its state space, as the
  // slices are. The last rank's chunk may end past the state: its tail in
  // mine_ stays zero and lands in the staging's padding.
  Communicator& dp = data_.dp();
  float* params = static_cast<float*>(e_.params().data);
  dp.copy_buffer(mine_.data(), params + range_.first,
                 (range_.second - range_.first) * sizeof(float));
  dp.all_gather(mine_.data(), stage_.data(), chunk_, CommDType::kF32);
  dp.copy_buffer(params, stage_.data(), e_.state().size * sizeof(float));
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
