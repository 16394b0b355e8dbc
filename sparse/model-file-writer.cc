#include <xxhash.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <unordered_set>

#include "sparse/convert.h"
#include "sparse/error.h"
#include "sparse/model-file-layout.h"
#include "sparse/model-file.h"

namespace lacuna {

namespace fl = file_layout;

struct ModelFileWriter::Impl {
  std::string path, tmp_path;
  std::FILE* file = nullptr;
  uint64_t offset = 0;
  fl::Header header{};
  std::vector<fl::TensorRecord> records;
  std::string names;
  std::unordered_set<std::string> seen;
  bool finished = false;

  void fail(const std::string& what) {
    throw Error(tmp_path + ": " + what + (errno ? std::string(": ") + std::strerror(errno) : std::string()));
  }
  void write_at_end(const void* data, uint64_t bytes) {
    errno = 0;
    if (bytes && std::fwrite(data, 1, bytes, file) != bytes) fail("write failed");
    offset += bytes;
  }
  void pad_to(uint64_t align) {
    static const char zeros[fl::kPageSize] = {};
    const uint64_t target = (offset + align - 1) / align * align;
    write_at_end(zeros, target - offset);
  }
  fl::Region write_region(const void* data, uint64_t bytes, uint64_t align) {
    pad_to(align);
    fl::Region r{offset, bytes, XXH3_64bits(data, bytes)};
    write_at_end(data, bytes);
    return r;
  }
};

ModelFileWriter::ModelFileWriter(std::string path, std::string metadata_json, std::vector<std::byte> tokenizer)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.path = std::move(path);
  m.tmp_path = m.path + ".tmp";
  errno = 0;
  m.file = std::fopen(m.tmp_path.c_str(), "wb");
  if (!m.file) m.fail("cannot create");
  const fl::Header blank{};
  m.write_at_end(&blank, sizeof blank);
  m.header.metadata = m.write_region(metadata_json.data(), metadata_json.size(), fl::kPayloadAlign);
  m.header.tokenizer = m.write_region(tokenizer.data(), tokenizer.size(), fl::kPayloadAlign);
}

ModelFileWriter::~ModelFileWriter() {
  if (impl_->file) std::fclose(impl_->file);
  if (!impl_->finished) std::remove(impl_->tmp_path.c_str());
}

void ModelFileWriter::add(const std::string& name, const Tensor& tensor) {
  Impl& m = *impl_;
  if (m.finished) throw Error(m.path + ": add() after finish()");
  if (name.empty() || name.size() > fl::kMaxNameBytes)
    throw Error(m.path + ": tensor name must be 1.." + std::to_string(fl::kMaxNameBytes) + " bytes");
  if (m.records.size() >= fl::kMaxTensors) throw Error(m.path + ": more than " + std::to_string(fl::kMaxTensors) + " tensors");
  if (name.find('\0') != std::string::npos) throw Error(m.path + ": tensor name holds a NUL byte");
  if (tensor.empty()) throw Error(m.path + ": tensor '" + name + "' has no payload");
  const TensorDesc& d = tensor.desc();
  if (std::string why = check_desc(d); !why.empty()) throw Error(m.path + ": tensor '" + name + "': " + why);
  if (std::string why = check_payload(tensor); !why.empty()) throw Error(m.path + ": tensor '" + name + "': " + why);
  if (!m.seen.insert(name).second) throw Error(m.path + ": tensor '" + name + "' added twice");
  fl::TensorRecord r{};
  r.name_offset = static_cast<uint32_t>(m.names.size());
  r.name_bytes = static_cast<uint16_t>(name.size());
  r.format = static_cast<uint8_t>(d.format);
  r.dtype = static_cast<uint8_t>(d.dtype);
  r.ndim = static_cast<uint8_t>(d.ndim);
  r.block_rows = d.block_rows;
  r.block_cols = d.block_cols;
  for (size_t i = 0; i < kMaxDims; ++i) r.shape[i] = d.shape[i];
  r.nnz = d.nnz;
  const bool own_pages = tensor.payload_bytes() >= fl::kPageAlignFrom;
  r.payload = m.write_region(tensor.data(), tensor.payload_bytes(), own_pages ? fl::kPageSize : fl::kPayloadAlign);
  if (own_pages) m.pad_to(fl::kPageSize);  // the last page is this tensor's alone too
  m.records.push_back(r);
  m.names += name;
}

void ModelFileWriter::finish() {
  Impl& m = *impl_;
  if (m.finished) return;
  std::vector<std::byte> table(m.records.size() * sizeof(fl::TensorRecord) + m.names.size());
  if (!m.records.empty()) std::memcpy(table.data(), m.records.data(), m.records.size() * sizeof(fl::TensorRecord));
  std::memcpy(table.data() + m.records.size() * sizeof(fl::TensorRecord), m.names.data(), m.names.size());
  m.header.table = m.write_region(table.data(), table.size(), fl::kPayloadAlign);
  std::memcpy(m.header.magic, fl::kMagic, sizeof fl::kMagic);
  m.header.version = fl::kVersion;
  m.header.header_bytes = sizeof(fl::Header);
  m.header.file_bytes = m.offset;
  m.header.tensor_count = static_cast<uint32_t>(m.records.size());
  m.header.header_checksum = XXH3_64bits(&m.header, offsetof(fl::Header, header_checksum));
  errno = 0;
  if (std::fseek(m.file, 0, SEEK_SET) != 0) m.fail("seek failed");
  if (std::fwrite(&m.header, sizeof m.header, 1, m.file) != 1) m.fail("write failed");
  const int closed = std::fclose(m.file);
  m.file = nullptr;
  if (closed != 0) m.fail("close failed");
  std::error_code ec;
  std::filesystem::rename(m.tmp_path, m.path, ec);
  if (ec) throw Error(m.path + ": cannot rename from " + m.tmp_path + ": " + ec.message());
  m.finished = true;
}

}  // namespace lacuna
