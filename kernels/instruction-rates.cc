// Plain x86-64 code: decides whether the AVX-512 timings may run at all.
#include "kernels/instruction-rates.h"

#include <algorithm>

#include "kernels/cpu-features.h"

namespace lacuna {

double bf16_dot_vs_fma() {
  static const double ratio = [] {
    if ((cpu_info().features & (kAvx512F | kAvx512Bf16)) != (kAvx512F | kAvx512Bf16)) return 0.0;
    constexpr long kIterations = 50'000;
    double fma = 0, dpbf16 = 0;
    for (int round = 0; round < 3; ++round) {
      fma = std::max(fma, fma_zmm_per_second(kIterations));
      dpbf16 = std::max(dpbf16, dpbf16_zmm_per_second(kIterations));
    }
    return dpbf16 * 32 / (fma * 16);
  }();
  return ratio;
}

bool f32_outruns_bf16_dot() { return bf16_dot_vs_fma() < 1.0; }

}  // namespace lacuna
