#pragma once
// Conversion between the dense layout and the sparse formats. Lossless: unpack(pack(d))
// holds every value of d (a negative zero comes back as +0).
#include <cstdint>
#include <string>

#include "sparse/tensor.h"

namespace lacuna {

struct BlockShape {
  uint16_t rows = 4;
  uint16_t cols = 1;
};

// `dense` must be a dense 2-D tensor; its dtype and int8 scales carry over.
// `block` is used only for bsr.
Tensor pack(const Tensor& dense, Format format, BlockShape block = {});
// Any tensor -> the dense tensor of the same dtype and shape.
Tensor unpack(const Tensor& t);
// Rows [row_begin, row_end) of a bitmap tensor written as dense row-major
// elements of its dtype into `out` (which holds rows x cols of them).
void unpack_bitmap_rows(const Tensor& t, void* out, uint64_t row_begin, uint64_t row_end);

// Checks what a checksum cannot: that the index arrays of a payload describe
// the matrix of its description (monotone row pointers, in-range sorted
// columns, mask popcounts, finite non-negative int8 scales). Returns "" when
// the payload is usable by every kernel, else the first problem found.
std::string check_payload(const Tensor& t);

}  // namespace lacuna
