#!/usr/bin/python3
"""The PyTorch peer of bench_allreduce's 64 MiB row: torch.distributed.all_reduce (sum) of a
64 MiB f32 tensor between 2 processes on this host over gloo (loopback TCP), per call on rank 0.

  /usr/bin/python3 bench/allreduce_torch.py [--reps 15] [--mib 64]
Prints "all_reduce <mib> MiB median_us <t> min_us <t> algbw_GBps <bytes / median>".
"""
import argparse
import os
import socket
import statistics
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def run(rank, port, a):
    torch.set_num_threads(1)
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    t = torch.zeros(a.mib * (1 << 20) // 4)
    for _ in range(3):
        dist.all_reduce(t)
    times = []
    for _ in range(a.reps):
        t0 = time.perf_counter()
        dist.all_reduce(t)
        times.append(time.perf_counter() - t0)
    if rank == 0:
        med = statistics.median(times)
        print(f"torch {torch.__version__}: all_reduce f32 sum over gloo, 2 processes, {a.reps} calls")
        print(f"all_reduce {a.mib} MiB median_us {med * 1e6:.1f} min_us {min(times) * 1e6:.1f} "
              f"algbw_GBps {t.numel() * 4 / med / 1e9:.3f}")
    dist.destroy_process_group()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--reps", type=int, default=15)
    p.add_argument("--mib", type=int, default=64)
    a = p.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(run, args=(port, a), nprocs=2, join=True)


if __name__ == "__main__":
    main()
