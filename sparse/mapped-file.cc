#include "sparse/mapped-file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "sparse/error.h"

namespace lacuna {

MappedFile map_readonly(const std::string& path, bool populate, bool lock) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw IoError(path + ": cannot open: " + std::strerror(errno));
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw IoError(path + ": not a regular file");
  }
  const auto size = static_cast<size_t>(st.st_size);
  if (size == 0) {
    ::close(fd);
    return {};
  }
  void* base = mmap(nullptr, size, PROT_READ, MAP_PRIVATE | (populate ? MAP_POPULATE : 0), fd, 0);
  if (base == MAP_FAILED) {
    const int err = errno;
    ::close(fd);
    throw IoError(path + ": cannot map " + std::to_string(size) + " bytes: " + std::strerror(err));
  }
  if (lock && mlock(base, size) != 0) {
    const int lock_err = errno;
    munmap(base, size);
    ::close(fd);
    throw IoError(path + ": cannot lock " + std::to_string(size) + " bytes in memory: " + std::strerror(lock_err) +
                " (the limit is ulimit -l, RLIMIT_MEMLOCK)");
  }
  return {std::shared_ptr<const void>(base,
                                      [size, fd](const void* p) {
                                        munmap(const_cast<void*>(p), size);
                                        ::close(fd);
                                      }),
          {static_cast<const std::byte*>(base), size},
          fd};
}

}  // namespace lacuna
