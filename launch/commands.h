// The subcommands of the myelin binary. Each takes the arguments after its
// name and returns the process exit code (0 ok, 1 runtime failure, 2 bad input).
#pragma once

#include <string>
#include <vector>

namespace myelin::launch {

using Args = std::vector<std::string>;

int train_main(const Args& args);
int data_main(const Args& args);
int bench_main(const Args& args);
int pool_main(const Args& args);
int contribute_main(const Args& args);

} // namespace myelin::launch
