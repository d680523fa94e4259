#include "runtime/parallel/pipeline.h"

#include <algorithm>
#include <chrono>
#include <sstream>

#include "runtime/util/error.h"

namespace myelin {
namespace {
double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
constexpr int kActTag = 1, kGradTag = 2; // tags: 2 * micro + kind (kept below kMaxTag)
int tag_of(int micro, int kind) { return (micro % 8000) * 4 + kind; }
} // namespace

std::vector<StageSpec> split_stages(int L, int pp, const std::string& pp_layers) {
  require(pp >= 1 && pp <= L, "--pp",
          "expected 1.." + std::to_string(L) + " stages (the model has " + std::to_string(L) +
              " layers), got " + std::to_string(pp));
  std::vector<int> counts;
  if (pp_layers.empty()) {
    for (int s = 0; s < pp; ++s) counts.push_back(L / pp + (s < L % pp ? 1 : 0));
  } else {
    std::stringstream ss(pp_layers);
    std::string item;
    while (std::getline(ss, item, ',')) {
      std::size_t used = 0;
      int c = 0;
      try {
        c = std::stoi(item, &used);
      } catch (...) {
        used = 0;
      }
      if (used == 0 || used != item.size())
        throw InputError("--pp-layers: expected comma-separated integers, got '" + pp_layers + "'");
      require(c >= 1 && c <= L, "--pp-layers",
              "every stage needs 1.." + std::to_string(L) + " layers, got " + std::to_string(c));
      counts.push_back(c);
    }
    require(int(counts.size()) == pp, "--pp-layers",
            "expected " + std::to_string(pp) + " entries (one per stage)");
    long long sum = 0; // at most pp x L: no overflow
    for (int c : counts) sum += c;
    require(sum == L, "--pp-layers",
            "layers sum to " + std::to_string(sum) + ", the model has " + std::to_string(L));
  }
  std::vector<StageSpec> out;
  int at = 0;
  for (int s = 0; s < pp; ++s) {
    out.push_back({at, at + counts[s], s == 0, s == pp - 1});
    at += counts[s];
  }
  return out;
}

int pipeline_slots(PipeSchedule s, int stages, int K) {
  if (stages == 1) return 1;
  return s == PipeSchedule::kGPipe ? K : std::min(K, stages);
}

double run_pipeline(Engine& e, Communicator& pp, PipeSchedule sched, int K, int B, int T,
                    const std::function<void(int, int*, int*)>& load,
                    const std::function<void()>& before_last_backward, PipeTiming* timing) {
  const StageSpec& st = e.stage();
  const int S = pp.size(), s = pp.rank();
  const int slots = pipeline_slots(sched, S, K);
  const std::size_t act = std::size_t(B) * T * e.config().channels;
  std::vector<int> tokens(std::size_t(B) * T), targets(std::size_t(B) * T);
  std::vector<CommHandle> act_sends(slots), grad_sends(slots);
  double loss = 0, busy = 0;
  const double t_start = now_s();

  auto forward = [&](int m) {
    const int slot = m % slots;
    act_sends[slot].wait(); // the slot's output buffer is free again
    load(m, tokens.data(), targets.data());
    if (!st.first) pp.recv(e.input_act(slot).data, act, CommDType::kF32, s - 1, tag_of(m, kActTag));
    const double t0 = now_s();
    loss += e.forward(slot, tokens.data(), targets.data(), B, T);
    busy += now_s() - t0;
    if (!st.last)
      act_sends[slot] =
          pp.send_async(e.output_act(slot).data, act, CommDType::kF32, s + 1, tag_of(m, kActTag));
  };
  auto backward = [&](int m) {
    const int slot = m % slots;
    grad_sends[slot].wait();
    if (!st.last)
      pp.recv(e.output_grad(slot).data, act, CommDType::kF32, s + 1, tag_of(m, kGradTag));
    if (m == K - 1 && before_last_backward) before_last_backward();
    const double t0 = now_s();
    e.backward(slot, 1.0f / float(K));
    busy += now_s() - t0;
    if (!st.first)
      grad_sends[slot] =
          pp.send_async(e.input_grad(slot).data, act, CommDType::kF32, s - 1, tag_of(m, kGradTag));
  };

  if (sched == PipeSchedule::kGPipe || S == 1) {
    if (S == 1) { // no pipeline: forward and backward each micro-batch in turn
      for (int m = 0; m < K; ++m) {
        forward(m);
        backward(m);
      }
    } else {
      for (int m = 0; m < K; ++m) forward(m);
      for (int m = 0; m < K; ++m) backward(m);
    }
  } else {
    const int warm = std::min(S - s - 1, K);
    for (int m = 0; m < warm; ++m) forward(m);
    for (int i = 0; i < K - warm; ++i) {
      forward(warm + i);
      backward(i);
    }
    for (int i = K - warm; i < K; ++i) backward(i);
  }
  for (auto& h : act_sends) h.wait();
  for (auto& h : grad_sends) h.wait();
  if (timing) {
    timing->busy_s = busy;
    timing->total_s = now_s() - t_start;
  }
  return loss;
}

double pipeline_forward(Engine& e, Communicator& pp, int B, int T, const int* tokens,
                        const int* targets) {
  const StageSpec& st = e.stage();
  const int s = pp.rank();
  const std::size_t act = std::size_t(B) * T * e.config().channels;
  if (!st.first) pp.recv(e.input_act(0).data, act, CommDType::kF32, s - 1, tag_of(0, 3));
  const double loss = e.forward(0, tokens, targets, B, T);
  if (!st.last) pp.send(e.output_act(0).data, act, CommDType::kF32, s + 1, tag_of(0, 3));
  return loss;
}

} // namespace myelin
