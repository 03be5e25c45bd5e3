// Atomic whole-file replacement: write a temp file next to the target, fsync it, rename it over
// the target, fsync the directory.
//
// Readers (and a process restarted after a crash or power loss) see either the old file or the
// complete new one, never a half-written file. This is for files written in one go (checkpoints,
// a rewritten metrics.csv, hparams); it is not an append-only or streaming writer.
#pragma once

#include <cstddef>
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

}  // namespace loom
