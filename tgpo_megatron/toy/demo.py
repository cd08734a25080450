"""``tgpo demo`` (``make demo``): does TGPO beat GRPO when the teacher knows something the student does not? One
seed of study v2's large-gap cell (docs/study.md), through the real system, on a laptop CPU.

    tgpo demo                 # about 8 minutes on 2 cores (docs/demo.md)
    tgpo demo --quick         # every stage with tiny step counts (a smoke test, in runs/demo_quick)

The stages are the study's own (toy/study.py), on its design (toy/recipes/study.yaml) cut to one seed and one
cell; the RL runs are 2-process `tgpo train` jobs with Megatron student and teacher and vLLM rollouts:
1. data: 3-digit addition on a scratchpad; 20,000 training problems; 600 test problems as two sets, with and
   without a carry;
2. `tgpo sft`, side by side: a strong teacher (d128) on every problem, writing `,` between columns, and a
   student (d64) on the carry-free problems plus 2% with a carry (the share study v2's pilot chose), writing `;`:
   the teacher has a skill the student mostly lacks, across a large gap in style;
3. `grpo`, `rkl` and `tgpo_reg` from that student, 100 steps each, one after another in one `tgpo train-many`
   launch, with the recipe's λ (study v2's probe, decaying to 0 at step 67);
4. a table (greedy accuracy every 20 steps, with and without a carry, the step-1 gap, the final students'
   style), a plot, and the HF export of the best student.

Nothing here depends on the algorithm: every run uses one recipe and differs only in ``algorithm.name`` and
its teacher.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import replace

from tgpo_megatron.cli import command_parser
from tgpo_megatron.run.layout import RunDir
from tgpo_megatron.toy.design import DESIGN, StudyDesign, load_design, run_specs

CARRY_SHARE = 0.02
"""The share of carry problems in the student's fine-tuning: study v2's pilot chose it (docs/study.md)."""
SEED = 1
CELL = "strong_large"


def demo_design(quick: bool) -> StudyDesign:
    """Study v2's design with one seed and the large-gap cell (grpo runs without a teacher, as in the study)."""
    design = load_design(DESIGN, quick, seeds=None)
    return replace(design, seeds=[SEED], cells={CELL: design.cells[CELL]})


def _by_set(model: dict) -> str:
    accuracy = model["test_accuracy"]
    return f"{accuracy['add3_carry']:.3f} with a carry, {accuracy['add3_nocarry']:.3f} without"


def main(argv=None) -> int:
    from tgpo_megatron.toy.report import cell_table, collect, plot
    from tgpo_megatron.toy.study import make_data, make_models, train_all

    p = command_parser("tgpo demo", __doc__)
    p.add_argument("--out", help="output directory (default: runs/demo, or runs/demo_quick with --quick)")
    p.add_argument("--quick", action="store_true", help="every stage with tiny step counts (a smoke test)")
    args = p.parse_args(argv)
    args.out = args.out or ("runs/demo_quick" if args.quick else "runs/demo")  # a smoke test keeps the demo's
    design = demo_design(args.quick)
    start = time.time()
    os.makedirs(args.out, exist_ok=True)
    print(f"[1/4] data in {args.out}", flush=True)
    task = make_data(args.out, design)
    print(
        f"[2/4] supervised fine-tuning: a strong teacher (style ','), a student (style ';', {CARRY_SHARE:.0%} carry)",
        flush=True,
    )
    models = make_models(args.out, design, task, CARRY_SHARE)
    teacher, student = models["strong_comma"], models[f"student_s{SEED}"]
    # where examples/recipes/tiny_cpu.yaml expects them, so the recipe runs as is after `make demo`
    for name, model in (("teacher", teacher), ("student", student)):
        shutil.rmtree(os.path.join(args.out, "models", name), ignore_errors=True)
        shutil.copytree(model["path"], os.path.join(args.out, "models", name))
    specs = run_specs(design)
    print(f"[3/4] RL from that student: {', '.join(s.method for s in specs)}, {design.rl_steps} steps each", flush=True)
    train_all(args.out, design, task, models)
    print("[4/4] results", flush=True)
    summary = collect(args.out, design, task, models)
    final = str(design.rl_steps)
    best = max(specs, key=lambda s: summary[f"{s.method}@{s.cell}"][str(SEED)]["accuracy"][final])
    best_dir = os.path.join(args.out, "best_student_hf")
    shutil.rmtree(best_dir, ignore_errors=True)
    shutil.copytree(RunDir(os.path.join(args.out, "rl", best.name)).hf, best_dir)
    plot(summary, design, os.path.join(args.out, "demo.png"))
    report = (
        f"Teacher: test accuracy {_by_set(teacher)}. Student at the start: test accuracy {_by_set(student)}; "
        f"sampled reward on the validation carry problems {student['carry_reward']:.3f}.\n\n"
        f"{cell_table(summary, design)}\n"
    )
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(report)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"models": models, "results": summary, "best": best.name}, f, indent=1)
    print(report)
    minutes = (time.time() - start) / 60
    print(
        f"plot: {os.path.join(args.out, 'demo.png')}; best student ({best.name}) as HF: {best_dir}; "
        f"{minutes:.1f} minutes"
    )
    return 0
