// The addition task's held-out split and the exact-match evaluation: held-out
// problems never appear in training text, the evaluation draws distinct ones,
// the training lines are exactly prompt + answer, greedy decoding follows the
// engine's argmax, and data-parallel parts of the evaluation add up to the
// whole.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "runtime/data/make_shards.h"
#include "runtime/data/shard.h"
#include "runtime/data/synthetic.h"
#include "runtime/data/tokenizer.h"
#include "runtime/model/generate.h"
#include "runtime/model/init.h"
#include "runtime/train/addition_eval.h"

using namespace myelin;

namespace {
std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::size_t pos = 0;
  while (pos < text.size()) {
    const auto nl = text.find('\n', pos);
    out.push_back(text.substr(pos, nl - pos));
    pos = nl + 1;
  }
  return out;
}
std::uint64_t key(const AdditionProblem& p) { return p.a * 1000 + p.b; }
// A random byte-level model (vocabulary 256) small enough for fast forwards.
std::unique_ptr<Engine> small_model(int max_T) {
  const ModelConfig c{max_T, 256, 256, 2, 2, 32};
  auto e = make_cpu_engine(c, StageSpec::whole(c), 1, max_T, 1);
  e->set_params(gpt2_init(c, 11));
  return e;
}
} // namespace

TEST(AdditionTask, PromptAndAnswerFormat) {
  EXPECT_EQ(addition_prompt({42, 517}, 3), "042+517=");
  EXPECT_EQ(addition_answer({42, 517}, 3), "9550"); // 559 reversed, padded to 4 digits
  EXPECT_EQ(addition_answer({99, 99}, 2), "891");   // 198 reversed
  EXPECT_EQ(addition_prompt({7, 0}, 1) + addition_answer({7, 0}, 1), "7+0=70");
}

TEST(AdditionTask, TrainingLinesAreProblemsOutsideTheHeldOutSet) {
  for (int digits = 1; digits <= 3; ++digits) {
    const auto lines = lines_of(synthetic_addition(5000, digits, 3));
    ASSERT_EQ(lines.size(), 5000u);
    for (const auto& line : lines) {
      const auto plus = line.find('+'), eq = line.find('=');
      ASSERT_NE(eq, std::string::npos) << line;
      const AdditionProblem p{std::stoull(line.substr(0, plus)),
                              std::stoull(line.substr(plus + 1, eq - plus - 1))};
      ASSERT_EQ(line, addition_prompt(p, digits) + addition_answer(p, digits));
      ASSERT_FALSE(addition_held_out(p, digits)) << line << " is a held-out problem";
    }
  }
}

TEST(AdditionTask, HeldOutSetIsAboutOneInTwentyAndDrawnWithoutRepeats) {
  std::set<std::uint64_t> held;
  for (std::uint64_t a = 0; a < 100; ++a)
    for (std::uint64_t b = 0; b < 100; ++b)
      if (addition_held_out({a, b}, 2)) held.insert(a * 1000 + b);
  EXPECT_GT(held.size(), 400u);
  EXPECT_LT(held.size(), 600u);
  // Asking for more than the set holds returns the whole set, once each.
  const auto all = held_out_addition(1'000'000, 2, 5);
  std::set<std::uint64_t> drawn;
  for (const auto& p : all) drawn.insert(key(p));
  EXPECT_EQ(drawn.size(), all.size());
  EXPECT_EQ(drawn, held);
  // A prefix in a seeded order: the same seed gives the same problems, another
  // seed another order.
  const auto a = held_out_addition(50, 2, 5), b = held_out_addition(50, 2, 5),
             c = held_out_addition(50, 2, 6);
  ASSERT_EQ(a.size(), 50u);
  EXPECT_TRUE(std::equal(a.begin(), a.end(), all.begin(),
                         [](auto& x, auto& y) { return key(x) == key(y); }));
  EXPECT_TRUE(
      std::equal(a.begin(), a.end(), b.begin(), [](auto& x, auto& y) { return key(x) == key(y); }));
  EXPECT_FALSE(
      std::equal(a.begin(), a.end(), c.begin(), [](auto& x, auto& y) { return key(x) == key(y); }));
  // Many digits: drawn by rejection, still distinct and held out.
  const auto big = held_out_addition(2000, 6, 1);
  std::set<std::uint64_t> seen;
  for (const auto& p : big) {
    EXPECT_TRUE(addition_held_out(p, 6));
    EXPECT_LT(p.a, 1'000'000u);
    EXPECT_LT(p.b, 1'000'000u);
    seen.insert(p.a * 1'000'000 + p.b);
  }
  EXPECT_EQ(seen.size(), 2000u);
}

