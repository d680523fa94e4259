// Shared by the file-format tests: a fresh per-process temporary folder, and
// a check that a call throws InputError with a one-line message containing a
// given text.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <string>

#include "runtime/util/error.h"

namespace myelin::test_util {

// <tmp>/myelin_test_<name>_<pid>, emptied.
inline std::string tmpdir(const std::string& name) {
  auto p = std::filesystem::temp_directory_path() /
           ("myelin_test_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(p);
  std::filesystem::create_directories(p);
  return p.string();
}

inline void expect_input_error(const std::function<void()>& f, const std::string& needle) {
  try {
    f();
    FAIL() << "expected InputError containing '" << needle << "'";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << e.what();
  }
}

} // namespace myelin::test_util
