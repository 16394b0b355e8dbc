// Compiled with -mavx512f -mavx512bf16 -mavx512vnni; each timing runs only
// where its instruction is usable (its callers check).
#include <immintrin.h>

#include <chrono>

#include "kernels/instruction-rates.h"

namespace lacuna {
namespace {

constexpr int kChains = 12;

template <class Vec, class Step>
double instructions_per_second(long iterations, Vec init, Vec operand, Step step) {
  Vec acc[kChains];
  for (Vec& a : acc) a = init;
  const auto start = std::chrono::steady_clock::now();
  for (long i = 0; i < iterations; ++i) {
#pragma GCC unroll 12
    for (int c = 0; c < kChains; ++c) acc[c] = step(acc[c], operand);
    // The operand is opaque to the compiler, so the loop cannot be folded.
    __asm__ volatile("" : "+v"(operand));
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  for (Vec& a : acc) __asm__ volatile("" : : "v"(a));
  return static_cast<double>(iterations) * kChains / seconds;
}

}  // namespace

double fma_zmm_per_second(long iterations) {
  return instructions_per_second(iterations, _mm512_set1_ps(1), _mm512_set1_ps(0), [](__m512 a, __m512 x) { return _mm512_fmadd_ps(a, x, x); });
}

double dpbf16_zmm_per_second(long iterations) {
  return instructions_per_second(iterations, _mm512_set1_ps(1), _mm512_set1_ps(1),
                                 [](__m512 a, __m512 x) { return _mm512_dpbf16_ps(a, (__m512bh)x, (__m512bh)x); });
}

double dpbusd_zmm_per_second(long iterations) {
  return instructions_per_second(iterations, _mm512_set1_epi32(1), _mm512_set1_epi8(1),
                                 [](__m512i a, __m512i x) { return _mm512_dpbusd_epi32(a, x, x); });
}

}  // namespace lacuna