TEST(AdditionTask, ShardsOfWholeLinesStartAtALine) {
  // 1003 lines of 10 tokens; a 10% validation share and 999-token shards
  // are rounded down to whole lines: 1000 validation tokens, 990-token shards.
  const std::string text = synthetic_addition(1003, 2, 4);
  const auto dir = std::filesystem::temp_directory_path() / "myelin_test_addition_shards";
  std::filesystem::remove_all(dir);
  const auto split =
      write_token_shards(ByteTokenizer::encode(text), dir.string(), "add", 0.1, 999, 10);
  ASSERT_EQ(split.val.size(), 1u);
  EXPECT_EQ(shard_token_count(split.val[0]), 1000u);
  std::size_t at = 1000;
  for (const auto& f : split.train) {
    const auto toks = read_shard(f, 256);
    EXPECT_TRUE(toks.size() == 990 || &f == &split.train.back()) << f << ": " << toks.size();
    // Every shard starts with the first digit of a line: the line before ends at `at`.
    EXPECT_EQ(text[at - 1], '\n') << f;
    EXPECT_EQ(std::string(toks.begin(), toks.begin() + 10), text.substr(at, 10)) << f;
    at += toks.size();
  }
  EXPECT_EQ(at, text.size());
  std::filesystem::remove_all(dir);
}

TEST(Generate, GreedyTakesTheArgmaxOfEachNextTokenFromTheWindow) {
  const int window = 6;
  auto e = small_model(window);
  std::vector<int> tokens = {'1', '2', '+', '3', '4', '='};
  const std::vector<int> start = tokens;
  const auto out = greedy_continue(*e, tokens, 4, window);
  ASSERT_EQ(out.size(), 4u);
  ASSERT_EQ(tokens.size(), start.size() + 4);
  std::vector<float> logits(256);
  for (std::size_t i = 0; i < out.size(); ++i) {
    // The window slides: token i is predicted from the `window` tokens before it.
    const std::size_t end = start.size() + i;
    const std::vector<int> ctx(tokens.begin() + std::ptrdiff_t(end - window),
                               tokens.begin() + std::ptrdiff_t(end));
    next_token_logits(*e, ctx, window, logits);
    const int best = int(std::max_element(logits.begin(), logits.end()) - logits.begin());
    EXPECT_EQ(out[i], best) << "token " << i;
    EXPECT_EQ(tokens[end], out[i]);
  }
}

TEST(AdditionEval, PartsAddUpToTheWholeAndAnUntrainedModelScoresNearZero) {
  auto e = small_model(16);
  const ExactMatch whole = addition_exact_match(*e, 2, 60, 16);
  EXPECT_EQ(whole.total, 60u);
  EXPECT_LE(whole.correct, 3u); // 3 random answer bytes are almost never all right
  ExactMatch sum;
  for (int part = 0; part < 3; ++part) {
    const ExactMatch r = addition_exact_match(*e, 2, 60, 16, part, 3);
    EXPECT_EQ(r.total, 20u);
    sum.correct += r.correct;
    sum.total += r.total;
  }
  EXPECT_EQ(sum.correct, whole.correct);
  EXPECT_EQ(sum.total, whole.total);
  // The problems kept with the model's answers: the first ones of the set.
  const ExactMatch shown = addition_exact_match(*e, 2, 60, 16, 0, 1, 3);
  const auto problems = held_out_addition(60, 2, kAdditionEvalSeed);
  ASSERT_EQ(shown.shown.size(), 3u);
  for (std::size_t i = 0; i < 3; ++i) {
    const std::string& line = shown.shown[i];
    const std::string prompt = addition_prompt(problems[i], 2);
    const std::string expected = addition_answer(problems[i], 2);
    EXPECT_EQ(line.substr(0, prompt.size()), prompt) << line;
    const std::string answer = line.substr(prompt.size(), 3);
    EXPECT_EQ(line.substr(prompt.size() + 3),
              answer == expected ? " right" : " wrong, expected " + expected);
  }
  EXPECT_EQ((ExactMatch{467, 500, {}}).describe(),
            "exact-match accuracy: 93.4% (467/500 held-out problems)");
}
