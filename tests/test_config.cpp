// The one size check of a model shape and a micro-batch (ModelConfig::validate,
// validate_micro_batch) and the overflow-checked arithmetic under it.
#include <gtest/gtest.h>

#include <string>

#include "runtime/model/config.h"
#include "runtime/util/checked.h"
#include "runtime/util/error.h"

using namespace myelin;

namespace {
// The message of the InputError f throws ("" and a test failure if none).
template <class F> std::string input_error(F&& f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  }
  ADD_FAILURE() << "no InputError";
  return "";
}
bool starts_with(const std::string& s, const std::string& p) { return s.rfind(p, 0) == 0; }
} // namespace

TEST(CheckedMath, OverflowIsReportedNotWrapped) {
  EXPECT_EQ(checked_mul({3, 5, 7}), 105u);
  EXPECT_FALSE(checked_mul({std::size_t(1) << 32, std::size_t(1) << 32}));
  EXPECT_EQ(checked_mul({std::size_t(1) << 32, 0, std::size_t(1) << 40}), 0u);
  EXPECT_EQ(checked_add({1, 2, 3}), 6u);
  EXPECT_FALSE(checked_add({~std::size_t(0), 1}));
  EXPECT_FALSE(checked_add({1, std::nullopt}));
}

TEST(ModelShape, PresetsPassAndCountTheirParameters) {
  for (const char* name : {"124M", "350M", "774M", "1.5B"}) {
    ModelConfig c;
    ASSERT_TRUE(model_preset(name, c));
    EXPECT_NO_THROW(c.validate());
    EXPECT_EQ(c.param_count(), ParamLayout(c).total) << name;
  }
  ModelConfig c;
  model_preset("124M", c);
  EXPECT_EQ(ParamLayout(c).total, 124475904u);
}

// The issue's shape: 5 layers, C = 2^29, Vp = 2147483580 wrapped the parameter
// count to 0 and gpt2_init wrote through a null pointer.
TEST(ModelShape, TheIssuesWrappingShapeIsRefusedNamingTheField) {
  const ModelConfig c{1, 256, 2147483580, 5, 1, 536870912};
  EXPECT_FALSE(c.param_count() && *c.param_count() <= kMaxParams);
  EXPECT_TRUE(starts_with(input_error([&] { c.validate(flag_names()); }),
                          "--channels: expected 1..65536, got 536870912"));
  EXPECT_TRUE(starts_with(input_error([&] { c.validate(key_names("m.bin: bad model header: ")); }),
                          "m.bin: bad model header: channels: "));
  EXPECT_THROW(ParamLayout{c}, InputError); // never a layout of 0 elements
  ModelConfig v = c;
  v.channels = 64;
  EXPECT_TRUE(starts_with(input_error([&] { v.validate(flag_names()); }), "--padded-vocab: "));
  EXPECT_TRUE(starts_with(input_error([&] { v.validate(key_names("job.model.")); }),
                          "job.model.padded_vocab: "));
}

TEST(ModelShape, EveryFieldHasBounds) {
  const ModelConfig ok{64, 256, 256, 2, 2, 32};
  EXPECT_NO_THROW(ok.validate());
  struct Case {
    ModelConfig c;
    const char* flag;
  };
  const Case cases[] = {
      {{64, 256, 256, 2, 2, 0}, "--channels"},
      {{64, 256, 256, 2, 2, 65537 * 2}, "--channels"},
      {{64, 256, 256, 2, 0, 32}, "--heads"},
      {{64, 256, 256, 2, 64, 32}, "--heads"},
      {{64, 256, 256, 2, 3, 32}, "--channels"},
      {{64, 256, 256, 0, 2, 32}, "--layers"},
      {{64, 256, 256, 4097, 2, 32}, "--layers"},
      {{0, 256, 256, 2, 2, 32}, "--max-seq-len"},
      {{(1 << 20) + 1, 256, 256, 2, 2, 32}, "--max-seq-len"},
      {{64, 0, 256, 2, 2, 32}, "--vocab"},
      {{64, 2147483647, 2147483647, 2, 2, 32}, "--vocab"},
      {{64, 256, 255, 2, 2, 32}, "--padded-vocab"},
      {{64, 256, (1 << 20) + 128, 2, 2, 32}, "--padded-vocab"},
      // 4096 layers of width 65536: 2^47.6 parameters, above 2^36.
      {{64, 256, 256, 4096, 64, 65536}, "--layers/--channels"},
  };
  for (const Case& k : cases)
    EXPECT_TRUE(
        starts_with(input_error([&] { k.c.validate(flag_names()); }), std::string(k.flag) + ": "))
        << k.c.describe() << " should name " << k.flag;
}

TEST(ModelShape, DefaultPaddedVocabNeverOverflows) {
  EXPECT_EQ(default_padded_vocab(50257), 50304);
  EXPECT_EQ(default_padded_vocab(256), 256);
  EXPECT_EQ(default_padded_vocab(2147483647), 2147483647); // validate names --vocab
}

TEST(MicroBatch, BatchAndSequenceAreBoundedAgainstTheModel) {
  ModelConfig c;
  model_preset("1.5B", c);
  // GPT-2 1.5B at 64 x 1024 (the memory plan's example) is within the bounds.
  EXPECT_NO_THROW(validate_micro_batch(c, 64, 1024, flag_names()));
  EXPECT_TRUE(starts_with(input_error([&] { validate_micro_batch(c, 0, 1024, flag_names()); }),
                          "--batch-size: "));
  EXPECT_TRUE(
      starts_with(input_error([&] { validate_micro_batch(c, 2147483647, 1024, flag_names()); }),
                  "--batch-size: "));
  EXPECT_TRUE(starts_with(input_error([&] { validate_micro_batch(c, 1, 1025, flag_names()); }),
                          "--seq-len: "));
  EXPECT_TRUE(starts_with(input_error([&] { validate_micro_batch(c, 16384, 1024, flag_names()); }),
                          "--batch-size: ")); // 2^24 tokens, over 2^40 activations
  // Activations: a long context stores B x NH x T^2 attention per layer.
  const ModelConfig wide{1 << 20, 256, 256, 64, 64, 4096};
  ASSERT_NO_THROW(wide.validate());
  EXPECT_TRUE(
      starts_with(input_error([&] { validate_micro_batch(wide, 1, 1 << 20, key_names("job.")); }),
                  "job.batch_size: a micro-batch of 1 x 1048576 would hold"));
  EXPECT_FALSE(activation_elements(wide, std::size_t(1) << 40, std::size_t(1) << 40));
}
