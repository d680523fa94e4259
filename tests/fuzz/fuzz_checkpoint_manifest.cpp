// libFuzzer harness for checkpoint folders and their manifests
// (runtime/io/checkpoint.h). The input's first line names the checkpoint
// folder, its second line lists (space-separated) the empty files to create in
// it, and the rest is manifest.txt. Names outside [A-Za-z0-9_.-] (or "." and
// "..", or longer than 64) are skipped. It runs latest_checkpoint on the
// parent, then read_checkpoint and verify_checkpoint_files on the folder.
// Checked: an accepted checkpoint's step is its folder's number, dp x pp =
// ranks, and it lists model.bin and exactly one state file per rank; a folder
// latest_checkpoint returns is the one created.
#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>

#include "runtime/io/checkpoint.h"
#include "tests/fuzz/fuzz_support.h"

using myelin::fuzz::check;
using myelin::fuzz::expect_input_error;
namespace fs = std::filesystem;

namespace {

bool safe_name(const std::string& s) {
  if (s.empty() || s.size() > 64 || s == "." || s == "..") return false;
  for (char c : s)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '.' && c != '-')
      return false;
  return true;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const myelin::fuzz::ScratchDir parent("fuzz_checkpoint_manifest");
  const std::string in = myelin::fuzz::as_string(data, size);
  std::size_t pos = 0;
  const std::string folder = myelin::fuzz::take_line(in, pos);
  const std::string files = myelin::fuzz::take_line(in, pos);
  if (!safe_name(folder)) return 0;
  for (const auto& e : fs::directory_iterator(parent.path())) fs::remove_all(e.path());
  const std::string dir = parent.path() + "/" + folder;
  fs::create_directory(dir);
  std::istringstream names(files);
  std::string name;
  for (int k = 0; k < 8 && names >> name;)
    if (safe_name(name) && name != "manifest.txt") {
      std::ofstream(dir + "/" + name).close();
      ++k;
    }
  {
    std::ofstream out(dir + "/manifest.txt", std::ios::binary);
    out << in.substr(pos);
  }

  std::optional<std::string> latest;
  if (expect_input_error([&] { latest = myelin::latest_checkpoint(parent.path()); }) && latest)
    check(fs::path(*latest).filename() == folder, "latest_checkpoint named another folder");

  myelin::CheckpointInfo ck;
  if (!expect_input_error([&] { ck = myelin::read_checkpoint(dir); })) return 0;
  const auto& l = ck.layout;
  std::uint64_t folder_step = 0;
  const char* digits = folder.data() + std::min<std::size_t>(5, folder.size());
  const auto [end, ec] = std::from_chars(digits, folder.data() + folder.size(), folder_step);
  check(folder.rfind("step_", 0) == 0 && ec == std::errc() &&
            end == folder.data() + folder.size() && folder_step == l.step,
        "the manifest's step is not the folder's");
  check(l.ranks >= 1 && l.dp >= 1 && l.pp >= 1 && l.dp * l.pp == l.ranks && l.zero >= 0 &&
            l.zero <= 1,
        "layout bound");
  check(ck.files.size() == std::size_t(l.ranks) + 1 && ck.files.count("model.bin") == 1 &&
            ck.files.count("state_" + std::to_string(l.ranks - 1) + ".bin") == 1,
        "file list is not model.bin plus one state file per rank");
  expect_input_error([&] { myelin::verify_checkpoint_files(ck); });
  return 0;
}
