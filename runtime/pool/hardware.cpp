#include "runtime/pool/hardware.h"

#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <thread>

namespace myelin::pool {
namespace {
std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\r')) s.pop_back();
  std::size_t i = 0;
  while (i < s.size() && s[i] == ' ') ++i;
  return s.substr(i);
}
std::string proc_field(const char* file, const std::string& key) {
  std::ifstream f(file);
  std::string line;
  while (std::getline(f, line))
    if (line.rfind(key, 0) == 0) {
      const auto c = line.find(':');
      if (c != std::string::npos) return trim(line.substr(c + 1));
    }
  return {};
}
struct PipeCloser {
  void operator()(FILE* f) const { pclose(f); }
};
} // namespace

nlohmann::json describe_hardware(const std::string& device, const std::string& gpus) {
  nlohmann::json h;
  h["device"] = device;
  h["cpu"] = proc_field("/proc/cpuinfo", "model name");
  h["cores"] = std::thread::hardware_concurrency();
  const std::string mem = proc_field("/proc/meminfo", "MemTotal"); // "131072000 kB"
  try {
    h["memory_gb"] = double(std::stoll(mem) / 1024 / 1024);
  } catch (...) {
  }
  nlohmann::json list = nlohmann::json::array();
  if (device == "cuda") {
    // Names from nvidia-smi when it exists; otherwise the indices given.
    std::unique_ptr<FILE, PipeCloser> p(popen(
        "nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader 2>/dev/null", "r"));
    std::string out;
    if (p) {
      char buf[256];
      while (std::fgets(buf, sizeof(buf), p.get())) out += buf;
    }
    std::istringstream in(out);
    std::string line;
    while (std::getline(in, line)) {
      const std::string idx = line.substr(0, line.find(','));
      std::string want = ",", have = ",";
      want.append(gpus).append(",");
      have.append(trim(idx)).append(",");
      if (gpus.empty() || want.find(have) != std::string::npos) list.push_back(trim(line));
    }
    if (list.empty() && !gpus.empty()) list.push_back(std::string("cuda:").append(gpus));
  }
  h["gpus"] = list;
  return h;
}

} // namespace myelin::pool
