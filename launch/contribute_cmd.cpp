// myelin contribute: options -> ContributeOptions -> the pool agent.
#include <iostream>

#include "launch/commands.h"

#ifdef MYELIN_HAVE_POOL
#include <boost/program_options.hpp>

#include "launch/options_util.h"
#include "runtime/pool/contributor.h"

namespace po = boost::program_options;

namespace myelin::launch {

int contribute_main(const Args& args) {
  pool::ContributeOptions o;
  std::string token_file;
  po::options_description d("myelin contribute");
  d.add_options()("pool", po::value(&o.client.url)->required(),
                  "coordinator URL, http://HOST:PORT or https://...")(
      "token-file", po::value(&token_file),
      "file holding your token from the pool's admin (or set MYELIN_POOL_TOKEN)")(
      "token", po::value(&o.client.token), "your token (visible to other users in ps)")(
      "device", po::value(&o.device)->default_value(o.device), "cpu | cuda")(
      "gpus", po::value(&o.gpus), "cuda: GPU indices to use, e.g. 0,1,2,3 (one rank per GPU)")(
      "ranks", po::value(&o.ranks)->default_value(o.ranks),
      "ranks to train with (0 = one per --gpus entry, else 1); > 1 runs each round under mpirun")(
      "pp", po::value(&o.pp)->default_value(o.pp),
      "pipeline stages among the ranks (dp = ranks / pp)")(
      "mpirun-args", po::value(&o.mpirun_args),
      "extra mpirun arguments, e.g. '--oversubscribe --bind-to none'")(
      "name", po::value(&o.name), "name shown in the pool (default: hostname)")(
      "work-dir", po::value(&o.work_dir),
      "cache for shards and models (default ./.myelin-contribute)")(
      "threads", po::value(&o.threads)->default_value(o.threads),
      "CPU threads (0 = all cores)")("exit-when-idle", po::bool_switch(&o.exit_when_idle),
                                     "exit after working on a job once no job is left")(
      "max-rounds", po::value(&o.max_rounds)->default_value(o.max_rounds),
      "leave after this many uploads (0 = no limit)")(
      "timeout", po::value(&o.client.timeout_s)->default_value(o.client.timeout_s),
      "network timeout per request (s)")(
      "give-up-s", po::value(&o.retry_s)->default_value(o.retry_s),
      "leave after the coordinator was unreachable this long (s)")(
      "stats-out", po::value(&o.stats_out),
      "write a JSON summary (bytes sent, compute share) at exit")(
      "ca-cert", po::value(&o.client.ca_cert), "https: trust this CA certificate")(
      "insecure", po::bool_switch(&o.client.insecure), "https: do not verify the certificate")(
      "quiet", po::bool_switch(&o.quiet), "no progress lines")("help,h", "show this help");
  // Test-only fault injection, not shown in --help.
  po::options_description hidden;
  hidden.add_options()("debug-corrupt", po::value(&o.debug_corrupt),
                       "TEST ONLY: nan | scale100 | truncate | signflip | scale3 | zero | noise | "
                       "replay | lazy | otherdata | otherlr")(
      "debug-step-delay-ms", po::value(&o.debug_step_delay_ms),
      "TEST ONLY: sleep after each inner step");
  po::options_description all;
  all.add(d).add(hidden);
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(all).run(), vm);
  if (vm.count("help")) {
    std::cout
        << "usage: myelin contribute --pool URL --token-file F [--device cpu|cuda] [--gpus LIST | "
           "--ranks N] [--pp P] [--name NAME]\n\n"
        << d << "\n";
    return 0;
  }
  po::notify(vm);
  o.client.token = pool::resolve_token(o.client.token, token_file);
  return pool::run_contributor(o);
}

} // namespace myelin::launch

#else

namespace myelin::launch {
int contribute_main(const Args&) {
  std::cerr << "myelin contribute: not built (configure with -DMYELIN_POOL=ON and the pool's "
               "dependencies: cpp-httplib, nlohmann-json, SQLite3, OpenSSL)\n";
  return 1;
}
} // namespace myelin::launch

#endif
