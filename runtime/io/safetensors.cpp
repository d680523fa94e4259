#include "runtime/io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>
#include <set>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "runtime/io/file_util.h"
#include "runtime/io/json_file.h"
#include "runtime/util/bf16.h"
#include "runtime/util/checked.h"
#include "runtime/util/error.h"
#include "runtime/util/f16.h"

namespace myelin {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {
struct DtypeInfo {
  const char* name;
  StDtype type;
  std::size_t size;
};
constexpr DtypeInfo kDtypes[] = {
    {"F64", StDtype::F64, 8},   {"F32", StDtype::F32, 4}, {"F16", StDtype::F16, 2},
    {"BF16", StDtype::BF16, 2}, {"I64", StDtype::I64, 8}, {"I32", StDtype::I32, 4},
    {"I16", StDtype::I16, 2},   {"I8", StDtype::I8, 1},   {"U64", StDtype::U64, 8},
    {"U32", StDtype::U32, 4},   {"U16", StDtype::U16, 2}, {"U8", StDtype::U8, 1},
    {"BOOL", StDtype::BOOL, 1}};

const DtypeInfo& info(StDtype t) {
  for (const auto& d : kDtypes)
    if (d.type == t) return d;
  throw std::logic_error("safetensors: unknown dtype enum");
}

// Closes a file descriptor when it goes out of scope.
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd); // read-only descriptor: nothing is lost if close fails
  }
};

std::string shown(const json& v) {
  std::string s = v.dump();
  return s.size() > 40 ? s.substr(0, 40) + "..." : s;
}

std::size_t unsigned_field(const json& v, const std::string& what) {
  if (!v.is_number_unsigned())
    throw InputError(what + ": expected a non-negative integer, got " + shown(v));
  const std::uint64_t x = v.get<std::uint64_t>();
  if (x > std::numeric_limits<std::size_t>::max()) throw InputError(what + ": too large");
  return static_cast<std::size_t>(x);
}

} // namespace

const char* dtype_name(StDtype t) { return info(t).name; }
std::size_t dtype_size(StDtype t) { return info(t).size; }

MappedFile::MappedFile(const std::string& path) : path_(path) {
  Fd f;
  f.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (f.fd < 0) {
    const int err = errno;
    throw InputError(path + (err == ENOENT ? ": no such file" : ": cannot open: ") +
                     (err == ENOENT ? "" : std::strerror(err)));
  }
  struct stat st {};
  if (::fstat(f.fd, &st) != 0) throw InputError(path + ": cannot stat: " + std::strerror(errno));
  if (!S_ISREG(st.st_mode)) throw InputError(path + ": not a regular file");
  size_ = static_cast<std::size_t>(st.st_size);
  if (size_ == 0) return; // nothing to map
  void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, f.fd, 0);
  if (p == MAP_FAILED) throw InputError(path + ": cannot map: " + std::strerror(errno));
  data_ = static_cast<const std::uint8_t*>(p);
}

MappedFile::~MappedFile() {
  // munmap fails only for an invalid range, which a successful mmap rules out.
  if (data_) ::munmap(const_cast<std::uint8_t*>(data_), size_);
}

