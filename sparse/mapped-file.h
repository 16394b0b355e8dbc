#pragma once
// A whole file mapped read-only (MAP_PRIVATE), shared by every reader of
// model files. An empty file gives an empty span (mmap refuses length 0).
#include <cstddef>
#include <memory>
#include <span>
#include <string>

namespace lacuna {

struct MappedFile {
  std::shared_ptr<const void> owner;  // unmaps and closes `descriptor` when the last copy goes
  std::span<const std::byte> bytes;
  int descriptor = -1;  // the file, open while `owner` lives (for pread); -1 for an empty file
};

// Throws lacuna::Error naming the path: cannot open, not a regular file,
// cannot map, cannot lock. `populate` reads the whole file in now
// (MAP_POPULATE), so that later reads never stop on a page fault; `lock`
// also keeps it in RAM (mlock: never paged out; needs RLIMIT_MEMLOCK or CAP_IPC_LOCK).
MappedFile map_readonly(const std::string& path, bool populate = false, bool lock = false);

}  // namespace lacuna
