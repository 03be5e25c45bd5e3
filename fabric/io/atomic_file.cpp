// Atomic whole-file replacement (see atomic_file.h). POSIX only: it relies on rename(2) replacing
// the target atomically within one directory, and on fsync of a directory making that rename
// durable.
#include "fabric/io/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>

#include "tensor/error.h"

namespace loom {
namespace {

std::string os_error(int err) { return std::string(std::strerror(err)); }

[[noreturn]] void fail(const std::string& path, const std::string& step, int err) {
  throw RuntimeError(detail::concat("writing '", path, "' failed while ", step, ": ", os_error(err),
                                    "; check that the directory exists, is writable and has "
                                    "free space (any previous file at that path is unchanged)"));
}

// Removes the temp file unless the rename succeeded, so that no failure path leaves one behind.
class TempFileGuard {
 public:
  explicit TempFileGuard(std::string path) : path_(std::move(path)) {}
  TempFileGuard(const TempFileGuard&) = delete;
  TempFileGuard& operator=(const TempFileGuard&) = delete;
  ~TempFileGuard() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(path_.c_str());
  }
  int& fd() { return fd_; }
  void commit() { committed_ = true; }

 private:
  std::string path_;
  int fd_ = -1;
  bool committed_ = false;
};

void write_all(int fd, const std::byte* data, size_t size, const std::string& path) {
  while (size > 0) {
    // Linux caps one write at about 2 GiB, so large tensors take several calls anyway.
    ssize_t written = ::write(fd, data, size);
    if (written < 0) {
      if (errno == EINTR) continue;
      fail(path, "writing the temp file", errno);
    }
    data += written;
    size -= static_cast<size_t>(written);
  }
}

// A name no other writer (thread or process) picks: pid + a process-wide counter + time.
// Leading dot keeps half-written files out of casual directory listings and globs.
std::string temp_path_for(const std::filesystem::path& target) {
  static std::atomic<uint64_t> counter{0};
  auto now = std::chrono::steady_clock::now().time_since_epoch().count();
  std::string name = detail::concat(".", target.filename().string(), ".tmp-", ::getpid(), "-",
                                    counter.fetch_add(1), "-", now);
  return (target.parent_path() / name).string();
}

void fsync_directory(const std::filesystem::path& dir, const std::string& path) {
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) fail(path, "opening its directory to fsync the rename", errno);
  int rc = ::fsync(dfd);
  int err = errno;
  ::close(dfd);
  // Some filesystems cannot fsync a directory (EINVAL); the rename is then as durable as they
  // allow and there is nothing better to do.
  if (rc != 0 && err != EINVAL) fail(path, "fsyncing its directory after the rename", err);
}

}  // namespace

void write_file_atomically(const std::string& path,
                           const std::vector<std::span<const std::byte>>& pieces) {
  std::filesystem::path target(path);
  if (target.filename().empty())
    throw ValueError(detail::concat("cannot write '", path, "': the path names a directory; ",
                                    "give a file name"));
  std::filesystem::path dir = target.parent_path();
  if (dir.empty()) dir = ".";
  target = dir / target.filename();

  std::string temp_path = temp_path_for(target);
  TempFileGuard guard(temp_path);
  // O_EXCL: never reuse (and so never clobber) a file someone else created under this name.
  guard.fd() = ::open(temp_path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  if (guard.fd() < 0) fail(path, "creating the temp file '" + temp_path + "'", errno);

  for (const auto& piece : pieces) write_all(guard.fd(), piece.data(), piece.size(), path);
  if (::fsync(guard.fd()) != 0) fail(path, "fsyncing the temp file", errno);
  int fd = guard.fd();
  guard.fd() = -1;
  // close() can report a deferred write error (e.g. on NFS), so it is checked like a write.
  if (::close(fd) != 0) fail(path, "closing the temp file", errno);

  if (::rename(temp_path.c_str(), target.c_str()) != 0)
    fail(path, "renaming the temp file over it", errno);
  guard.commit();
  fsync_directory(dir, path);
}

void write_file_atomically(const std::string& path, const std::string& contents) {
  auto bytes = std::as_bytes(std::span<const char>(contents.data(), contents.size()));
  write_file_atomically(path, std::vector<std::span<const std::byte>>{bytes});
}

}  // namespace loom
