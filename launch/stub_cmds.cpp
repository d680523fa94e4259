// Subcommands whose implementation is not compiled into this build.
#include <iostream>

#include "launch/commands.h"

namespace myelin::launch {
int bench_main(const Args&) {
  std::cerr << "myelin bench: not built yet\n";
  return 1;
}
} // namespace myelin::launch
