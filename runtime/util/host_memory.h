// The machine's physical memory, and a check that a run's estimated host
// memory fits in it, so a model or batch too large for this machine is refused
// as bad input (exit 2 naming what to change) instead of ending in
// std::bad_alloc or the kernel's out-of-memory killer half-way through.
#pragma once

#include <cstddef>
#include <string>

namespace myelin {

// Physical memory in bytes (0 when unknown).
std::size_t host_memory_bytes();

// Throws InputError("field: what needs N GiB of host memory, this machine has M GiB")
// when bytes exceed the physical memory (never when that is unknown).
void require_host_memory(std::size_t bytes, const std::string& field, const std::string& what);

} // namespace myelin
