// Shared pieces of the fuzz harnesses (tests/fuzz/fuzz_*.cpp).
//
// Contract: expect_input_error() runs one parse and swallows only the
// project's bad-input error (myelin::InputError); any other exception escapes,
// reaches std::terminate and aborts, which libFuzzer and the corpus replay
// (replay_main.cpp) both report as a crash. check() aborts with a message when
// a harness's own invariant fails. ScratchFile gives each process one file
// under the system's temporary folder, overwritten per input and removed at
// exit, for parsers that only read from a path. same_bits() compares two
// vectors bit for bit; take_line() splits a harness's input into lines.
#pragma once

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "runtime/util/error.h"

namespace myelin::fuzz {

// Runs f(); returns false when it threw InputError (expected for bad input).
template <class F> bool expect_input_error(F&& f) {
  try {
    f();
    return true;
  } catch (const InputError&) {
    return false;
  }
}

inline void check(bool ok, const char* what) {
  if (ok) return;
  std::fprintf(stderr, "fuzz invariant failed: %s\n", what);
  std::abort();
}

// Same size and bit-identical elements (memcmp, which must not see the null
// data() of an empty vector).
template <class T> bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() &&
         (a.empty() || std::memcmp(a.data(), b.data(), sizeof(T) * a.size()) == 0);
}

// The text from pos up to the next newline (or the end); pos moves past it.
inline std::string take_line(const std::string& s, std::size_t& pos) {
  const std::size_t e = s.find('\n', pos);
  std::string out = s.substr(pos, e == std::string::npos ? std::string::npos : e - pos);
  pos = e == std::string::npos ? s.size() : e + 1;
  return out;
}

inline std::string as_string(const std::uint8_t* data, std::size_t size) {
  return std::string(reinterpret_cast<const char*>(data), size);
}

// A per-process folder under the temporary directory, removed at exit.
class ScratchDir {
 public:
  explicit ScratchDir(const std::string& tag)
      : path_((std::filesystem::temp_directory_path() /
               ("myelin_" + tag + "_" + std::to_string(getpid())))
                  .string()) {
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// One file in a ScratchDir, rewritten with each input.
class ScratchFile {
 public:
  ScratchFile(const std::string& tag, const std::string& name)
      : dir_(tag), path_(dir_.path() + "/" + name) {}
  const std::string& write(const void* data, std::size_t size) const {
    std::ofstream out(path_, std::ios::binary | std::ios::trunc);
    out.write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
    out.close();
    check(static_cast<bool>(out), "cannot write the scratch file");
    return path_;
  }
  const std::string& path() const { return path_; }

 private:
  ScratchDir dir_;
  std::string path_;
};

} // namespace myelin::fuzz
