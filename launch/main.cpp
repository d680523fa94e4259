// myelin: one binary, subcommands train | data | bench | pool | contribute.
// Maps errors to exit codes, here only: bad input (a flag Boost cannot parse,
// or myelin::InputError: flags, files, job fields) 2; anything else, including
// internal misuse (std::logic_error and its kin), a runtime failure: 1.
#include <boost/program_options/errors.hpp>
#include <cstdio>
#include <exception>
#include <iostream>
#include <string>

#include "launch/commands.h"
#include "runtime/util/error.h"

namespace {
const char* kUsage =
    "usage: myelin <command> [options]\n"
    "\n"
    "commands:\n"
    "  train        train a GPT-2 model (one process, or many under mpirun)\n"
    "  data         make token shards: from a text file, or a synthetic task\n"
    "  bench        benchmark kernels (cpu or cuda) and collectives (--comm)\n"
    "  pool         run or talk to a volunteer pool (serve, token, submit, status, ledger)\n"
    "  contribute   give this machine's CPU or GPUs to a pool\n"
    "\n"
    "`myelin <command> --help` describes each command's options.\n";
}

int main(int argc, char** argv) {
  using namespace myelin::launch;
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    std::cout << kUsage;
    return argc < 2 ? 2 : 0;
  }
  const std::string cmd = argv[1];
  Args args(argv + 2, argv + argc);
  try {
    if (cmd == "train") return train_main(args);
    if (cmd == "data") return data_main(args);
    if (cmd == "bench") return bench_main(args);
    if (cmd == "pool") return pool_main(args);
    if (cmd == "contribute") return contribute_main(args);
    std::cerr << "myelin: unknown command '" << cmd
              << "' (expected train, data, bench, pool or contribute)\n";
    return 2;
  } catch (const boost::program_options::error& e) {
    std::cerr << "myelin " << cmd << ": " << e.what() << " (see myelin " << cmd << " --help)\n";
    return 2;
  } catch (const myelin::InputError& e) {
    std::cerr << "myelin " << cmd << ": " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "myelin " << cmd << ": error: " << e.what() << "\n";
    return 1;
  }
}
