#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <set>
#include <tuple>

#include "kernels/spmm-ukernels.h"
#include "sparse/error.h"

namespace lacuna {
namespace {

constexpr SpmmUkernel kUkernels[] = {
#define LACUNA_SPMM_UKERNEL(symbol, format, dtype, act, features, min_n, max_n, row_tile, block_rows, block_cols) \
  {#symbol, Format::format, DType::dtype, ActLayout::act, features, min_n, max_n, row_tile, block_rows, block_cols, &symbol},
#include "kernels/spmm-ukernels.inc"
#undef LACUNA_SPMM_UKERNEL
};

bool verbose() {
  static const bool on = [] {
    const char* v = std::getenv("LACUNA_VERBOSE");
    return v && *v && std::string(v) != "0";
  }();
  return on;
}

// Prints each distinct problem's choice once: a decode loop must not flood stderr.
void log_choice_once(const TensorDesc& w, size_t n, const SpmmChoice& choice) {
  static std::mutex mutex;
  static std::set<std::tuple<int, int, std::string, size_t>> seen;
  std::lock_guard lock(mutex);
  if (seen.emplace(static_cast<int>(w.format), static_cast<int>(w.dtype), w.shape_string(), n).second)
    std::fprintf(stderr, "%s", choice.describe(w, n).c_str());
}

}  // namespace

std::span<const SpmmUkernel> spmm_ukernels() { return kUkernels; }

std::string spmm_decline_reason(const SpmmUkernel& k, const TensorDesc& w, size_t n, const CpuInfo& cpu) {
  if (n < k.min_n) {
    // A kernel refused at every batch (an AMX kernel on a CPU without AMX)
    // says so rather than naming a batch that would not help.
    std::string refused = spmm_refusal_reason(k, w, k.min_n, cpu);
    if (!refused.empty()) return refused;
    return "batch " + std::to_string(n) + " is outside " + std::to_string(k.min_n) + ".." + (k.max_n ? std::to_string(k.max_n) : "");
  }
  return spmm_refusal_reason(k, w, n, cpu);
}

std::string spmm_refusal_reason(const SpmmUkernel& k, const TensorDesc& w, size_t n, const CpuInfo& cpu) {
  if (k.format != w.format) return std::string("weights are ") + format_name(w.format) + ", not " + format_name(k.format);
  if (k.dtype != w.dtype) return std::string("weights are ") + dtype_name(w.dtype) + ", not " + dtype_name(k.dtype);
  if (k.block_rows && (w.block_rows != k.block_rows || w.block_cols != k.block_cols))
    return "blocks are " + std::to_string(w.block_rows) + "x" + std::to_string(w.block_cols) + ", not " + std::to_string(k.block_rows) + "x" +
           std::to_string(k.block_cols);
  if (k.max_n && n > k.max_n) return "batch " + std::to_string(n) + " is outside 1.." + std::to_string(k.max_n);
  if (k.fn == &lacuna_spmm_csr_bf16_ukernel_1x4__avx512bf16 && index_size(w.cols()) != 2)
    return std::to_string(w.cols()) + " columns need 32-bit indices; its permutes take 16-bit ones (at most 65536 columns)";
  if (k.act == ActLayout::s8_padded && w.cols() > kS8PaddedMaxColumns)
    return std::to_string(w.cols()) + " columns overflow its int32 sums (at most " + std::to_string(kS8PaddedMaxColumns) + ")";
  return cpu.why_unavailable(k.features);
}

std::string SpmmChoice::describe(const TensorDesc& w, size_t n) const {
  std::string s = std::string("lacuna: spmm ") + format_name(w.format) + " " + dtype_name(w.dtype) + " " + w.shape_string() +
                  " n=" + std::to_string(n) + ": chose " + (kernel ? kernel->name : "nothing") + "\n";
  for (const auto& d : declined) s += "lacuna:   declined " + d + "\n";
  return s;
}

SpmmChoice choose_spmm(const TensorDesc& w, size_t n, const CpuInfo& cpu) {
  SpmmChoice choice;
  for (const SpmmUkernel& k : kUkernels) {
    if (k.format != w.format || k.dtype != w.dtype) continue;  // not a candidate at all; too many to list
    if (std::string why = spmm_decline_reason(k, w, n, cpu); !why.empty()) {
      choice.declined.push_back(std::string(k.name) + ": " + why);
      continue;
    }
    choice.kernel = &k;
    return choice;
  }
  throw Error(std::string("no spmm kernel for ") + format_name(w.format) + " " + dtype_name(w.dtype) + " n=" + std::to_string(n));
}

const SpmmUkernel* dense_int8_tile_kernel(const TensorDesc& w, size_t n, const CpuInfo& cpu) {
  if (w.format != Format::dense || w.dtype != DType::int8 || n == 0 || n > kDenseInt8TileTokens) return nullptr;
  const SpmmUkernel* k = choose_spmm(w, n, cpu).kernel;
  return k && k->act == ActLayout::s8_padded ? k : nullptr;
}

void spmm(const Tensor& w, const float* x, size_t n, float* y) {
  if (n == 0) return;
  const SpmmChoice choice = choose_spmm(w.desc(), n);
  if (verbose()) log_choice_once(w.desc(), n, choice);
  spmm_run(*choice.kernel, w, x, n, y);
}

}  // namespace lacuna
