#include "kernels/cpu-features.h"

#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include "sparse/error.h"

namespace lacuna {
namespace {

constexpr const char* kFeatureNames[kCpuFeatureCount] = {
    "avx2",        "fma",         "f16c",          "avx512f",          "avx512bw", "avx512vl",
    "avx512dq",    "avx512cd",    "avx512_vnni",   "avx512_bf16",      "avx512_vbmi", "avx512_vbmi2",
    "avx512_bitalg", "avx512_vpopcntdq", "amx_tile", "amx_bf16", "amx_int8", "bmi2"};

constexpr uint64_t kAvx2Set = kAvx2 | kFma | kF16c | kBmi2;
constexpr uint64_t kAvx512Set = kAvx512F | kAvx512Bw | kAvx512Vl | kAvx512Dq | kAvx512Cd;
constexpr uint64_t kIceLakeSet = kAvx512Vnni | kAvx512Vbmi | kAvx512Vbmi2 | kAvx512Bitalg | kAvx512Vpopcntdq;
constexpr uint64_t kAmxSet = kAmxTile | kAmxBf16 | kAmxInt8;

// Linux x86 ABI constants (asm/prctl.h), spelled here because older headers lack them.
constexpr int kArchGetXcompPerm = 0x1022;
constexpr int kArchReqXcompPerm = 0x1023;
constexpr int kXfeatureXtileData = 18;

uint64_t xgetbv0() {
  uint32_t eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (uint64_t{edx} << 32) | eax;
}

bool request_amx_permission(std::string& why_not) {
  if (syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtileData) != 0) {
    why_not = std::string("Linux refused AMX tile permission (arch_prctl ARCH_REQ_XCOMP_PERM: ") + std::strerror(errno) + ")";
    return false;
  }
  unsigned long granted = 0;
  if (syscall(SYS_arch_prctl, kArchGetXcompPerm, &granted) != 0 || !(granted & (1ul << kXfeatureXtileData))) {
    why_not = "Linux did not grant AMX tile-data permission";
    return false;
  }
  return true;
}

}  // namespace

const char* cpu_feature_name(uint64_t f) {
  for (int i = 0; i < kCpuFeatureCount; ++i)
    if (f == (uint64_t{1} << i)) return kFeatureNames[i];
  return "?";
}

std::string cpu_feature_list(uint64_t features) {
  std::string s;
  for (int i = 0; i < kCpuFeatureCount; ++i)
    if (features & (uint64_t{1} << i)) s += (s.empty() ? "" : ", ") + std::string(kFeatureNames[i]);
  return s.empty() ? "none" : s;
}

const char* isa_level_name(IsaLevel level) {
  switch (level) {
    case IsaLevel::scalar: return "scalar";
    case IsaLevel::avx2: return "avx2";
    case IsaLevel::avx512_core: return "avx512_core";
    case IsaLevel::avx512_core_vnni: return "avx512_core_vnni";
    case IsaLevel::avx512_core_bf16: return "avx512_core_bf16";
    case IsaLevel::avx512_core_amx: return "avx512_core_amx";
  }
  return "?";
}

std::optional<IsaLevel> parse_isa_level(std::string_view name) {
  for (IsaLevel l : kAllIsaLevels)
    if (name == isa_level_name(l)) return l;
  return std::nullopt;
}

uint64_t isa_level_allows(IsaLevel level) {
  const uint64_t by_level[] = {0,
                               kAvx2Set,
                               kAvx2Set | kAvx512Set,
                               kAvx2Set | kAvx512Set | kIceLakeSet,
                               kAvx2Set | kAvx512Set | kIceLakeSet | kAvx512Bf16,
                               kAvx2Set | kAvx512Set | kIceLakeSet | kAvx512Bf16 | kAmxSet};
  return by_level[static_cast<size_t>(level)];
}

uint64_t isa_level_requires(IsaLevel level) {
  const uint64_t by_level[] = {0,
                               kAvx2 | kFma,
                               kAvx2 | kFma | kAvx512F | kAvx512Bw | kAvx512Vl | kAvx512Dq,
                               kAvx2 | kFma | kAvx512F | kAvx512Bw | kAvx512Vl | kAvx512Dq | kAvx512Vnni,
                               kAvx2 | kFma | kAvx512F | kAvx512Bw | kAvx512Vl | kAvx512Dq | kAvx512Vnni | kAvx512Bf16,
                               kAvx2 | kFma | kAvx512F | kAvx512Bw | kAvx512Vl | kAvx512Dq | kAvx512Vnni | kAvx512Bf16 | kAmxSet};
  return by_level[static_cast<size_t>(level)];
}

IsaLevel CpuInfo::level() const {
  IsaLevel best = IsaLevel::scalar;
  for (IsaLevel l : kAllIsaLevels)
    if ((features & isa_level_requires(l)) == isa_level_requires(l)) best = l;
  return best;
}

