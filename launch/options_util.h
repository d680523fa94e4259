// Shared command-line plumbing for the subcommands.
#pragma once

#include <boost/program_options.hpp>
#include <iostream>
#include <string>
#include <vector>

#include "runtime/util/threads.h"

namespace myelin::launch {

// Parses args into vm and notifies. Returns false (after printing help to
// stdout) when --help was given. Unknown options and bad values throw
// boost::program_options::error, which main turns into exit code 2.
inline bool
parse_or_help(const std::vector<std::string>& args,
              const boost::program_options::options_description& desc,
              boost::program_options::variables_map& vm, const std::string& usage,
              const boost::program_options::positional_options_description* pos = nullptr) {
  namespace po = boost::program_options;
  auto parser = po::command_line_parser(args).options(desc);
  if (pos) parser.positional(*pos);
  po::store(parser.run(), vm);
  if (vm.count("help")) {
    std::cout << "usage: " << usage << "\n\n" << desc << "\n";
    return false;
  }
  po::notify(vm);
  return true;
}

} // namespace myelin::launch
