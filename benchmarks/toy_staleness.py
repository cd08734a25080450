"""Does one step of staleness cost accuracy? tgpo_reg and grpo on the demo's task, rollouts on a rank of their own,
``rollout.max_staleness`` 0 and 1, same seeds.

    python benchmarks/toy_staleness.py                  # seed 1 (the demo's): 4 runs of 100 steps, ~15 min
    python benchmarks/toy_staleness.py --seeds 1 2      # more seeds (each seed's student is fine-tuned first)

The demo's stages (toy/demo.py: data, the strong teacher and the student fine-tuned side by side) in ``--out``
(kept: a second call reuses them), then each run as a 2-process ``tgpo train`` with ``rollout.placement:
separate`` (one training rank, one rollout rank; the student at TP 1), the demo's recipe and λ otherwise. Staleness 0
is the reference: the same placement, generation and update taking turns. Prints, per run, the greedy held-out
accuracy at the last step (the trainer's evaluation, with and without a carry, and pooled), the mean training
reward of the last 10 steps, the mean staleness and the seconds per step.
"""

from __future__ import annotations

import argparse
import os
import subprocess
from dataclasses import replace

from tgpo_megatron.run.layout import read_metrics
from tgpo_megatron.toy.demo import CARRY_SHARE, CELL, demo_design
from tgpo_megatron.toy.design import NO_TEACHER, RunSpec
from tgpo_megatron.toy.stages import RECIPE, tgpo
from tgpo_megatron.toy.study import TEST_SETS, make_data, make_models, run_overrides

METHODS = (("grpo", NO_TEACHER), ("tgpo_reg", CELL))
SEPARATE = ["student.tp=1", "rollout.placement=separate", "rollout.ranks=1", "trainer.export_hf=false"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/toy_staleness")
    p.add_argument("--seeds", type=int, nargs="+", default=[1])
    args = p.parse_args()
    design = replace(demo_design(quick=False), seeds=args.seeds)
    os.makedirs(os.path.join(args.out, "rl"), exist_ok=True)
    task = make_data(args.out, design)
    models = make_models(args.out, design, task, CARRY_SHARE)
    sizes = {name: len(task["tests"][name]) for name in TEST_SETS}
    rows = []
    for seed in args.seeds:
        for method, cell in METHODS:
            for staleness in (0, 1):
                out = os.path.join(args.out, "rl", f"{method}_seed{seed}_staleness{staleness}")
                if not os.path.exists(os.path.join(out, "exit_code")):
                    overrides = run_overrides(RunSpec(method, cell, seed), design, args.out, task, models, None)
                    overrides += [*SEPARATE, f"rollout.max_staleness={staleness}", f"trainer.output_dir={out}"]
                    with open(out + ".log", "w") as log:
                        cmd = tgpo("train", "--config", RECIPE, *overrides, nproc=2)
                        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)
                rows.append((method, seed, staleness, read_metrics(out)))

    print(f"\nThe demo's task, {design.rl_steps} steps; greedy held-out accuracy at the last step\n")
    print("| method | seed | max_staleness | carry | no carry | pooled | reward, last 10 steps | staleness | s/step |")
    print("|---|---|---|---|---|---|---|---|---|")
    for method, seed, staleness, metrics in rows:
        last = next(r for r in reversed(metrics) if f"eval/{TEST_SETS[0]}/pass@1" in r)
        accuracy = {name: last[f"eval/{name}/pass@1"] for name in TEST_SETS}
        pooled = sum(accuracy[n] * sizes[n] for n in TEST_SETS) / sum(sizes.values())
        reward = sum(r["reward/mean"] for r in metrics[-10:]) / len(metrics[-10:])
        stale = sum(r["rollout/staleness"] for r in metrics) / len(metrics)
        step = sum(r["timing/step"] for r in metrics[1:]) / max(len(metrics) - 1, 1)
        print(
            f"| {method} | {seed} | {staleness} | {accuracy[TEST_SETS[0]]:.3f} | {accuracy[TEST_SETS[1]]:.3f} | "
            f"{pooled:.3f} | {reward:.3f} | {stale:.2f} | {step:.2f} |"
        )


if __name__ == "__main__":
    main()
