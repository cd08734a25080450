"""What a launch costs: N short runs as N `tgpo train` launches against one `tgpo train-many` launch.

    python benchmarks/bench_launch.py                 # 4 runs of 3 steps, tiny models, 2 processes
    python benchmarks/bench_launch.py --runs 6 --steps 5

Both sides run the same runs (the tiny CPU recipe, tgpo_reg, seeds 1..N) one after another, side by side in
one invocation; prints the wall time of each side, the per-run start-up the shared launch saves, and checks
that the runs' metrics agree (the e2e test checks this bitwise).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time

from tiny_task import RECIPE, TORCHRUN, tiny_task

from tgpo_megatron.run.layout import read_metrics

VOLATILE = ("timing/", "refit/seconds", "refit/GBps", "throughput/", "memory/")


def stable(run_dir: str) -> list[dict]:
    return [{k: v for k, v in row.items() if not k.startswith(VOLATILE)} for row in read_metrics(run_dir)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=4)
    p.add_argument("--steps", type=int, default=3)
    args = p.parse_args()
    if args.runs < 2:
        p.error("--runs must be >= 2 (the saving is per run after the first)")

    root, models, data = tiny_task("bench_launch_")

    def overrides(side: str, seed: int) -> list[str]:
        return [
            f"student.hf_path={models['student']}",
            f"teacher.hf_path={models['teacher']}",
            f"data.train_files=[{data}]",
            f"trainer.output_dir={os.path.join(root, side, f'seed{seed}')}",
            f"trainer.steps={args.steps}",
            f"trainer.save_every={args.steps}",
            f"trainer.seed={seed}",
            "eval.every_n_steps=0",
            "trainer.export_hf=false",
        ]

    seeds = range(1, args.runs + 1)
    start = time.perf_counter()
    for seed in seeds:
        cmd = [*TORCHRUN, "-m", "tgpo_megatron.cli", "train", "--config", RECIPE, *overrides("separate", seed)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    separate = time.perf_counter() - start

    runs_file = os.path.join(root, "runs.json")
    with open(runs_file, "w") as f:
        json.dump([{"config": RECIPE, "overrides": overrides("shared", seed)} for seed in seeds], f)
    start = time.perf_counter()
    cmd = [*TORCHRUN, "-m", "tgpo_megatron.cli", "train-many", runs_file]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shared = time.perf_counter() - start

    same = all(
        stable(os.path.join(root, "separate", f"seed{s}")) == stable(os.path.join(root, "shared", f"seed{s}"))
        for s in seeds
    )
    print(f"\n{args.runs} runs of {args.steps} steps (tiny recipe, tgpo_reg, 2 processes); metrics equal: {same}\n")
    print("| launches | wall seconds | per run |")
    print("|---|---|---|")
    print(f"| {args.runs} x `tgpo train` | {separate:.1f} | {separate / args.runs:.1f} |")
    print(f"| 1 x `tgpo train-many` | {shared:.1f} | {shared / args.runs:.1f} |")
    print(f"| saved per run after the first | {(separate - shared) / (args.runs - 1):.1f} | |")
    print(f"| ratio separate / shared | {separate / shared:.2f} | |")


if __name__ == "__main__":
    main()
