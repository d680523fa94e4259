// libFuzzer harness for pool job JSON (runtime/pool/job.h). Inputs that are
// not JSON are skipped (the coordinator answers those before parse_job); the
// rest go to parse_job. Checked: an accepted job has a valid model shape and
// micro-batch (or an init checkpoint), bounds the harness can see (contributor
// range, name length, schedule); job_to_json of it parses back to a job whose
// JSON is the same (normalisation is idempotent).
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>

#include "runtime/pool/job.h"
#include "tests/fuzz/fuzz_support.h"

using myelin::fuzz::check;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const nlohmann::json j = nlohmann::json::parse(data, data + size, nullptr, false);
  if (j.is_discarded()) return 0;
  myelin::pool::JobSpec s;
  if (!myelin::fuzz::expect_input_error([&] { s = myelin::pool::parse_job(j); })) return 0;
  if (s.init_checkpoint.empty()) {
    s.shape.validate(myelin::key_names("harness: "));
    myelin::validate_micro_batch(s.shape, s.batch_size, s.seq_len, myelin::key_names("harness: "));
  }
  check(s.min_contributors >= 1 && s.min_contributors <= s.max_contributors, "contributors");
  check(!s.name.empty() && s.name.size() <= 200, "name length");
  check(s.lr_schedule == "constant" || s.lr_schedule == "cosine", "schedule");
  check(s.tokens_per_round() > 0, "tokens per round");
  const nlohmann::json once = myelin::pool::job_to_json(s);
  const nlohmann::json twice = myelin::pool::job_to_json(myelin::pool::parse_job(once));
  check(once == twice, "job_to_json(parse_job(job_to_json(job))) differs");
  return 0;
}
