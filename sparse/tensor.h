#pragma once
// A stored weight tensor: its description (format, dtype, shape, format
// parameters) and one contiguous payload whose layout is a pure function of
// the description. The same layout is used in memory and in .lacuna files, so
// a tensor read from a mapped file is used in place.
#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "sparse/dtype.h"

namespace lacuna {

// How the nonzeros of a [rows, cols] matrix are stored; see docs/file-format.md.
enum class Format : uint8_t { dense = 0, csr = 1, bitmap = 2, bsr = 3, csr8 = 4 };
inline constexpr Format kAllFormats[] = {Format::dense, Format::csr, Format::bitmap, Format::bsr, Format::csr8};

const char* format_name(Format f);
std::optional<Format> parse_format(std::string_view name);
constexpr bool format_is_valid(uint8_t raw) { return raw <= static_cast<uint8_t>(Format::csr8); }

// The arrays a payload may hold, in payload order.
enum class Section : uint8_t { row_ptr, col_idx, masks, values, scales, block_counts, count };

inline constexpr size_t kMaxDims = 4;
inline constexpr size_t kSectionAlign = 64;
// Bitmap values are read with full 64-byte vector loads that may run past the
// last nonzero; this many bytes of zero padding follow the values section.
inline constexpr size_t kValuesTailPadding = 64;

struct TensorDesc {
  Format format = Format::dense;
  DType dtype = DType::f32;
  uint32_t ndim = 2;
  std::array<uint64_t, kMaxDims> shape{};
  // Stored value count: nonzeros for csr/csr8/bitmap, blocks for bsr, unused for dense.
  uint64_t nnz = 0;
  uint16_t block_rows = 1;  // bsr only
  uint16_t block_cols = 1;  // bsr only

  // The 2-D view every format uses: rows = shape[0], cols = the rest.
  uint64_t rows() const;
  uint64_t cols() const;
  uint64_t elements() const { return rows() * cols(); }

  static TensorDesc matrix(Format f, DType t, uint64_t rows, uint64_t cols);
  std::string shape_string() const;  // "4096x1024"
};

// Bitmap groups are one 512-bit vector of weights: 16 f32, 32 bf16 or 64 int8.
constexpr uint32_t bitmap_group_width(DType t) { return static_cast<uint32_t>(64 / dtype_size(t)); }
// Column indices are u16 while every index fits, else u32.
constexpr size_t index_size(uint64_t cols) { return cols <= 65536 ? 2 : 4; }
uint64_t block_row_count(const TensorDesc& d);  // bsr: ceil(rows / block_rows)
uint64_t group_count(const TensorDesc& d);      // bitmap: ceil(cols / group width), per row
// csr8 cuts each row into blocks of this many columns: a nonzero's column is
// a byte, its offset in its block, and each (row, block) has a u16 count.
inline constexpr uint64_t kCsr8BlockColumns = 256;
uint64_t csr8_block_count(const TensorDesc& d);  // csr8: ceil(cols / kCsr8BlockColumns), per row

struct SectionSpan {
  uint64_t offset = 0;
  uint64_t bytes = 0;
};

struct PayloadLayout {
  std::array<SectionSpan, static_cast<size_t>(Section::count)> sections{};
  uint64_t total_bytes = 0;
  const SectionSpan& operator[](Section s) const { return sections[static_cast<size_t>(s)]; }
};

// Why a description is unusable ("" when it is fine): unknown shape, block size, too many values.
std::string check_desc(const TensorDesc& d);
// Layout of a description that passed check_desc.
PayloadLayout payload_layout(const TensorDesc& d);

// A handle to a tensor. Copies share the payload (like std::shared_ptr): the
// payload of a tensor wrapped around a mapped file stays valid while any copy lives.
class Tensor {
 public:
  Tensor() = default;
  // A zero-filled payload for `desc`, 64-byte aligned.
  static Tensor allocate(const TensorDesc& desc);
  // Uses `bytes` (which must hold payload_layout(desc).total_bytes) in place;
  // `owner` keeps the memory alive.
  static Tensor wrap(const TensorDesc& desc, const std::byte* bytes, std::shared_ptr<const void> owner);

  const TensorDesc& desc() const { return desc_; }
  const PayloadLayout& layout() const { return layout_; }
  uint64_t payload_bytes() const { return layout_.total_bytes; }
  const std::byte* data() const { return data_; }
  bool empty() const { return data_ == nullptr; }

  template <class T>
  const T* section(Section s) const {
    return reinterpret_cast<const T*>(data_ + layout_[s].offset);
  }
  // Only for tensors made by allocate() and not yet shared.
  std::byte* mutable_data() { return const_cast<std::byte*>(data_); }
  template <class T>
  T* mutable_section(Section s) {
    return reinterpret_cast<T*>(const_cast<std::byte*>(data_) + layout_[s].offset);
  }

 private:
  TensorDesc desc_;
  PayloadLayout layout_;
  const std::byte* data_ = nullptr;
  std::shared_ptr<const void> owner_;
};

}  // namespace lacuna
