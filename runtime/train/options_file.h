// A TrainOptions written as a `myelin train --options-file FILE` text: one
// "flag = value" line (Boost's config-file syntax) for each option a pool
// round sets, under the flags' own names, so the child that reads it goes
// through the same parsing and TrainOptions::validate as the command line.
// The pool's multi-rank contributor builds its options with the same
// function as in-process training (pool/inner_train.h) and hands its mpirun
// child this one file instead of a list of flags. Floats are written with 9
// significant digits, which reads back to the same float. A text value that
// holds '#' or a line break (which the syntax cannot carry) is refused with
// InputError naming the option.
#pragma once

#include <string>

#include "runtime/train/options.h"

namespace myelin {

std::string train_options_file_text(const TrainOptions& o);

} // namespace myelin
