#include "sparse/convert.h"

#include <algorithm>
#include <cmath>

#include "sparse/element.h"
#include "sparse/error.h"
#include "sparse/format-internal.h"

namespace lacuna {

Tensor pack(const Tensor& dense, Format format, BlockShape block) {
  const TensorDesc& d = dense.desc();
  if (d.format != Format::dense) throw Error(std::string("pack: source is ") + format_name(d.format) + ", not dense");
  if (format != Format::dense && d.ndim != 2)
    throw Error(std::string("pack: ") + format_name(format) + " needs a 2-D tensor, not " + d.shape_string());
  switch (format) {
    case Format::dense: return dense;
    case Format::csr: return detail::pack_csr(dense);
    case Format::bitmap: return detail::pack_bitmap(dense);
    case Format::bsr: return detail::pack_bsr(dense, block);
    case Format::csr8: return detail::pack_csr8(dense);
  }
  throw Error("pack: unknown format");
}

Tensor unpack(const Tensor& t) {
  switch (t.desc().format) {
    case Format::dense: return t;
    case Format::csr: return detail::unpack_csr(t);
    case Format::bitmap: return detail::unpack_bitmap(t);
    case Format::bsr: return detail::unpack_bsr(t);
    case Format::csr8: return detail::unpack_csr8(t);
  }
  throw Error("unpack: unknown format");
}

Tensor select_rows(const Tensor& t, std::span<const RowRange> ranges) {
  const TensorDesc& d = t.desc();
  uint64_t rows = 0;
  for (const RowRange& r : ranges) {
    if (r.begin > r.end || r.end > d.rows())
      throw Error("select_rows: rows [" + std::to_string(r.begin) + ", " + std::to_string(r.end) + ") are outside the " + std::to_string(d.rows()) + " rows of " + d.shape_string());
    rows += r.end - r.begin;
  }
  if (rows == 0) throw Error("select_rows: no row selected");
  // Through the dense layout: every format packs and unpacks losslessly.
  const Tensor whole = unpack(t);
  TensorDesc sd = TensorDesc::matrix(Format::dense, d.dtype, rows, d.cols());
  Tensor dense = Tensor::allocate(sd);
  const uint64_t row_bytes = d.cols() * dtype_size(d.dtype);
  uint64_t at = 0;
  for (const RowRange& r : ranges) {
    std::copy_n(whole.section<std::byte>(Section::values) + r.begin * row_bytes, (r.end - r.begin) * row_bytes,
                dense.mutable_section<std::byte>(Section::values) + at * row_bytes);
    if (d.dtype == DType::int8)
      std::copy_n(whole.section<float>(Section::scales) + r.begin, r.end - r.begin, dense.mutable_section<float>(Section::scales) + at);
    at += r.end - r.begin;
  }
  return pack(dense, d.format, {d.block_rows, d.block_cols});
}

std::string check_payload(const Tensor& t) {
  if (t.desc().dtype == DType::int8) {
    const float* scales = t.section<float>(Section::scales);
    for (uint64_t r = 0; r < t.desc().rows(); ++r)
      if (!std::isfinite(scales[r]) || scales[r] < 0.0f)
        return "int8 scale of row " + std::to_string(r) + " is " + std::to_string(scales[r]);
  }
  switch (t.desc().format) {
    case Format::dense: return "";
    case Format::csr: return detail::check_csr(t);
    case Format::bitmap: return detail::check_bitmap(t);
    case Format::bsr: return detail::check_bsr(t);
    case Format::csr8: return detail::check_csr8(t);
  }
  return "unknown format";
}

namespace detail {

Tensor allocate_for_nonzeros(const Tensor& dense, Format format) {
  TensorDesc d = dense.desc();
  d.format = format;
  d.nnz = visit_dtype(d.dtype, [&]<class E>(E) {
    using T = typename E::type;
    const T* v = dense.section<T>(Section::values);
    return static_cast<uint64_t>(std::count_if(v, v + d.elements(), [](T x) { return !E::is_zero(x); }));
  });
  return Tensor::allocate(d);
}

Tensor dense_like(const Tensor& t) {
  TensorDesc d = t.desc();
  d.format = Format::dense;
  d.nnz = 0;
  d.block_rows = d.block_cols = 1;
  Tensor out = Tensor::allocate(d);
  copy_scales(t, out);
  return out;
}

void copy_scales(const Tensor& from, Tensor& to) {
  if (from.desc().dtype != DType::int8) return;
  const float* src = from.section<float>(Section::scales);
  std::copy(src, src + from.desc().rows(), to.mutable_section<float>(Section::scales));
}

std::string check_row_ptr(const uint64_t* ptr, uint64_t count, uint64_t total, const char* what) {
  if (ptr[0] != 0) return std::string(what) + " pointer 0 is " + std::to_string(ptr[0]) + ", not 0";
  for (uint64_t i = 0; i < count; ++i)
    if (ptr[i + 1] < ptr[i] || ptr[i + 1] > total)
      return std::string(what) + " pointer " + std::to_string(i + 1) + " (" + std::to_string(ptr[i + 1]) +
             ") is out of order or past " + std::to_string(total);
  if (ptr[count] != total)
    return std::string(what) + " pointers end at " + std::to_string(ptr[count]) + ", not at the stored count " + std::to_string(total);
  return "";
}

}  // namespace detail
}  // namespace lacuna
