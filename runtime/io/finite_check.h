// Refusal of non-finite numbers read from a file. NaN or Inf in loaded weights
// or optimizer moments would otherwise surface steps later as a NaN loss blamed
// on the learning rate; instead the load fails as bad input naming the file,
// the tensor (llm.c order, with its layer) and the element.
#pragma once

#include <cstddef>
#include <span>
#include <string>

#include "runtime/model/config.h"

namespace myelin {

// `values` are elements first .. first + size() of the flat parameter buffer
// of `cfg`; `what` says what they are ("weight", "first moment"). Throws
// InputError("<path>: non-finite <what> nan in tensor fcw of layer 2 (element
// 17)") for the first value that is not finite, or negative when
// `non_negative` is set.
void require_finite(const std::string& path, const char* what, const ModelConfig& cfg,
                    std::span<const float> values, std::size_t first = 0,
                    bool non_negative = false);

} // namespace myelin
