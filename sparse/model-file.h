#pragma once
// The .lacuna model file: one mmap-able file holding a model's metadata (JSON
// text, opaque here), its tokenizer (opaque bytes) and named tensors whose
// payloads are used in place. See docs/file-format.md.
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "sparse/tensor.h"

namespace lacuna {

struct TensorEntry {
  std::string name;
  Tensor tensor;           // a view of the mapped payload
  uint64_t file_offset = 0;
  uint64_t checksum = 0;
};

struct OpenOptions {
  // Hash every payload on open. Costs one pass over the file (XXH3, several
  // GB/s); turning it off skips only the payload hashes, never the structure checks.
  bool verify_checksums = true;
  // Read the whole file into memory at open, so no product later waits on a
  // page fault (a server's choice; verify_checksums touches every page too).
  bool prefault = false;
  // Lock the file's pages in RAM (mlock), so that they are never paged out;
  // implies reading them all in now. Fails when RLIMIT_MEMLOCK is too low.
  bool lock_memory = false;
};

// A validated, read-only, memory-mapped model file. Every problem is found in
// open(), which throws lacuna::Error naming the file, the tensor and the
// problem; after that every tensor is safe to hand to any kernel.
class ModelFile {
 public:
  static ModelFile open(const std::string& path, const OpenOptions& options = {});

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t file_bytes() const { return file_bytes_; }
  std::string_view metadata() const { return metadata_; }
  std::span<const std::byte> tokenizer() const { return tokenizer_; }
  const std::vector<TensorEntry>& tensors() const { return tensors_; }
  // nullptr when absent.
  const TensorEntry* find(std::string_view name) const;
  // Lets the OS drop the pages of `t`'s payload (a tensor of this file) from
  // memory, e.g. once a packed copy replaces it; touching it again re-reads
  // them from the file. Whole pages inside the payload only.
  void drop_pages(const Tensor& t) const;
  // Whether `t`'s payload lies in this file's mapping (not a copy of it).
  bool holds(const Tensor& t) const;
  // Copies `bytes` of the mapping from `at` into `out` with pread, mapping no
  // page: for a few scattered reads of a dropped tensor (embedding rows),
  // where a page fault would also map the pages around it (the kernel's
  // fault-around, 64 KB up to a whole large folio of the page cache). Throws
  // lacuna::Error when the range is not in the file, IoError when the read fails.
  void read(const std::byte* at, size_t bytes, void* out) const;

 private:
  std::string path_;
  uint32_t version_ = 0;
  uint64_t file_bytes_ = 0;
  std::shared_ptr<const void> mapping_;
  int descriptor_ = -1;  // the mapped file, open while mapping_ lives
  std::string_view metadata_;
  std::span<const std::byte> tokenizer_;
  std::vector<TensorEntry> tensors_;
  std::unordered_map<std::string, size_t> by_name_;
};

// Writes a .lacuna file tensor by tensor, so a model larger than memory can be
// converted. The file appears under `path` only when finish() succeeds (it is
// written to `path`.tmp and renamed).
class ModelFileWriter {
 public:
  ModelFileWriter(std::string path, std::string metadata_json, std::vector<std::byte> tokenizer = {});
  ~ModelFileWriter();
  ModelFileWriter(const ModelFileWriter&) = delete;
  ModelFileWriter& operator=(const ModelFileWriter&) = delete;

  // Appends one tensor; names must be unique and non-empty.
  void add(const std::string& name, const Tensor& tensor);
  void finish();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace lacuna
