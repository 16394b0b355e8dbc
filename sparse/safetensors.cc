// Hugging Face safetensors: an 8-byte little-endian header size N, N bytes of
// JSON giving each tensor's dtype, shape and byte range [begin, end) in the data
// section that follows. The reader makes the checks Hugging Face's reference
// reader makes (header under 100 MB and starting with '{', ranges matching
// dtype x shape and tiling the data exactly), plus the duplicate keys its spec
// forbids; __metadata__ is skipped unread. The writer lays files out the way the
// reference writer does, so that library reads them.
#include "sparse/safetensors.h"


#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>
#include <tuple>

#include "sparse/dtype.h"
#include "sparse/error.h"
#include "sparse/mapped-file.h"

namespace lacuna {

// Tensor data is used where it lies in the mapping, and the format is little-endian.
static_assert(std::endian::native == std::endian::little, "safetensors data is little-endian");

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = 100'000'000;  // the reference reader's limit
constexpr const char* kSingleFile = "model.safetensors";
constexpr const char* kIndexFile = "model.safetensors.index.json";
constexpr const char* kMetadataKey = "__metadata__";

size_t st_dtype_size(StDType d) { return d == StDType::f32 ? 4 : 2; }

std::optional<StDType> parse_st_dtype(std::string_view s) {
  for (StDType d : {StDType::f32, StDType::f16, StDType::bf16})
    if (s == st_dtype_name(d)) return d;
  return std::nullopt;
}

std::string shape_string(const std::vector<uint64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

std::string range_string(uint64_t begin, uint64_t end) { return shape_string({begin, end}); }

// Element count and byte size of a shape, or nullopt when either overflows 64 bits.
std::optional<uint64_t> checked_elements(const std::vector<uint64_t>& shape) {
  uint64_t n = 1;
  for (uint64_t d : shape)
    if (__builtin_mul_overflow(n, d, &n)) return std::nullopt;
  return n;
}

std::optional<uint64_t> checked_bytes(const std::vector<uint64_t>& shape, StDType dtype) {
  const std::optional<uint64_t> n = checked_elements(shape);
  uint64_t bytes = 0;
  if (!n || __builtin_mul_overflow(*n, uint64_t{st_dtype_size(dtype)}, &bytes)) return std::nullopt;
  return bytes;
}


uint16_t load_u16(const std::byte* p) {
  uint16_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// At least the 8-byte header size, or it is no safetensors file.
MappedFile map_file(const std::string& path) {
  MappedFile file = map_readonly(path);
  if (file.bytes.size() < 8)
    throw Error(path + ": file is " + std::to_string(file.bytes.size()) +
                " bytes, shorter than the 8-byte header size: truncated or not a safetensors file");
  return file;
}

// nlohmann keeps the last of repeated keys without a word; the spec forbids them.
json parse_json(std::string_view text, const std::string& what) {
  std::vector<std::set<std::string>> open_objects;
  std::string repeated;
  auto note_keys = [&](int, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::object_start) {
      open_objects.emplace_back();
    } else if (event == json::parse_event_t::object_end) {
      open_objects.pop_back();
    } else if (event == json::parse_event_t::key && !open_objects.back().insert(parsed.get<std::string>()).second && repeated.empty()) {
      repeated = parsed.get<std::string>();
    }
    return true;
  };
  json j;
  try {
    j = json::parse(text, note_keys);
  } catch (const json::exception& e) {  // parse_error, or out_of_range for a number beyond double's range
    throw Error(what + " is not valid JSON: " + e.what());
  }
  if (!repeated.empty()) throw Error(what + " repeats the key '" + repeated + "'");
  return j;
}

// For error messages. Containers are named by kind only: dump() recurses, and a
// hostile header can nest arrays millions deep.
std::string describe(const json& v) {
  if (v.is_array()) return "an array";
  if (v.is_object()) return "an object";
  const std::string text = v.dump();
  return text.size() <= 40 ? text : text.substr(0, 40) + "...";
}

// A tensor and where its bytes lie in the data section.
struct Placed {
  StTensor tensor;
  uint64_t begin = 0, end = 0;
};

uint64_t as_count(const json& v, const std::string& what) {
  if (!v.is_number_unsigned()) throw Error(what + " is " + describe(v) + ", not a non-negative integer");
  return v.get<uint64_t>();
}

StDType entry_dtype(const json& entry, const std::string& path, const std::string& name) {
  const json& dtype = entry.at("dtype");
  if (!dtype.is_string()) throw Error(path + ": tensor '" + name + "': dtype is " + describe(dtype) + ", not a string");
  const std::optional<StDType> d = parse_st_dtype(dtype.get<std::string>());
  if (!d) throw Error(path + ": tensor '" + name + "' has dtype " + dtype.get<std::string>() + "; Lacuna reads F32, F16, BF16");
  return *d;
}

std::vector<uint64_t> entry_shape(const json& entry, const std::string& where) {
  const json& shape = entry.at("shape");
  if (!shape.is_array()) throw Error(where + ": shape is " + describe(shape) + ", not an array");
  std::vector<uint64_t> out;
  for (size_t i = 0; i < shape.size(); ++i) out.push_back(as_count(shape[i], where + ": shape[" + std::to_string(i) + "]"));
  return out;
}

Placed parse_entry(const std::string& path, const std::string& name, const json& entry, std::span<const std::byte> data) {
  const std::string where = path + ": tensor '" + name + "'";
  if (!entry.is_object()) throw Error(where + ": entry is " + describe(entry) + ", not an object with dtype, shape and data_offsets");
  for (const char* key : {"dtype", "shape", "data_offsets"})
    if (!entry.contains(key)) throw Error(where + ": entry has no \"" + key + "\"");
  Placed p;
  p.tensor.name = name;
  p.tensor.file = path;
  p.tensor.dtype = entry_dtype(entry, path, name);
  p.tensor.shape = entry_shape(entry, where);
  const std::optional<uint64_t> bytes = checked_bytes(p.tensor.shape, p.tensor.dtype);
  const std::string described = std::string(st_dtype_name(p.tensor.dtype)) + " " + shape_string(p.tensor.shape);
  if (!bytes) throw Error(where + ": " + described + " is too large to count in 64 bits");

  const json& offsets = entry.at("data_offsets");
  if (!offsets.is_array() || offsets.size() != 2) throw Error(where + ": data_offsets is " + describe(offsets) + ", not [begin, end]");
  p.begin = as_count(offsets[0], where + ": data_offsets[0]");
  p.end = as_count(offsets[1], where + ": data_offsets[1]");
  const std::string range = "data_offsets " + range_string(p.begin, p.end);
  if (p.begin > p.end) throw Error(where + ": " + range + " begin after they end");
  if (p.end > data.size())
    throw Error(where + ": " + range + " run past the end of the " + std::to_string(data.size()) + "-byte data section: truncated");
  if (p.end - p.begin != *bytes)
    throw Error(where + ": " + range + " hold " + std::to_string(p.end - p.begin) + " bytes, but " + described + " needs " +
                std::to_string(*bytes));
  p.tensor.bytes = data.subspan(p.begin, p.end - p.begin);
  return p;
}

// The reference reader wants the tensors to tile the data section exactly: no
// overlap (one tensor's bytes would alias another's), no hole and nothing after
// the last tensor (bytes no tensor accounts for can smuggle in another file).
void check_tiling(const std::string& path, std::vector<Placed>& placed, uint64_t data_bytes) {
  std::sort(placed.begin(), placed.end(), [](const Placed& a, const Placed& b) { return std::tie(a.begin, a.end) < std::tie(b.begin, b.end); });
  uint64_t covered = 0;
  for (size_t i = 0; i < placed.size(); ++i) {
    const Placed& p = placed[i];
    if (p.begin < covered)
      throw Error(path + ": tensor '" + p.tensor.name + "' (data_offsets " + range_string(p.begin, p.end) + ") overlaps tensor '" +
                  placed[i - 1].tensor.name + "' (data_offsets " + range_string(placed[i - 1].begin, placed[i - 1].end) + ")");
    if (p.begin > covered)
      throw Error(path + ": data bytes " + range_string(covered, p.begin) + " before tensor '" + p.tensor.name +
                  "' belong to no tensor; the format allows no holes");
    covered = p.end;
  }
  if (covered != data_bytes)
    throw Error(path + ": the last " + std::to_string(data_bytes - covered) + " of the " + std::to_string(data_bytes) +
                " data bytes belong to no tensor; the format allows no trailing bytes");
}

std::vector<StTensor> read_file(const std::string& path, std::vector<std::shared_ptr<const void>>& mappings) {
  MappedFile file = map_file(path);
  const uint64_t size = file.bytes.size();
  uint64_t header_bytes;
  std::memcpy(&header_bytes, file.bytes.data(), sizeof header_bytes);
  if (header_bytes > kMaxHeaderBytes)
    throw Error(path + ": header size " + std::to_string(header_bytes) + " is over the " + std::to_string(kMaxHeaderBytes) +
                "-byte limit: corrupted or not a safetensors file");
  if (header_bytes > size - 8)
    throw Error(path + ": header size " + std::to_string(header_bytes) + " runs past the end of the " + std::to_string(size) +
                "-byte file: truncated or not a safetensors file");
  const std::string_view text(reinterpret_cast<const char*>(file.bytes.data() + 8), header_bytes);
  if (text.empty() || text.front() != '{') throw Error(path + ": header does not start with '{': not a safetensors file");
  const json header = parse_json(text, path + ": header");
  const std::span<const std::byte> data = file.bytes.subspan(8 + header_bytes);

  std::vector<Placed> placed;
  for (const auto& [name, entry] : header.items())
    if (name != kMetadataKey) placed.push_back(parse_entry(path, name, entry, data));
  check_tiling(path, placed, data.size());
  mappings.push_back(std::move(file.owner));
  std::vector<StTensor> tensors;
  for (Placed& p : placed) tensors.push_back(std::move(p.tensor));
  return tensors;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path + ": cannot open: " + std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw Error(path + ": cannot read");
  return text.str();
}

// weight_map: tensor name -> shard file name, which must lie beside the index.
std::map<std::string, std::string> read_weight_map(const std::string& index_path) {
  const json index = parse_json(read_text(index_path), index_path);
  if (!index.is_object() || !index.contains("weight_map") || !index.at("weight_map").is_object())
    throw Error(index_path + ": has no \"weight_map\" object");
  std::map<std::string, std::string> weight_map;
  for (const auto& [name, shard] : index.at("weight_map").items()) {
    if (!shard.is_string()) throw Error(index_path + ": weight_map gives tensor '" + name + "' the shard " + describe(shard) + ", not a file name");
    const std::string file = shard.get<std::string>();
    if (file.empty() || file == "." || file == ".." || file.find('/') != std::string::npos)
      throw Error(index_path + ": weight_map puts tensor '" + name + "' in '" + file + "', which is not a file name in the index's directory");
    weight_map.emplace(name, file);
  }
  return weight_map;
}

bool by_name(const StTensor& a, const StTensor& b) { return a.name < b.name; }

void check_unique(std::vector<StTensor>& tensors) {
  std::sort(tensors.begin(), tensors.end(), by_name);
  for (size_t i = 1; i < tensors.size(); ++i)
    if (tensors[i].name == tensors[i - 1].name)
      throw Error("tensor '" + tensors[i].name + "' is in both " + tensors[i - 1].file + " and " + tensors[i].file);
}

// Every tensor the index lists must be in the shard it names, and every tensor of
// every shard must be listed, so the index and the shards tell the same story.
void check_against_index(const std::string& index_path, const std::map<std::string, std::string>& weight_map,
                         const std::vector<StTensor>& sorted) {
  for (const auto& [name, shard] : weight_map) {
    const auto it = std::lower_bound(sorted.begin(), sorted.end(), name, [](const StTensor& t, const std::string& n) { return t.name < n; });
    if (it == sorted.end() || it->name != name)
      throw Error(index_path + ": weight_map puts tensor '" + name + "' in " + shard + ", which does not hold it");
  }
  for (const StTensor& t : sorted) {
    const auto it = weight_map.find(t.name);
    if (it == weight_map.end()) throw Error(t.file + ": tensor '" + t.name + "' is not listed in " + index_path);
    if (it->second != fs::path(t.file).filename().string())
      throw Error(index_path + ": weight_map puts tensor '" + t.name + "' in " + it->second + ", but it is in " + t.file);
  }
}

std::vector<StTensor> read_sharded(const fs::path& dir, const std::string& index_path, std::vector<std::shared_ptr<const void>>& mappings) {
  const std::map<std::string, std::string> weight_map = read_weight_map(index_path);
  std::map<std::string, std::string> first_tensor_of;  // shard -> a tensor mapped to it, to name in errors
  for (const auto& [name, shard] : weight_map) first_tensor_of.emplace(shard, name);
  std::vector<StTensor> tensors;
  for (const auto& [shard, tensor] : first_tensor_of) {
    const std::string shard_path = (dir / shard).string();
    std::error_code ec;
    if (!fs::exists(shard_path, ec))
      throw Error(index_path + ": weight_map puts tensor '" + tensor + "' in " + shard + ", which does not exist in " + dir.string());
    for (StTensor& t : read_file(shard_path, mappings)) tensors.push_back(std::move(t));
  }
  check_unique(tensors);
  check_against_index(index_path, weight_map, tensors);
  return tensors;
}

}  // namespace

const char* st_dtype_name(StDType d) {
  static constexpr const char* kNames[] = {"F32", "F16", "BF16"};
  return kNames[static_cast<size_t>(d)];
}

uint64_t StTensor::elements() const {
  uint64_t n = 1;
  for (uint64_t d : shape) n *= d;
  return n;
}

SafetensorsCheckpoint SafetensorsCheckpoint::open(const std::string& path) {
  SafetensorsCheckpoint c;
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    // One file wins over an index when both are there, as in transformers.
    const fs::path dir(path);
    if (fs::exists(dir / kSingleFile, ec)) {
      c.tensors_ = read_file((dir / kSingleFile).string(), c.mappings_);
    } else if (fs::exists(dir / kIndexFile, ec)) {
      c.tensors_ = read_sharded(dir, (dir / kIndexFile).string(), c.mappings_);
    } else {
      throw Error(path + ": directory holds neither " + kSingleFile + " nor " + kIndexFile);
    }
  } else {
    c.tensors_ = read_file(path, c.mappings_);
  }
  std::sort(c.tensors_.begin(), c.tensors_.end(), by_name);
  return c;
}