std::string CpuInfo::why_unavailable(uint64_t needed) const {
  const uint64_t missing = needed & ~features;
  if (!missing) return "";
  std::string why = "needs " + cpu_feature_list(missing) + " (";
  std::string sep;
  if (uint64_t m = missing & ~reported) why += sep + "the CPU lacks " + cpu_feature_list(m), sep = "; ";
  if (uint64_t m = missing & reported & ~usable) why += sep + "the OS does not enable " + cpu_feature_list(m), sep = "; ";
  if (uint64_t m = missing & usable)
    why += sep + (capped_by_env ? "LACUNA_MAX_ISA=" : "capped at ") + std::string(isa_level_name(cap)) + " excludes " + cpu_feature_list(m);
  return why + ")";
}

CpuInfo CpuInfo::with_cap(IsaLevel level) const {
  CpuInfo c = *this;
  c.cap = level;
  c.capped_by_env = false;
  c.features = usable & isa_level_allows(level);
  return c;
}

CpuInfo probe_cpu(std::optional<std::string_view> max_isa) {
  CpuInfo info;
  unsigned a = 0, b = 0, c = 0, d = 0;
  unsigned brand[12] = {};
  if (__get_cpuid(0x80000000u, &a, &b, &c, &d) && a >= 0x80000004u) {
    for (unsigned i = 0; i < 3; ++i) __get_cpuid(0x80000002u + i, &brand[4 * i], &brand[4 * i + 1], &brand[4 * i + 2], &brand[4 * i + 3]);
    info.brand = std::string(reinterpret_cast<const char*>(brand), strnlen(reinterpret_cast<const char*>(brand), sizeof brand));
    info.brand.erase(0, info.brand.find_first_not_of(' '));
  }
  bool osxsave = false;
  if (__get_cpuid(1, &a, &b, &c, &d)) {
    if (c & (1u << 12)) info.reported |= kFma;
    if (c & (1u << 29)) info.reported |= kF16c;
    osxsave = c & (1u << 27);
  }
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
    const struct { unsigned reg, bit; uint64_t feature; } bits[] = {
        {b, 5, kAvx2},          {b, 8, kBmi2},         {b, 16, kAvx512F},     {b, 17, kAvx512Dq},  {b, 28, kAvx512Cd},      {b, 30, kAvx512Bw},
        {b, 31, kAvx512Vl},     {c, 1, kAvx512Vbmi},   {c, 6, kAvx512Vbmi2}, {c, 11, kAvx512Vnni},   {c, 12, kAvx512Bitalg},
        {c, 14, kAvx512Vpopcntdq}, {d, 22, kAmxBf16},  {d, 24, kAmxTile},   {d, 25, kAmxInt8}};
    for (const auto& x : bits)
      if (x.reg & (1u << x.bit)) info.reported |= x.feature;
    if (__get_cpuid_count(7, 1, &a, &b, &c, &d) && (a & (1u << 5))) info.reported |= kAvx512Bf16;
  }
  const uint64_t xcr0 = osxsave ? xgetbv0() : 0;
  const bool os_avx = (xcr0 & 0x6) == 0x6;
  const bool os_avx512 = os_avx && (xcr0 & 0xe0) == 0xe0;
  const bool os_amx = (xcr0 & 0x60000) == 0x60000;
  info.usable = info.reported;
  const uint64_t avx512_all = kAvx512Set | kIceLakeSet | kAvx512Bf16;
  if (!os_avx && (info.reported & (kAvx2Set | avx512_all))) {
    info.usable &= ~(kAvx2Set | avx512_all);
    info.notes.push_back("AVX: the OS does not save YMM state (XCR0)");
  } else if (!os_avx512 && (info.reported & avx512_all)) {
    info.usable &= ~avx512_all;
    info.notes.push_back("AVX-512: the OS does not save ZMM/opmask state (XCR0)");
  }
  if (info.reported & kAmxSet) {
    std::string why;
    if (!os_amx) why = "AMX: the OS does not enable tile state (XCR0)";
    else if (!request_amx_permission(why)) why = "AMX: " + why;
    if (!why.empty()) {
      info.usable &= ~kAmxSet;
      info.notes.push_back(why);
    }
  } else {
    info.notes.push_back("AMX: the CPU reports none of AMX-TILE/BF16/INT8, so AMX kernels are declined");
  }
  info.cap = IsaLevel::avx512_core_amx;
  if (max_isa) {
    auto level = parse_isa_level(*max_isa);
    if (!level) {
      std::string valid;
      for (IsaLevel l : kAllIsaLevels) valid += std::string(valid.empty() ? "" : ", ") + isa_level_name(l);
      throw Error("LACUNA_MAX_ISA='" + std::string(*max_isa) + "' is not one of: " + valid);
    }
    info.cap = *level;
    info.capped_by_env = true;
  }
  info.features = info.usable & isa_level_allows(info.cap);
  return info;
}

const CpuInfo& cpu_info() {
  static const CpuInfo info = [] {
    const char* env = std::getenv("LACUNA_MAX_ISA");
    return probe_cpu(env && *env ? std::optional<std::string_view>(env) : std::nullopt);
  }();
  return info;
}

}  // namespace lacuna
