// Learning-rate schedules: linear warmup over `warmup` steps, then constant or
// cosine decay to lr * final_frac at step `total` (llm.c's formula).
#pragma once

#include <cmath>
#include <string>

namespace myelin {

struct LrSchedule {
  std::string kind = "cosine"; // constant | cosine
  float lr = 3e-4f;
  int warmup = 0;
  int total = 1;
  float final_frac = 0.0f;

  // Learning rate for 0-based step `step`.
  float at(int step) const {
    if (step < warmup) return lr * float(step + 1) / float(warmup);
    if (kind == "constant" || total <= warmup) return lr;
    const float ratio = std::fmin(1.0f, float(step - warmup) / float(total - warmup));
    const float coeff = 0.5f * (1.0f + std::cos(3.14159265358979f * ratio));
    const float lr_min = lr * final_frac;
    return lr_min + coeff * (lr - lr_min);
  }
};

} // namespace myelin
