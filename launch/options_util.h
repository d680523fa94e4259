// Shared command-line plumbing for the subcommands.
#pragma once

#include <boost/program_options.hpp>
#include <iostream>
#include <string>
#include <type_traits>
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

// po::value for an unsigned option. Boost reads "-1" into an unsigned type as
// a huge number; this value refuses any text with a minus sign instead
// (boost::program_options::invalid_option_value, naming the flag: exit 2).
template <class T> class UnsignedValue final : public boost::program_options::typed_value<T> {
 public:
  explicit UnsignedValue(T* p) : boost::program_options::typed_value<T>(p) {}
  void xparse(boost::any& store, const std::vector<std::string>& tokens) const override {
    for (const std::string& t : tokens)
      if (t.find('-') != std::string::npos) throw boost::program_options::invalid_option_value(t);
    boost::program_options::typed_value<T>::xparse(store, tokens);
  }
};
// Like po::value(p), whose result the options_description owns.
template <class T> boost::program_options::typed_value<T>* unsigned_value(T* p) {
  static_assert(std::is_unsigned_v<T>);
  return new UnsignedValue<T>(p);
}

} // namespace myelin::launch