const StTensor* SafetensorsCheckpoint::find(std::string_view name) const {
  const auto it = std::lower_bound(tensors_.begin(), tensors_.end(), name, [](const StTensor& t, std::string_view n) { return t.name < n; });
  return it != tensors_.end() && it->name == name ? &*it : nullptr;
}

void SafetensorsCheckpoint::to_f32(const StTensor& t, float* out) {
  const uint64_t n = t.elements();
  const size_t size = st_dtype_size(t.dtype);
  if (t.bytes.size() / size != n || t.bytes.size() % size != 0)
    throw Error(t.file + ": tensor '" + t.name + "' has " + std::to_string(t.bytes.size()) + " bytes, " + st_dtype_name(t.dtype) + " " +
                shape_string(t.shape) + " needs " + std::to_string(n * size));
  const std::byte* src = t.bytes.data();
  switch (t.dtype) {
    case StDType::f32:
      if (n) std::memcpy(out, src, n * sizeof(float));
      return;
    case StDType::bf16:
      for (uint64_t i = 0; i < n; ++i) out[i] = bf16_to_f32(load_u16(src + 2 * i));
      return;
    case StDType::f16:
      for (uint64_t i = 0; i < n; ++i) out[i] = f16_to_f32(load_u16(src + 2 * i));
      return;
  }
}

