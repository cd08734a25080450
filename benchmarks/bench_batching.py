"""What a step computes at the paper's shapes: packed, token-balanced micro-batches against the padded ones.

    python benchmarks/bench_batching.py            # replay of the batching plan at the paper's shape (seconds)
    python benchmarks/bench_batching.py --time     # also times student update steps on 2 processes (minutes)

Rollout lengths (prompt ⊕ response) are drawn from two documented distributions:
- ``paper``: one step of the 7B recipe, 128 prompts × 8 rollouts; prompt lengths ~ N(250, 60) clipped to
  [32, 1024] (one per prompt, shared by its 8 rollouts); response lengths log-normal with median 1,500 and
  σ = 0.9, capped at 8,192 (~3% truncated: the long tail of the paper's 8k-token responses). Two mini-batches
  of 512 rollouts, a micro-batch budget of 16,384 tokens.
- ``scaled``: the same shape scaled down for a tiny model on CPU: prompts ~ N(24, 6) clipped to [8, 64],
  responses median 64, σ 0.9, capped at 350, budget 700 tokens, 16 prompts × 8 rollouts in one mini-batch.

Old is the previous behaviour, replayed here: each data-parallel rank takes a contiguous equal share of the
mini-batch and pads every micro-batch to (the most rows of any) × (the longest sequence of the call). New is
``tgpo_megatron.batching.plan_micro_batches``: shares balanced by tokens, packed first-fit decreasing; "one
width" pads each rank's packed micro-batches to its widest, which pipeline parallelism would need without
Megatron's ``variable_seq_lengths`` (what we use: the stages exchange each activation's shape instead).
Columns: tokens computed / real tokens, the largest micro-batch / budget, the DP imbalance (max / mean real
tokens per rank) and the micro-batches per rank (whether every rank of a step runs as many).

``--time`` runs ``Student.train_step`` (the trainer's update) on a tiny model over 2 processes (DP=2) with the
padded path (``sequence_packing: false``) and the packed one, alternating, on the same ``scaled`` rollouts,
and prints the median seconds of each.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time

from tgpo_megatron.batching import pack_padded, plan_micro_batches

DISTRIBUTIONS = {
    # name: prompts, rollouts per prompt, prompt mean/std/min/max, response median/sigma/cap, budget, mini-batches
    "paper": dict(
        prompts=128, n=8, prompt=(250, 60, 32, 1024), response=(1500, 0.9, 8192), budget=16384, mini_batches=2
    ),
    "scaled": dict(prompts=16, n=8, prompt=(24, 6, 8, 64), response=(64, 0.9, 350), budget=700, mini_batches=1),
}


def rollout_shapes(name: str, seed: int = 0) -> list[tuple[int, int]]:
    """``(prompt length, response length)`` of every rollout of one step of distribution ``name``."""
    d = DISTRIBUTIONS[name]
    rng = random.Random(seed)
    mean, std, low, high = d["prompt"]
    median, sigma, cap = d["response"]
    shapes = []
    for _ in range(d["prompts"]):
        prompt = min(max(round(rng.gauss(mean, std)), low), high)
        shapes += [
            (prompt, min(max(1, round(rng.lognormvariate(math.log(median), sigma))), cap)) for _ in range(d["n"])
        ]
    return shapes


def sequence_lengths(name: str, seed: int = 0) -> list[int]:
    """Positions computed per rollout (prompt + response - 1), as ``Rollout.length``."""
    return [p + r - 1 for p, r in rollout_shapes(name, seed)]


def old_plan(lengths: list[int], ranks: int, budget: int) -> list[list[list[int]]]:
    """Round 1: contiguous equal shares, padded groups (every micro-batch later padded to one shape)."""
    per = len(lengths) // ranks
    plan = []
    for r in range(ranks):
        share = list(range(r * per, (r + 1) * per))
        plan.append([[share[j] for j in g] for g in pack_padded([lengths[i] for i in share], budget)])
    return plan


def plan_stats(plan: list[list[list[int]]], lengths: list[int], budget: int, shape: str) -> dict:
    """``shape``: ``padded`` (round 1: every micro-batch of a rank padded to its most rows x longest
    sequence), ``packed`` (each micro-batch its own width), ``packed_one_width`` (each packed micro-batch
    padded to the rank's widest, what pipeline parallelism would need without variable_seq_lengths)."""
    real_per_rank = [sum(lengths[i] for g in groups for i in g) for groups in plan]
    computed, largest = 0, 0
    for groups in plan:
        sizes = [sum(lengths[i] for i in g) for g in groups]
        if shape == "padded":
            rows = max(len(g) for g in groups)
            width = max(lengths[i] for g in groups for i in g)
            sizes = [rows * width] * len(groups)
        elif shape == "packed_one_width":
            sizes = [max(sizes)] * len(groups)
        computed += sum(sizes)
        largest = max(largest, max(sizes))
    real = sum(real_per_rank)
    return {
        "computed/real": computed / real,
        "largest/budget": largest / budget,
        "imbalance": max(real_per_rank) / (real / len(plan)),
        "counts": [len(groups) for groups in plan],
    }


def replay(seeds: int) -> None:
    print(
        "| distribution | DP | plan | tokens computed / real | largest micro-batch / budget | "
        "DP imbalance (max / mean) | micro-batches per rank |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, d in DISTRIBUTIONS.items():
        for dp in (4, 8):
            rows: dict[str, list[dict]] = {"old": [], "new": [], "new, one width (PP)": []}
            for seed in range(seeds):
                lengths = sequence_lengths(name, seed)
                per = len(lengths) // d["mini_batches"]
                for m in range(d["mini_batches"]):
                    mini = lengths[m * per : (m + 1) * per]
                    new = plan_micro_batches(mini, dp, d["budget"])
                    rows["old"].append(plan_stats(old_plan(mini, dp, d["budget"]), mini, d["budget"], "padded"))
                    rows["new"].append(plan_stats(new, mini, d["budget"], "packed"))
                    rows["new, one width (PP)"].append(plan_stats(new, mini, d["budget"], "packed_one_width"))
            for plan, stats in rows.items():
                worst = {key: max(s[key] for s in stats) for key in ("computed/real", "largest/budget", "imbalance")}
                mean = {key: statistics.mean(s[key] for s in stats) for key in ("computed/real", "imbalance")}
                counts = [n for s in stats for n in s["counts"]]
                equal = "equal" if all(len(set(s["counts"])) == 1 for s in stats) else "unequal"
                print(
                    f"| {name} | {dp} | {plan} | {mean['computed/real']:.2f} (worst {worst['computed/real']:.2f}) "
                    f"| {worst['largest/budget']:.2f} | {mean['imbalance']:.3f} (worst {worst['imbalance']:.3f}) "
                    f"| {min(counts)}-{max(counts)}, {equal} across ranks |"
                )


# -- timing: student update steps on 2 processes ----------------------------------------------------------


def step_worker(args) -> None:
    import torch
    import torch.distributed as dist

    from tgpo_megatron.batching import Rollout
    from tgpo_megatron.config import ModelConfig, TrainerConfig
    from tgpo_megatron.config.layouts import Layout
    from tgpo_megatron.distributed.parallel import initialize_global_parallel
    from tgpo_megatron.distributed.platform import init_distributed
    from tgpo_megatron.losses import LossConfig, compute_loss
    from tgpo_megatron.student import Student

    init_distributed()
    pg = initialize_global_parallel(Layout(1, 1))
    g = torch.Generator().manual_seed(0)
    vocab = 2048
    rollouts = []
    for i, (p, r) in enumerate(rollout_shapes("scaled", seed=0)):
        rollout = Rollout(
            torch.randint(1, vocab, (p,), generator=g).tolist(),
            torch.randint(1, vocab, (r,), generator=g).tolist(),
            advantage=(i % 3) - 1.0,
        )
        rollout.per_token.update(
            old_logp=-torch.rand(r, generator=g) * 5, teacher_ids=torch.randint(1, vocab, (r,), generator=g)
        )
        rollouts.append(rollout)
    students = {}
    for packed in (False, True):
        trainer = TrainerConfig(micro_batch_tokens=DISTRIBUTIONS["scaled"]["budget"], sequence_packing=packed, lr=1e-5)
        students[packed] = Student(ModelConfig(hf_path=args.hf), trainer, pg, torch.float32)

    def loss_fn(logits, batch, normalizer):
        return compute_loss(
            "tgpo_reg", logits, batch, step=1, config=LossConfig(), vocab_size=vocab, normalizer=normalizer
        )

    times: dict[bool, list[float]] = {False: [], True: []}
    for repeat in range(args.repeats + 1):
        for packed, student in students.items():
            dist.barrier()
            start = time.perf_counter()
            student.train_step(student.plan(rollouts), ["old_logp", "teacher_ids"], loss_fn)
            dist.barrier()
            if repeat:  # the first round warms up allocators and caches
                times[packed].append(time.perf_counter() - start)
    if dist.get_rank() == 0:
        old, new = statistics.median(times[False]), statistics.median(times[True])
        print(f"| padded (round-1 shapes) | {old:.2f} | 1.00 |\n| packed | {new:.2f} | {new / old:.2f} |")
    dist.destroy_process_group()


def time_steps(repeats: int) -> None:
    from tgpo_megatron.models.tiny import save_tiny_hf_model

    hf = save_tiny_hf_model(
        os.path.join(tempfile.mkdtemp(prefix="bench_batching_"), "model"),
        "qwen2",
        vocab_size=2048,
        hidden_size=256,
        intermediate_size=768,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=2,
    )
    print(
        f"\nStudent update step, `scaled` rollouts ({len(rollout_shapes('scaled'))} sequences), DP=2 on 2 "
        f"processes, tiny qwen2 (d256, 4 layers, vocab 2048), median of {repeats}:\n"
    )
    print("| path | seconds per update step | time / padded |\n|---|---|---|")
    sys.stdout.flush()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node=2",
            "--standalone",
            os.path.abspath(__file__),
            "--step-worker",
            "--hf",
            hf,
            "--repeats",
            str(repeats),
        ],
        check=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=10, help="steps drawn per distribution for the replay")
    p.add_argument("--time", action="store_true", help="also time update steps on 2 processes")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--step-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--hf", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.step_worker:
        return step_worker(args)
    replay(args.seeds)
    if args.time:
        time_steps(args.repeats)


if __name__ == "__main__":
    main()
