#pragma once
// Element types of stored weights, and the bf16 <-> f32 and f16 <-> f32
// conversions every layer shares (f16: safetensors checkpoints, KV caches): round to nearest even, NaN kept quiet, subnormals rounded like
// any other value (VCVTNEPS2BF16 would flush them to zero).
#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace lacuna {

enum class DType : uint8_t { f32 = 0, bf16 = 1, int8 = 2 };
inline constexpr DType kAllDTypes[] = {DType::f32, DType::bf16, DType::int8};

constexpr size_t dtype_size(DType t) { return t == DType::f32 ? 4 : t == DType::bf16 ? 2 : 1; }
const char* dtype_name(DType t);
std::optional<DType> parse_dtype(std::string_view name);
constexpr bool dtype_is_valid(uint8_t raw) { return raw <= static_cast<uint8_t>(DType::int8); }

inline uint16_t f32_to_bf16(float f) {
  uint32_t u = std::bit_cast<uint32_t>(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

inline float bf16_to_f32(uint16_t h) { return std::bit_cast<float>(static_cast<uint32_t>(h) << 16); }

// IEEE binary16. Subnormals are m * 2^-24, exact in f32; NaN keeps its payload.
inline float f16_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t{h & 0x8000u} << 16, exponent = (h >> 10) & 0x1fu, mantissa = h & 0x3ffu;
  if (exponent == 0x1f) return std::bit_cast<float>(sign | 0x7f800000u | mantissa << 13);
  if (exponent != 0) return std::bit_cast<float>(sign | (exponent + 112) << 23 | mantissa << 13);
  const float magnitude = static_cast<float>(mantissa) * 0x1p-24f;
  return sign ? -magnitude : magnitude;
}

// Round to nearest even; too large for a half (from 65520 up) becomes inf; NaN stays a quiet NaN.
inline uint16_t f32_to_f16(float f) {
  const uint32_t u = std::bit_cast<uint32_t>(f), a = u & 0x7fffffffu;
  const auto sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  if (a > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
  if (a >= 0x38800000u) {  // a normal half, or overflow: rebias the exponent from 127 to 15, round 13 bits away
    uint32_t r = a - 0x38000000u;
    r = (r + 0xfffu + ((r >> 13) & 1u)) >> 13;
    return static_cast<uint16_t>(sign | std::min(r, 0x7c00u));
  }
  if (a <= 0x33000000u) return sign;  // at most 2^-25, half the smallest subnormal: the tie goes to even zero
  // A subnormal half counts units of 2^-24: shift the 24-bit significand right by 126 - exponent (14..24).
  const uint32_t significand = (a & 0x7fffffu) | 0x800000u, shift = 126 - (a >> 23);
  uint32_t units = significand >> shift;
  const uint32_t rest = significand & ((1u << shift) - 1), halfway = 1u << (shift - 1);
  if (rest > halfway || (rest == halfway && (units & 1u))) ++units;  // may carry into the smallest normal, 0x0400
  return static_cast<uint16_t>(sign | units);
}

}  // namespace lacuna
