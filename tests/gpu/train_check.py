"""A tiny `tgpo train` of 3 steps on one GPU with vLLM, as the shipped recipes run it: bf16, sleep mode (level 2)
-> refit -> wake every step, CUDA graphs on; then the GPU memory measured at the engine's start, before each
wake and after the first refit's weights, beside `tgpo plan`'s phases for the same run.

    python tests/gpu/train_check.py [--transformer-impl transformer_engine]   # needs vLLM and a GPU

Exits 1 when the run fails, when vLLM's log-probs of its own samples disagree with the student's (a refit
that did not land), or when the memory in use exceeds what the plan's phase allows.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GIB = 1024**3


def prepare(work: str) -> list[str]:
    """Tiny student and teacher that speak the synthetic task's character tokenizer, and its data."""
    from tgpo_megatron.data.synthetic import problem_rows, sample_problems, write_rows
    from tgpo_megatron.models.tiny import save_char_model

    problems = sample_problems(64, seed=1, digits=2)
    return [
        f"student.hf_path={save_char_model(os.path.join(work, 'student'), seed=0)}",
        f"teacher.hf_path={save_char_model(os.path.join(work, 'teacher'), seed=1)}",
        f"data.train_files=[{write_rows(problem_rows(problems), os.path.join(work, 'train.parquet'))}]",
    ]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--transformer-impl", default="local", choices=["local", "transformer_engine"])
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("train_check: CUDA is not available", file=sys.stderr)
        return 1
    work = tempfile.mkdtemp()
    total_gib = torch.cuda.mem_get_info()[1] / GIB
    overrides = prepare(work) + [
        f"trainer.output_dir={work}/run",
        "trainer.steps=3",
        "trainer.prompts_per_step=8",
        "trainer.export_hf=false",
        "eval.every_n_steps=0",
        "launch.gpus_per_node=1",
        f"launch.gpu_memory_gb={total_gib:.2f}",
        "student.tp=1",
        "student.dtype=bfloat16",
        "teacher.dtype=bfloat16",
        "rollout.dtype=bfloat16",
        "rollout.kv_cache_gb=null",
        "rollout.gpu_memory_utilization=0.3",
        "rollout.enforce_eager=false",
        f"student.transformer_impl={args.transformer_impl}",
        f"teacher.transformer_impl={args.transformer_impl}",
    ]
    recipe = os.path.join(ROOT, "examples", "recipes", "tiny_cpu.yaml")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1"]
    command += ["-m", "tgpo_megatron.cli", "train", "--config", recipe, *overrides]
    run = subprocess.run(command, capture_output=True, text=True, timeout=480, cwd=ROOT)
    if run.returncode != 0:
        print(run.stdout[-3000:] + run.stderr[-6000:], file=sys.stderr)
        print(f"train_check: tgpo train failed (exit {run.returncode})")
        return 1
    with open(os.path.join(work, "run", "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]

    from tgpo_megatron.config import load_config
    from tgpo_megatron.config.arch import load_arch
    from tgpo_megatron.config.plan import make_plan

    plan = {phase.name: phase.total / GIB for phase in make_plan(load_config(recipe, overrides), load_arch).phases}
    started = re.search(r"GPU memory free before vLLM started: ([\d.]+) GiB, after: ([\d.]+) GiB", run.stderr)
    first = re.search(r"GPU memory free after the first refit's weights: ([\d.]+) GiB", run.stderr)
    measured = {  # GiB in use on the GPU (this process and the CUDA context) at each point
        "before vLLM started": total_gib - float(started.group(1)),
        "after vLLM started (generate)": total_gib - float(started.group(2)),
        "first refit, weights loaded (refit)": total_gib - float(first.group(1)),
    }
    for row in rows:
        measured[f"step {row['step']}, before the weights wake"] = total_gib - row["memory/gpu_free_before_weights_gb"]
        measured[f"step {row['step']}, before the KV cache wakes (refit)"] = (
            total_gib - row["memory/gpu_free_before_kv_cache_gb"]
        )
    print(f"GPU: {torch.cuda.get_device_name()}, {total_gib:.1f} GiB; {args.transformer_impl} layer spec")
    print("| point | GiB in use | tgpo plan's phase |")
    print("|---|---|---|")
    problems = []
    for point, used in measured.items():
        phase = point[point.rfind("(") + 1 : -1] if point.endswith(")") else None
        print(f"| {point} | {used:.2f} | {f'{phase} {plan[phase]:.2f}' if phase else ''} |")
        if phase and used > plan[phase]:
            problems.append(f"{point}: {used:.2f} GiB in use, the plan's {phase} phase allows {plan[phase]:.2f}")
    drift = [row["rollout/token_mult_prob_error"] for row in rows]
    print(f"steps {[r['step'] for r in rows]}; vLLM vs student, mean exp|Δ log p| per step: {drift}")
    if [r["step"] for r in rows] != [1, 2, 3]:
        problems.append("the run did not log steps 1-3")
    if max(drift) > 1.1:  # the trainer's own warning threshold (rollout.drift_warn_threshold)
        problems.append(f"vLLM's log-probs disagree with the student's (mean exp|Δ log p| {max(drift):.3f})")
    for problem in problems:
        print(f"FAIL: {problem}")
    print("train_check: " + ("FAIL" if problems else "OK"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
