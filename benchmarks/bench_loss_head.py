"""Fused vocab-parallel loss head vs the straightforward implementation: time and peak extra memory.

The straightforward head materialises the normalised log-probabilities of the whole shard
(log_softmax), gathers the sampled and the teacher tokens from it, and runs a separate entropy pass; its
backward goes through autograd. The fused head (``tgpo_megatron.losses.token_stats``) computes the same
three statistics chunk by chunk with a hand-written backward. Both compute the TGPO loss
(token-mean of -log π(y) - 0.1 log π(ŷ) - 0.001 H) and its gradient w.r.t. the logits.

    python benchmarks/bench_loss_head.py                         # TP=1 and TP=2 (2 processes), CPU
    python benchmarks/bench_loss_head.py --tokens 8192 --device cuda

Each (variant, TP) runs in its own process(es), so peak memory is measured cleanly: ``ru_maxrss`` on CPU,
``max_memory_allocated`` on GPU, minus what the inputs (logits, ids) already hold. "extra / logits" is that
peak divided by the size of the logits tensor. The gradient w.r.t. the logits is a logits-sized tensor that
the straightforward and the plain fused head both allocate; ``fused_inplace`` writes it into the logits'
own storage (as Megatron's fused cross-entropy does), so its extra memory is the chunk buffers alone.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import torch.distributed as dist


def straightforward(logits, tokens, teacher, vocab_size, group):
    import torch.distributed.nn.functional as dnn

    tp = 1 if group is None else dist.get_world_size(group)
    rank = 0 if group is None else dist.get_rank(group)
    start = rank * logits.shape[-1]
    z = logits.float()
    if vocab_size - start < z.shape[-1]:
        z = z.masked_fill(torch.arange(z.shape[-1], device=z.device) >= vocab_size - start, float("-inf"))
    m = z.max(-1, keepdim=True).values.detach()
    if tp > 1:
        dist.all_reduce(m, op=dist.ReduceOp.MAX, group=group)
    s = torch.exp(z - m).sum(-1, keepdim=True)
    s = dnn.all_reduce(s, group=group) if tp > 1 else s
    logp_all = z - m - torch.log(s)

    def gather(ids):
        local = ids - start
        here = (local >= 0) & (local < z.shape[-1])
        picked = logp_all.gather(-1, local.clamp(0, z.shape[-1] - 1)[:, None])[:, 0] * here
        return dnn.all_reduce(picked, group=group) if tp > 1 else picked

    p = torch.exp(logp_all)
    plogp = torch.where(p > 0, p * logp_all, torch.zeros_like(p)).sum(-1)
    entropy = -(dnn.all_reduce(plogp, group=group) if tp > 1 else plogp)
    return gather(tokens), gather(teacher), entropy


def fused(logits, tokens, teacher, vocab_size, group, inplace_backward=False):
    from tgpo_megatron.losses import token_stats

    (logp, logp_teacher), entropy = token_stats(
        logits, [tokens, teacher], vocab_size=vocab_size, tp_group=group, inplace_backward=inplace_backward
    )
    return logp, logp_teacher, entropy


VARIANTS = {
    "straightforward": straightforward,
    "fused": fused,
    "fused_inplace": lambda *a: fused(*a, inplace_backward=True),
}


def peak_bytes(device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def current_bytes(device) -> int:
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device)
    import psutil

    return psutil.Process().memory_info().rss


def worker(args) -> None:
    """One variant at one TP size: time fwd+bwd, then report peak extra memory (rank 0 writes JSON)."""
    tp = int(os.environ.get("WORLD_SIZE", "1"))
    group = None
    if tp > 1:
        dist.init_process_group("gloo" if args.device == "cpu" else "nccl")
        group = dist.group.WORLD
    rank = 0 if group is None else dist.get_rank()
    device = (
        torch.device(args.device, rank if args.device == "cuda" else 0)
        if args.device == "cuda"
        else torch.device("cpu")
    )
    torch.manual_seed(rank)
    shard = (args.vocab + tp - 1) // tp
    dtype = getattr(torch, args.dtype)
    logits = torch.randn(args.tokens, shard, device=device, dtype=dtype)
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, args.vocab, (args.tokens,), generator=g).to(device)
    teacher = torch.randint(0, args.vocab, (args.tokens,), generator=g).to(device)
    head = VARIANTS[args.variant]

    def step():
        x = logits.detach().requires_grad_()
        logp, logp_teacher, entropy = head(x, tokens, teacher, args.vocab, group)
        loss = (-logp - 0.1 * logp_teacher - 0.001 * entropy).mean()
        loss.backward()
        return x.grad

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    baseline = current_bytes(device)
    step()  # the first step sets the memory peak (and warms up)
    extra = peak_bytes(device) - baseline
    times = []
    for _ in range(args.repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    if rank == 0:
        with open(args.result, "w") as f:
            json.dump(
                {
                    "seconds": statistics.median(times),
                    "extra_bytes": extra,
                    "logits_bytes": logits.numel() * logits.element_size(),
                },
                f,
            )
    if group is not None:
        dist.destroy_process_group()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", type=int, default=2048)
    p.add_argument("--vocab", type=int, default=152064)
    p.add_argument("--tp", type=int, nargs="+", default=[1, 2])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--variants",
        nargs="+",
        choices=sorted(VARIANTS),
        default=list(VARIANTS),
        help="which heads to run (the straightforward head needs ~7x the logits in memory)",
    )
    p.add_argument("--variant", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.variant:
        return worker(args)
    rows = []
    for tp in args.tp:
        measured = {}
        for variant in args.variants:
            with tempfile.NamedTemporaryFile(suffix=".json") as result:
                launcher = (
                    [sys.executable]
                    if tp == 1
                    else [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={tp}"]
                )
                cmd = [
                    *launcher,
                    __file__,
                    "--variant",
                    variant,
                    "--result",
                    result.name,
                    "--tokens",
                    str(args.tokens),
                    "--vocab",
                    str(args.vocab),
                    "--device",
                    args.device,
                    "--dtype",
                    args.dtype,
                    "--repeats",
                    str(args.repeats),
                ]
                subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": str(max(1, 2 // tp))})
                measured[variant] = json.load(open(result.name))
        rows.append((tp, measured))
    print(
        f"\nloss head fwd+bwd: {args.tokens} tokens x {args.vocab} vocab / TP, {args.dtype}, {args.device}, "
        f"chunk 256 tokens; time ratio and extra memory relative to this rank's logits tensor\n"
    )
    print("| TP | variant | seconds | time / straightforward | peak extra memory / logits |")
    print("|---|---|---|---|---|")
    for tp, measured in rows:
        base = measured.get("straightforward", {}).get("seconds")
        for variant, m in measured.items():
            ratio = f"{m['seconds'] / base:.2f}" if base else "n/a"
            print(f"| {tp} | {variant} | {m['seconds']:.3f} | {ratio} | {m['extra_bytes'] / m['logits_bytes']:.2f} |")


if __name__ == "__main__":
    main()
