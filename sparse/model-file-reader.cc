#include <sys/mman.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "sparse/convert.h"
#include "sparse/error.h"
#include "sparse/mapped-file.h"
#include "sparse/model-file-layout.h"
#include "sparse/model-file.h"

namespace lacuna {
namespace fl = file_layout;
namespace {

std::string hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%016llx", static_cast<unsigned long long>(v));
  return buf;
}

struct Span {
  uint64_t begin, end;
  std::string what;
};

}  // namespace

ModelFile ModelFile::open(const std::string& path, const OpenOptions& options) {
  const MappedFile mapping = map_readonly(path, options.prefault, options.lock_memory);
  const size_t size = mapping.bytes.size();
  auto fail = [&](const std::string& what) -> Error { return Error(path + ": " + what); };
  if (size < sizeof(fl::Header))
    throw fail("file is " + std::to_string(size) + " bytes, shorter than the " + std::to_string(sizeof(fl::Header)) +
               "-byte header: truncated or not a .lacuna file");
  const std::byte* base = mapping.bytes.data();
  fl::Header h;
  std::memcpy(&h, base, sizeof h);
  if (std::memcmp(h.magic, fl::kMagic, sizeof h.magic) != 0) throw fail("not a .lacuna file (wrong magic bytes)");
  if (h.version > fl::kVersion)
    throw fail("format version " + std::to_string(h.version) + " is newer than this build reads (" + std::to_string(fl::kVersion) +
               "); upgrade Lacuna");
  if (h.version == 0) throw fail("format version 0 is not valid");
  const uint64_t header_sum = XXH3_64bits(base, offsetof(fl::Header, header_checksum));
  if (header_sum != h.header_checksum)
    throw fail("header checksum mismatch (stored " + hex(h.header_checksum) + ", computed " + hex(header_sum) + "): the header is corrupted");
  if (h.header_bytes != sizeof(fl::Header)) throw fail("header size " + std::to_string(h.header_bytes) + " is not 128");
  if (h.file_bytes > size)
    throw fail("file is truncated: the header says " + std::to_string(h.file_bytes) + " bytes, the file has " + std::to_string(size));
  if (h.file_bytes < size)
    throw fail("file has " + std::to_string(size - h.file_bytes) + " unexpected bytes after its end (" + std::to_string(h.file_bytes) + ")");

  std::vector<Span> spans{{0, sizeof(fl::Header), "the header"}};
  auto check_region = [&](const fl::Region& r, const std::string& what, uint64_t align, bool is_payload) {
    if (r.offset > size || r.bytes > size - r.offset)
      throw fail(what + " at offset " + std::to_string(r.offset) + " with " + std::to_string(r.bytes) + " bytes lies past the end of the file (" +
                 std::to_string(size) + " bytes)");
    if (r.offset % align != 0) throw fail(what + " at offset " + std::to_string(r.offset) + " is not " + std::to_string(align) + "-byte aligned");
    if (options.verify_checksums || !is_payload) {
      const uint64_t sum = XXH3_64bits(base + r.offset, r.bytes);
      if (sum != r.checksum)
        throw fail(what + ": checksum mismatch (stored " + hex(r.checksum) + ", computed " + hex(sum) + "): the data is corrupted");
    }
    if (r.bytes) spans.push_back({r.offset, r.offset + r.bytes, what});
  };
  check_region(h.metadata, "metadata", fl::kPayloadAlign, false);
  check_region(h.tokenizer, "tokenizer", fl::kPayloadAlign, false);
  check_region(h.table, "tensor table", fl::kPayloadAlign, false);
  if (h.tensor_count > fl::kMaxTensors) throw fail("tensor count " + std::to_string(h.tensor_count) + " is over the limit");
  const uint64_t records_bytes = uint64_t{h.tensor_count} * sizeof(fl::TensorRecord);
  if (records_bytes > h.table.bytes)
    throw fail("tensor table of " + std::to_string(h.table.bytes) + " bytes cannot hold " + std::to_string(h.tensor_count) + " records");
  const auto* pool = reinterpret_cast<const char*>(base + h.table.offset + records_bytes);
  const uint64_t pool_bytes = h.table.bytes - records_bytes;

  ModelFile mf;
  mf.path_ = path;
  mf.version_ = h.version;
  mf.file_bytes_ = h.file_bytes;
  mf.metadata_ = std::string_view(reinterpret_cast<const char*>(base + h.metadata.offset), h.metadata.bytes);
  mf.tokenizer_ = std::span<const std::byte>(base + h.tokenizer.offset, h.tokenizer.bytes);
  mf.tensors_.reserve(h.tensor_count);
  for (uint32_t i = 0; i < h.tensor_count; ++i) {
    fl::TensorRecord r;
    std::memcpy(&r, base + h.table.offset + i * sizeof(fl::TensorRecord), sizeof r);
    const std::string index = "tensor #" + std::to_string(i);
    if (r.name_bytes == 0 || r.name_bytes > fl::kMaxNameBytes || r.name_offset > pool_bytes || r.name_bytes > pool_bytes - r.name_offset)
      throw fail(index + ": name lies outside the name pool");
    std::string name(pool + r.name_offset, r.name_bytes);
    const std::string what = "tensor '" + name + "' (#" + std::to_string(i) + ")";
    if (name.find('\0') != std::string::npos) throw fail(what + ": name holds a NUL byte");
    if (!format_is_valid(r.format)) throw fail(what + ": unknown format code " + std::to_string(r.format));
    if (!dtype_is_valid(r.dtype)) throw fail(what + ": unknown dtype code " + std::to_string(r.dtype));
    TensorDesc d;
    d.format = static_cast<Format>(r.format);
    d.dtype = static_cast<DType>(r.dtype);
    d.ndim = r.ndim;
    for (size_t k = 0; k < kMaxDims; ++k) d.shape[k] = r.shape[k];
    d.nnz = r.nnz;
    d.block_rows = r.block_rows;
    d.block_cols = r.block_cols;
    if (std::string why = check_desc(d); !why.empty()) throw fail(what + ": " + why);
    const uint64_t expected = payload_layout(d).total_bytes;
    if (r.payload.bytes != expected)
      throw fail(what + ": payload is " + std::to_string(r.payload.bytes) + " bytes, its description (" + format_name(d.format) + " " +
                 dtype_name(d.dtype) + " " + d.shape_string() + ") needs " + std::to_string(expected));
    check_region(r.payload, what, r.payload.bytes >= fl::kPageAlignFrom ? fl::kPageSize : fl::kPayloadAlign, true);
    if (!mf.by_name_.emplace(name, i).second) throw fail(what + ": name is used twice");
    mf.tensors_.push_back(TensorEntry{name, Tensor::wrap(d, base + r.payload.offset, mapping.owner), r.payload.offset, r.payload.checksum});
  }
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) { return a.begin < b.begin; });
  for (size_t i = 1; i < spans.size(); ++i)
    if (spans[i].begin < spans[i - 1].end) throw fail(spans[i].what + " overlaps " + spans[i - 1].what);
  // Index arrays are read only once every payload is known to be its own, in range and intact.
  for (size_t i = 0; i < mf.tensors_.size(); ++i)
    if (std::string why = check_payload(mf.tensors_[i].tensor); !why.empty())
      throw fail("tensor '" + mf.tensors_[i].name + "' (#" + std::to_string(i) + "): " + why);
  mf.mapping_ = mapping.owner;
  mf.descriptor_ = mapping.descriptor;
  return mf;
}

