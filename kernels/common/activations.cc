#include "kernels/common/activations.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/common/scratch.h"
#include "sparse/dtype.h"
#include "kernels/vector/vector-ops.h"

namespace lacuna::kernels {
namespace {

constexpr size_t round_up(size_t v, size_t a) { return (v + a - 1) / a * a; }

// Below this many activations a conversion runs on the calling thread alone.
// Above it the threads share it: on one thread, converting a 512-token
// prompt's activations to bf16 pairs took 6 % of a 90 % sparse bf16
// prefill's samples, with the other thread idle all that time.
constexpr size_t kParallelMinValues = 64 * 1024;

}  // namespace

PreparedActivations prepare_activations(ActLayout layout, const float* x, size_t n, size_t in) {
  thread_local ActivationBuffers buffers;
  return prepare_activations(layout, x, n, in, buffers);
}

PreparedActivations prepare_activations(ActLayout layout, const float* x, size_t n, size_t in, ActivationBuffers& into) {
  PreparedActivations p;
  const size_t ld = round_up(in, 64);
  switch (layout) {
    case ActLayout::f32:
      return {x, in, nullptr};
    case ActLayout::f32_padded: {
      auto* out = static_cast<float*>(into.values.get(n * ld * sizeof(float)));
      for (size_t i = 0; i < n; ++i) {
        std::copy(x + i * in, x + (i + 1) * in, out + i * ld);
        std::fill(out + i * ld + in, out + (i + 1) * ld, 0.0f);
      }
      return {out, ld, nullptr};
    }
    case ActLayout::bf16_padded: {
      auto* out = static_cast<uint16_t*>(into.values.get(n * ld * sizeof(uint16_t)));
#pragma omp parallel for if (n * in >= kParallelMinValues)
      for (size_t i = 0; i < n; ++i) {
        vector_ops().to_bf16(x + i * in, out + i * ld, in);
        std::fill(out + i * ld + in, out + (i + 1) * ld, uint16_t{0});
      }
      return {out, ld, nullptr};
    }
    case ActLayout::s8_padded: {
      auto* out = static_cast<int8_t*>(into.values.get(n * ld));
      auto* scale = static_cast<float*>(into.scales.get(n * sizeof(float)));
      auto* sum = static_cast<int32_t*>(into.sums.get(n * sizeof(int32_t)));
#pragma omp parallel for if (n * in >= kParallelMinValues)
      for (size_t i = 0; i < n; ++i) {
        // A token holding NaN or Inf gets a NaN scale, so its outputs are NaN, as in f32.
        int8_t* row = out + i * ld;
        scale[i] = vector_ops().quantize_s8(x + i * in, in, row, &sum[i]);
        std::fill(row + in, row + ld, int8_t{0});
      }
      return {out, ld, scale, sum};
    }
    case ActLayout::bf16_pairs:
    case ActLayout::bf16_pair_tiles: {
      const size_t width = layout == ActLayout::bf16_pair_tiles ? 16 : std::min(round_up(n, 16), kPairTileTokens);
      const size_t tiles = (n + width - 1) / width, pairs = (in + 1) / 2;
      auto* out = static_cast<uint32_t*>(into.values.get(tiles * pairs * width * sizeof(uint32_t)));
      // Sixteen tokens at a time, so that no two threads write one cache line
      // (16 tokens of one pair are 64 bytes of a tile's row): each token's
      // row rounded by the vector op, then its pairs put in their places.
      // Converted pair by pair in scalar code, a 70 % bf16 prefill spent
      // about a sixth of the AMX tiles' time here.
      const size_t token_groups = tiles * width / 16;
#pragma omp parallel if (n * in >= kParallelMinValues)
      {
        thread_local std::vector<uint16_t> row;
        row.assign(2 * pairs, 0);  // an odd `in` leaves the last pair's high half 0
#pragma omp for
        for (size_t g = 0; g < token_groups; ++g)
          for (size_t i = 16 * g; i < 16 * g + 16; ++i) {
            uint32_t* dst = out + i / width * pairs * width + i % width;
            if (i >= n) {
              for (size_t c = 0; c < pairs; ++c) dst[c * width] = 0;
              continue;
            }
            vector_ops().to_bf16(x + i * in, row.data(), in);
            for (size_t c = 0; c < pairs; ++c) dst[c * width] = row[2 * c] | uint32_t{row[2 * c + 1]} << 16;
          }
      }
      return {out, width, nullptr};
    }
    case ActLayout::f32_transposed: {
      const size_t ldt = round_up(n, 16);
      auto* out = static_cast<float*>(into.values.get(in * ldt * sizeof(float)));
      for (size_t c = 0; c < in; ++c) {
        for (size_t i = 0; i < n; ++i) out[c * ldt + i] = x[i * in + c];
        std::fill(out + c * ldt + n, out + (c + 1) * ldt, 0.0f);
      }
      return {out, ldt, nullptr};
    }
  }
  return p;
}

}  // namespace lacuna::kernels

namespace lacuna {

double act_layout_rounding(ActLayout layout) {
  switch (layout) {
    case ActLayout::bf16_padded:
    case ActLayout::bf16_pairs:
    case ActLayout::bf16_pair_tiles: return 0x1p-9;
    case ActLayout::s8_padded: return 0.5 / 127.0;
    default: return 0.0;
  }
}

const char* act_layout_name(ActLayout layout) {
  switch (layout) {
    case ActLayout::f32: return "f32";
    case ActLayout::f32_padded: return "f32_padded";
    case ActLayout::bf16_padded: return "bf16_padded";
    case ActLayout::s8_padded: return "s8_padded";
    case ActLayout::f32_transposed: return "f32_transposed";
    case ActLayout::bf16_pairs: return "bf16_pairs";
    case ActLayout::bf16_pair_tiles: return "bf16_pair_tiles";
  }
  return "?";
}

}  // namespace lacuna
