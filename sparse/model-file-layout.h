#pragma once
// On-disk structures of the .lacuna file, version 1 (docs/file-format.md).
// Little-endian, read and written with memcpy. Not a public header.
#include <bit>
#include <cstddef>
#include <cstdint>

namespace lacuna::file_layout {

static_assert(std::endian::native == std::endian::little, "the .lacuna format is little-endian");

inline constexpr char kMagic[8] = {'\x89', 'L', 'A', 'C', 'U', 'N', 'A', '\n'};
inline constexpr uint32_t kVersion = 1;
inline constexpr uint64_t kPayloadAlign = 64;
// Payloads of at least this size start on a 4 KiB page boundary (the reader
// checks) and the writer pads after them to the next one, so NUMA placement
// can move their pages without touching a neighbour's.
inline constexpr uint64_t kPageAlignFrom = 64 * 1024;
inline constexpr uint64_t kPageSize = 4096;
inline constexpr uint32_t kMaxTensors = 1u << 20;
inline constexpr uint32_t kMaxNameBytes = 1024;

struct Region {
  uint64_t offset;
  uint64_t bytes;
  uint64_t checksum;  // XXH3-64 of the region's bytes
};

struct Header {
  char magic[8];
  uint32_t version;
  uint32_t header_bytes;  // sizeof(Header)
  uint64_t file_bytes;    // the whole file; a shorter file is truncated
  Region metadata;        // UTF-8 JSON, opaque to this layer
  Region tokenizer;       // opaque bytes (a SentencePiece model), may be empty
  Region table;           // TensorRecord[tensor_count] then the name pool
  uint32_t tensor_count;
  uint32_t reserved0;
  uint64_t reserved[2];
  uint64_t header_checksum;  // XXH3-64 of every byte before this field
};
static_assert(sizeof(Header) == 128);
static_assert(offsetof(Header, header_checksum) == 120);

struct TensorRecord {
  uint32_t name_offset;  // into the name pool that follows the records
  uint16_t name_bytes;
  uint8_t format;
  uint8_t dtype;
  uint8_t ndim;
  uint8_t reserved0;
  uint16_t block_rows;
  uint16_t block_cols;
  uint16_t reserved1;
  uint64_t shape[4];
  uint64_t nnz;
  Region payload;
};
static_assert(sizeof(TensorRecord) == 80);

}  // namespace lacuna::file_layout
