// Collective agreement on bad input found by some ranks only (say one rank's
// own checkpoint file is damaged). Every rank passes the error it found (empty
// if none); if any rank found one, every rank throws the same InputError, the
// message of the lowest such rank, so the job fails as one with one message
// instead of the healthy ranks waiting in a later collective until it times
// out. A collective: call it at the same point on every rank.
#pragma once

#include <string>

#include "runtime/comm/communicator.h"

namespace myelin {

void agree_on_input_error(Communicator& comm, const std::string& error);

} // namespace myelin
