// JSON read from files: the safetensors header, its shard index, config.json.
// Contract: parse_json and read_json_file return the parsed value or throw
// InputError "<where>: not valid JSON (...)" on one line; read_json_file
// refuses a file above max_bytes before reading it; require_printable keeps
// names read from a file from breaking a message into lines.
#pragma once

#include <cstddef>
#include <string>

#include <nlohmann/json.hpp>

namespace myelin {

nlohmann::json parse_json(const std::string& where, const char* begin, const char* end);
nlohmann::json read_json_file(const std::string& path, std::size_t max_bytes);
// Throws InputError "<where>: <what> holds control characters" when `s` has a
// byte below 0x20 or 0x7f (names from a file go into one-line messages).
void require_printable(const std::string& where, const char* what, const std::string& s);

} // namespace myelin
