// Atomic whole-file replacement: write a temp file next to the target, fsync it, rename it over
// the target, fsync the directory.
//
// Readers (and a process restarted after a crash or power loss) see either the old file or the
// complete new one, never a half-written file. This is for files written in one go (checkpoints,
// a rewritten metrics.csv, hparams); it is not an append-only or streaming writer.
//
// Temp files. The temp file of a write to ".../<name>" is ".../<name>.tmp.<pid>.<host>.<random>":
// <pid> is the writing process (decimal), <host> 8 hex digits naming this machine and PID
// namespace (a CRC-32C of the host name and of the /proc/self/ns/pid link), <random> 16 hex
// digits. A writer killed mid-write (kill -9, OOM killer, power loss) leaves its temp file
// behind, and checkpoints are large, so every write first removes the temp files of the same
// target whose writer is gone: same <host> (a pid means nothing on another machine sharing the
// directory over NFS, or in another PID namespace), a pid other than this process's, and
// kill(pid, 0) failing with ESRCH. A temp file whose writer may still run (kill succeeds or
// fails with EPERM, or another host) is never touched. A dead writer's pid that the OS has
// since given to an unrelated process keeps its temp file until that process exits, which
// errs on the safe side. Removal is best effort: errors are ignored.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace loom {

// Writes the concatenation of `pieces` to `path` atomically (see above). The pieces are taken
// as a list so that large tensors are written straight from their memory, without first being
// copied into one buffer.
//
// On failure throws loom::RuntimeError naming the path, the failing step and the OS error; the
// temp file is removed and an existing file at `path` is left byte-identical. The new file gets
// the permissions an ordinary new file would get (0666 minus the umask).
void write_file_atomically(const std::string& path,
                           const std::vector<std::span<const std::byte>>& pieces);

// Convenience overload for text files.
void write_file_atomically(const std::string& path, const std::string& contents);

// The temp file path a writer with process id `pid` on this machine uses for `path`, with
// `random` as its random part (see "Temp files" above). For tests and for tools that look for
// leftovers.
std::string atomic_temp_path(const std::string& path, long pid, uint64_t random);

// Removes the stale temp files of `path` (see "Temp files" above) and returns how many it
// removed. write_file_atomically() calls it before writing.
int remove_stale_temp_files(const std::string& path);

}  // namespace loom
