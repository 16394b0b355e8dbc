// How fast a decode step can stream weights from the memory that holds them:
// the model file's read-only mapping (4 KiB page-cache pages), a copy in
// ordinary anonymous memory (4 KiB pages), and a copy in weight memory (2 MiB
// aligned, transparent huge pages: sparse/weight-memory.h), read by all
// threads in alternating rounds, so the ratios come from the same minutes.
//   bench-weight-memory FILE [ROUNDS]   (FILE: e.g. a .lacuna model of 2+ GB)
#include <omp.h>
#include <sys/mman.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "bench/common/bandwidth.h"
#include "bench/common/stats.h"
#include "kernels/cpu-features.h"
#include "sparse/error.h"
#include "sparse/mapped-file.h"
#include "sparse/weight-memory.h"

namespace {

std::string first_line(const char* path) {
  std::ifstream f(path);
  std::string line;
  std::getline(f, line);
  return line.empty() ? "unknown" : line;
}

std::string meminfo(const std::string& key) {
  std::ifstream f("/proc/meminfo");
  for (std::string line; std::getline(f, line);)
    if (line.rfind(key + ":", 0) == 0) return line.substr(line.find_first_not_of(' ', key.size() + 1));
  return "unknown";
}

}  // namespace

int main(int argc, char** argv) {
  using namespace lacuna;
  if (argc < 2 || argc > 3) {
    std::fprintf(stderr, "usage: bench-weight-memory FILE [ROUNDS]\n");
    return 2;
  }
  try {
    const int rounds = argc == 3 ? std::atoi(argv[2]) : 7;
    if (rounds < 1) throw Error("ROUNDS must be a positive count");
    const MappedFile file = map_readonly(argv[1], /*populate=*/true);
    const size_t bytes = file.bytes.size();
    if (bytes < (size_t{1} << 30)) std::fprintf(stderr, "warning: %zu bytes may fit in this machine's cache; give a file of 2 GB or more\n", bytes);
    // Plain anonymous memory kept in 4 KiB pages, whatever the THP setting.
    auto* small = static_cast<std::byte*>(mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    if (small == MAP_FAILED) throw Error("cannot map " + std::to_string(bytes) + " bytes");
    madvise(small, bytes, MADV_NOHUGEPAGE);
    std::memcpy(small, file.bytes.data(), bytes);
    const std::shared_ptr<std::byte> huge = allocate_weight_memory(bytes);
    std::memcpy(huge.get(), file.bytes.data(), bytes);

    const CpuInfo& cpu = cpu_info();
    std::printf("machine: %s, %d threads\nfile: %s, %.2f GB, read whole by all threads; %d rounds, each reading the three in turn\n\n",
                cpu.brand.c_str(), omp_get_max_threads(), argv[1], static_cast<double>(bytes) / 1e9, rounds);
    std::vector<double> mapped, pages4k, pages2m, ratio_mapped, ratio_4k;
    for (int r = 0; r < rounds; ++r) {
      const double a = bench::read_seconds(file.bytes.data(), bytes), b = bench::read_seconds(small, bytes), c = bench::read_seconds(huge.get(), bytes);
      mapped.push_back(static_cast<double>(bytes) / a / 1e9);
      pages4k.push_back(static_cast<double>(bytes) / b / 1e9);
      pages2m.push_back(static_cast<double>(bytes) / c / 1e9);
      ratio_mapped.push_back(a / c);
      ratio_4k.push_back(b / c);
    }
    std::printf("%-34s %12s %22s\n", "memory", "GB/s median", "huge pages faster by");
    std::printf("%-34s %12.1f %21.2fx\n", "mapped file (page cache, 4 KiB)", bench::median(mapped), bench::median(ratio_mapped));
    std::printf("%-34s %12.1f %21.2fx\n", "anonymous, 4 KiB pages", bench::median(pages4k), bench::median(ratio_4k));
    std::printf("%-34s %12.1f %22s\n", "weight memory (2 MiB huge pages)", bench::median(pages2m), "(baseline)");
    std::printf("transparent huge pages: %s; AnonHugePages now: %s\n", first_line("/sys/kernel/mm/transparent_hugepage/enabled").c_str(),
                meminfo("AnonHugePages").c_str());
    munmap(small, bytes);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench-weight-memory: %s\n", e.what());
    return 1;
  }
  return 0;
}
