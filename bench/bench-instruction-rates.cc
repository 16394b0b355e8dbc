// How many of each dot-product instruction the kernels are built on one core
// retires per second (kernels/instruction-rates.h), in alternating rounds so
// the ratios come from the same minutes: VFMADD231PS (f32), VDPBF16PS (bf16
// pairs), VPDPBUSD (u8 x s8 quads), and what Lacuna's own one-off
// measurement (bf16_dot_vs_fma) decided in this process.
//   bench-instruction-rates [ROUNDS]
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "bench/common/stats.h"
#include "kernels/cpu-features.h"
#include "kernels/instruction-rates.h"

namespace {

constexpr long kIterations = 20'000'000;

struct Instruction {
  const char* name;
  uint64_t features;
  double macs;  // multiply-adds one instruction does
  double (*run)(long iterations);
};

const Instruction kInstructions[] = {
    {"VFMADD231PS zmm (f32)", lacuna::kAvx512F, 16, lacuna::fma_zmm_per_second},
    {"VDPBF16PS zmm (bf16 pairs)", lacuna::kAvx512F | lacuna::kAvx512Bf16, 32, lacuna::dpbf16_zmm_per_second},
    {"VPDPBUSD zmm (u8 x s8 quads)", lacuna::kAvx512F | lacuna::kAvx512Vnni, 64, lacuna::dpbusd_zmm_per_second},
};

}  // namespace

int main(int argc, char** argv) {
  using namespace lacuna;
  const int rounds = argc > 1 ? std::atoi(argv[1]) : 7;
  if (argc > 2 || rounds < 1) {
    std::fprintf(stderr, "usage: bench-instruction-rates [ROUNDS]\n");
    return 2;
  }
  const CpuInfo& cpu = cpu_info();
  std::printf("machine: %s, 1 thread; %d rounds of %ld x 12 instructions each, alternated\n\n", cpu.brand.c_str(), rounds, kIterations);
  const size_t count = std::size(kInstructions);
  std::vector<std::vector<double>> rate(count), vs_fma(count);
  for (int r = 0; r < rounds; ++r) {
    double fma = 0;
    for (size_t i = 0; i < count; ++i) {
      if (!cpu.why_unavailable(kInstructions[i].features).empty()) continue;
      const double per_second = kInstructions[i].run(kIterations);
      if (i == 0) fma = per_second;
      rate[i].push_back(per_second);
      vs_fma[i].push_back(per_second * kInstructions[i].macs / (fma * kInstructions[0].macs));
    }
  }
  std::printf("%-30s %16s %16s %22s\n", "instruction", "G instr/s median", "G MAC/s median", "MACs vs VFMADD231PS");
  for (size_t i = 0; i < count; ++i) {
    const Instruction& in = kInstructions[i];
    if (std::string why = cpu.why_unavailable(in.features); !why.empty()) {
      std::printf("%-30s  not run: %s\n", in.name, why.c_str());
      continue;
    }
    const double per_second = bench::median(rate[i]);
    std::printf("%-30s %16.2f %16.1f %21.2fx\n", in.name, per_second / 1e9, per_second * in.macs / 1e9, bench::median(vs_fma[i]));
  }
  std::printf("\nbf16_dot_vs_fma() at first use: %.2f: bf16 bitmap weights expanded for oneDNN are %s\n", bf16_dot_vs_fma(),
              f32_outruns_bf16_dot() ? "widened to f32" : "kept in bf16");
  return 0;
}
