// `lacuna selftest`: the storage and kernel layers end to end. Makes a
// set of pruned weight matrices in every format, writes them to a .lacuna
// file, reads the file back through the validating reader, runs every tensor
// through the dispatched kernel and checks it against a naive dense product.
#include <chrono>
#include <cmath>
#include <filesystem>
#include <random>

#include <nlohmann/json.hpp>

#include "engine/cli/commands.h"
#include "engine/cli/table.h"
#include "kernels/spmm.h"
#include "sparse/convert.h"
#include "sparse/model-file.h"
#include "sparse/prune.h"
#include "sparse/quantize.h"
#include "sparse/stats.h"

namespace lacuna::cli {
namespace {

struct DemoWeight {
  std::string name;
  double sparsity;
  Format format;
  DType dtype;
};

std::vector<DemoWeight> demo_weights() {
  std::vector<DemoWeight> out;
  for (double s : {0.0, 0.5, 0.7, 0.9}) {
    const std::string pct = std::to_string(static_cast<int>(s * 100));
    for (Format f : kAllFormats) out.push_back({"s" + pct + "." + format_name(f) + ".bf16", s, f, DType::bf16});
    out.push_back({"s" + pct + ".bitmap.int8", s, Format::bitmap, DType::int8});
  }
  return out;
}

// Largest |got - want| over the largest |want|, against a double-precision
// product of the dequantised weights.
double relative_error(const Tensor& w, const std::vector<float>& x, size_t n, const std::vector<float>& y) {
  const std::vector<float> wd = dequantize(w);
  const size_t rows = w.desc().rows(), cols = w.desc().cols();
  double max_err = 0, max_ref = 0;
  for (size_t i = 0; i < n; ++i)
    for (size_t r = 0; r < rows; ++r) {
      double ref = 0;
      for (size_t c = 0; c < cols; ++c) ref += double{x[i * cols + c]} * wd[r * cols + c];
      max_err = std::max(max_err, std::fabs(ref - y[i * rows + r]));
      max_ref = std::max(max_ref, std::fabs(ref));
    }
  return max_ref > 0 ? max_err / max_ref : max_err;
}

int run_demo(const std::string& out_path, size_t rows, size_t cols, size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::printf("lacuna demo: %zux%zu weights, batch %zu, seed %llu -> %s\n\n", rows, cols, n, static_cast<unsigned long long>(seed), out_path.c_str());

  const auto weights = demo_weights();
  {
    const nlohmann::json meta = {{"kind", "lacuna-demo"}, {"rows", rows}, {"cols", cols}, {"seed", seed}};
    ModelFileWriter writer(out_path, meta.dump());
    std::vector<float> w(rows * cols);
    for (const DemoWeight& dw : weights) {
      for (float& v : w) v = normal(rng);
      // Block-sparse storage pays off only on block-pruned weights.
      if (dw.format == Format::bsr)
        prune_blocks(w.data(), rows, cols, 16, 1, dw.sparsity);
      else
        prune_magnitude(w.data(), rows, cols, dw.sparsity, PruneScope::per_row);
      writer.add(dw.name, pack(quantize_matrix(w.data(), rows, cols, dw.dtype), dw.format, BlockShape{16, 1}));
    }
    writer.finish();
  }

  if (int rc = print_model_info(out_path, true); rc != 0) return rc;

  std::printf("\nsparse products y = x * W^T, checked against a naive dense product:\n");
  const ModelFile file = ModelFile::open(out_path);
  std::vector<float> x(n * cols), y(n * rows);
  for (float& v : x) v = normal(rng) * 50.0f;
  Table table({"tensor", "sparsity", "x vs bf16", "kernel", "activations", "us/product", "rel.error", "tolerance"});
  bool all_ok = true;
  for (const TensorEntry& e : file.tensors()) {
    const SpmmUkernel& kernel = *choose_spmm(e.tensor.desc(), n).kernel;
    const auto start = std::chrono::steady_clock::now();
    spmm(e.tensor, x.data(), n, y.data());
    const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count();
    const double err = relative_error(e.tensor, x, n, y);
    // f32 accumulation error, plus what storing the activations in the kernel's layout may cost.
    const double tolerance = 1e-4 + 16.0 * act_layout_rounding(kernel.act);
    all_ok = all_ok && err < tolerance;
    const TensorStats s = tensor_stats(e.tensor);
    table.add({e.name, fixed(100.0 * s.sparsity(), 1) + "%", fixed(s.ratio_vs_dense_bf16(), 2), kernel.name, act_layout_name(kernel.act),
               fixed(us, 0), fixed(err, 6), fixed(tolerance, 6)});
  }
  table.print();
  std::printf("\n%s\n", all_ok ? "every kernel matches the dense product within its tolerance" : "MISMATCH: a kernel disagrees with the dense product");
  return all_ok ? 0 : 1;
}

}  // namespace

void add_selftest_command(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("selftest", "Make, store, read back and run a small set of pruned matrices in every format");
  auto out = std::make_shared<std::string>((std::filesystem::temp_directory_path() / "lacuna-demo.lacuna").string());
  auto rows = std::make_shared<size_t>(300), cols = std::make_shared<size_t>(1000), n = std::make_shared<size_t>(4);
  auto seed = std::make_shared<uint64_t>(42);
  cmd->add_option("-o,--out", *out, "Where to write the demo .lacuna file")->capture_default_str();
  cmd->add_option("--rows", *rows, "Output rows of each matrix")->check(CLI::Range(1, 1 << 16))->capture_default_str();
  cmd->add_option("--cols", *cols, "Input columns of each matrix")->check(CLI::Range(1, 1 << 16))->capture_default_str();
  cmd->add_option("-n,--batch", *n, "Activation rows")->check(CLI::Range(1, 4096))->capture_default_str();
  cmd->add_option("--seed", *seed, "Random seed")->capture_default_str();
  cmd->callback([=, &exit_code] { exit_code = run_demo(*out, *rows, *cols, *n, *seed); });
}

}  // namespace lacuna::cli
