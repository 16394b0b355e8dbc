#include "sparse/stats.h"

#include <algorithm>
#include <bit>

#include "sparse/element.h"

namespace lacuna {

TensorStats tensor_stats(const Tensor& t) {
  const TensorDesc& d = t.desc();
  TensorStats s;
  s.elements = d.elements();
  s.payload_bytes = t.payload_bytes();
  visit_dtype(d.dtype, [&]<class E>(E) {
    using T = typename E::type;
    const T* v = t.section<T>(Section::values);
    // Stored explicit zeros are not nonzeros, so count values rather than trusting nnz.
    const uint64_t stored = d.format == Format::dense ? d.elements()
                            : d.format == Format::bsr ? d.nnz * d.block_rows * d.block_cols
                                                      : d.nnz;
    s.nonzeros = static_cast<uint64_t>(std::count_if(v, v + stored, [](T x) { return !E::is_zero(x); }));
  });
  return s;
}

}  // namespace lacuna
