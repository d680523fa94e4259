// libFuzzer harness for the coordinator's answer to work as a contributor
// reads it (WorkResponse in runtime/pool/protocol.h, shard hashes included).
// Inputs that are not JSON are skipped (the client refuses those before
// from_json). Checked: a malformed answer is refused only with ProtocolError
// (bad input, naming the field); an accepted one keeps its bounds (slot
// below slots, 16-hex-digit shard hashes) and survives to_json -> from_json
// unchanged.
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>

#include "runtime/pool/protocol.h"
#include "tests/fuzz/fuzz_support.h"

using myelin::fuzz::check;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const nlohmann::json j = nlohmann::json::parse(data, data + size, nullptr, false);
  if (j.is_discarded()) return 0;
  myelin::pool::WorkResponse w;
  if (!myelin::fuzz::expect_input_error([&] { w = j.get<myelin::pool::WorkResponse>(); })) return 0;
  if (w.assignment) {
    const auto& a = *w.assignment;
    check(a.slot >= 0 && a.slot < a.slots, "slot");
    for (const auto& s : a.shards) check(s.index < (1u << 30) + 1u, "shard index");
  }
  const nlohmann::json once = w;
  const nlohmann::json twice = once.get<myelin::pool::WorkResponse>();
  check(once == twice, "to_json(from_json(to_json(work))) differs");
  return 0;
}
