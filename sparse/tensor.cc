#include "sparse/tensor.h"

#include <cstdlib>
#include <cstring>
#include <limits>

#include "sparse/error.h"

namespace lacuna {
namespace {

constexpr uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }
// Bounds that keep every byte count far from 64-bit overflow.
constexpr uint64_t kMaxDim = uint64_t{1} << 32;
constexpr uint64_t kMaxElements = uint64_t{1} << 40;
constexpr uint16_t kMaxBlockSide = 64;

}  // namespace

const char* format_name(Format f) {
  switch (f) {
    case Format::dense: return "dense";
    case Format::csr: return "csr";
    case Format::bitmap: return "bitmap";
    case Format::bsr: return "bsr";
    case Format::csr8: return "csr8";
  }
  return "?";
}

std::optional<Format> parse_format(std::string_view name) {
  for (Format f : kAllFormats)
    if (name == format_name(f)) return f;
  return std::nullopt;
}

uint64_t TensorDesc::rows() const { return ndim == 1 ? 1 : shape[0]; }

uint64_t TensorDesc::cols() const {
  uint64_t c = 1;
  for (uint32_t i = ndim == 1 ? 0 : 1; i < ndim && i < kMaxDims; ++i) c *= shape[i];
  return c;
}

TensorDesc TensorDesc::matrix(Format f, DType t, uint64_t rows, uint64_t cols) {
  TensorDesc d;
  d.format = f;
  d.dtype = t;
  d.ndim = 2;
  d.shape = {rows, cols, 0, 0};
  return d;
}

std::string TensorDesc::shape_string() const {
  std::string s;
  for (uint32_t i = 0; i < ndim && i < kMaxDims; ++i) {
    if (i) s += 'x';
    s += std::to_string(shape[i]);
  }
  return s;
}

uint64_t csr8_block_count(const TensorDesc& d) { return (d.cols() + kCsr8BlockColumns - 1) / kCsr8BlockColumns; }

uint64_t block_row_count(const TensorDesc& d) { return (d.rows() + d.block_rows - 1) / d.block_rows; }

uint64_t group_count(const TensorDesc& d) {
  uint64_t w = bitmap_group_width(d.dtype);
  return (d.cols() + w - 1) / w;
}

std::string check_desc(const TensorDesc& d) {
  if (d.ndim < 1 || d.ndim > kMaxDims) return "rank " + std::to_string(d.ndim) + " is not in 1..4";
  uint64_t elements = 1;
  for (uint32_t i = 0; i < d.ndim; ++i) {
    if (d.shape[i] == 0 || d.shape[i] > kMaxDim) return "dimension " + std::to_string(i) + " is " + std::to_string(d.shape[i]);
    if (d.shape[i] > kMaxElements / elements) return "more than 2^40 elements";  // checked before multiplying: no wrap-around
    elements *= d.shape[i];
  }
  for (uint32_t i = d.ndim; i < kMaxDims; ++i)
    if (d.shape[i] != 0) return "unused dimension " + std::to_string(i) + " is not zero";
  if (d.cols() > kMaxDim / 2) return "more than 2^31 columns";  // column indices are gathered as signed 32-bit
  if (d.format != Format::dense && d.ndim != 2)
    return std::string(format_name(d.format)) + " needs a 2-D tensor, not rank " + std::to_string(d.ndim);
  if (d.format != Format::bsr && (d.block_rows != 1 || d.block_cols != 1))
    return "block shape is set on a non-bsr tensor";
  switch (d.format) {
    case Format::dense:
      if (d.nnz != 0) return "dense tensor with a nonzero count";
      break;
    case Format::csr:
    case Format::csr8:
    case Format::bitmap:
      if (d.nnz > elements) return "more stored values (" + std::to_string(d.nnz) + ") than elements";
      break;
    case Format::bsr: {
      if (d.block_rows < 1 || d.block_rows > kMaxBlockSide || d.block_cols < 1 || d.block_cols > kMaxBlockSide)
        return "block shape " + std::to_string(d.block_rows) + "x" + std::to_string(d.block_cols) + " is not within 1..64";
      uint64_t max_blocks = block_row_count(d) * ((d.cols() + d.block_cols - 1) / d.block_cols);
      if (d.nnz > max_blocks) return "more blocks (" + std::to_string(d.nnz) + ") than fit the matrix";
      break;
    }
  }
  return "";
}

PayloadLayout payload_layout(const TensorDesc& d) {
  PayloadLayout l;
  const uint64_t esize = dtype_size(d.dtype);
  const uint64_t isize = index_size(d.cols());
  auto set = [&](Section s, uint64_t bytes) { l.sections[static_cast<size_t>(s)].bytes = bytes; };
  switch (d.format) {
    case Format::dense:
      set(Section::values, d.elements() * esize);
      break;
    case Format::csr:
      set(Section::row_ptr, (d.rows() + 1) * sizeof(uint64_t));
      set(Section::col_idx, d.nnz * isize);
      set(Section::values, d.nnz * esize);
      break;
    case Format::csr8:
      set(Section::row_ptr, (d.rows() + 1) * sizeof(uint64_t));
      set(Section::col_idx, d.nnz);
      set(Section::values, d.nnz * esize);
      set(Section::block_counts, d.rows() * csr8_block_count(d) * sizeof(uint16_t));
      break;
    case Format::bitmap:
      set(Section::row_ptr, (d.rows() + 1) * sizeof(uint64_t));
      set(Section::masks, d.rows() * group_count(d) * (bitmap_group_width(d.dtype) / 8));
      set(Section::values, d.nnz * esize + kValuesTailPadding);
      break;
    case Format::bsr:
      set(Section::row_ptr, (block_row_count(d) + 1) * sizeof(uint64_t));
      set(Section::col_idx, d.nnz * isize);
      set(Section::values, d.nnz * d.block_rows * d.block_cols * esize);
      break;
  }
  if (d.dtype == DType::int8) set(Section::scales, d.rows() * sizeof(float));
  uint64_t offset = 0;
  for (auto& s : l.sections) {
    s.offset = offset;
    offset = align_up(offset + s.bytes, kSectionAlign);
  }
  l.total_bytes = offset;
  return l;
}

Tensor Tensor::allocate(const TensorDesc& desc) {
  if (std::string why = check_desc(desc); !why.empty()) throw Error("invalid tensor description: " + why);
  Tensor t;
  t.desc_ = desc;
  t.layout_ = payload_layout(desc);
  size_t bytes = std::max<uint64_t>(t.layout_.total_bytes, kSectionAlign);
  void* p = std::aligned_alloc(kSectionAlign, bytes);
  if (!p) throw Error("out of memory allocating " + std::to_string(bytes) + " bytes for a " + desc.shape_string() + " tensor");
  std::memset(p, 0, bytes);
  t.owner_ = std::shared_ptr<const void>(p, [](const void* q) { std::free(const_cast<void*>(q)); });
  t.data_ = static_cast<const std::byte*>(p);
  return t;
}

Tensor Tensor::wrap(const TensorDesc& desc, const std::byte* bytes, std::shared_ptr<const void> owner) {
  Tensor t;
  t.desc_ = desc;
  t.layout_ = payload_layout(desc);
  t.data_ = bytes;
  t.owner_ = std::move(owner);
  return t;
}

}  // namespace lacuna
