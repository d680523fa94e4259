// What a contributor reports about its machine when it joins: CPU model,
// cores, memory, the training device and (for cuda) the GPUs it uses.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace myelin::pool {
nlohmann::json describe_hardware(const std::string& device, const std::string& gpus);
}
