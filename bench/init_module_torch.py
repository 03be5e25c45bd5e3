#!/usr/bin/python3
"""The PyTorch peer of bench_fabric_setup's big-model part: build 15 x nn.Linear(8192, 8192)
(1.007e9 parameters, 4.03 GB of f32) on the meta device and normally, and time both.

PyTorch 1.13 has no `with torch.device("meta")`, so the meta stack passes device="meta" to
each layer (what init_module(empty_init=True) achieves in loom without touching layers).
Bytes: the parameters' nbytes, and the growth of the process's peak RSS.

  /usr/bin/python3 bench/init_module_torch.py              # meta, then normal (~4 GB, seconds)
  /usr/bin/python3 bench/init_module_torch.py --skip_normal
  /usr/bin/python3 bench/init_module_torch.py --meta_reps 0   # the normal build alone
  /usr/bin/python3 bench/init_module_torch.py --layers 2 --width 4096   # a smaller stack
"""
import argparse
import resource
import time

import torch

LAYERS, WIDTH = 15, 8192


def build(device, layers=LAYERS, width=WIDTH):
    return torch.nn.Sequential(*[torch.nn.Linear(width, width, device=device) for _ in range(layers)])


def peak_rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--skip_normal", action="store_true")
    p.add_argument("--meta_reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--layers", type=int, default=LAYERS)
    p.add_argument("--width", type=int, default=WIDTH)
    args = p.parse_args()
    shape = (args.layers, args.width)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"{args.layers} x Linear({args.width}, {args.width})")
    print(f"{'construction':<16} {'time':>14} {'param bytes':>16} {'peak RSS growth':>16} {'params':>14}")
    if args.meta_reps > 0:
        build("meta", *shape)  # warm-up: first-call costs of the meta path
        meta_rss0 = peak_rss_bytes()
        times = []
        for _ in range(args.meta_reps):
            t0 = time.perf_counter()
            m = build("meta", *shape)
            times.append(time.perf_counter() - t0)
        params = sum(q.numel() for q in m.parameters())
        meta_growth = peak_rss_bytes() - meta_rss0
        print(f"{'meta':<16} {sorted(times)[len(times) // 2] * 1e3:>11.3f} ms {0:>16} {meta_growth:>16} {params:>14}")
    if args.skip_normal:
        return
    rss0 = peak_rss_bytes()
    t0 = time.perf_counter()
    m = build("cpu", *shape)
    s = time.perf_counter() - t0
    nbytes = sum(q.numel() * q.element_size() for q in m.parameters())
    params = sum(q.numel() for q in m.parameters())
    print(f"{'cpu (normal)':<16} {s:>12.3f} s  {nbytes:>16} {peak_rss_bytes() - rss0:>16} {params:>14}")


if __name__ == "__main__":
    main()
