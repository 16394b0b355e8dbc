#pragma once
// A 64-byte aligned buffer that only grows: per-thread staging for
// activations and products, sized by the largest call it has served.
#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <memory>
#include <string>

#include "sparse/error.h"

namespace lacuna::kernels {

class Scratch {
 public:
  void* get(size_t bytes) {
    if (bytes > capacity_) {
      const size_t grown = (std::max(bytes, capacity_ * 2) + 63) / 64 * 64;
      auto* p = static_cast<std::byte*>(std::aligned_alloc(64, grown));
      if (!p) throw Error("out of memory for " + std::to_string(grown) + " bytes of scratch");
      data_.reset(p);
      capacity_ = grown;
    }
    return data_.get();
  }
  // What the last get returned.
  void* data() const { return data_.get(); }

 private:
  struct Free {
    void operator()(std::byte* p) const { std::free(p); }
  };
  std::unique_ptr<std::byte, Free> data_;
  size_t capacity_ = 0;
};

}  // namespace lacuna::kernels