bool ModelFile::holds(const Tensor& t) const {
  const auto begin = reinterpret_cast<uintptr_t>(t.data()), end = begin + t.payload_bytes();
  const auto base = reinterpret_cast<uintptr_t>(mapping_.get());
  return mapping_ && begin >= base && end <= base + file_bytes_;
}

void ModelFile::drop_pages(const Tensor& t) const {
  const auto page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const auto begin = reinterpret_cast<uintptr_t>(t.data()), end = begin + t.payload_bytes();
  const uintptr_t first = (begin + page - 1) / page * page, last = end / page * page;
  const auto* base = static_cast<const std::byte*>(mapping_.get());
  if (!base || begin < reinterpret_cast<uintptr_t>(base) || end > reinterpret_cast<uintptr_t>(base) + file_bytes_)
    throw Error(path_ + ": drop_pages was given a tensor of another file");
  if (last <= first) return;
  // Locked pages (OpenOptions::lock_memory) cannot be dropped until unlocked.
  munlock(reinterpret_cast<void*>(first), last - first);
  madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
}

void ModelFile::read(const std::byte* at, size_t bytes, void* out) const {
  const auto* base = static_cast<const std::byte*>(mapping_.get());
  if (!base || at < base || bytes > file_bytes_ || static_cast<uint64_t>(at - base) > file_bytes_ - bytes)
    throw Error(path_ + ": read was given a range outside the file");
  auto* dst = static_cast<std::byte*>(out);
  for (size_t done = 0; done < bytes;) {
    const ssize_t got = pread(descriptor_, dst + done, bytes - done, static_cast<off_t>(at - base + done));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0)
      throw IoError(path_ + ": cannot read " + std::to_string(bytes) + " bytes at offset " + std::to_string(at - base) + ": " +
                    (got < 0 ? std::strerror(errno) : "the file is shorter than when it was opened"));
    done += static_cast<size_t>(got);
  }
}

const TensorEntry* ModelFile::find(std::string_view name) const {
  auto it = by_name_.find(std::string(name));
  return it == by_name_.end() ? nullptr : &tensors_[it->second];
}

}  // namespace lacuna
