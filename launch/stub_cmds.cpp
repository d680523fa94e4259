// Subcommands whose implementation is not compiled into this build.
#include <iostream>

#include "launch/commands.h"

namespace myelin::launch {
int bench_main(const Args&) {
  std::cerr << "myelin bench: not built yet\n";
  return 1;
}
int pool_main(const Args&) {
  std::cerr << "myelin pool: not built yet\n";
  return 1;
}
int contribute_main(const Args&) {
  std::cerr << "myelin contribute: not built yet\n";
  return 1;
}
} // namespace myelin::launch
