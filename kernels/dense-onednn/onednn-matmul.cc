#include "kernels/dense-onednn/onednn-matmul.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <cmath>
#include <map>
#include <memory>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>
#include <optional>
#include <tuple>
#include <vector>

#include "kernels/common/scratch.h"
#include "sparse/dtype.h"
#include "sparse/error.h"
#include "kernels/vector/vector-ops.h"
#include "sparse/weight-memory.h"

namespace lacuna {
namespace {

using dnnl::memory;
using dt = memory::data_type;
using tag = memory::format_tag;

dnnl::engine& cpu_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// Every product's padded outputs and oneDNN's scratchpad are staged in
// these, per thread, grown to the largest call (each primitive bucket of
// each weight had kept its own, so a model held them for every batch size
// each of its weights had seen). In its default mode oneDNN allocates the
// scratchpad on every call.
thread_local kernels::Scratch t_padded_output, t_onednn_scratchpad;
thread_local OnednnSource t_source;

// The tokens of `source` (one row of `in` values per token) as oneDNN's
// brgemm wants its weights: tiles of 16 words x 64 tokens, word by word,
// the tiles of 64 tokens in column order, then the next 64 tokens; zeros
// past the last column and token (BA16a64b2a for bf16, BA16a64b4a for s8:
// a word is a pair of bf16 or four s8 of one token, so each tile is a
// 32-bit transpose). s8 then carries, per token, -128 x the sum of its
// values: the compensation oneDNN's s8 x s8 kernels add for their source
// moved to unsigned. Returns false, writing nothing, when a token's row is
// not whole words or `bytes` is not that layout's size.
bool pack_tokens(const OnednnSource& source, void* out, size_t bytes) {
  if (source.in * dtype_size(source.dtype) % 4) return false;
  const size_t words = source.in * dtype_size(source.dtype) / 4, tiles = (words + 15) / 16, blocks = (source.rows + 63) / 64;
  const size_t data_bytes = blocks * tiles * 16 * 64 * 4, compensation_bytes = source.dtype == DType::int8 ? blocks * 64 * sizeof(int32_t) : 0;
  if (bytes < data_bytes + compensation_bytes || (compensation_bytes == 0 && bytes != data_bytes)) return false;
  if (source.rows % 64 || words % 16 || bytes > data_bytes + compensation_bytes) std::memset(out, 0, bytes);
  const auto* tokens = static_cast<const float*>(source.bytes.data());
  auto* packed = static_cast<float*>(out);
  for (size_t block = 0; block < blocks; ++block) {
    const size_t t0 = block * 64;
    for (size_t tile = 0; tile < tiles; ++tile) {
      const size_t w0 = tile * 16;
      kernels::vector_ops().transpose(tokens + t0 * words + w0, words, std::min<size_t>(64, source.rows - t0), std::min<size_t>(16, words - w0),
                                      packed + (block * tiles + tile) * 16 * 64, 64);
    }
  }
  if (compensation_bytes) {
    auto* compensation = reinterpret_cast<int32_t*>(static_cast<std::byte*>(out) + data_bytes);
    for (size_t t = 0; t < blocks * 64; ++t) compensation[t] = t < source.n ? -128 * source.token_sums[t] : 0;
  }
  return true;
}

// Whether pack_tokens writes `layout`: tokens of made-up values packed by
// it and by oneDNN's reorder must agree byte for byte. The layouts above
// are what oneDNN 2.6's AVX-512 brgemm asks for; another ISA's (AMX, say)
// fails here, and its products keep our rows as oneDNN's weights.
bool packs_like_onednn(DType dtype, size_t in, size_t rows, const memory::desc& layout) {
  OnednnSource probe;
  probe.dtype = dtype;
  probe.in = in;
  probe.rows = rows;
  probe.n = rows - rows / 4;  // the rest zero, as prepare pads
  const size_t row_bytes = in * dtype_size(dtype);
  auto* bytes = static_cast<std::byte*>(probe.bytes.get(rows * row_bytes));
  std::memset(bytes, 0, rows * row_bytes);
  probe.token_sums.assign(probe.n, 0);
  for (size_t t = 0; t < probe.n; ++t)
    for (size_t k = 0; k < in; ++k) {
      const auto v = static_cast<int>((t * 7 + k * 3) % 11) - 5;
      if (dtype == DType::int8) {
        reinterpret_cast<int8_t*>(bytes + t * row_bytes)[k] = static_cast<int8_t>(v);
        probe.token_sums[t] += v;
      } else {
        reinterpret_cast<uint16_t*>(bytes + t * row_bytes)[k] = f32_to_bf16(static_cast<float>(v));
      }
    }
  std::vector<std::byte> ours(layout.get_size()), theirs(layout.get_size());
  if (!pack_tokens(probe, ours.data(), ours.size())) return false;
  const dt type = dtype == DType::int8 ? dt::s8 : dt::bf16;
  memory plain({{static_cast<memory::dim>(in), static_cast<memory::dim>(rows)}, type, tag::ba}, cpu_engine(), bytes);
  memory packed(layout, cpu_engine(), theirs.data());
  dnnl::stream stream(cpu_engine());
  dnnl::reorder(plain, packed).execute(stream, plain, packed);
  stream.wait();
  return ours == theirs;
}

// packs_like_onednn once per process for each product shape: the layout
// follows from the shape, and every thread's blocks share theirs.
bool packs_like_onednn_for(DType dtype, size_t in, size_t rows, size_t out, const memory::desc& layout) {
  static std::mutex mutex;
  static std::map<std::tuple<DType, size_t, size_t, size_t>, bool> known;
  const std::lock_guard lock(mutex);
  const auto [it, added] = known.try_emplace({dtype, in, rows, out}, false);
  if (added) it->second = packs_like_onednn(dtype, in, rows, layout);
  return it->second;
}

}  // namespace

struct OnednnMatmul::Impl {
  struct Batch {
    dnnl::matmul::primitive_desc pd;
    dnnl::matmul matmul;
    bool transposed = false;  // our rows are oneDNN's source, the tokens its weights (see Weights)
    memory tokens, dst;
  };
  Tensor source;  // the user weights, when oneDNN reads them in place
  size_t in = 0, out = 0;
  DType dtype = DType::f32;
  dt weight_type = dt::f32, src_type = dt::f32;
  dnnl::stream stream{cpu_engine()};
  memory::desc weights_md;  // the layout every batch's primitive uses
  std::shared_ptr<std::byte> packed_memory;  // huge pages, as for sparse weights (sparse/weight-memory.h)
  memory weights;
  bool packed = false;
  memory weight_rows;  // the weights as oneDNN's source, when batches may run transposed (in-place bf16)
  std::vector<float> row_scales;              // int8: the weight row scales, per output column
  std::map<size_t, Batch> batches;

