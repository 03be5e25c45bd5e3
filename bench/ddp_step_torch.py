"""PyTorch's DDP step time on the work bench_ddp.cpp measures: the peer for loom's overhead.

2 processes (torch.multiprocessing.spawn) x 1 thread each, Gloo over loopback, batch 128
per rank, SGD lr 0.01, cross-entropy; DDP with its defaults (25 MiB buckets, 1 MiB first
bucket). Models:
  mlp:  784-1024-1024-10 with ReLU
  deep: 100 Linear(128, 128) layers with ReLU between, He-normal weights, zero biases
"ddp" steps synchronise gradients; "nosync" steps run inside model.no_sync() (same
processes, same contention, no all-reduce). Overhead = ddp - nosync (medians on rank 0). The
modes alternate in rounds, as in bench_ddp. Also: DDP construction (its parameter broadcast)
against a raw dist.broadcast of the same bytes.

    python3 bench/ddp_step_torch.py [--rounds 8] [--steps 5] [--warmup 5] [--setups 9]
"""
import argparse
import os
import socket
import statistics
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP


def make_mlp():
    return nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(),
                         nn.Linear(1024, 10))


def make_deep(layers=100, width=128):
    mods = []
    for i in range(layers):
        lin = nn.Linear(width, width)
        with torch.no_grad():
            nn.init.normal_(lin.weight, 0.0, (2.0 / width) ** 0.5)
            nn.init.zeros_(lin.bias)
        mods.append(lin)
        if i + 1 < layers:
            mods.append(nn.ReLU())
    return nn.Sequential(*mods)


def time_steps(model, features, classes, args):
    ddp = DDP(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.01)
    x = torch.randn(128, features)
    y = torch.randint(0, classes, (128,))

    def step():
        loss = nn.functional.cross_entropy(ddp(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def timed(sync, out, n):
        for _ in range(n):
            t = time.perf_counter()
            if sync:
                step()
            else:
                with ddp.no_sync():
                    step()
            out.append(time.perf_counter() - t)

    scratch = []
    timed(True, scratch, args.warmup)
    timed(False, scratch, args.warmup)
    ddp_t, nosync_t = [], []
    for _ in range(args.rounds):
        dist.barrier()
        timed(True, ddp_t, args.steps)
        dist.barrier()
        timed(False, nosync_t, args.steps)
    return ddp_t, nosync_t


def report(name, times):
    d, n = statistics.median(times[0]), statistics.median(times[1])
    print(f"{name:<6} ddp {d * 1e3:8.2f} ms (min {min(times[0]) * 1e3:7.2f})  nosync {n * 1e3:8.2f} ms "
          f"(min {min(times[1]) * 1e3:7.2f})  overhead {(d - n) * 1e3:+7.2f} ms/step ({100 * (d - n) / n:+.0f}%)")


def run(rank, world, port, args):
    torch.set_num_threads(args.threads)
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(1234)
    mlp = time_steps(make_mlp(), 784, 10, args)
    deep = time_steps(make_deep(), 128, 128, args)

    setup_s, bcast_s = [], []
    numel = sum(p.numel() for p in make_mlp().parameters())
    flat = torch.zeros(numel)
    dist.broadcast(flat, 0)
    for _ in range(args.setups):
        model = make_mlp()
        dist.barrier()
        t = time.perf_counter()
        DDP(model)
        setup_s.append(time.perf_counter() - t)
        dist.barrier()
        t = time.perf_counter()
        dist.broadcast(flat, 0)
        bcast_s.append(time.perf_counter() - t)

    if rank == 0:
        print(f"PyTorch {torch.__version__} DDP on CPU (gloo): 2 ranks x {args.threads} thread(s), batch 128 "
              f"per rank, {args.rounds} rounds x {args.steps} steps per mode; medians per step on rank 0")
        report("mlp", mlp)
        report("deep", deep)
        s, b = statistics.median(setup_s), statistics.median(bcast_s)
        print(f"setup  DDP(mlp) {s * 1e3:.2f} ms (min {min(setup_s) * 1e3:.2f})  raw broadcast of "
              f"{numel * 4 / 1e6:.1f} MB {b * 1e3:.2f} ms (min {min(bcast_s) * 1e3:.2f})  ratio {s / b:.2f}")
    dist.destroy_process_group()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--setups", type=int, default=9)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(run, args=(2, port, args), nprocs=2, join=True)


if __name__ == "__main__":
    main()
