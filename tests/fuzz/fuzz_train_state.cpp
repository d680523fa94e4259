// libFuzzer harness for training-state files (runtime/io/train_state.h).
// Feeds the input as a whole state file to load_train_state twice: as given,
// and with its last 8 bytes replaced by the XXH64 of everything before them,
// so that mutations reach the header's bounds checks behind the checksum.
// Checked: an accepted state satisfies every bound the header promises
// (step, rank < ranks = dp x pp, zero, slice inside param_count, RNG != 0,
// m and v of one size); saving and reloading it gives back the same state.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "runtime/io/train_state.h"
#include "runtime/io/xxh64.h"
#include "tests/fuzz/fuzz_support.h"

using myelin::fuzz::check;

namespace {

bool same(const myelin::TrainState& a, const myelin::TrainState& b) {
  return a.step == b.step && a.data.epoch == b.data.epoch && a.data.shard == b.data.shard &&
         a.data.batch == b.data.batch && a.rng == b.rng && a.param_count == b.param_count &&
         a.slice_begin == b.slice_begin && a.rank == b.rank && a.ranks == b.ranks && a.dp == b.dp &&
         a.pp == b.pp && a.zero == b.zero && myelin::fuzz::same_bits(a.m, b.m) &&
         myelin::fuzz::same_bits(a.v, b.v);
}

void run(const myelin::fuzz::ScratchFile& file, const std::string& bytes) {
  const std::string& path = file.write(bytes.data(), bytes.size());
  myelin::TrainState s;
  if (!myelin::fuzz::expect_input_error([&] { s = myelin::load_train_state(path); })) return;
  check(s.step <= myelin::kMaxTrainStep, "step bound");
  check(s.ranks >= 1 && s.rank < s.ranks && std::uint64_t(s.dp) * s.pp == s.ranks,
        "rank layout bound");
  check(s.zero <= 1 && s.rng != 0, "zero or RNG bound");
  check(s.m.size() == s.v.size() && s.slice_begin <= s.param_count &&
            s.m.size() <= s.param_count - s.slice_begin,
        "moment slice bound");
  myelin::save_train_state(path, s);
  check(same(myelin::load_train_state(path), s), "state changed on a save/load round trip");
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const myelin::fuzz::ScratchFile file("fuzz_train_state", "state_0.bin");
  std::string bytes = myelin::fuzz::as_string(data, size);
  run(file, bytes);
  if (bytes.size() >= 8) {
    const std::uint64_t sum = myelin::xxh64(bytes.data(), bytes.size() - 8);
    std::memcpy(bytes.data() + bytes.size() - 8, &sum, 8);
    run(file, bytes);
  }
  return 0;
}
