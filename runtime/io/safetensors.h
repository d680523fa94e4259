// Hugging Face safetensors files: a little-endian u64 header length N, N bytes
// of JSON {name: {"dtype", "shape", "data_offsets": [begin, end]}, ...,
// "__metadata__": {string: string}}, then the data section.
//
// Contract of SafetensorsFile (one file, read through a read-only mmap that
// lives as long as the object): opening validates everything before any
// tensor is used, and throws InputError naming the file (and the tensor) on
// the first mismatch: N <= kMaxSafetensorsHeader and 8 + N <= the file size;
// the header is a JSON object; every tensor entry is an object with a known
// dtype (F64 F32 F16 BF16 I64 I32 I16 I8 U64 U32 U16 U8 BOOL), a shape of
// non-negative integers, and data offsets [begin, end] with begin <= end and
// end within the data section; element count x dtype size == end - begin
// (overflow-checked); the tensors cover the data section exactly, without
// overlap and without a gap. Only F32, BF16 and F16 convert to float
// (to_float refuses the others naming the tensor); the conversion is exact.
//
// SafetensorsCheckpoint opens one file, or a sharded checkpoint through its
// model.safetensors.index.json ({"weight_map": {tensor: shard file}}), given
// as the index's path or as the folder holding it (or holding one
// model.safetensors). Shard names are plain file names in the index's folder
// (no '/', no ".."); every tensor must sit in the shard the map names, and
// every tensor of a shard must be in the map.
//
// write_safetensors writes F32 or BF16 tensors (one at a time, through a fill
// callback) atomically (runtime/io/file_util.h write_atomic).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace myelin {

inline constexpr std::size_t kMaxSafetensorsHeader = std::size_t(100) << 20; // 100 MiB

enum class StDtype { F64, F32, F16, BF16, I64, I32, I16, I8, U64, U32, U16, U8, BOOL };
const char* dtype_name(StDtype t);
std::size_t dtype_size(StDtype t);

struct StTensor {
  std::string name;
  StDtype dtype = StDtype::F32;
  std::vector<std::size_t> shape;
  std::size_t begin = 0, end = 0; // within the data section
  std::size_t elements = 0;
};

// A read-only memory map of a whole file (RAII; every syscall checked).
class MappedFile {
 public:
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  const std::uint8_t* data() const { return data_; }
  std::size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  const std::uint8_t* data_ = nullptr;
  std::size_t size_ = 0;
};

class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);
  const std::string& path() const { return map_.path(); }
  const std::vector<StTensor>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // The tensor's raw bytes.
  std::span<const std::uint8_t> bytes(const StTensor& t) const;
  // Converts the tensor to float into dst (t.elements values); InputError
  // naming the file and tensor for a dtype other than F32, BF16, F16.
  void to_float(const StTensor& t, std::span<float> dst) const;

 private:
  MappedFile map_;
  std::size_t data_start_ = 0;
  std::vector<StTensor> tensors_; // sorted by begin
  std::map<std::string, std::string> metadata_;
};

class SafetensorsCheckpoint {
 public:
  // `path`: a .safetensors file, a model.safetensors.index.json, or a folder.
  explicit SafetensorsCheckpoint(const std::string& path);
  // The folder config.json is expected in.
  const std::string& dir() const { return dir_; }
  // What the path names, for messages (the file, or the index).
  const std::string& source() const { return source_; }
  struct Entry {
    const SafetensorsFile* file;
    const StTensor* tensor;
  };
  const std::map<std::string, Entry>& tensors() const { return tensors_; }
  // Converts a tensor to float (see SafetensorsFile::to_float).
  void to_float(const Entry& e, std::span<float> dst) const { e.file->to_float(*e.tensor, dst); }

 private:
  void add_file(const std::string& path, const std::map<std::string, std::string>* weight_map,
                const std::string& shard_name);
  std::string dir_, source_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, Entry> tensors_;
};

// True when `path` names a safetensors checkpoint: a .safetensors file, a
// .index.json, or a folder.
bool is_safetensors_path(const std::string& path);

struct StTensorOut {
  std::string name;
  std::vector<std::size_t> shape;
  // Fills the tensor's elements (product of shape) as float.
  std::function<void(std::span<float>)> fill;
};
// `dtype` is F32 or BF16 (round to nearest even).
void write_safetensors(const std::string& path, const std::vector<StTensorOut>& tensors,
                       StDtype dtype, const std::map<std::string, std::string>& metadata);

} // namespace myelin
