#pragma once
// Compile-time element types for code that is the same for every dtype:
// visit_dtype(t, [&]<class E>(E) { ... E::type ... }) runs the body once per dtype.
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "sparse/dtype.h"

namespace lacuna {

template <DType T>
struct Element;
template <>
struct Element<DType::f32> {
  using type = float;
  static bool is_zero(float v) { return v == 0.0f; }
  static float to_f32(float v) { return v; }
};
template <>
struct Element<DType::bf16> {
  using type = uint16_t;
  static bool is_zero(uint16_t v) { return (v & 0x7fffu) == 0; }
  static float to_f32(uint16_t v) { return bf16_to_f32(v); }
};
template <>
struct Element<DType::int8> {
  using type = int8_t;
  static bool is_zero(int8_t v) { return v == 0; }
  static float to_f32(int8_t v) { return static_cast<float>(v); }
};

// The mask type of one bitmap group (one 512-bit vector of T): u16, u32 or u64.
template <class T>
using BitmapMask = std::conditional_t<sizeof(T) == 4, uint16_t, std::conditional_t<sizeof(T) == 2, uint32_t, uint64_t>>;

// Runs f(static_cast<Index*>(nullptr)) with the column index type of a
// matrix whose indices are `bytes` wide (index_size(cols)): u16 or u32.
template <class F>
decltype(auto) visit_index(size_t bytes, F&& f) {
  if (bytes == 2) return f(static_cast<uint16_t*>(nullptr));
  return f(static_cast<uint32_t*>(nullptr));
}

template <class F>
decltype(auto) visit_dtype(DType t, F&& f) {
  switch (t) {
    case DType::bf16: return f(Element<DType::bf16>{});
    case DType::int8: return f(Element<DType::int8>{});
    case DType::f32: break;
  }
  return f(Element<DType::f32>{});
}

}  // namespace lacuna
