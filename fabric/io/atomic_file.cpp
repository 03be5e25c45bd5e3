// Atomic whole-file replacement (see atomic_file.h). POSIX only: it relies on rename(2) replacing
// the target atomically within one directory, and on fsync of a directory making that rename
// durable.
#include "fabric/io/atomic_file.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string_view>

#include "fabric/io/crc32c.h"
#include "core/error.h"

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

// 8 lowercase hex digits.
std::string hex8(uint32_t v) {
  char out[9];
  std::snprintf(out, sizeof out, "%08x", v);
  return out;
}

// This machine and PID namespace, as 8 hex digits (see "Temp files" in atomic_file.h): pids
// of temp files are only compared where they name the same processes.
const std::string& host_tag() {
  static const std::string tag = [] {
    char host[256] = {};
    ::gethostname(host, sizeof host - 1);
    char ns[128] = {};
    ssize_t n = ::readlink("/proc/self/ns/pid", ns, sizeof ns - 1);
    std::string id = std::string(host) + "\n" + (n > 0 ? std::string(ns, size_t(n)) : "");
    return hex8(crc32c(id.data(), id.size()));
  }();
  return tag;
}

// Distinct per call and per process: time, pid and a counter through a 64-bit mixer
// (splitmix64's finaliser). Not cryptographic; O_EXCL catches the improbable collision.
uint64_t random_u64() {
  static std::atomic<uint64_t> counter{0};
  uint64_t x = uint64_t(std::chrono::system_clock::now().time_since_epoch().count()) ^
               (uint64_t(::getpid()) << 40) ^ (counter.fetch_add(1) * 0x9E3779B97F4A7C15ull);
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

bool all_of_class(std::string_view s, size_t size, bool (*pred)(char)) {
  if (s.size() != size) return false;
  for (char c : s)
    if (!pred(c)) return false;
  return true;
}
bool is_lower_hex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

// The pid of `filename` when it is a temp file of `target_name` written on this host, else 0.
long temp_file_pid(std::string_view filename, const std::string& target_name) {
  const std::string prefix = target_name + ".tmp.";
  if (!filename.starts_with(prefix)) return 0;
  std::string_view rest = filename.substr(prefix.size());  // <pid>.<host>.<random>
  size_t dot1 = rest.find('.');
  if (dot1 == std::string_view::npos) return 0;
  size_t dot2 = rest.find('.', dot1 + 1);
  if (dot2 == std::string_view::npos) return 0;
  std::string_view pid = rest.substr(0, dot1);
  std::string_view host = rest.substr(dot1 + 1, dot2 - dot1 - 1);
  std::string_view random = rest.substr(dot2 + 1);
  if (pid.empty() || pid.size() > 9 || host != host_tag() ||
      !all_of_class(random, 16, is_lower_hex))
    return 0;
  long value = 0;
  for (char c : pid) {
    if (c < '0' || c > '9') return 0;
    value = value * 10 + (c - '0');
  }
  return value;  // 0 (never a writer's pid) when the digits were all zeros
}

// The target as write_file_atomically() uses it: an explicit directory plus a file name.
std::filesystem::path normalised_target(const std::string& path) {
  std::filesystem::path target(path);
  if (target.filename().empty())
    throw ValueError(detail::concat("cannot write '", path, "': the path names a directory; ",
                                    "give a file name"));
  std::filesystem::path dir = target.parent_path();
  if (dir.empty()) dir = ".";
  return dir / target.filename();
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

std::string atomic_temp_path(const std::string& path, long pid, uint64_t random) {
  std::filesystem::path target = normalised_target(path);
  char suffix[17];
  std::snprintf(suffix, sizeof suffix, "%016llx", static_cast<unsigned long long>(random));
  std::string name =
      detail::concat(target.filename().string(), ".tmp.", pid, ".", host_tag(), ".", suffix);
  return (target.parent_path() / name).string();
}

int remove_stale_temp_files(const std::string& path) {
  std::filesystem::path target = normalised_target(path);
  const std::string target_name = target.filename().string();
  const long self = ::getpid();
  std::vector<std::filesystem::path> stale;
  std::error_code ec;
  for (std::filesystem::directory_iterator it(target.parent_path(), ec), end; !ec && it != end;
       it.increment(ec)) {
    long pid = temp_file_pid(it->path().filename().string(), target_name);
    // pid > 0 always: kill(0, ...) and kill(-n, ...) address process groups, not a process.
    if (pid <= 0 || pid == self) continue;
    if (::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) stale.push_back(it->path());
  }
  int removed = 0;
  for (const auto& p : stale)
    if (::unlink(p.c_str()) == 0) ++removed;
  return removed;
}

void write_file_atomically(const std::string& path,
                           const std::vector<std::span<const std::byte>>& pieces) {
  std::filesystem::path target = normalised_target(path);
  std::filesystem::path dir = target.parent_path();
  remove_stale_temp_files(path);  // before writing: the space they hold may be needed now

  std::string temp_path;
  int fd = -1;
  // O_EXCL: never reuse (and so never clobber) a file someone else created under this name.
  for (int attempt = 0; fd < 0 && attempt < 8; ++attempt) {
    temp_path = atomic_temp_path(path, ::getpid(), random_u64());
    fd = ::open(temp_path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0 && errno != EEXIST) break;
  }
  if (fd < 0) fail(path, "creating the temp file '" + temp_path + "'", errno);
  TempFileGuard guard(temp_path);
  guard.fd() = fd;

  for (const auto& piece : pieces) write_all(guard.fd(), piece.data(), piece.size(), path);
  if (::fsync(guard.fd()) != 0) fail(path, "fsyncing the temp file", errno);
  fd = guard.fd();
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
