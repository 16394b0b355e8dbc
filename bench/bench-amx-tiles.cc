// What a TDPBF16PS costs on one core as the AMX bf16 kernel
// (kernels/spmm-amx/spmm-bf16-amx.cc) feeds it, in alternating rounds so the
// ratios come from the same minutes: the product alone, its tiles loaded
// from L1, and the kernel's shape with tile B streamed from L2 (four token
// tiles against one tile A, 1 KB of B a product), with two weight-row blocks
// against two token tiles (512 bytes of B a product), and with each group's
// B requested a group ahead. The weights' expansion is left out (see
// docs/benchmarks.md, "Where the AMX bf16 tiles' time goes").
//   bench-amx-tiles [ROUNDS]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "bench/common/stats.h"
#include "kernels/cpu-features.h"
#include "kernels/spmm-amx/amx-tiles.h"

namespace {

using namespace lacuna::kernels::amx;
using lacuna::kernels::avx512::prefetch_t0;

constexpr uint64_t kTile = 1024, kRow = kGroupBytes;  // every tile is 16 rows of 64 bytes
constexpr uint64_t kGroups = 256;                   // groups of B streamed per pass: 256 x 4 KB, beyond L1
constexpr long kPasses = 40;

// Memory the tiles read: two strips of A, then B, all bf16 1.0.
struct Operands {
  std::vector<uint16_t> storage;
  const char* strips;
  const char* b;
  Operands() : storage((2 * kStripBytes + kGroups * 4 * kTile + 4096) / 2, 0x3f80) {
    const auto base = reinterpret_cast<uintptr_t>(storage.data());
    strips = reinterpret_cast<const char*>((base + 4095) / 4096 * 4096);
    b = strips + 2 * kStripBytes;
  }
};

// C0..C3 += A x B for each of four token tiles, A and B alternating between two tiles each.
double products_only(const Operands&) {
  for (long i = 0; i < kPasses * static_cast<long>(kGroups) / 2; ++i) {
    tile_dpbf16ps<0, 4, 6>(), tile_dpbf16ps<1, 4, 7>(), tile_dpbf16ps<2, 5, 6>(), tile_dpbf16ps<3, 5, 7>();
    tile_dpbf16ps<0, 5, 7>(), tile_dpbf16ps<1, 5, 6>(), tile_dpbf16ps<2, 4, 7>(), tile_dpbf16ps<3, 4, 6>();
  }
  return static_cast<double>(kPasses * kGroups * 4);
}

// One group: tile A from the strip, four tiles B at `b` (1 KB apart), four products.
template <int A, int B0, int B1>
void group_1x4(const char* a, const char* b) {
  tile_load<A>(a, kStripStride);
  tile_load<B0>(b, kRow), tile_dpbf16ps<0, A, B0>();
  tile_load<B1>(b + kTile, kRow), tile_dpbf16ps<1, A, B1>();
  tile_load<B0>(b + 2 * kTile, kRow), tile_dpbf16ps<2, A, B0>();
  tile_load<B1>(b + 3 * kTile, kRow), tile_dpbf16ps<3, A, B1>();
}

template <bool kPrefetch>
double one_block_four_token_tiles(const Operands& m, uint64_t groups_of_b) {
  for (long pass = 0; pass < kPasses; ++pass)
    for (uint64_t g = 0; g < kGroups; g += 2) {
      const char* a = m.strips + (g % 16) * kRow;
      const char* b = m.b + (g % groups_of_b) * 4 * kTile;
      if constexpr (kPrefetch)
        for (uint64_t line = 0; line < 2 * 4 * kTile; line += kRow) prefetch_t0(m.b + ((g + 2) % groups_of_b) * 4 * kTile + line);
      group_1x4<4, 6, 7>(a, b);
      group_1x4<5, 7, 6>(a + kRow, m.b + ((g + 1) % groups_of_b) * 4 * kTile);
    }
  return static_cast<double>(kPasses * kGroups * 4);
}

// Two blocks of 16 weight rows x two token tiles: each tile B serves two products.
double two_blocks_two_token_tiles(const Operands& m) {
  for (long pass = 0; pass < kPasses; ++pass)
    for (uint64_t g = 0; g < 2 * kGroups; ++g) {
      const char* a = m.strips + (g % 16) * kRow;
      const char* b = m.b + g * 2 * kTile;
      tile_load<4>(a, kStripStride), tile_load<5>(a + kStripBytes, kStripStride);
      tile_load<6>(b, kRow), tile_load<7>(b + kTile, kRow);
      tile_dpbf16ps<0, 4, 6>(), tile_dpbf16ps<1, 4, 7>(), tile_dpbf16ps<2, 5, 6>(), tile_dpbf16ps<3, 5, 7>();
    }
  return static_cast<double>(kPasses * 2 * kGroups * 4);
}

struct Case {
  const char* name;
  double (*run)(const Operands&);
};

const Case kCases[] = {
    {"products only (tiles preloaded)", products_only},
    {"A and B from L1 (4 groups of B)", [](const Operands& m) { return one_block_four_token_tiles<false>(m, 4); }},
    {"1 row block x 4 token tiles, B from L2", [](const Operands& m) { return one_block_four_token_tiles<false>(m, kGroups); }},
    {"  the same, B requested a group ahead", [](const Operands& m) { return one_block_four_token_tiles<true>(m, kGroups); }},
    {"2 row blocks x 2 token tiles, B from L2", two_blocks_two_token_tiles},
};

}  // namespace

int main(int argc, char** argv) {
  using namespace lacuna;
  const int rounds = argc > 1 ? std::atoi(argv[1]) : 7;
  if (argc > 2 || rounds < 1) {
    std::fprintf(stderr, "usage: bench-amx-tiles [ROUNDS]\n");
    return 2;
  }
  const CpuInfo& cpu = cpu_info();
  if (std::string why = cpu.why_unavailable(kAmxTile | kAmxBf16); !why.empty()) {
    std::printf("not run: %s\n", why.c_str());
    return 0;
  }
  std::printf("machine: %s, 1 thread; %d rounds, alternated; B streamed: %llu groups x 4 KB\n\n", cpu.brand.c_str(), rounds,
              static_cast<unsigned long long>(kGroups));
  const Operands operands;
  const size_t count = std::size(kCases);
  std::vector<std::vector<double>> ns(count);
  const TileSession session(kTileTokens);
  for (int r = 0; r < rounds; ++r)
    for (size_t i = 0; i < count; ++i) {
      const auto start = std::chrono::steady_clock::now();
      const double products = kCases[i].run(operands);
      ns[i].push_back(std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start).count() / products);
    }
  const double base = bench::median(ns[0]);
  std::printf("%-42s %18s %16s\n", "case", "ns per TDPBF16PS", "vs products only");
  for (size_t i = 0; i < count; ++i) std::printf("%-42s %18.2f %15.2fx\n", kCases[i].name, bench::median(ns[i]), bench::median(ns[i]) / base);
  return 0;
}
