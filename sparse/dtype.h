#pragma once
// Element types of stored weights, and the bf16 <-> f32 conversions every
// layer shares: round to nearest even, NaN kept quiet, subnormals rounded like
// any other value (VCVTNEPS2BF16 would flush them to zero).
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

}  // namespace lacuna
