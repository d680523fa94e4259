#include "runtime/model/engine.h"

#include <algorithm>
#include <iterator>
#include <stdexcept>
#include <string>
#include <tuple>

namespace myelin {

bool StageSpec::owns_tensor(const ParamLayout& lay, int tensor) const {
  if (lay.sizes[tensor] == 0) return false; // the family lacks it
  switch (tensor) {
  case kWte:
    return first || (last && lay.sizes[kLmHead] == 0); // tied: also the head
  case kLmHead:
    return last;
  case kWpe:
    return first;
  case kLnfw:
  case kLnfb:
    return last;
  default:
    return layer_end > layer_begin;
  }
}

std::pair<std::size_t, std::size_t> StageSpec::layer_range(const ParamLayout& lay, int k,
                                                           int num_layers) const {
  const std::size_t per = lay.per_layer(k, num_layers);
  return {lay.offsets[k] + per * layer_begin, lay.offsets[k] + per * layer_end};
}

std::vector<StageSpec::Range> StageSpec::owned_ranges(const ParamLayout& lay, int num_layers,
                                                      std::size_t begin, std::size_t end,
                                                      bool count_wte_once) const {
  std::vector<Range> out;
  for (int k = 0; k < kNumParamTensors; ++k) {
    if (!owns_tensor(lay, k)) continue;
    if (count_wte_once && k == kWte && !first) continue;
    std::size_t a = lay.offsets[k], b = a + lay.sizes[k];
    if (ParamLayout::is_layer_tensor(k)) std::tie(a, b) = layer_range(lay, k, num_layers);
    a = std::max(a, begin);
    b = std::min(b, end);
    if (a < b) out.push_back({a, b, k});
  }
  return out;
}

StateIndex::StateIndex(const StageSpec& st, const ParamLayout& lay, int num_layers)
    : ranges(st.owned_ranges(lay, num_layers, 0, lay.total, /*count_wte_once=*/false)) {
  for (const auto& r : ranges) {
    starts.push_back(size);
    size += r.end - r.begin;
  }
}

std::size_t StateIndex::of(std::size_t flat) const {
  auto it = std::upper_bound(ranges.begin(), ranges.end(), flat,
                             [](std::size_t f, const StageSpec::Range& r) { return f < r.begin; });
  if (it == ranges.begin() || flat >= std::prev(it)->end)
    throw std::logic_error("StateIndex: flat element " + std::to_string(flat) +
                           " is not owned by this stage");
  const std::size_t i = std::size_t(std::prev(it) - ranges.begin());
  return starts[i] + (flat - ranges[i].begin);
}

std::vector<StateIndex::Piece> StateIndex::pieces(std::size_t begin, std::size_t end) const {
  std::vector<Piece> out;
  for (std::size_t i = 0; i < ranges.size(); ++i) {
    const std::size_t a = std::max(begin, starts[i]),
                      b = std::min(end, starts[i] + (ranges[i].end - ranges[i].begin));
    if (a < b) out.push_back({a, ranges[i].begin + (a - starts[i]), b - a, ranges[i].tensor});
  }
  return out;
}

std::vector<float> Engine::flat_grads() {
  const StateIndex& s = state();
  std::vector<float> g(s.size), flat(layout().total, 0.0f);
  get_grads(g);
  for (const auto& p : s.pieces(0, s.size))
    std::copy_n(g.begin() + long(p.state), p.count, flat.begin() + long(p.flat));
  return flat;
}

void check_token_ids(const int* ids, std::size_t n, int vocab, const char* what) {
  if (!ids) throw std::logic_error(std::string(what) + ": ids are required");
  for (std::size_t i = 0; i < n; ++i)
    if (ids[i] < 0 || ids[i] >= vocab)
      throw std::out_of_range(std::string(what) + ": id " + std::to_string(ids[i]) +
                              " at position " + std::to_string(i) + " outside [0, " +
                              std::to_string(vocab) + ")");
}

std::unique_ptr<Engine> make_engine(const ModelConfig& cfg, const StageSpec& stage, int max_B,
                                    int max_T, const EngineOptions& opt) {
  if (opt.device == "cpu") {
    if (opt.dtype != "fp32")
      throw std::invalid_argument("--dtype: the cpu device supports fp32 only");
    if (opt.recompute < 0 || opt.recompute > 2)
      throw std::invalid_argument("--recompute: expected 0, 1 or 2, got " +
                                  std::to_string(opt.recompute));
    return make_cpu_engine(cfg, stage, max_B, max_T, opt);
  }
  if (opt.device == "cuda") {
#ifdef MYELIN_HAVE_CUDA
    return make_cuda_engine(cfg, stage, max_B, max_T, opt);
#else
    throw std::runtime_error("--device cuda: this myelin was built without the CUDA backend");
#endif
  }
  throw std::invalid_argument("--device: expected cpu or cuda, got '" + opt.device + "'");
}

} // namespace myelin
