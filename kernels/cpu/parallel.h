// One thread budget for the whole process: loom's pool and OpenBLAS share the same count.
//
// parallel_for splits [begin, end) into at most num_threads() contiguous chunks of at least
// `grain` items and runs them on a small pool whose workers sleep on a condition variable
// between jobs (they never spin: on 2 cores a spinning pool slows BLAS down 3x, see
// TOOLCHAIN.md). Nested calls run serially in the caller.
#pragma once

#include <cstdint>
#include <functional>

namespace loom {

// Threads used by loom's kernels and by OpenBLAS. Default: LOOM_NUM_THREADS, else the
// number of cores.
int get_num_threads();
void set_num_threads(int n);

namespace kernels {
// fn(chunk_begin, chunk_end) over a partition of [begin, end).
void parallel_for(int64_t begin, int64_t end, int64_t grain,
                  const std::function<void(int64_t, int64_t)>& fn);
}  // namespace kernels

}  // namespace loom
