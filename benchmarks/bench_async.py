"""Colocated against separate rollout placement: measured on 2 CPU processes, estimated for the paper's 8 GPUs.

    python benchmarks/bench_async.py                # both: 3 tiny runs side by side (minutes), then the estimate
    python benchmarks/bench_async.py --estimate     # the paper-scale estimate alone (seconds)

**Measured.** The tiny CPU recipe through the real trainer, on the same 2 processes three ways, one after the
other in this run: ``colocated`` (student at DP 2, vLLM as 2 replicas, taking turns with the student), and
``separate`` (one training rank, one rollout rank) at ``max_staleness`` 0 and 1. Steps per second from the
trainer's ``timing/step`` after the warm-up steps, and each side's waits (``timing/wait_rollouts``: the training
rank waiting for rollouts; ``timing/rollout_wait``: the rollout rank waiting for the training rank).

**Estimated** (arithmetic, not a measurement: no GPU ran it). One step of the 7B + A3B recipe on 8 H100 80 GB:
the rollouts of bench_batching's ``paper`` distribution (128 prompts × 8, responses log-normal around 1,500
tokens, capped at 8,192). Generation: each vLLM replica (TP 2) decodes its share with continuous batching (at most
``MAX_SEQS`` sequences, the KV cache ``tgpo plan`` gives), a decode step reading the replica's weights and the
active sequences' KV cache from HBM at each of ``HBM_EFFICIENCIES`` of its bandwidth, prompts prefilled at the
training MFU: the step ends with its longest response. Training: the FLOPs of the student's update (forward,
full recompute, backward), its old-log-prob forward and the teacher's forward (its active parameters), with causal
attention, at ``MFU``. The weights' transfer at ``TRANSFER_GBPS``. A split is counted only where ``tgpo plan``
says the recipe fits with it (teacher EP over the training ranks, vLLM TP 2 on the rollout ranks).
"""

from __future__ import annotations

import argparse
import os
import sys

from tiny_task import tiny_task, train_tiny

from tgpo_megatron.run.layout import read_metrics

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)

PLACEMENTS = {
    "colocated": {},
    "separate, staleness 0": {"rollout.placement": "separate", "rollout.ranks": 1},
    "separate, staleness 1": {"rollout.placement": "separate", "rollout.ranks": 1, "rollout.max_staleness": 1},
}

# the estimate's assumptions (H100 SXM 80 GB)
PEAK_FLOPS = 989e12  # dense bf16
MFU = 0.40  # Megatron training passes
HBM_BYTES_PER_S = 3.35e12
HBM_EFFICIENCIES = (0.7, 0.35)
"""The share of HBM bandwidth a decode step achieves: the roofline's optimism, then generation twice as slow (vLLM's
scheduling, sampling and kernel launches between steps), where a separate placement has more to hide."""
MAX_SEQS = 256  # vLLM's max_num_seqs default
TRANSFER_GBPS = 100.0  # NVLink broadcast of the weights, first training rank to the rollout ranks
GPUS = 8