  dnnl::matmul::primitive_desc make_pd(size_t n, const memory::desc& wei_md, bool transposed = false) const {
    const auto M = static_cast<memory::dim>(n), K = static_cast<memory::dim>(in), N = static_cast<memory::dim>(out);
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    if (transposed)
      return dnnl::matmul::primitive_desc(
          dnnl::matmul::desc(memory::desc({N, K}, weight_type, tag::ab), memory::desc({K, M}, src_type, tag::any), memory::desc({N, M}, dt::f32, tag::ab)),
          attr, cpu_engine());
    return dnnl::matmul::primitive_desc(
        dnnl::matmul::desc(memory::desc({M, K}, src_type, tag::ab), wei_md, memory::desc({M, N}, dt::f32, tag::ab)), attr, cpu_engine());
  }

  // The tokens of `tokens` as batch b's second operand (transposed
  // products): packed by the first product that asks after prepare, then
  // shared by every product of the source, on any thread.
  void* packed_tokens(const OnednnSource& tokens, const Batch& b) const {
    const std::lock_guard lock(tokens.packing);
    const size_t bytes = b.pd.weights_desc().get_size();
    if (!tokens.tokens_packed) {
      if (!pack_tokens(tokens, tokens.packed_tokens.get(bytes), bytes)) throw Error("OnednnMatmul: the packed tokens' layout changed size");
      tokens.tokens_packed = true;
    }
    return tokens.packed_tokens.data();
  }

