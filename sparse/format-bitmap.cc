// Bitmap-blocked: each row is cut into groups of one 512-bit vector (16 f32,
// 32 bf16, 64 int8); masks[rows][groups] (one bit per weight, u16/u32/u64)
// and the row's nonzeros packed in column order; row_ptr[r] is the index of
// row r's first value. A kernel loads 64 bytes at a row's value pointer and
// expands them with the group's mask (VEXPANDPS / VPEXPANDW / VPEXPANDB), then
// advances the pointer by popcount(mask).
#include <bit>

#include <algorithm>

#include "sparse/convert.h"
#include "sparse/element.h"
#include "sparse/format-internal.h"

namespace lacuna::detail {

Tensor pack_bitmap(const Tensor& dense) {
  const TensorDesc& dd = dense.desc();
  const uint64_t rows = dd.rows(), cols = dd.cols();
  return visit_dtype(dd.dtype, [&]<class E>(E) {
    using T = typename E::type;
    using M = BitmapMask<T>;
    const T* v = dense.section<T>(Section::values);
    Tensor t = allocate_for_nonzeros(dense, Format::bitmap);
    const uint64_t width = bitmap_group_width(dd.dtype), groups = group_count(dd);
    uint64_t* row_ptr = t.mutable_section<uint64_t>(Section::row_ptr);
    M* masks = t.mutable_section<M>(Section::masks);
    T* values = t.mutable_section<T>(Section::values);
    uint64_t k = 0;
    for (uint64_t r = 0; r < rows; ++r) {
      row_ptr[r] = k;
      for (uint64_t g = 0; g < groups; ++g) {
        M mask = 0;
        for (uint64_t c = g * width; c < std::min(cols, (g + 1) * width); ++c) {
          const T x = v[r * cols + c];
          if (E::is_zero(x)) continue;
          mask |= static_cast<M>(M{1} << (c - g * width));
          values[k++] = x;
        }
        masks[r * groups + g] = mask;
      }
    }
    row_ptr[rows] = k;
    copy_scales(dense, t);
    return t;
  });
}

Tensor unpack_bitmap(const Tensor& t) {
  Tensor out = dense_like(t);
  unpack_bitmap_rows(t, out.mutable_section<std::byte>(Section::values), 0, t.desc().rows());
  return out;
}

std::string check_bitmap(const Tensor& t) {
  const uint64_t rows = t.desc().rows(), cols = t.desc().cols();
  const uint64_t width = bitmap_group_width(t.desc().dtype), groups = group_count(t.desc());
  const uint64_t* row_ptr = t.section<uint64_t>(Section::row_ptr);
  if (std::string why = check_row_ptr(row_ptr, rows, t.desc().nnz, "row"); !why.empty()) return why;
  return visit_dtype(t.desc().dtype, [&]<class E>(E) -> std::string {
    using M = BitmapMask<typename E::type>;
    const M* masks = t.section<M>(Section::masks);
    const uint64_t tail = cols - (groups - 1) * width;  // columns in the last group
    const M tail_mask = tail == width ? M(~M{0}) : static_cast<M>((M{1} << tail) - 1);
    for (uint64_t r = 0; r < rows; ++r) {
      uint64_t count = 0;
      for (uint64_t g = 0; g < groups; ++g) count += static_cast<uint64_t>(std::popcount(masks[r * groups + g]));
      if (masks[r * groups + groups - 1] & M(~tail_mask)) return "row " + std::to_string(r) + " has mask bits past column " + std::to_string(cols);
      if (count != row_ptr[r + 1] - row_ptr[r])
        return "row " + std::to_string(r) + " masks hold " + std::to_string(count) + " values but its pointers span " +
               std::to_string(row_ptr[r + 1] - row_ptr[r]);
    }
    return "";
  });
}

}  // namespace lacuna::detail

namespace lacuna {

void unpack_bitmap_rows(const Tensor& t, void* out, uint64_t row_begin, uint64_t row_end) {
  const uint64_t cols = t.desc().cols();
  const uint64_t width = bitmap_group_width(t.desc().dtype), groups = group_count(t.desc());
  const uint64_t* row_ptr = t.section<uint64_t>(Section::row_ptr);
  visit_dtype(t.desc().dtype, [&]<class E>(E) {
    using T = typename E::type;
    using M = BitmapMask<T>;
    const M* masks = t.section<M>(Section::masks);
    const T* values = t.section<T>(Section::values);
    for (uint64_t r = row_begin; r < row_end; ++r) {
      T* row = static_cast<T*>(out) + (r - row_begin) * cols;
      std::fill(row, row + cols, T{});
      uint64_t k = row_ptr[r];
      for (uint64_t g = 0; g < groups; ++g)
        for (M m = masks[r * groups + g]; m; m &= m - 1) row[g * width + std::countr_zero(m)] = values[k++];
    }
  });
}

}  // namespace lacuna