std::vector<float> SafetensorsCheckpoint::to_f32(const StTensor& t) const {
  std::vector<float> out(t.elements());
  to_f32(t, out.data());
  return out;
}

namespace {

std::vector<std::byte> encode(StDType dtype, std::span<const float> values) {
  std::vector<std::byte> out(values.size() * st_dtype_size(dtype));
  if (dtype == StDType::f32) {
    if (!values.empty()) std::memcpy(out.data(), values.data(), out.size());
    return out;
  }
  for (size_t i = 0; i < values.size(); ++i) {
    const uint16_t h = dtype == StDType::bf16 ? f32_to_bf16(values[i]) : f32_to_f16(values[i]);
    std::memcpy(out.data() + 2 * i, &h, sizeof h);
  }
  return out;
}

// path.tmp, renamed to path by commit() and removed if anything fails before,
// so a reader never sees a half-written checkpoint under the real name.
class TempFile {
 public:
  explicit TempFile(const std::string& path) : path_(path), tmp_(path + ".tmp"), file_(std::fopen(tmp_.c_str(), "wb")) {
    if (!file_) fail("cannot create " + tmp_);
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  ~TempFile() {
    if (file_) std::fclose(file_);
    if (!committed_) std::remove(tmp_.c_str());
  }

  void put(const void* data, size_t bytes) {
    errno = 0;
    if (bytes && std::fwrite(data, 1, bytes, file_) != bytes) fail("cannot write " + tmp_);
  }

  void commit() {
    errno = 0;
    const int closed = std::fclose(file_);
    file_ = nullptr;
    if (closed != 0) fail("cannot write " + tmp_);
    std::error_code ec;
    fs::rename(tmp_, path_, ec);
    if (ec) throw Error(path_ + ": cannot rename " + tmp_ + " to it: " + ec.message());
    committed_ = true;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw Error(path_ + ": " + what + (errno ? std::string(": ") + std::strerror(errno) : std::string()));
  }

  std::string path_, tmp_;
  std::FILE* file_;
  bool committed_ = false;
};

}  // namespace

void SafetensorsWriter::add(const std::string& name, StDType dtype, std::vector<uint64_t> shape, std::span<const float> values) {
  const std::string what = "safetensors writer: tensor '" + name + "'";
  if (name == kMetadataKey) throw Error(what + ": the name is reserved for the file's metadata");
  for (const Entry& e : entries_)
    if (e.name == name) throw Error(what + " is added twice");
  try {
    (void)json(name).dump();
  } catch (const json::type_error&) {
    throw Error(what + ": the name is not valid UTF-8");
  }
  const std::optional<uint64_t> bytes = checked_bytes(shape, dtype);
  if (!bytes) throw Error(what + ": shape " + shape_string(shape) + " is too large to count in 64 bits");
  const uint64_t elements = *bytes / st_dtype_size(dtype);
  if (elements != values.size())
    throw Error(what + ": shape " + shape_string(shape) + " holds " + std::to_string(elements) + " values, but " +
                std::to_string(values.size()) + " were given");
  entries_.push_back(Entry{name, dtype, std::move(shape), encode(dtype, values)});
}

void SafetensorsWriter::write(const std::string& path) const {
  // F32 data goes first: with the header padded to a multiple of 8, every tensor
  // then starts at a multiple of its element size (the reference writer sorts by
  // alignment for the same reason), and the ranges still tile the data section.
  std::vector<size_t> layout(entries_.size());
  for (size_t i = 0; i < layout.size(); ++i) layout[i] = i;
  std::stable_partition(layout.begin(), layout.end(), [&](size_t i) { return entries_[i].dtype == StDType::f32; });
  std::vector<uint64_t> begin(entries_.size());
  uint64_t offset = 0;
  for (size_t i : layout) {
    begin[i] = offset;
    offset += entries_[i].data.size();
  }

  nlohmann::ordered_json header = nlohmann::ordered_json::object();  // keeps the order of add()
  for (size_t i = 0; i < entries_.size(); ++i) {
    const Entry& e = entries_[i];
    header[e.name] = {{"dtype", st_dtype_name(e.dtype)}, {"shape", e.shape}, {"data_offsets", {begin[i], begin[i] + e.data.size()}}};
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  const uint64_t header_bytes = text.size();

  TempFile out(path);
  out.put(&header_bytes, sizeof header_bytes);
  out.put(text.data(), text.size());
  for (size_t i : layout) out.put(entries_[i].data.data(), entries_[i].data.size());
  out.commit();
}

}  // namespace lacuna
