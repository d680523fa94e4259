#include "runtime/io/json_file.h"

#include <algorithm>

#include "runtime/io/file_util.h"
#include "runtime/util/error.h"

namespace myelin {

nlohmann::json parse_json(const std::string& where, const char* begin, const char* end) {
  try {
    return nlohmann::json::parse(begin, end);
  } catch (const nlohmann::json::exception& e) {
    std::string msg = e.what();
    std::replace(msg.begin(), msg.end(), '\n', ' ');
    throw InputError(where + ": not valid JSON (" + msg + ")");
  }
}

nlohmann::json read_json_file(const std::string& path, std::size_t max_bytes) {
  const std::size_t size = file_size_or_throw(path);
  if (size > max_bytes)
    throw InputError(path + ": " + std::to_string(size) + " bytes exceeds the limit of " +
                     std::to_string(max_bytes));
  std::string text(size, '\0');
  read_exact(path, 0, text.data(), size);
  return parse_json(path, text.data(), text.data() + text.size());
}

void require_printable(const std::string& where, const char* what, const std::string& s) {
  for (unsigned char c : s)
    if (c < 0x20 || c == 0x7f)
      throw InputError(where + ": " + what + " " + nlohmann::json(s).dump() +
                       " holds control characters");
}

} // namespace myelin
