#!/usr/bin/python3
"""The PyTorch peer of bench_mlp_step: one f32 training step of an MLP 784-1024-1024-10 at
batch 256 (forward, cross-entropy, backward, SGD step, zero_grad), on 1 and 2 threads.

Same shapes, same optimiser (plain SGD, lr 0.01), same zero_grad (set_to_none). Prints the
median step time per thread count, and the same floor as the C++ bench: 2.449 GFLOP at the
rate of a 1024^3 torch.mm on that thread count (PyTorch's mm goes to the system BLAS).

  /usr/bin/python3 bench/mlp_step_torch.py [--threads 1 2] [--steps 60]
  OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 bench/mlp_step_torch.py   # no spinning OpenMP workers
"""
import argparse
import os
import statistics
import time

import torch

STEP_FLOPS = 2.0 * 256 * (2.0 * (784 * 1024 + 1024 * 1024 + 1024 * 10) + (1024 * 1024 + 1024 * 10))


def mm_rate():
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    for _ in range(3):
        torch.mm(a, b)
    times = []
    for _ in range(15):
        t0 = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t0)
    return 2.0 * 1024 ** 3 / statistics.median(times)


def step_time(steps):
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(784, 1024), torch.nn.ReLU(),
        torch.nn.Linear(1024, 1024), torch.nn.ReLU(),
        torch.nn.Linear(1024, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(256, 784)
    y = torch.randint(0, 10, (256,))

    def step():
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    for _ in range(3):
        step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def set_blas_threads(n):
    import ctypes
    import ctypes.util
    for name in ("libopenblas.so.0", ctypes.util.find_library("openblas"), "libblas.so.3"):
        try:
            lib = ctypes.CDLL(name)
            lib.openblas_set_num_threads(ctypes.c_int(n))
            return
        except (OSError, AttributeError, TypeError):
            continue


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--steps", type=int, default=60)
    args = p.parse_args()
    print(f"torch {torch.__version__}  OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}")
    print(f"{'threads':<8} {'mm GFLOP/s':>12} {'floor ms':>10} {'step ms (med)':>14} {'step/floor':>10}")
    for t in args.threads:
        torch.set_num_threads(t)
        # torch.set_num_threads does not reach OpenBLAS's own pool: set it too, so "1 thread"
        # really is one thread for the GEMMs (otherwise OpenBLAS uses every core).
        set_blas_threads(t)
        rate = mm_rate()
        floor_ms = STEP_FLOPS / rate * 1e3
        ms = step_time(args.steps) * 1e3
        print(f"{t:<8} {rate / 1e9:>12.1f} {floor_ms:>10.2f} {ms:>14.2f} {ms / floor_ms:>10.3f}")


if __name__ == "__main__":
    main()
