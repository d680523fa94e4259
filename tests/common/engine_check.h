// Engine-level checks shared by the CUDA engine tests on a GPU (tests/gpu) and
// in CPU simulation (tests/sim): a tiny GPT-2, perturbed initial parameters
// (every gradient path non-trivial), deterministic batches, and a short
// training loop with gradient accumulation through two slots.
#pragma once

#include <cmath>
#include <cstddef>
#include <random>
#include <vector>

#include "runtime/model/config.h"
#include "runtime/model/engine.h"
#include "runtime/model/init.h"

namespace myelin::engine_check {

inline myelin::GPT2Config tiny_config() {
  myelin::GPT2Config c;
  c.max_seq_len = 16;
  c.vocab_size = 50;
  c.padded_vocab_size = 64;
  c.num_layers = 2;
  c.num_heads = 4;
  c.channels = 32;
  return c;
}

inline std::vector<float> perturbed_init(const myelin::GPT2Config& c) {
  auto p = myelin::gpt2_init(c, 7);
  const myelin::ParamLayout lay(c);
  // Non-trivial biases and LayerNorm parameters so every gradient path is exercised.
  std::mt19937_64 g(99);
  std::uniform_real_distribution<float> u(-0.05f, 0.05f);
  for (int k : {myelin::kLn1w, myelin::kLn1b, myelin::kQkvb, myelin::kAttprojb, myelin::kLn2w,
                myelin::kLn2b, myelin::kFcb, myelin::kFcprojb, myelin::kLnfw, myelin::kLnfb})
    for (std::size_t i = 0; i < lay.sizes[k]; ++i) p[lay.offsets[k] + i] += u(g);
  return p;
}

inline void make_batch(const myelin::GPT2Config& c, int B, int Tn, int step, std::vector<int>& tok,
                       std::vector<int>& tgt) {
  tok.resize(std::size_t(B) * Tn);
  tgt.resize(tok.size());
  for (std::size_t i = 0; i < tok.size(); ++i) {
    tok[i] = int((i * 31 + std::size_t(step) * 17 + 5) % std::size_t(c.vocab_size));
    tgt[i] = int((i * 13 + std::size_t(step) * 7 + 11) % std::size_t(c.vocab_size));
  }
}

// `steps` AdamW steps of two accumulated micro-batches (slots 0 and 1) of
// B=2 x T=16; returns the step losses. With `norms`, the gradient sum of
// squares of every step; with `clip`, gradients are clipped to norm 1.
inline std::vector<float> train_losses(myelin::Engine& e, const myelin::GPT2Config& c, int steps,
                                       std::vector<double>* norms, bool clip = true) {
  const int B = 2, Tn = 16;
  myelin::AdamWConfig ac;
  ac.lr = 1e-3f;
  ac.weight_decay = 0.1f;
  std::vector<float> losses;
  std::vector<int> tok, tgt;
  for (int s = 1; s <= steps; ++s) {
    make_batch(c, B, Tn, s, tok, tgt);
    e.zero_grad();
    // two micro-batches of gradient accumulation through two slots
    float loss = 0.0f;
    for (int mb = 0; mb < 2; ++mb) {
      std::vector<int> t2(tok), g2(tgt);
      for (auto& v : t2) v = (v + mb) % c.vocab_size;
      loss += 0.5f * e.forward(mb, t2.data(), g2.data(), B, Tn);
    }
    for (int mb = 1; mb >= 0; --mb) e.backward(mb, 0.5f);
    if (clip || norms) {
      const double ss = e.grad_sum_squares(0, e.layout().total);
      if (norms) norms->push_back(ss);
      if (clip && ss > 1.0) e.scale_grads(float(1.0 / std::sqrt(ss)));
    }
    e.adamw(ac, ac.lr, s, 0, e.layout().total);
    losses.push_back(loss);
  }
  return losses;
}

} // namespace myelin::engine_check
