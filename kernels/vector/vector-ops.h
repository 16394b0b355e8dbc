#pragma once
// The f32 vector primitives the runtime's dense ops are built from (attention
// scores and sums, the router, norms). The engine is compiled for baseline
// x86-64, so these live here, built once per ISA and picked at run time like
// the sparse kernels: without them attention ran scalar, one add per cycle.
#include <cstddef>
#include <cstdint>

#include "kernels/cpu-features.h"

namespace lacuna::kernels {

struct VectorOps {
  const char* isa;
  float (*dot)(const float* a, const float* b, size_t n);      // sum a[i] * b[i]
  void (*axpy)(float alpha, const float* x, float* y, size_t n);  // y[i] += alpha * x[i]
  // out[g * out_stride + r] = sum_i q[g * q_stride + i] * rows[r * stride + i]
  // for g < queries, r < count: the query heads of one GQA group against the
  // keys of one cache block, each key loaded once for all of them; a token
  // against the router's rows (one query). A (query, row) sum comes out the
  // same bits whichever tile of the call holds it.
  // Attention's dot and axpy per key took 23 % of a 512-token prefill's
  // samples; a cache block at a time (and the cache head-major, see
  // KvCache) 15 % (docs/benchmarks.md, "Attention a cache block at a time",
  // "Attention's vector ops").
  void (*dot_rows)(const float* q, size_t queries, size_t q_stride, const float* rows, size_t stride, size_t count, size_t n, float* out,
                   size_t out_stride);
  // out[g * out_stride + i] += sum_r w[g * w_stride + r] * rows[r * stride + i]
  // for g < queries, the rows added in order: the values of one cache block
  // weighted by each query head's attention.
  void (*weighted_row_sum)(const float* w, size_t queries, size_t w_stride, const float* rows, size_t stride, size_t count, size_t n,
                           float* out, size_t out_stride);
  // The same two over rows of IEEE f16 bits (an f16 KV cache), each
  // element widened to f32 exactly: the same sums as over those rows in f32.
  void (*dot_rows_f16)(const float* q, size_t queries, size_t q_stride, const uint16_t* rows, size_t stride, size_t count, size_t n,
                       float* out, size_t out_stride);
  void (*weighted_row_sum_f16)(const float* w, size_t queries, size_t w_stride, const uint16_t* rows, size_t stride, size_t count,
                               size_t n, float* out, size_t out_stride);
  // quantize_int8_symmetric (sparse/quantize.h), the same bytes and scale,
  // and *sum = the sum of the bytes. Every int8 product quantises its
  // activations with it on the calling thread while the others wait: the
  // scalar loops took 3.5 % of a 16-client int8 serving profile's samples.
  float (*quantize_s8)(const float* x, size_t n, int8_t* out, int32_t* sum);
  // out[i] = act(gate[i]) * up[i], act SiLU (x / (1 + e^-x)) or, with
  // `gelu`, GELU's tanh form: an expert's gated activation. Scalar libm
  // calls per element took 2.5 % of a 16-client int8 serving profile's
  // samples, on the calling thread while the others wait.
  void (*gated_activation)(const float* gate, const float* up, float* out, size_t n, bool gelu);
  // Attention's softmax over one query's scores, in place: s = x *
  // multiplier, capped to cap * tanh(s / cap) when cap > 0 (Grok-1), then
  // e^(s - max s) / the sum of those. Scalar libm calls per score took 17 %
  // of a 4096-token prefill's samples.
  void (*softmax)(float* x, size_t n, float multiplier, float cap);
  // The index std::max_element(x, x + n) gives (n > 0): the first of the
  // largest, NaNs never taken but at index 0 (where it stays). Greedy
  // sampling over a vocabulary: the scalar loop, beside a copy of the
  // logits, took 56 us a token at 32000 entries (docs/benchmarks.md,
  // "Greedy sampling on vectors").
  size_t (*argmax)(const float* x, size_t n);
  // y[i] = (sums[i] * row_scale[i]) * token_scale, in that order: one
  // token's int8 products, their exact integer sums (as floats) scaled back
  // as the VNNI tiles scale theirs. After oneDNN's s8 product this ran in
  // the engine's baseline SSE2 code, 4 % of an int8 prefill's samples.
  // y may be sums (in place).
  void (*dequantize_row)(const float* sums, const float* row_scale, float token_scale, float* y, size_t n);
  // out[i] = f32_to_bf16(x[i]) (sparse/dtype.h: to nearest even, NaN kept
  // quiet): a bf16 product's activations. One element at a time in the
  // baseline code, it was 1.3 % of a bf16 prefill's samples.
  void (*to_bf16)(const float* x, uint16_t* out, size_t n);
  // out[i] = f32_to_f16(x[i]) (sparse/dtype.h: to nearest even, inf from
  // 65520 up): a row of keys or values into an f16 KV cache.
  void (*to_f16)(const float* x, uint16_t* out, size_t n);
  // out[c * ld_out + r] = in[r * ld_in + c] for r < rows, c < cols, each
  // element's 32 bits moved as they are (so a pair of bf16 moves as one):
  // OnednnMatmul's in-place bf16 products pack their tokens with it and turn
  // their transposed result back into one row per token.
  void (*transpose)(const float* in, size_t ld_in, size_t rows, size_t cols, float* out, size_t ld_out);
};

// The widest implementation `cpu` allows (AVX-512F, AVX2 + FMA + F16C, or SSE2).
const VectorOps& vector_ops_for(const CpuInfo& cpu);
// vector_ops_for(cpu_info()), chosen once.
const VectorOps& vector_ops();

}  // namespace lacuna::kernels
