#!/usr/bin/python3
"""The PyTorch peer of bench_fabric_setup's BM_setup_mlp: the cost of wrapping a freshly built
MLP 784-1024-1024-10 in DistributedDataParallel on a process group of world size 1 (gloo),
against loom's Fabric::setup(model, optimizer) on one CPU device. Only the wrap is timed; the
model is built before each call. Median over --reps.

  /usr/bin/python3 bench/setup_torch.py [--reps 300]
Prints "setup_mlp median_us <t> min_us <t>".
"""
import argparse
import os
import socket
import statistics
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from ddp_step_torch import make_mlp


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--reps", type=int, default=300)
    a = p.parse_args()
    torch.set_num_threads(1)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    dist.init_process_group("gloo", rank=0, world_size=1)
    times = []
    for i in range(a.reps + 3):
        model = make_mlp()
        t0 = time.perf_counter()
        DDP(model)
        if i >= 3:
            times.append(time.perf_counter() - t0)
    dist.destroy_process_group()
    print(f"torch {torch.__version__}: DDP(mlp) on gloo, world size 1, {a.reps} wraps")
    print(f"setup_mlp median_us {statistics.median(times) * 1e6:.1f} min_us {min(times) * 1e6:.1f}")


if __name__ == "__main__":
    main()
