// Strict readers of the fields of a JSON object (a pool job, a Hugging Face
// config.json): a field present must have exactly the JSON type asked for (no
// bool -> int, no float -> int, no string -> number) and lie in range; a field
// absent leaves the output as it was. Errors are InputError naming the field
// as `prefix` + key.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/util/error.h"

namespace myelin {

struct JsonFields {
  const nlohmann::json& j;
  std::string prefix;

  std::string name(const char* key) const { return prefix + key; }
  const nlohmann::json* find(const char* key) const {
    const auto it = j.find(key);
    return it == j.end() ? nullptr : &*it;
  }
  [[noreturn]] void wrong(const char* key, const nlohmann::json& v, const char* expected) const {
    std::string text = v.dump();
    if (text.size() > 40) text = text.substr(0, 40) + "...";
    throw InputError(name(key) + ": expected " + expected + ", got " + text);
  }
  template <class I> void integer(const char* key, I& out, long long lo, long long hi) const {
    const nlohmann::json* v = find(key);
    if (!v) return;
    const std::string range = std::to_string(lo) + ".." + std::to_string(hi);
    if (!v->is_number_integer()) wrong(key, *v, ("an integer in " + range).c_str());
    // A non-negative JSON integer is stored unsigned: check both bounds there
    // too (lo may be above 0: 0 is no valid step or round count).
    const bool fits = v->is_number_unsigned()
                          ? v->get<std::uint64_t>() <= std::uint64_t(hi) &&
                                (lo <= 0 || v->get<std::uint64_t>() >= std::uint64_t(lo))
                          : v->get<std::int64_t>() >= lo && v->get<std::int64_t>() <= hi;
    if (!fits) wrong(key, *v, ("an integer in " + range).c_str());
    out = static_cast<I>(v->get<std::int64_t>());
  }
  void seed(const char* key, std::uint64_t& out) const {
    const nlohmann::json* v = find(key);
    if (!v) return;
    if (!v->is_number_unsigned()) wrong(key, *v, "a non-negative integer");
    out = v->get<std::uint64_t>();
  }
  // A finite number in [lo, hi] (lo excluded when open_lo, hi excluded when open_hi).
  template <class F>
  void number(const char* key, F& out, double lo, double hi, bool open_lo = false,
              bool open_hi = false) const {
    const nlohmann::json* v = find(key);
    if (!v) return;
    const std::string range = std::string(open_lo ? "(" : "[") + nlohmann::json(lo).dump() + ", " +
                              nlohmann::json(hi).dump() + (open_hi ? ")" : "]");
    if (!v->is_number()) wrong(key, *v, ("a number in " + range).c_str());
    const double x = v->get<double>();
    const bool ok =
        std::isfinite(x) && (open_lo ? x > lo : x >= lo) && (open_hi ? x < hi : x <= hi);
    if (!ok) wrong(key, *v, ("a number in " + range).c_str());
    out = static_cast<F>(x);
  }
  void boolean(const char* key, bool& out) const {
    const nlohmann::json* v = find(key);
    if (!v) return;
    if (!v->is_boolean()) wrong(key, *v, "true or false");
    out = v->get<bool>();
  }
  void text(const char* key, std::string& out) const {
    const nlohmann::json* v = find(key);
    if (!v) return;
    if (!v->is_string()) wrong(key, *v, "a string");
    out = v->get<std::string>();
  }
  void texts(const char* key, std::vector<std::string>& out) const {
    const nlohmann::json* v = find(key);
    if (!v) return;
    if (!v->is_array()) wrong(key, *v, "an array of strings");
    out.clear();
    for (const nlohmann::json& e : *v) {
      if (!e.is_string()) wrong(key, e, "an array of strings");
      out.push_back(e.get<std::string>());
    }
  }
};

} // namespace myelin
