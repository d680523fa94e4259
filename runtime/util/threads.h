// CPU thread count for OpenMP and OpenBLAS together.
#pragma once

namespace myelin {
void set_cpu_threads(int n);
int cpu_threads();
} // namespace myelin
