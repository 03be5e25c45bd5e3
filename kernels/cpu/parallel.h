// One thread budget for the whole process: loom's pool and OpenBLAS share the same count.
//
// parallel_for splits [begin, end) into at most num_threads() contiguous chunks of at least
// `grain` items (kMemoryBoundGrain for streaming kernels) and runs them on a small pool whose
// workers sleep on a condition variable between jobs (they never spin: on 2 cores a spinning
// pool slows BLAS down 3x, see docs/design.md "Machines"). Nested calls run serially in the
// caller.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>

namespace loom {

// Threads used by loom's kernels and by OpenBLAS. Default: LOOM_NUM_THREADS, else the
// number of cores. get_num_threads() (and the first parallel kernel) throws the ValueError of
// num_threads_from_env() when LOOM_NUM_THREADS is set to something else than a count.
int get_num_threads();
void set_num_threads(int n);

// LOOM_NUM_THREADS, checked: nullopt when it is unset or empty, the count when it is a
// positive integer (decimal digits only), else loom::ValueError naming the variable, its value
// and what it accepts. parse_num_threads is the check on a given value (nullptr: unset).
std::optional<int> num_threads_from_env();
std::optional<int> parse_num_threads(const char* value);

namespace kernels {
// Elements per parallel chunk, at least, for memory-bound kernels (elementwise, copies,
// reductions). Waking a pool thread costs about 20 us on this VM, and an op over 256K f32
// elements (1 MiB, L2/L3-resident) takes 15-35 us on one core: measured on 2 threads, relu,
// add, relu's backward and a column sum of 256 x 1024 were all 1.1-2.2x SLOWER than on one.
// From about 1M elements the second core pays for itself (add 170 -> 100 us at 1024 x 1024)
// and for DRAM-sized arrays it is worth 1.4x (bench_elementwise, 16M).
inline constexpr int64_t kMemoryBoundGrain = int64_t(1) << 18;

// fn(chunk_begin, chunk_end) over a partition of [begin, end).
void parallel_for(int64_t begin, int64_t end, int64_t grain,
                  const std::function<void(int64_t, int64_t)>& fn);
}  // namespace kernels

}  // namespace loom
