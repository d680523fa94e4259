// The built-in byte-level tokenizer: token = byte value (vocabulary 256).
// Models trained on its shards have vocab_size 256; decoding works only for
// such models.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace myelin {

struct ByteTokenizer {
  static constexpr int kVocab = 256;
  static std::vector<std::uint16_t> encode(const std::string& text) {
    std::vector<std::uint16_t> t(text.size());
    for (std::size_t i = 0; i < text.size(); ++i) t[i] = static_cast<unsigned char>(text[i]);
    return t;
  }
  // Non-printable bytes other than newline and tab are shown as '?'.
  static std::string decode(const std::vector<int>& tokens) {
    std::string s;
    for (int t : tokens) {
      const char c = static_cast<char>(t);
      s += (t == '\n' || t == '\t' || (t >= 32 && t < 127)) ? c : '?';
    }
    return s;
  }
};

} // namespace myelin
