// Whether this machine can give the shared-memory fast path a segment: a POSIX shm object of
// `bytes` whose pages can be reserved (a container may mount no /dev/shm, or a tiny one). The
// fast path falls back to Gloo there, by design; its own tests skip instead of failing.
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <string>

#include "dist/shm_all_reduce.h"

namespace loom::dist {

inline bool shm_usable(size_t bytes = 8 * ShmAllReduce::kSlotBytes) {
  const std::string name = "/loom-probe-" + std::to_string(::getpid());
  int fd = ::shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  if (fd < 0) return false;
  ::shm_unlink(name.c_str());
  bool ok = ::posix_fallocate(fd, 0, off_t(bytes)) == 0;
  ::close(fd);
  return ok;
}

}  // namespace loom::dist

// First statement of a test that needs the fast path on (3 ranks' segment).
#define LOOM_SKIP_WITHOUT_SHM()                                                       \
  if (!::loom::dist::shm_usable())                                                    \
  GTEST_SKIP() << "no usable POSIX shared memory here (/dev/shm missing or too small); " \
                  "the fast path falls back to Gloo"
