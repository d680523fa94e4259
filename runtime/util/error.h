// Error types shared by the runtime. InputError is bad input from the user (a
// file, a flag, a number): the command line turns it into exit code 2 and a
// one-line message. Anything else escaping to main is a runtime failure (1).
#pragma once

#include <stdexcept>
#include <string>

namespace myelin {

class InputError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Throws InputError("what: message") when cond is false.
inline void require(bool cond, const std::string& what, const std::string& message) {
  if (!cond) throw InputError(what + ": " + message);
}

} // namespace myelin
