"""Packed attention for the local (SDPA) layer spec: one causal SDPA call per sequence against one call over
the whole row with a block-diagonal causal mask.

    python benchmarks/bench_packed_attention.py

Forward + backward of causal self-attention over one packed row, fp32 on this machine's CPU, 8 query heads
and 2 KV heads of 64 dimensions (GQA), median of 3. Memory is the bytes autograd keeps for backward (the
mask variant also keeps its [T, T] mask; on the math path, its [heads, T, T] scores). Shapes: the toy task
(64 sequences of 24 tokens), 8 rollouts of the ``scaled`` distribution of benchmarks/bench_batching.py,
and rows of 4,096 and 8,192 tokens cut from the ``paper`` distribution scaled by 1/8.
"""

from __future__ import annotations

import random
import statistics
import time

import torch
import torch.nn.functional as F

HEADS, KV_HEADS, HEAD_DIM = 8, 2, 64


def per_sequence(q, k, v, bounds):
    outs = []
    for s, e in zip(bounds[:-1], bounds[1:]):
        outs.append(
            F.scaled_dot_product_attention(q[:, :, s:e], k[:, :, s:e], v[:, :, s:e], is_causal=True, enable_gqa=True)
        )
    return torch.cat(outs, dim=2)


def block_mask(q, k, v, bounds):
    total = bounds[-1]
    seq = torch.repeat_interleave(torch.arange(len(bounds) - 1), torch.tensor(bounds[1:]) - torch.tensor(bounds[:-1]))
    mask = (seq[:, None] == seq[None, :]) & torch.ones(total, total, dtype=torch.bool).tril()
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)


def measure(fn, lengths):
    bounds = [0]
    for n in lengths:
        bounds.append(bounds[-1] + n)
    g = torch.Generator().manual_seed(0)
    times, saved = [], 0
    for _ in range(3):
        q = torch.randn(1, HEADS, bounds[-1], HEAD_DIM, generator=g, requires_grad=True)
        k = torch.randn(1, KV_HEADS, bounds[-1], HEAD_DIM, generator=g, requires_grad=True)
        v = torch.randn(1, KV_HEADS, bounds[-1], HEAD_DIM, generator=g, requires_grad=True)
        inputs = {t.untyped_storage().data_ptr() for t in (q, k, v)}
        storages: dict[int, int] = {}

        def pack(t, inputs=inputs, storages=storages):
            if t.untyped_storage().data_ptr() not in inputs:
                storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        start = time.perf_counter()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = fn(q, k, v, bounds)
        out.sum().backward()
        times.append(time.perf_counter() - start)
        saved = sum(storages.values())
    return statistics.median(times), saved, out


def paper_row(tokens: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    row = []
    while sum(row) < tokens:
        row.append(min(32 + round(rng.lognormvariate(5.23, 0.9)), 1024))  # (250 + 1500-median) / 8, cap 9216/8
    row[-1] -= sum(row) - tokens
    return [n for n in row if n > 0]


def main() -> None:
    rng = random.Random(0)
    shapes = {
        "toy (64 x 24)": [24] * 64,
        "scaled (8 rollouts)": [
            min(max(8, round(rng.gauss(24, 6))) + round(rng.lognormvariate(4.16, 0.9)), 700) for _ in range(8)
        ],
        "paper / 8 (4096)": paper_row(4096, 1),
        "paper / 8 (8192)": paper_row(8192, 2),
    }
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32 CPU\n")
    print(
        "| row | sequences | tokens | per-sequence s | mask s | mask / per-sequence time | per-sequence MB kept "
        "| mask MB kept |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, lengths in shapes.items():
        t_seq, m_seq, a = measure(per_sequence, lengths)
        t_mask, m_mask, b = measure(block_mask, lengths)
        assert torch.allclose(a, b, atol=1e-5), name  # the same attention
        print(
            f"| {name} | {len(lengths)} | {sum(lengths)} | {t_seq:.3f} | {t_mask:.3f} | {t_mask / t_seq:.2f} "
            f"| {m_seq / 1e6:.1f} | {m_mask / 1e6:.1f} |"
        )


if __name__ == "__main__":
    main()
