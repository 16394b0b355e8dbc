// `lacuna info FILE`: what a .lacuna file holds, tensor by tensor.
#include <nlohmann/json.hpp>

#include "engine/cli/commands.h"
#include "engine/cli/table.h"
#include "sparse/model-file.h"
#include "sparse/stats.h"

namespace lacuna::cli {

int print_model_info(const std::string& path, bool verify_checksums) {
  const ModelFile file = ModelFile::open(path, OpenOptions{.verify_checksums = verify_checksums});
  std::printf("%s: .lacuna format version %u, %s, %zu tensors, tokenizer %s\n", path.c_str(), file.version(),
              human_bytes(static_cast<double>(file.file_bytes())).c_str(), file.tensors().size(),
              file.tokenizer().empty() ? "none" : human_bytes(static_cast<double>(file.tokenizer().size())).c_str());
  const auto meta = nlohmann::json::parse(file.metadata(), nullptr, /*allow_exceptions=*/false);
  if (meta.is_discarded())
    std::printf("metadata: %zu bytes, not JSON\n", file.metadata().size());
  else
    std::printf("metadata: %s\n", meta.dump().c_str());

  Table table({"tensor", "format", "dtype", "shape", "sparsity", "bytes", "bytes/weight", "x vs bf16"});
  TensorStats total;
  for (const TensorEntry& e : file.tensors()) {
    const TensorDesc& d = e.tensor.desc();
    const TensorStats s = tensor_stats(e.tensor);
    total.elements += s.elements;
    total.nonzeros += s.nonzeros;
    total.payload_bytes += s.payload_bytes;
    std::string format = format_name(d.format);
    if (d.format == Format::bsr) format += " " + std::to_string(d.block_rows) + "x" + std::to_string(d.block_cols);
    table.add({e.name, format, dtype_name(d.dtype), d.shape_string(), fixed(100.0 * s.sparsity(), 1) + "%",
               human_bytes(static_cast<double>(s.payload_bytes)), fixed(s.bytes_per_weight(), 3), fixed(s.ratio_vs_dense_bf16(), 2)});
  }
  table.add({"total", "", "", std::to_string(total.elements) + " weights", fixed(100.0 * total.sparsity(), 1) + "%",
             human_bytes(static_cast<double>(total.payload_bytes)), fixed(total.bytes_per_weight(), 3), fixed(total.ratio_vs_dense_bf16(), 2)});
  table.print();
  return 0;
}

void add_info_command(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("info", "Validate a .lacuna file and list its tensors");
  auto path = std::make_shared<std::string>();
  auto no_verify = std::make_shared<bool>(false);
  cmd->add_option("file", *path, "The .lacuna model file")->required();
  cmd->add_flag("--no-verify", *no_verify, "Skip payload checksums (structure is still checked)");
  cmd->callback([=, &exit_code] { exit_code = print_model_info(*path, !*no_verify); });
}

}  // namespace lacuna::cli