  // The primitive serving batch n: one per bucket of rows, not per n, since
  // creating one JIT-compiles code (milliseconds) and a model's experts see
  // every n from 1 to the batch. The extra rows are zero and cost compute
  // only at sizes where the product is bound by reading the weights.
  static size_t rows_for(size_t n) { return n <= 16 ? std::bit_ceil(n) : (n + 15) / 16 * 16; }

  // Transposed, the tokens are padded to blocks of 64: 16 tokens took
  // 1.1-2.3x the time of the plain product, while 32 and more ran faster
  // (bench-densify --quick, bf16 at 50 and 70 %; docs/benchmarks.md,
  // "Expanded rows as oneDNN's source"). A bucket of 32 rows serves 17-32.
  static constexpr size_t kTransposedFromRows = 32;

  // Batch `rows` transposed, when the rows may be oneDNN's source and it
  // takes the tokens in the layout pack_tokens writes (checked once per
  // batch size).
  std::optional<dnnl::matmul::primitive_desc> transposed_pd(size_t rows) const {
    if (!weight_rows || rows < kTransposedFromRows) return std::nullopt;
    dnnl::matmul::primitive_desc pd = make_pd(rows, weights_md, true);
    if (!packs_like_onednn_for(dtype, in, rows, out, pd.weights_desc())) return std::nullopt;
    return pd;
  }

