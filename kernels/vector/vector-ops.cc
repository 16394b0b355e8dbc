#include "kernels/vector/vector-ops-isa.h"

namespace lacuna::kernels {

const VectorOps& vector_ops_for(const CpuInfo& cpu) {
  if (cpu.features & kAvx512F) return vector_ops_avx512;
  if ((cpu.features & (kAvx2 | kFma | kF16c)) == (kAvx2 | kFma | kF16c)) return vector_ops_avx2;
  return vector_ops_sse2;
}

const VectorOps& vector_ops() {
  static const VectorOps& chosen = vector_ops_for(cpu_info());
  return chosen;
}

}  // namespace lacuna::kernels
