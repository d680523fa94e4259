#include "runtime/util/host_memory.h"

#include <unistd.h>

#include <cstdio>

#include "runtime/util/error.h"

namespace myelin {

std::size_t host_memory_bytes() {
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  if (pages <= 0 || page <= 0) return 0;
  return std::size_t(pages) * std::size_t(page);
}

void require_host_memory(std::size_t bytes, const std::string& field, const std::string& what) {
  const std::size_t have = host_memory_bytes();
  if (have == 0 || bytes <= have) return;
  char b[160];
  std::snprintf(b, sizeof(b), " needs about %.1f GiB of host memory, this machine has %.1f GiB",
                double(bytes) / (1 << 30), double(have) / (1 << 30));
  throw InputError(field + ": " + what + b);
}

} // namespace myelin
