// Small Llama-family model configurations for the CPU tests, written once:
// LlamaFields holds what a Llama config adds to a GPT-2-style shape;
// llama_config(shape, fields) builds the config, expect_llama_fields(c, fields)
// requires a (read back or parsed) config to be of the Llama family with
// exactly those fields, each checked on its own.
#pragma once

#include <gtest/gtest.h>

#include "kernels/ops.h"
#include "runtime/model/config.h"

namespace myelin::test_util {

struct LlamaFields {
  int kv_heads = 0;     // num_kv_heads
  int intermediate = 0; // intermediate_size
  bool tied_head = true;
  float norm_eps = 1e-5f;
  cpu::RopeParams rope{};
};

// The Llama family on `shape` (max_seq_len, vocab, padded vocab, layers,
// heads, channels as given there).
inline ModelConfig llama_config(ModelConfig shape, const LlamaFields& f) {
  shape.family = Family::kLlama;
  shape.num_kv_heads = f.kv_heads;
  shape.intermediate_size = f.intermediate;
  shape.tied_head = f.tied_head;
  shape.norm_eps = f.norm_eps;
  shape.rope = f.rope;
  return shape;
}

inline void expect_llama_fields(const ModelConfig& c, const LlamaFields& f) {
  EXPECT_TRUE(c.llama());
  EXPECT_EQ(c.num_kv_heads, f.kv_heads);
  EXPECT_EQ(c.intermediate_size, f.intermediate);
  EXPECT_EQ(c.tied_head, f.tied_head);
  EXPECT_EQ(c.norm_eps, f.norm_eps);
  EXPECT_EQ(c.rope.theta, f.rope.theta);
  EXPECT_EQ(c.rope.llama3, f.rope.llama3);
  EXPECT_EQ(c.rope.factor, f.rope.factor);
  EXPECT_EQ(c.rope.low_freq_factor, f.rope.low_freq_factor);
  EXPECT_EQ(c.rope.high_freq_factor, f.rope.high_freq_factor);
  EXPECT_EQ(c.rope.original_max_position, f.rope.original_max_position);
}

} // namespace myelin::test_util
