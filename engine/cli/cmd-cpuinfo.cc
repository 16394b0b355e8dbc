// `lacuna cpuinfo`: detected features, the ISA cap, the topology, and which
// kernel each format x dtype dispatches to (with the reasons others declined).
#include <hwloc.h>

#include "engine/cli/commands.h"
#include "engine/cli/table.h"
#include "kernels/instruction-rates.h"
#include "kernels/spmm.h"

namespace lacuna::cli {
namespace {

void print_topology() {
  hwloc_topology_t topo;
  if (hwloc_topology_init(&topo) != 0 || hwloc_topology_load(topo) != 0) {
    std::printf("topology: hwloc could not load the topology\n");
    return;
  }
  const int cores = hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_CORE);
  const int pus = hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_PU);
  const int packages = hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_PACKAGE);
  const int numa = hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_NUMANODE);
  std::printf("topology: %d package(s), %d NUMA node(s), %d core(s), %d hardware thread(s)\n", packages, numa, cores, pus);
  for (int i = 0; i < numa; ++i) {
    hwloc_obj_t node = hwloc_get_obj_by_type(topo, HWLOC_OBJ_NUMANODE, static_cast<unsigned>(i));
    char cpus[256];
    hwloc_bitmap_list_snprintf(cpus, sizeof cpus, node->cpuset);
    std::printf("  node %u: cpus %s, %s\n", node->os_index, cpus, human_bytes(static_cast<double>(node->attr->numanode.local_memory)).c_str());
  }
  if (hwloc_obj_t l3 = hwloc_get_obj_by_type(topo, HWLOC_OBJ_L3CACHE, 0))
    std::printf("  L3: %s per cache\n", human_bytes(static_cast<double>(l3->attr->cache.size)).c_str());
  hwloc_topology_destroy(topo);
}

int run_cpuinfo(size_t n) {
  const CpuInfo& cpu = cpu_info();
  std::printf("cpu: %s\n", cpu.brand.c_str());
  std::printf("reported: %s\n", cpu_feature_list(cpu.reported).c_str());
  std::printf("usable:   %s\n", cpu_feature_list(cpu.usable).c_str());
  std::printf("isa level: %s (cap %s%s)\n", isa_level_name(cpu.level()), isa_level_name(cpu.cap), cpu.capped_by_env ? ", from LACUNA_MAX_ISA" : "");
  for (const auto& note : cpu.notes) std::printf("note: %s\n", note.c_str());
  if (const double ratio = bf16_dot_vs_fma(); ratio > 0)
    std::printf("VDPBF16PS multiply-adds per second vs f32 FMAs: %.2fx (%s)\n", ratio,
                f32_outruns_bf16_dot() ? "below 1: bf16 bitmap weights expanded for oneDNN are widened to f32" : "bf16 bitmap weights are expanded for oneDNN in bf16");
  else
    std::printf("VDPBF16PS: not usable; bf16 bitmap weights expanded for oneDNN are widened to f32\n");
  print_topology();
  std::printf("\ndispatch at batch n=%zu:\n", n);
  Table table({"format", "dtype", "kernel", "declined"});
  for (Format f : kAllFormats)
    for (DType t : kAllDTypes) {
      TensorDesc d = TensorDesc::matrix(f, t, 4096, 4096);
      if (f == Format::bsr) d.block_rows = 16;  // the block shape the fast BSR kernels take
      const SpmmChoice c = choose_spmm(d, n);
      std::string declined;
      for (const auto& why : c.declined) declined += (declined.empty() ? "" : "; ") + why;
      table.add({format_name(f), dtype_name(t), c.kernel->name, declined.empty() ? "-" : declined});
    }
  table.print();
  return 0;
}

}  // namespace

void add_cpuinfo_command(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("cpuinfo", "Show CPU features, topology and kernel dispatch");
  auto n = std::make_shared<size_t>(1);
  cmd->add_option("-n,--batch", *n, "Batch size to show dispatch for")->check(CLI::Range(size_t{1}, size_t{1} << 20));
  cmd->callback([=, &exit_code] { exit_code = run_cpuinfo(*n); });
}

}  // namespace lacuna::cli
