"""Where a training step's time goes: the tiny CPU recipe through the real trainer, timed per phase.

    python benchmarks/bench_step.py                   # builds tiny models and data, 2-process tgpo train
    python benchmarks/bench_step.py --steps 30 --prompts 32

Reads the trainer's own ``timing/*`` metrics (wall-clock per phase on rank 0) and prints, per phase, the
mean seconds and the share of the step, skipping the first steps (engine warm-up). "framework overhead" is
everything outside generation, the teacher's forward and the student's forward/backward: reward scoring,
the refit, the optimizer bookkeeping and the loop itself.
"""

from __future__ import annotations

import argparse
import os

from tiny_task import tiny_task, train_tiny

from tgpo_megatron.run.layout import read_metrics

PHASES = ("generate", "reward", "teacher", "old_logprobs", "train", "refit")
WORK = ("generate", "teacher", "old_logprobs", "train")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--algorithm", default="tgpo_reg")
    args = p.parse_args()

    root, models, data = tiny_task("bench_step_")
    out = os.path.join(root, "run")
    train_tiny(
        models, data, out, args.steps, **{"trainer.prompts_per_step": args.prompts, "algorithm.name": args.algorithm}
    )
    rows = read_metrics(out)[args.warmup :]
    mean = lambda key: sum(r[key] for r in rows) / len(rows)
    step = mean("timing/step")
    print(
        f"\n{args.algorithm}, {args.prompts} prompts x 8 rollouts per step, student TP2 + teacher TP1 + vLLM TP1x2, "
        f"2 processes; mean over steps {args.warmup + 1}-{args.steps}; {mean('rollout/tokens'):.0f} response "
        f"tokens per step\n"
    )
    print("| phase | seconds | share of step |")
    print("|---|---|---|")
    for phase in PHASES:
        print(f"| {phase} | {mean(f'timing/{phase}'):.3f} | {100 * mean(f'timing/{phase}') / step:.1f}% |")
    overhead = step - sum(mean(f"timing/{p}") for p in WORK)
    print(
        f"| framework overhead (step - generate - teacher - student fwd/bwd) | {overhead:.3f} | "
        f"{100 * overhead / step:.1f}% |"
    )
    print(f"| whole step | {step:.3f} | 100% |")


if __name__ == "__main__":
    main()
