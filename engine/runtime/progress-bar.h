#pragma once
// A progress bar on stderr for long runs (batch jobs, perplexity): redrawn at
// most every 100 ms and at the end, only when stderr is a terminal.
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace lacuna {

class ProgressBar {
 public:
  ProgressBar(bool enabled, int64_t total, std::string unit) : enabled_(enabled && isatty(STDERR_FILENO)), total_(total), unit_(std::move(unit)) {}
  // `detail` follows the count, e.g. "3 failed, 41.2 tokens/s".
  void update(int64_t done, const std::string& detail) {
    if (!enabled_) return;
    const auto now = std::chrono::steady_clock::now();
    if (done < total_ && now - last_ < std::chrono::milliseconds(100)) return;
    last_ = now;
    const int64_t width = 30, filled = total_ > 0 ? width * std::min(done, total_) / total_ : width;
    std::fprintf(stderr, "\r[%s%s] %lld/%lld %s, %s ", std::string(static_cast<size_t>(filled), '#').c_str(),
                 std::string(static_cast<size_t>(width - filled), '.').c_str(), static_cast<long long>(done), static_cast<long long>(total_),
                 unit_.c_str(), detail.c_str());
    if (done >= total_) std::fprintf(stderr, "\n");
  }

 private:
  bool enabled_;
  int64_t total_;
  std::string unit_;
  std::chrono::steady_clock::time_point last_{};
};

}  // namespace lacuna
