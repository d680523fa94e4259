// myelin data: make llm.c token shards from a text file (byte-level tokenizer)
// or from a synthetic task.
#include <boost/program_options.hpp>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "launch/commands.h"
#include "launch/options_util.h"
#include "runtime/data/make_shards.h"
#include "runtime/data/synthetic.h"
#include "runtime/data/tokenizer.h"
#include "runtime/util/error.h"

namespace po = boost::program_options;

namespace myelin::launch {

int data_main(const Args& args) {
  std::string mode, input, out_dir, prefix, task = "addition";
  double val_frac = 0.1;
  std::size_t shard_tokens = 100'000'000;
  std::uint64_t examples = 20000, seed = 1;
  int digits = 3;
  po::options_description d("myelin data");
  d.add_options()("help,h", "show this help")("mode", po::value(&mode), "text | synthetic")(
      "input", po::value(&input), "text: the UTF-8/ASCII text file to tokenize (byte-level)")(
      "task", po::value(&task)->default_value(task),
      "synthetic: the task (addition)")("digits", po::value(&digits)->default_value(digits),
                                        "synthetic addition: digits per operand")(
      "examples", unsigned_value(&examples)->default_value(examples),
      "synthetic: number of examples")("seed", unsigned_value(&seed)->default_value(seed),
                                       "synthetic: seed")("out", po::value(&out_dir)->required(),
                                                          "output folder for the shards")(
      "prefix", po::value(&prefix), "shard file prefix (default: input name or task)")(
      "val-frac", po::value(&val_frac)->default_value(val_frac), "share of tokens for validation")(
      "shard-tokens", unsigned_value(&shard_tokens)->default_value(shard_tokens),
      "tokens per training shard");
  po::positional_options_description pos;
  pos.add("mode", 1);
  po::variables_map vm;
  if (!parse_or_help(args, d, vm,
                     "myelin data text --input FILE --out DIR | myelin data synthetic --task "
                     "addition --out DIR",
                     &pos))
    return 0;
  std::vector<std::uint16_t> tokens;
  if (mode == "text") {
    require(!input.empty(), "--input", "required for `myelin data text`");
    std::ifstream in(input, std::ios::binary);
    require(bool(in), "--input", "cannot open " + input);
    std::stringstream ss;
    ss << in.rdbuf();
    tokens = ByteTokenizer::encode(ss.str());
    require(tokens.size() >= 2, "--input", input + " holds fewer than 2 bytes");
    if (prefix.empty()) prefix = std::filesystem::path(input).stem().string();
  } else if (mode == "synthetic") {
    require(task == "addition", "--task", "expected addition, got '" + task + "'");
    require(examples > 0 && examples < 100'000'000, "--examples", "expected 1..1e8");
    require(digits >= 1 && digits <= 9, "--digits", "expected 1..9");
    tokens = ByteTokenizer::encode(synthetic_addition(examples, digits, seed));
    if (prefix.empty()) prefix = task;
  } else {
    throw InputError("mode: expected `text` or `synthetic`, got '" + mode + "'");
  }
  // Synthetic lines have one length ("a+b=" and digits+1 answer digits and a
  // newline): shards start at a line.
  const std::size_t record = mode == "synthetic" ? 3 * std::size_t(digits) + 4 : 1;
  const ShardSplit s = write_token_shards(tokens, out_dir, prefix, val_frac, shard_tokens, record);
  std::cout << "wrote " << tokens.size() << " tokens (vocab 256, byte-level): " << s.train.size()
            << " train shard(s), " << s.val.size() << " val shard(s) in " << out_dir << "\n";
  for (const auto& f : s.train) std::cout << "  " << f << "\n";
  for (const auto& f : s.val) std::cout << "  " << f << "\n";
  return 0;
}

} // namespace myelin::launch
