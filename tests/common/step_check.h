// The one-host-synchronisation training step (Engine::begin_step ..
// end_step) against the plain step that reads every value where the host
// needs it, for any engine: the CPU engine (tests/test_engine.cpp), the CUDA
// engine in simulation (tests/sim) and on a GPU (tests/gpu). Micro-batches of
// 2 x 16 through slots 0 and 1, so the engine needs max B >= 2, T >= 16 and
// two slots.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstddef>
#include <vector>

#include "runtime/model/config.h"
#include "runtime/model/engine.h"
#include "runtime/model/init.h"

namespace myelin::step_check {

inline void step_batch(const ModelConfig& c, int step, int mb, std::vector<int>& tok,
                       std::vector<int>& tgt) {
  tok.resize(32);
  tgt.resize(32);
  for (std::size_t i = 0; i < tok.size(); ++i) {
    tok[i] = int((i * 31 + std::size_t(step) * 17 + std::size_t(mb) * 3 + 5) %
                 std::size_t(c.vocab_size));
    tgt[i] = int((i * 13 + std::size_t(step) * 7 + 11) % std::size_t(c.vocab_size));
  }
}

inline AdamWConfig step_adamw() {
  AdamWConfig ac;
  ac.lr = 1e-3f;
  ac.weight_decay = 0.1f;
  return ac;
}

// As the trainer runs a step without a pipeline or ZeRO: begin_step, two
// accumulated micro-batches, clip_grad_norm(max_norm), adamw, end_step.
inline Engine::StepSums one_sync_step(Engine& e, const ModelConfig& c, int step, float max_norm) {
  std::vector<int> tok, tgt;
  e.begin_step();
  e.zero_grad();
  for (int mb = 0; mb < 2; ++mb) {
    step_batch(c, step, mb, tok, tgt);
    EXPECT_EQ(e.forward(mb, tok.data(), tgt.data(), 2, 16), 0.0f) << "the loss waits for end_step";
    e.backward(mb, 0.5f);
  }
  e.clip_grad_norm(max_norm, 0, e.state().size);
  const AdamWConfig ac = step_adamw();
  e.adamw(ac, ac.lr, step, 0, e.state().size);
  return e.end_step();
}

// The same step reading each value when it is needed: the micro-batch losses
// from forward(), the norm from grad_sum_squares, clipping by scale_grads with
// the trainer's arithmetic.
inline Engine::StepSums plain_step(Engine& e, const ModelConfig& c, int step, float max_norm) {
  std::vector<int> tok, tgt;
  Engine::StepSums r;
  e.zero_grad();
  for (int mb = 0; mb < 2; ++mb) {
    step_batch(c, step, mb, tok, tgt);
    r.loss_sum += e.forward(mb, tok.data(), tgt.data(), 2, 16);
    e.backward(mb, 0.5f);
  }
  r.grad_sum_squares = e.grad_sum_squares(0, e.state().size);
  const float norm = float(std::sqrt(r.grad_sum_squares));
  if (max_norm > 0 && norm > max_norm) e.scale_grads(max_norm / norm);
  const AdamWConfig ac = step_adamw();
  e.adamw(ac, ac.lr, step, 0, e.state().size);
  return r;
}

// `steps` one-sync steps give the same bits as plain steps (losses, norms,
// parameters), with clipping active (max_norm below every norm) and off.
// make() builds a whole-model engine of c; around(s, done) runs right before
// (done = false) and right after (true) each one-sync step: the simulation
// counts host waits in between.
template <class Make, class Around>
void expect_one_sync_steps_match_plain(Make make, const ModelConfig& c, int steps, Around around) {
  const auto params = gpt2_init(c, 7);
  for (const float max_norm : {0.05f, 0.0f}) {
    auto a = make(), b = make();
    a->set_params(params);
    b->set_params(params);
    for (int s = 1; s <= steps; ++s) {
      around(s, false);
      const Engine::StepSums one = one_sync_step(*a, c, s, max_norm);
      around(s, true);
      const Engine::StepSums ref = plain_step(*b, c, s, max_norm);
      EXPECT_EQ(one.loss_sum, ref.loss_sum) << "step " << s << ", clip " << max_norm;
      EXPECT_EQ(one.grad_sum_squares, ref.grad_sum_squares)
          << "step " << s << ", clip " << max_norm;
      EXPECT_GT(ref.loss_sum, 0.0);
      if (max_norm > 0) { // the clip must act for the comparison to mean anything
        EXPECT_GT(std::sqrt(ref.grad_sum_squares), double(max_norm)) << "step " << s;
      }
    }
    std::vector<float> pa(a->layout().total), pb(b->layout().total);
    a->get_params(pa);
    b->get_params(pb);
    std::size_t differ = 0;
    for (std::size_t i = 0; i < pa.size(); ++i) differ += pa[i] != pb[i];
    EXPECT_EQ(differ, 0u) << "parameters differ after " << steps << " steps, clip " << max_norm;
    EXPECT_NE(pa, params) << "the steps changed nothing";
  }
}

} // namespace myelin::step_check
