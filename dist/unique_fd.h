// UniqueFd: sole owner of a POSIX file descriptor, closed on destruction.
//
// Used by the store (sockets) and the process launcher (pipes) so that every early return or
// exception closes what it opened. It is deliberately not a socket or stream abstraction: it
// only owns the integer and knows how to close it.
#pragma once

#include <unistd.h>

#include <utility>

namespace loom::dist {

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  UniqueFd(UniqueFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) reset(std::exchange(other.fd_, -1));
    return *this;
  }
  ~UniqueFd() { reset(); }

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int release() { return std::exchange(fd_, -1); }
  // Closes the current descriptor (if any) and takes ownership of `fd`. close() errors are
  // ignored on purpose: there is nothing useful to do about them at this point.
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

}  // namespace loom::dist
