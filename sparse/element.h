#pragma once
// Compile-time element types for code that is the same for every dtype:
// visit_dtype(t, [&]<class E>(E) { ... E::type ... }) runs the body once per dtype.
#include <cstdint>

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
