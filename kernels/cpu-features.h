#pragma once
// What this CPU and OS let Lacuna run, probed once (XNNPACK's hardware config,
// oneDNN's ONEDNN_MAX_CPU_ISA). A feature is usable only when the CPU reports
// it AND the OS saves its register state (XCR0) AND, for AMX, Linux granted
// the tile-data permission (arch_prctl(ARCH_REQ_XCOMP_PERM)).
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace lacuna {

enum CpuFeature : uint64_t {
  kAvx2 = 1u << 0,
  kFma = 1u << 1,
  kF16c = 1u << 2,
  kAvx512F = 1u << 3,
  kAvx512Bw = 1u << 4,
  kAvx512Vl = 1u << 5,
  kAvx512Dq = 1u << 6,
  kAvx512Cd = 1u << 7,
  kAvx512Vnni = 1u << 8,
  kAvx512Bf16 = 1u << 9,
  kAvx512Vbmi = 1u << 10,
  kAvx512Vbmi2 = 1u << 11,
  kAvx512Bitalg = 1u << 12,
  kAvx512Vpopcntdq = 1u << 13,
  kAmxTile = 1u << 14,
  kAmxBf16 = 1u << 15,
  kAmxInt8 = 1u << 16,
  kBmi2 = 1u << 17,
};
inline constexpr int kCpuFeatureCount = 18;
const char* cpu_feature_name(uint64_t single_feature);
std::string cpu_feature_list(uint64_t features);  // "avx512_bf16, amx_tile"

// Levels for LACUNA_MAX_ISA, each allowing everything below it.
enum class IsaLevel : uint8_t { scalar, avx2, avx512_core, avx512_core_vnni, avx512_core_bf16, avx512_core_amx };
inline constexpr IsaLevel kAllIsaLevels[] = {IsaLevel::scalar, IsaLevel::avx2, IsaLevel::avx512_core,
                                             IsaLevel::avx512_core_vnni, IsaLevel::avx512_core_bf16, IsaLevel::avx512_core_amx};
const char* isa_level_name(IsaLevel level);
std::optional<IsaLevel> parse_isa_level(std::string_view name);
uint64_t isa_level_allows(IsaLevel level);    // features a kernel may use under this cap
uint64_t isa_level_requires(IsaLevel level);  // features that define the level

struct CpuInfo {
  std::string brand;
  uint64_t reported = 0;  // CPUID bits
  uint64_t usable = 0;    // reported and enabled by the OS
  IsaLevel cap = IsaLevel::avx512_core_amx;
  bool capped_by_env = false;
  uint64_t features = 0;            // usable & isa_level_allows(cap): what dispatch may use
  std::vector<std::string> notes;   // why reported features are not usable
  IsaLevel level() const;           // highest level all of whose defining features are in `features`
  // Why `needed` is not available, e.g. "needs amx_tile (the CPU lacks it)"; "" when it is.
  std::string why_unavailable(uint64_t needed) const;
  // The same probe result under a different cap (tests run every level).
  CpuInfo with_cap(IsaLevel level) const;
};

// Probed on first use. Throws lacuna::Error when LACUNA_MAX_ISA names no level.
const CpuInfo& cpu_info();
// The probe itself, with an explicit cap value (the LACUNA_MAX_ISA text, or none).
CpuInfo probe_cpu(std::optional<std::string_view> max_isa);

}  // namespace lacuna
