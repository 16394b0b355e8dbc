#pragma once
// Conversion between the dense layout and the sparse formats. Lossless: unpack(pack(d))
// holds every value of d (a negative zero comes back as +0).
#include <cstdint>
#include <span>
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
// elements of its dtype into `out`, which holds those rows (row_begin first).
void unpack_bitmap_rows(const Tensor& t, void* out, uint64_t row_begin, uint64_t row_end);

// A tensor of the same format and dtype holding rows [begin, end) of `t` for
// each range in turn (int8 scales included), e.g. one NUMA node's slice of a
// weight. Every kept row holds exactly the values it held in `t`. Throws
// lacuna::Error for a range outside the rows, or an empty selection.
struct RowRange {
  uint64_t begin = 0, end = 0;
};
Tensor select_rows(const Tensor& t, std::span<const RowRange> ranges);

// Checks what a checksum cannot: that the index arrays of a payload describe
// the matrix of its description (monotone row pointers, in-range sorted
// columns, mask popcounts, finite non-negative int8 scales). Returns "" when
// the payload is usable by every kernel, else the first problem found.
std::string check_payload(const Tensor& t);

}  // namespace lacuna
