#pragma once
// Per-format halves of convert.h, and helpers they share. Not a public header.
#include "sparse/convert.h"

namespace lacuna::detail {

Tensor pack_csr(const Tensor& dense);
Tensor unpack_csr(const Tensor& t);
std::string check_csr(const Tensor& t);

Tensor pack_csr8(const Tensor& dense);
Tensor unpack_csr8(const Tensor& t);
std::string check_csr8(const Tensor& t);

Tensor pack_bitmap(const Tensor& dense);
Tensor unpack_bitmap(const Tensor& t);
std::string check_bitmap(const Tensor& t);

Tensor pack_bsr(const Tensor& dense, BlockShape block);
Tensor unpack_bsr(const Tensor& t);
std::string check_bsr(const Tensor& t);

// A zero-filled tensor of `format` with room for `dense`'s nonzeros (by the dtype's zero test).
Tensor allocate_for_nonzeros(const Tensor& dense, Format format);
// The dense tensor of `t`'s dtype and shape, zero-filled, with t's int8 scales.
Tensor dense_like(const Tensor& t);
// Copies int8 row scales from `from` to `to` (same rows); no-op for other dtypes.
void copy_scales(const Tensor& from, Tensor& to);
// Checks row pointers [0] == 0, non-decreasing, [count] == total.
std::string check_row_ptr(const uint64_t* ptr, uint64_t count, uint64_t total, const char* what);

}  // namespace lacuna::detail