  Batch& batch(size_t n) {
    const size_t rows = rows_for(n);
    auto it = batches.find(rows);
    if (it != batches.end()) return it->second;
    Batch b;
    const auto transposed = transposed_pd(rows);
    b.transposed = transposed.has_value();
    b.pd = transposed ? *transposed : make_pd(rows, weights_md);
    b.matmul = dnnl::matmul(b.pd);
    b.tokens = memory(b.transposed ? b.pd.weights_desc() : b.pd.src_desc(), cpu_engine(), DNNL_MEMORY_NONE);
    b.dst = memory(b.pd.dst_desc(), cpu_engine(), DNNL_MEMORY_NONE);
    return batches.emplace(rows, std::move(b)).first->second;
  }
};

OnednnMatmul::OnednnMatmul(const Tensor& dense, Weights weights) : impl_(std::make_unique<Impl>()) {
  const TensorDesc& d = dense.desc();
  if (d.format != Format::dense || d.ndim != 2) throw Error("OnednnMatmul needs a dense 2-D weight");
  Impl& m = *impl_;
  m.out = d.rows();
  m.in = d.cols();
  m.dtype = d.dtype;
  m.weight_type = d.dtype == DType::f32 ? dt::f32 : d.dtype == DType::bf16 ? dt::bf16 : dt::s8;
  m.src_type = m.weight_type;
  if (d.dtype == DType::int8) {
    const float* scales = dense.section<float>(Section::scales);
    m.row_scales.assign(scales, scales + m.out);
  }
  auto* data = const_cast<std::byte*>(dense.data());
  // Our [out][in] row-major weights are oneDNN's K x N in "ba" order.
  const memory::dims kn{static_cast<memory::dim>(m.in), static_cast<memory::dim>(m.out)};
  memory user({kn, m.weight_type, tag::ba}, cpu_engine(), data);
  m.weights_md = weights == Weights::packed ? m.make_pd(1, memory::desc(kn, m.weight_type, tag::any)).weights_desc() : user.get_desc();
  if (weights == Weights::in_place && m.dtype != DType::f32)
    m.weight_rows = memory({{static_cast<memory::dim>(m.out), static_cast<memory::dim>(m.in)}, m.weight_type, tag::ab}, cpu_engine(), data);
  if (m.weights_md == user.get_desc()) {
    m.weights = user;
    m.source = dense;
  } else {
    m.packed_memory = allocate_weight_memory(m.weights_md.get_size());
    m.weights = memory(m.weights_md, cpu_engine(), m.packed_memory.get());
    dnnl::reorder(user, m.weights).execute(m.stream, user, m.weights);
    m.stream.wait();
    m.packed = true;
  }
}

OnednnMatmul::~OnednnMatmul() = default;
OnednnMatmul::OnednnMatmul(OnednnMatmul&&) noexcept = default;
OnednnMatmul& OnednnMatmul::operator=(OnednnMatmul&&) noexcept = default;

void OnednnMatmul::rebind(const Tensor& dense) {
  Impl& m = *impl_;
  const TensorDesc& d = dense.desc();
  if (m.packed) throw Error("OnednnMatmul::rebind needs an in-place object");
  if (d.format != Format::dense || d.ndim != 2 || d.rows() != m.out || d.cols() != m.in || d.dtype != m.dtype)
    throw Error("OnednnMatmul::rebind needs a dense weight of the same shape and dtype");
  if (d.dtype == DType::int8) std::copy_n(dense.section<float>(Section::scales), m.out, m.row_scales.begin());
  m.source = dense;
  m.weights.set_data_handle(const_cast<std::byte*>(dense.data()));
  if (m.weight_rows) m.weight_rows.set_data_handle(const_cast<std::byte*>(dense.data()));
}

size_t OnednnMatmul::packed_bytes() const { return impl_->packed ? impl_->weights_md.get_size() : 0; }
std::string OnednnMatmul::implementation(size_t n) {
  const Impl::Batch& b = impl_->batch(n);
  return b.pd.impl_info_str() + std::string(b.transposed ? ", transposed" : "");
}

void OnednnMatmul::run(const float* x, size_t n, float* y) {
  prepare(impl_->dtype, impl_->in, x, n, t_source);
  run(t_source, y, impl_->out);
}

void OnednnMatmul::prepare(DType dtype, size_t in, const float* x, size_t n, OnednnSource& source) {
  source.dtype = dtype;
  source.in = in;
  source.n = n;
  source.rows = Impl::rows_for(n);
  // The primitive multiplies `rows` rows: those past n must be zero.
  const size_t row_bytes = in * dtype_size(dtype);
  auto* bytes = static_cast<std::byte*>(source.bytes.get(source.rows * row_bytes));
  std::memset(bytes + n * row_bytes, 0, (source.rows - n) * row_bytes);
  // One scale per token for int8, as Lacuna's s8 kernels, so a token's
  // result does not depend on the rest of the batch. oneDNN 2.x scales only
  // output columns, so the token scale is applied after the product. NaN when
  // a token holds NaN or Inf, so its outputs are NaN too.
  if (dtype == DType::int8) {
    source.token_scales.resize(n);
    source.token_sums.resize(n);
  }
  source.tokens_packed = false;
  // Tokens side by side: on one thread this conversion and the copy after
  // the product were ~7 % of a 512-token int8 prefill, the other thread idle.
#pragma omp parallel for if (n > 1)
  for (size_t t = 0; t < n; ++t) {
    const float* xt = x + t * in;
    std::byte* st = bytes + t * row_bytes;
    switch (dtype) {
      case DType::f32:
        std::copy(xt, xt + in, reinterpret_cast<float*>(st));
        break;
      case DType::bf16:
        kernels::vector_ops().to_bf16(xt, reinterpret_cast<uint16_t*>(st), in);
        break;
      case DType::int8: {
        source.token_scales[t] = kernels::vector_ops().quantize_s8(xt, in, reinterpret_cast<int8_t*>(st), &source.token_sums[t]);
        break;
      }
    }
  }
}

void OnednnMatmul::run(const OnednnSource& source, float* y, size_t ldy) {
  Impl& m = *impl_;
  if (source.dtype != m.dtype || source.in != m.in) throw Error("OnednnMatmul::run: the source was prepared for another width or dtype");
  if (ldy < m.out) throw Error("OnednnMatmul::run: ldy is below the weight's rows");
  const size_t n = source.n;
  if (n == 0) return;
  Impl::Batch& b = m.batch(n);
  // The product goes straight to y when it has y's shape and needs no
  // scales; otherwise to a staging buffer, copied out with the scales below.
  // The row scales are applied there as well: given runtime output scales,
  // oneDNN 2.6 declines its VNNI brgemm for the older s8 gemm, which
  // allocates and frees its packing buffers on every call (a 512-token
  // prefill spent ~14 % of its time faulting them in and unmapping them)
  // and ran slower besides.
  const bool direct = !b.transposed && source.rows == n && ldy == m.out && m.dtype != DType::int8;
  auto* staged = direct ? y : static_cast<float*>(t_padded_output.get(source.rows * m.out * sizeof(float)));
  b.dst.set_data_handle(staged);
  b.tokens.set_data_handle(b.transposed ? m.packed_tokens(source, b) : source.bytes.data());
  // Transposed, our weights are oneDNN's source and the tokens its weights.
  const memory& src = b.transposed ? m.weight_rows : b.tokens;
  const memory& weights = b.transposed ? b.tokens : m.weights;
  const memory::desc scratchpad_md = b.pd.scratchpad_desc();
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, src},
                                       {DNNL_ARG_WEIGHTS, weights},
                                       {DNNL_ARG_DST, b.dst},
                                       {DNNL_ARG_SCRATCHPAD, memory(scratchpad_md, cpu_engine(), t_onednn_scratchpad.get(scratchpad_md.get_size()))}};
  b.matmul.execute(m.stream, args);
  m.stream.wait();
  if (direct) return;
  if (b.transposed) {
    // Token t's outputs are column t of the product; int8 then scaled in
    // place, in the VNNI kernels' order as below.
    constexpr size_t kRowsPerTask = 256;
    const auto tasks = static_cast<int64_t>((m.out + kRowsPerTask - 1) / kRowsPerTask);
#pragma omp parallel for if (tasks > 1)
    for (int64_t task = 0; task < tasks; ++task) {
      const size_t r0 = static_cast<size_t>(task) * kRowsPerTask, r1 = std::min(m.out, r0 + kRowsPerTask);
      kernels::vector_ops().transpose(staged + r0 * source.rows, source.rows, r1 - r0, n, y + r0, ldy);
      if (m.dtype == DType::int8)
        for (size_t t = 0; t < n; ++t)
          kernels::vector_ops().dequantize_row(y + t * ldy + r0, m.row_scales.data() + r0, source.token_scales[t], y + t * ldy + r0, r1 - r0);
    }
    return;
  }
  // The scales are applied in the VNNI kernels' order, so that the server's
  // batch-invariant products may take either (Linear::run_part).
#pragma omp parallel for if (n > 1)
  for (size_t t = 0; t < n; ++t) {
    const float* pt = staged + t * m.out;
    float* yt = y + t * ldy;
    if (m.dtype == DType::int8) {
      kernels::vector_ops().dequantize_row(pt, m.row_scales.data(), source.token_scales[t], yt, m.out);
    } else {
      std::copy_n(pt, m.out, yt);
    }
  }
}

bool onednn_runs_amx() {
  static const bool amx = dnnl::get_effective_cpu_isa() == dnnl::cpu_isa::avx512_core_amx;
  return amx;
}

}  // namespace lacuna
