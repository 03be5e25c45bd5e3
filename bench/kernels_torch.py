#!/usr/bin/python3
"""The PyTorch peers of the physical references bench/compare.sh reports: a 1024^3 f32
torch.mm (GFLOP/s; bench_gemm's BM_matmul/f32 in loom, cblas_sgemm called directly the
reference; one-thread rates by the CPU time of the calling thread, as bench_gemm's) and torch.add(a, b, out=c) on 16 Mi f32 elements (GB/s counting 3 x 64 MiB moved;
bench_elementwise's BM_add_f32_kernel in loom, memcpy the reference), on --threads threads.

  /usr/bin/python3 bench/kernels_torch.py [--threads 1] [--reps 15]
Prints "mm_f32 threads <n> gflops <r>" and "add_f32 threads <n> gbps <r>" (medians).
"""
import argparse
import statistics
import time

import torch

from mlp_step_torch import set_blas_threads


def median_seconds(fn, reps, clock=time.perf_counter):
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--reps", type=int, default=15)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    set_blas_threads(a.threads)
    n = 1024
    x, y, z = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
    # One thread: rated by the CPU time of this thread, as bench_gemm rates its one-thread runs
    # (on a shared machine the wall clock also counts other processes' turns on the core).
    clock = time.thread_time if a.threads == 1 else time.perf_counter
    s = median_seconds(lambda: torch.mm(x, y, out=z), a.reps, clock)
    print(f"mm_f32 threads {a.threads} gflops {2.0 * n ** 3 / s / 1e9:.1f}")
    m = 16 << 20
    u, v, w = torch.randn(m), torch.randn(m), torch.empty(m)
    s = median_seconds(lambda: torch.add(u, v, out=w), a.reps)
    print(f"add_f32 threads {a.threads} gbps {3.0 * m * 4 / s / 1e9:.2f}")


if __name__ == "__main__":
    main()
