#!/usr/bin/python3
"""The PyTorch peer of bench_gpt_step: one training step of the same byte-level GPT (nn/gpt)
in 32-true or bf16-mixed: forward, cross-entropy, backward, AdamW step, zero_grad.

The model is loom's nn/gpt written in PyTorch: token and position embeddings, pre-norm blocks
(x + attn(ln1(x)), then + mlp(ln2(x))), attention through one qkv Linear(C, 3C) and a proj
Linear(C, C) with a causal mask filled with -inf before the softmax, MLP C -> 4C -> GELU(tanh)
-> C, a final LayerNorm and an lm_head without bias; N(0, 0.02) weights, zero biases. AdamW
lr 1e-3 with its default weight decay 1e-2, zero_grad(set_to_none=True). bf16-mixed is
torch.autocast("cpu", torch.bfloat16) around forward and loss, as Fabric's precision plugin.

  /usr/bin/python3 bench/gpt_step_torch.py [--precision 32-true|bf16-mixed] [--threads 2]
                                           [--steps 10] [--warmup 2]
Prints "gpt_step <precision> threads <n> median_ms <t> min_ms <t>".
"""
import argparse
import contextlib
import math
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from mlp_step_torch import set_blas_threads


class CausalSelfAttention(nn.Module):
    def __init__(self, c, h):
        super().__init__()
        self.h = h
        self.qkv = nn.Linear(c, 3 * c)
        self.proj = nn.Linear(c, c)

    def forward(self, x):
        B, T, C = x.shape
        D = C // self.h
        q, k, v = self.qkv(x).split(C, dim=-1)
        q, k, v = (t.view(B, T, self.h, D).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(D))
        future = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)
        att = att.masked_fill(future, float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
        return self.proj(y)


class Block(nn.Module):
    def __init__(self, c, h):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(c), nn.LayerNorm(c)
        self.attn = CausalSelfAttention(c, h)
        self.fc, self.fc_proj = nn.Linear(c, 4 * c), nn.Linear(4 * c, c)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.fc_proj(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, vocab, block_size, layers, heads, c):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, c), nn.Embedding(block_size, c)
        self.blocks = nn.ModuleList(Block(c, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(c)
        self.lm_head = nn.Linear(c, vocab, bias=False)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, 0.0, 0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, idx):
        T = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(T))
        for b in self.blocks:
            x = b(x)
        return self.lm_head(self.ln_f(x))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--precision", default="32-true", choices=["32-true", "bf16-mixed"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--d", type=int, default=256)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    set_blas_threads(a.threads)
    torch.manual_seed(0)
    model = GPT(256, a.seq, a.layers, 4, a.d)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    idx = torch.randint(0, 256, (a.batch, a.seq + 1))
    x, y = idx[:, :-1].contiguous(), idx[:, 1:].reshape(-1)

    def autocast():
        if a.precision == "bf16-mixed":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def step():
        with autocast():
            loss = F.cross_entropy(model(x).reshape(-1, 256).float(), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    for _ in range(a.warmup):
        step()
    times, loss = [], 0.0
    for _ in range(a.steps):
        t0 = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - t0)
    params = sum(q.numel() for q in model.parameters())
    print(f"torch {torch.__version__}: GPT {a.layers} layers, d {a.d}, T {a.seq}, B {a.batch}, "
          f"{params / 1e6:.2f} M parameters, AdamW, {a.precision}, {torch.get_num_threads()} "
          f"thread(s), {a.steps} steps (last loss {loss:.4f})")
    print(f"gpt_step {a.precision} threads {torch.get_num_threads()} median_ms "
          f"{statistics.median(times) * 1e3:.3f} min_ms {min(times) * 1e3:.3f}")


if __name__ == "__main__":
    main()
