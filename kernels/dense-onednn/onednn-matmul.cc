#include "kernels/dense-onednn/onednn-matmul.h"

#include <algorithm>
#include <cmath>
#include <oneapi/dnnl/dnnl.hpp>
#include <vector>

#include "sparse/error.h"

namespace lacuna {
namespace {

using dnnl::memory;
using dt = memory::data_type;
using tag = memory::format_tag;

dnnl::engine& cpu_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

dt weight_type(DType t) { return t == DType::f32 ? dt::f32 : t == DType::bf16 ? dt::bf16 : dt::s8; }

}  // namespace

struct OnednnMatmul::Impl {
  Tensor source;  // keeps the user weights alive for the reorder only
  size_t n = 0, in = 0, out = 0;
  DType dtype = DType::f32;
  dnnl::stream stream{cpu_engine()};
  dnnl::matmul::primitive_desc pd;
  dnnl::matmul matmul;
  memory weights, src, dst;
  std::vector<float> out_scales;  // int8: row scale x activation scale, per output column
  std::vector<float> row_scales;
};

OnednnMatmul::OnednnMatmul(const Tensor& dense, size_t n) : impl_(std::make_unique<Impl>()) {
  const TensorDesc& d = dense.desc();
  if (d.format != Format::dense) throw Error("OnednnMatmul needs dense weights");
  Impl& m = *impl_;
  m.n = n;
  m.out = d.rows();
  m.in = d.cols();
  m.dtype = d.dtype;
  const auto M = static_cast<memory::dim>(n), K = static_cast<memory::dim>(m.in), N = static_cast<memory::dim>(m.out);
  const dt wt = weight_type(d.dtype);
  const dt st = d.dtype == DType::int8 ? dt::s8 : wt;
  memory::desc src_md({M, K}, st, tag::ab), wei_md({K, N}, wt, tag::any), dst_md({M, N}, dt::f32, tag::ab);
  dnnl::primitive_attr attr;
  if (d.dtype == DType::int8) {
    attr.set_output_scales(1 << 1, {DNNL_RUNTIME_F32_VAL});
    const float* scales = dense.section<float>(Section::scales);
    m.row_scales.assign(scales, scales + m.out);
    m.out_scales.resize(m.out);
  }
  m.pd = dnnl::matmul::primitive_desc(dnnl::matmul::desc(src_md, wei_md, dst_md), attr, cpu_engine());
  m.matmul = dnnl::matmul(m.pd);
  // Our [out][in] row-major weights are oneDNN's K x N in "ba" order.
  memory user({{K, N}, wt, tag::ba}, cpu_engine(), const_cast<std::byte*>(dense.data()));
  m.weights = memory(m.pd.weights_desc(), cpu_engine());
  dnnl::reorder(user, m.weights).execute(m.stream, user, m.weights);
  m.stream.wait();
  m.src = memory(src_md, cpu_engine());
  m.dst = memory(dst_md, cpu_engine(), DNNL_MEMORY_NONE);
}

OnednnMatmul::~OnednnMatmul() = default;
OnednnMatmul::OnednnMatmul(OnednnMatmul&&) noexcept = default;
OnednnMatmul& OnednnMatmul::operator=(OnednnMatmul&&) noexcept = default;

size_t OnednnMatmul::batch() const { return impl_->n; }
size_t OnednnMatmul::packed_bytes() const { return impl_->pd.weights_desc().get_size(); }
const char* OnednnMatmul::implementation() const { return impl_->pd.impl_info_str(); }

void OnednnMatmul::run(const float* x, float* y) {
  Impl& m = *impl_;
  const size_t count = m.n * m.in;
  switch (m.dtype) {
    case DType::f32:
      std::copy(x, x + count, static_cast<float*>(m.src.get_data_handle()));
      break;
    case DType::bf16: {
      auto* s = static_cast<uint16_t*>(m.src.get_data_handle());
      for (size_t i = 0; i < count; ++i) s[i] = f32_to_bf16(x[i]);
      break;
    }
    case DType::int8: {
      float amax = 0.0f;
      for (size_t i = 0; i < count; ++i) amax = std::max(amax, std::fabs(x[i]));
      const float x_scale = amax / 127.0f, inv = amax > 0 ? 127.0f / amax : 0.0f;
      auto* s = static_cast<int8_t*>(m.src.get_data_handle());
      for (size_t i = 0; i < count; ++i) s[i] = static_cast<int8_t>(std::nearbyint(x[i] * inv));
      for (size_t r = 0; r < m.out; ++r) m.out_scales[r] = m.row_scales[r] * x_scale;
      break;
    }
  }
  m.dst.set_data_handle(y);
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, m.src}, {DNNL_ARG_WEIGHTS, m.weights}, {DNNL_ARG_DST, m.dst}};
  memory scales;
  if (m.dtype == DType::int8) {
    scales = memory({{static_cast<memory::dim>(m.out)}, dt::f32, tag::a}, cpu_engine(), m.out_scales.data());
    args.emplace(DNNL_ARG_ATTR_OUTPUT_SCALES, scales);
  }
  m.matmul.execute(m.stream, args);
  m.stream.wait();
}

}  // namespace lacuna