def measure(steps: int, warmup: int, prompts: int, response: int) -> None:
    root, models, data = tiny_task("bench_async_")
    rows = {}
    for name, extra in PLACEMENTS.items():
        out = os.path.join(root, name.replace(" ", "").replace(",", "_"))
        extra = {"trainer.prompts_per_step": prompts, "rollout.max_response_length": response, "student.tp": 1, **extra}
        train_tiny(models, data, out, steps, **extra)
        rows[name] = read_metrics(out)[warmup:]

    def mean(name: str, key: str) -> float:
        values = [r.get(key, 0.0) for r in rows[name]]
        return sum(values) / len(values)

    base = mean("colocated", "timing/step")
    tokens = mean("colocated", "rollout/tokens")
    print(
        f"\nMeasured: tiny recipe, 2 processes (2 CPU cores), {prompts} prompts x 8 rollouts of up to {response} "
        f"tokens ({tokens:.0f} response tokens per step); mean over steps {warmup + 1}-{steps}\n"
    )
    print(
        "| placement | s/step | steps/s | vs colocated | generate | train | wait for rollouts "
        "| rollout rank: generating | rollout rank: waiting |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name in PLACEMENTS:
        step = mean(name, "timing/step")
        cells = [
            mean(name, f"timing/{k}")
            for k in ("generate", "train", "wait_rollouts", "rollout_generate", "rollout_wait")
        ]
        print(
            f"| {name} | {step:.2f} | {1 / step:.3f} | {base / step:.2f}x | "
            + " | ".join(f"{c:.2f}" for c in cells)
            + " |"
        )


def estimate(hbm_efficiency: float) -> None:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_batching import rollout_shapes

    from tgpo_megatron.config import load_config
    from tgpo_megatron.config.memory import GIB, bytes_of, kv_bytes_per_token, stage_parameter_groups
    from tgpo_megatron.config.plan import make_plan, shapes_for

    recipe = os.path.join(ROOT, "examples", "recipes", "qwen2.5_math_7b_tgpo_a3b.yaml")
    shapes = rollout_shapes("paper")
    notes: list[str] = []
    arch_of = shapes_for(recipe, notes)
    config = load_config(recipe)
    student, teacher = arch_of(config.student.hf_path), arch_of(config.teacher.hf_path)
    dense, experts = (sum(x) for x in stage_parameter_groups(student, 1, 1, 0))
    n_student = dense + experts
    t_dense, t_experts = (sum(x) for x in stage_parameter_groups(teacher, 1, 1, 0))
    n_teacher = t_dense + t_experts * teacher.moe.experts_per_token / teacher.moe.num_experts
    train_flops = sum(
        (8 + 2) * n_student * (p + r)
        + 2 * n_teacher * (p + r)  # update (fwd, recompute, bwd), old log-probs; teacher
        + (4 + 1) * attention_flops(student, p + r)
        + attention_flops(teacher, p + r)
        for p, r in shapes
    )

    def generation_s(gpus: int, kv_tokens: float) -> float:
        replicas = gpus // config.rollout.tp
        weights = n_student * bytes_of(config.rollout.dtype) / config.rollout.tp
        kv_per_token = kv_bytes_per_token(student, config.rollout.tp, bytes_of(config.rollout.dtype))
        longest = 0.0
        for replica in range(replicas):
            mine = shapes[replica::replicas]
            prefill = sum(2 * n_student * p for p, _ in mine) / (config.rollout.tp * PEAK_FLOPS * MFU)
            longest = max(longest, prefill + decode_s(mine, weights, kv_per_token, kv_tokens, hbm_efficiency))
        return longest

    transfer = n_student * bytes_of(config.student.dtype) / (TRANSFER_GBPS * 1e9)
    colocated_plan = make_plan(config, arch_of)
    colocated_kv = colocated_plan.kv_tokens
    colocated = generation_s(GPUS, colocated_kv) + train_flops / (GPUS * PEAK_FLOPS * MFU) + transfer
    print(
        f"\nEstimated (arithmetic, not measured): one step of {os.path.relpath(recipe, ROOT)} on {GPUS} H100 80 GB, "
        f"{len(shapes)} rollouts, {sum(r for _, r in shapes) / 1e6:.2f} M response tokens (longest "
        f"{max(r for _, r in shapes)}); MFU {MFU}, HBM at {hbm_efficiency:.0%} of {HBM_BYTES_PER_S / 1e12} TB/s, "
        f"at most {MAX_SEQS} sequences per replica, weights over the bridge at {TRANSFER_GBPS:.0f} GB/s\n"
    )
    print(
        "| split (train + rollout GPUs) | teacher EP | tgpo plan peak (GiB) | generate (s) | train (s) "
        "| step, staleness 0 (s) | step, staleness 1 (s) | staleness 1 vs colocated |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| colocated ({GPUS} GPUs, taking turns) | {config.teacher.ep} | {colocated_plan.peak.total / GIB:.1f} | "
        f"{generation_s(GPUS, colocated_kv):.0f} | {train_flops / (GPUS * PEAK_FLOPS * MFU):.0f} | "
        f"{colocated:.0f} | | 1.00x |"
    )
    for rollout_gpus in range(config.rollout.tp, GPUS, config.rollout.tp):
        training = GPUS - rollout_gpus
        ep = max(e for e in (1, 2, 4, 8) if training % e == 0 and teacher.moe.num_experts % e == 0)
        overrides = [
            "rollout.placement=separate",
            f"rollout.ranks={rollout_gpus}",
            "rollout.max_staleness=1",
            f"teacher.ep={ep}",
            "rollout.gpu_memory_utilization=0.9",
        ]
        split_config = load_config(recipe, overrides)
        try:
            plan = make_plan(split_config, arch_of)
        except Exception as e:  # a layout the recipe checks refuse: reported as such
            print(f"| {training} + {rollout_gpus} | {ep} | refused: {e} | | | | | |")
            continue
        if not plan.fits:
            print(f"| {training} + {rollout_gpus} | {ep} | {plan.peak.total / GIB:.1f} (does not fit) | | | | | |")
            continue
        generate = generation_s(rollout_gpus, plan.kv_tokens)
        train = train_flops / (training * PEAK_FLOPS * MFU)
        stale0, stale1 = generate + train + transfer, max(generate, train) + transfer
        print(
            f"| {training} + {rollout_gpus} | {ep} | {plan.peak.total / GIB:.1f} | {generate:.0f} | {train:.0f} | "
            f"{stale0:.0f} | {stale1:.0f} | {colocated / stale1:.2f}x |"
        )
    print("\n" + "\n".join(f"- {n}" for n in notes))
    notes.clear()


def attention_flops(arch, length: int) -> float:
    """A causal forward's attention-score and value FLOPs of one sequence (the projections are in 2N)."""
    return 2 * 2 * arch.num_layers * arch.num_attention_heads * arch.head_dim * length * length / 2


def decode_s(
    shapes: list[tuple[int, int]], weights: float, kv_per_token: float, kv_tokens: float, efficiency: float
) -> float:
    """Seconds for one replica to decode ``shapes`` with continuous batching (admitted in order while the batch and
    the KV cache have room); each decode step reads the weights and every active sequence's KV cache."""
    queue = list(shapes)
    active: list[list[int]] = []  # [context so far, tokens left]
    seconds = 0.0
    while queue or active:
        while queue and len(active) < MAX_SEQS and sum(c + left for c, left in active) + sum(queue[0]) <= kv_tokens:
            prompt, response = queue.pop(0)
            active.append([prompt, response])
        context = sum(c for c, _ in active)
        seconds += (weights + context * kv_per_token) / (HBM_BYTES_PER_S * efficiency)
        for seq in active:
            seq[0] += 1
            seq[1] -= 1
        active = [s for s in active if s[1] > 0]
    return seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--estimate", action="store_true", help="the paper-scale estimate alone")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--response", type=int, default=48, help="rollout.max_response_length")
    args = p.parse_args()
    if not args.estimate:
        measure(args.steps, args.warmup, args.prompts, args.response)
    for efficiency in HBM_EFFICIENCIES:
        estimate(efficiency)


if __name__ == "__main__":
    main()
