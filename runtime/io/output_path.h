// Output paths checked before a run starts, so that a run never fails at its
// end because its model, metrics or checkpoints cannot be written. Each check
// throws InputError naming the flag and the path.
#pragma once

#include <string>

namespace myelin {

// A file the run will create or overwrite: its folder exists and is a writable
// folder, and the path itself is not a folder.
void check_output_file(const std::string& path, const std::string& flag);

// A folder the run will write into (created with its parents if missing): if
// it exists it is a writable folder (not a file); otherwise its nearest
// existing ancestor is a writable folder. With write = false (a folder only
// read from, e.g. to resume) only "exists and is not a folder" is refused.
void check_output_dir(const std::string& path, const std::string& flag, bool write = true);

} // namespace myelin