SafetensorsFile::SafetensorsFile(const std::string& path) : map_(path) {
  const std::size_t size = map_.size();
  if (size < 8)
    throw InputError(path + ": truncated safetensors file (" + std::to_string(size) +
                     " bytes, shorter than the 8-byte header length)");
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | map_.data()[i];
  if (n > kMaxSafetensorsHeader)
    throw InputError(path + ": header length " + std::to_string(n) + " exceeds the limit of " +
                     std::to_string(kMaxSafetensorsHeader) + " bytes");
  if (n > size - 8)
    throw InputError(path + ": header length " + std::to_string(n) +
                     " runs past the end of the file (" + std::to_string(size) + " bytes)");
  data_start_ = 8 + static_cast<std::size_t>(n);
  const std::size_t data_size = size - data_start_;
  const auto* text = reinterpret_cast<const char*>(map_.data() + 8);
  const json h = parse_json(path + ": header", text, text + n);
  if (!h.is_object()) throw InputError(path + ": header: expected a JSON object");
  for (const auto& [name, v] : h.items()) {
    require_printable(path, "tensor name", name);
    if (name == "__metadata__") {
      if (!v.is_object()) throw InputError(path + ": __metadata__: expected an object");
      for (const auto& [k, s] : v.items()) {
        require_printable(path + ": __metadata__", "key", k);
        if (!s.is_string())
          throw InputError(path + ": __metadata__: " + k + ": expected a string, got " + shown(s));
        metadata_[k] = s.get<std::string>();
      }
      continue;
    }
    const std::string where = path + ": tensor " + name;
    if (!v.is_object()) throw InputError(where + ": expected an object");
    for (const auto& [k, x] : v.items())
      if (k != "dtype" && k != "shape" && k != "data_offsets")
        throw InputError(where + ": unknown field " + k);
    if (!v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets"))
      throw InputError(where + ": expected dtype, shape and data_offsets");
    StTensor t;
    t.name = name;
    const json& d = v["dtype"];
    const DtypeInfo* di = nullptr;
    if (d.is_string())
      for (const auto& c : kDtypes)
        if (d.get<std::string>() == c.name) di = &c;
    if (!di) throw InputError(where + ": unknown dtype " + shown(d));
    t.dtype = di->type;
    const json& s = v["shape"];
    if (!s.is_array()) throw InputError(where + ": shape: expected an array of integers");
    std::size_t elems = 1;
    for (const json& e : s) {
      t.shape.push_back(unsigned_field(e, where + ": shape"));
      const auto p = checked_mul({elems, t.shape.back()});
      if (!p) throw InputError(where + ": shape: element count overflows");
      elems = *p;
    }
    t.elements = elems;
    const auto bytes = checked_mul({elems, di->size});
    if (!bytes) throw InputError(where + ": shape: byte count overflows");
    const json& o = v["data_offsets"];
    if (!o.is_array() || o.size() != 2)
      throw InputError(where + ": data_offsets: expected [begin, end]");
    t.begin = unsigned_field(o[0], where + ": data_offsets");
    t.end = unsigned_field(o[1], where + ": data_offsets");
    if (t.end < t.begin)
      throw InputError(where + ": data_offsets: end " + std::to_string(t.end) +
                       " is before begin " + std::to_string(t.begin));
    if (t.end > data_size)
      throw InputError(where + ": data_offsets: end " + std::to_string(t.end) +
                       " is past the end of the file (data section of " +
                       std::to_string(data_size) + " bytes)");
    if (t.end - t.begin != *bytes)
      throw InputError(where + ": " + std::to_string(t.end - t.begin) + " bytes for " +
                       std::to_string(elems) + " " + di->name + " elements (expected " +
                       std::to_string(*bytes) + ")");
    tensors_.push_back(std::move(t));
  }
  std::sort(tensors_.begin(), tensors_.end(), [](const StTensor& a, const StTensor& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  std::size_t at = 0;
  const StTensor* prev = nullptr;
  for (const StTensor& t : tensors_) {
    if (t.begin < at)
      throw InputError(path + ": tensor " + t.name + ": data_offsets overlap tensor " + prev->name);
    if (t.begin > at)
      throw InputError(path + ": tensor " + t.name + ": " + std::to_string(t.begin - at) +
                       " unused bytes before it in the data section");
    at = t.end;
    prev = &t;
  }
  if (at != data_size)
    throw InputError(path + ": " + std::to_string(data_size - at) +
                     " bytes after the last tensor in the data section");
}

std::span<const std::uint8_t> SafetensorsFile::bytes(const StTensor& t) const {
  return {map_.data() + data_start_ + t.begin, t.end - t.begin};
}

void SafetensorsFile::to_float(const StTensor& t, std::span<float> dst) const {
  if (dst.size() != t.elements) throw std::logic_error("SafetensorsFile::to_float: size");
  const std::uint8_t* src = map_.data() + data_start_ + t.begin;
  switch (t.dtype) {
  case StDtype::F32:
    if (!dst.empty()) std::memcpy(dst.data(), src, dst.size() * 4);
    return;
  case StDtype::BF16:
  case StDtype::F16: {
    const bool bf = t.dtype == StDtype::BF16;
    for (std::size_t i = 0; i < dst.size(); ++i) {
      std::uint16_t h;
      std::memcpy(&h, src + 2 * i, 2);
      dst[i] = bf ? bf16_to_float(h) : half_to_float(h);
    }
    return;
  }
  default:
    throw InputError(path() + ": tensor " + t.name + ": dtype " + dtype_name(t.dtype) +
                     " is not supported (expected F32, BF16 or F16)");
  }
}

bool is_safetensors_path(const std::string& path) {
  std::error_code ec;
  return path.ends_with(".safetensors") || path.ends_with(".index.json") ||
         fs::is_directory(path, ec);
}

namespace {
constexpr const char* kIndexName = "model.safetensors.index.json";

// weight_map of an index file: tensor name -> shard file name.
std::map<std::string, std::string> read_weight_map(const std::string& index) {
  const json j = read_json_file(index, kMaxSafetensorsHeader);
  if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
    throw InputError(index + ": weight_map: expected an object {tensor: shard file}");
  std::map<std::string, std::string> out;
  for (const auto& [name, v] : j["weight_map"].items()) {
    require_printable(index + ": weight_map", "tensor name", name);
    const std::string where = index + ": weight_map: " + name;
    if (!v.is_string()) throw InputError(where + ": expected a file name, got " + shown(v));
    const std::string file = v.get<std::string>();
    require_printable(where, "shard", file);
    if (file.empty() || file.find('/') != std::string::npos ||
        file.find('\\') != std::string::npos || file.find("..") != std::string::npos ||
        file.find('\0') != std::string::npos)
      throw InputError(where + ": shard '" + file +
                       "' must be a plain file name beside the index (no '/', no '..')");
    out[name] = file;
  }
  if (out.empty()) throw InputError(index + ": weight_map: no tensors");
  return out;
}
} // namespace

SafetensorsCheckpoint::SafetensorsCheckpoint(const std::string& path) {
  std::error_code ec;
  std::string index, single;
  if (fs::is_directory(path, ec)) {
    dir_ = path;
    if (fs::exists(fs::path(path) / kIndexName, ec))
      index = (fs::path(path) / kIndexName).string();
    else if (fs::exists(fs::path(path) / "model.safetensors", ec))
      single = (fs::path(path) / "model.safetensors").string();
    else
      throw InputError(path + ": no model.safetensors or " + kIndexName + " in this folder");
  } else {
    dir_ = fs::path(path).parent_path().string();
    if (dir_.empty()) dir_ = ".";
    (path.ends_with(".index.json") ? index : single) = path;
  }
  if (!single.empty()) {
    source_ = single;
    add_file(single, nullptr, "");
    return;
  }
  source_ = index;
  const auto map = read_weight_map(index);
  std::set<std::string> shards;
  for (const auto& [name, file] : map) shards.insert(file);
  for (const std::string& shard : shards)
    if (!fs::is_regular_file(fs::path(dir_) / shard, ec))
      throw InputError(index + ": weight_map names shard " + shard + ", which does not exist");
  for (const std::string& shard : shards) add_file((fs::path(dir_) / shard).string(), &map, shard);
  for (const auto& [name, file] : map)
    if (!tensors_.count(name))
      throw InputError(index + ": weight_map: " + name + ": not found in shard " + file);
}

void SafetensorsCheckpoint::add_file(const std::string& path,
                                     const std::map<std::string, std::string>* weight_map,
                                     const std::string& shard_name) {
  files_.push_back(std::make_unique<SafetensorsFile>(path));
  const SafetensorsFile& f = *files_.back();
  for (const StTensor& t : f.tensors()) {
    if (weight_map) {
      const auto it = weight_map->find(t.name);
      if (it == weight_map->end())
        throw InputError(path + ": tensor " + t.name + " is not in " + source_ + "'s weight_map");
      if (it->second != shard_name)
        throw InputError(path + ": tensor " + t.name + " is here but " + source_ + " names shard " +
                         it->second);
    }
    tensors_[t.name] = Entry{&f, &t};
  }
}

void write_safetensors(const std::string& path, const std::vector<StTensorOut>& tensors,
                       StDtype dtype, const std::map<std::string, std::string>& metadata) {
  if (dtype != StDtype::F32 && dtype != StDtype::BF16)
    throw std::logic_error("write_safetensors: dtype must be F32 or BF16");
  const std::size_t esize = dtype_size(dtype);
  json h = json::object();
  if (!metadata.empty()) h["__metadata__"] = metadata;
  std::vector<std::size_t> counts;
  std::size_t at = 0;
  for (const StTensorOut& t : tensors) {
    std::size_t n = 1;
    for (std::size_t d : t.shape) n *= d;
    counts.push_back(n);
    h[t.name] = {
        {"dtype", dtype_name(dtype)}, {"shape", t.shape}, {"data_offsets", {at, at + n * esize}}};
    at += n * esize;
  }
  std::string text = h.dump();
  text.append((8 - text.size() % 8) % 8, ' '); // the data section starts 8-byte aligned
  write_atomic(path, [&](const ByteSink& out) {
    std::uint8_t len[8];
    std::uint64_t n = text.size();
    for (int i = 0; i < 8; ++i) len[i] = static_cast<std::uint8_t>(n >> (8 * i));
    out(len, 8);
    out(text.data(), text.size());
    std::vector<float> buf;
    std::vector<std::uint16_t> half;
    for (std::size_t i = 0; i < tensors.size(); ++i) {
      buf.assign(counts[i], 0.0f);
      tensors[i].fill(buf);
      if (dtype == StDtype::F32) {
        out(buf.data(), buf.size() * 4);
      } else {
        half.resize(buf.size());
        for (std::size_t k = 0; k < buf.size(); ++k) half[k] = float_to_bf16(buf[k]);
        out(half.data(), half.size() * 2);
      }
    }
  });
}

} // namespace myelin
