"""``tgpo study``: the paper's claims at toy scale, with seeds and error bars, through the real trainer.

    tgpo study                     # the design in tgpo_megatron/toy/recipes/study.yaml (about 100 minutes on 2 cores)
    tgpo study --quick             # every stage with tiny step counts: a test of the plumbing, not of the science
    tgpo study --seeds 5 --out runs/study5

On the demo's task (3-digit addition; the student writes ``;`` between columns, a teacher of the other style
writes ``,``, both read both), from one weak student:

- **claim 1, large gap** (a teacher trained on the other style only) and **claim 2, small gap** (a teacher of
  the student's style): grpo, rkl, kdrl, tgpo_reg, the *sequential* baseline (``teacher_ce`` for
  ``switch_step`` steps, then grpo from its result) and luffy (the dataset's traces in the teacher's style);
- **the teacher ladder**: teachers trained with a growing share of the other style, crossed with rkl, kdrl and
  tgpo_reg; final accuracy against the step-1 ``gap/reverse_kl_k1`` (the paper's figure at toy scale).

Every RL run is ``tgpo train`` on the demo's recipe; all of them share one ``tgpo train-many`` launch (the
same metrics as separate launches, tested). Writes ``OUT/study.json``, ``OUT/study.md`` and the figures; run
the same command again to continue an interrupted study (finished runs are kept).
"""

from __future__ import annotations

import json
import os
import random
import sys
from dataclasses import asdict, replace

from tgpo_megatron.cli import command_parser
from tgpo_megatron.losses.registry import ALGORITHMS
from tgpo_megatron.run.layout import RunDir
from tgpo_megatron.toy.demo import (
    RECIPE,
    fine_tune_side_by_side,
    greedy_accuracy,
    make_task,
    pick_student,
    rl_overrides,
    run_stage,
    tgpo,
)
from tgpo_megatron.toy.design import (
    DESIGN,
    LARGE,
    SEQUENTIAL_PHASES,
    RunSpec,
    StudyDesign,
    load_design,
    run_specs,
)

# -- models ---------------------------------------------------------------------------------------------


def teacher_data(data_dir: str, fraction: float, seed: int = 0) -> str:
    """The SFT rows of a ladder teacher: each problem in the other style (``,``) with probability ``fraction``,
    in the student's (``;``) otherwise."""
    import pyarrow.parquet as pq

    from tgpo_megatron.data.synthetic import write_rows

    other = pq.read_table(os.path.join(data_dir, "train.parquet")).to_pylist()
    own = pq.read_table(os.path.join(data_dir, "train_semicolon.parquet")).to_pylist()
    rng = random.Random(seed)
    rows = [a if rng.random() < fraction else b for a, b in zip(other, own)]
    return write_rows(rows, os.path.join(data_dir, f"teacher_{fraction:.2f}.parquet"))


def make_models(out: str, design: StudyDesign) -> dict:
    """The data, the weak student and one teacher per fraction; kept when they exist (a continued study)."""
    models, data = os.path.join(out, "models"), os.path.join(out, "data")
    made = os.path.join(out, "models.json")
    if os.path.exists(made):
        with open(made) as f:
            return json.load(f)
    test = make_task(out, design.schedule())
    teacher_init, steps = os.path.join(models, "teacher_init"), design.teacher_sft_steps
    fine_tunings = {  # name: (init, data, steps, snapshot every); the longest first
        "student": (
            os.path.join(models, "student_init"),
            os.path.join(data, "train_semicolon.parquet"),
            design.student_sft_steps,
            design.snapshot_every,
        ),
        **{f"teacher_{f:.2f}": (teacher_init, teacher_data(data, f), steps, steps) for f in design.teacher_fractions},
    }
    runs = fine_tune_side_by_side(out, fine_tunings)
    teachers = {}
    for fraction in design.teacher_fractions:
        path = RunDir(runs[f"teacher_{fraction:.2f}"]).hf
        teachers[f"{fraction:.2f}"] = {"path": path, "accuracy": greedy_accuracy(path, test)}
    student, accuracy, curve = pick_student(runs["student"], test, design.weak_student_accuracy)
    result = {"student": {"path": student, "accuracy": accuracy, "snapshots": curve}, "teachers": teachers}
    with open(made, "w") as f:
        json.dump(result, f, indent=1)
    return result


# -- the runs -------------------------------------------------------------------------------------------


def run_overrides(spec: RunSpec, design: StudyDesign, out: str, models: dict) -> list[str]:
    student = models["student"]["path"]
    teacher = "" if spec.fraction is None else models["teachers"][f"{spec.fraction:.2f}"]["path"]
    train = "train.parquet"
    steps, algorithm, export = design.rl_steps, spec.method, False
    (first, distill), (second, then) = SEQUENTIAL_PHASES
    if spec.phase == first:
        steps, algorithm, export = design.switch_step, distill, True
    elif spec.phase == second:
        steps, algorithm = design.rl_steps - design.switch_step, then
        student = RunDir(os.path.join(out, "rl", replace(spec, phase=first).name)).hf
    if ALGORITHMS[algorithm].off_policy_traces:  # the dataset's solutions in the teacher's style
        train = "train.parquet" if spec.fraction == LARGE else "train_semicolon.parquet"
    if not ALGORITHMS[algorithm].uses_teacher:
        teacher = ""
    values = rl_overrides(
        algorithm,
        student,
        teacher,
        os.path.join(out, "data"),
        train,
        os.path.join(out, "rl", spec.name),
        steps,
        design.eval_every,
    )
    values |= {
        "trainer.seed": spec.seed,
        "data.seed": spec.seed,
        "trainer.export_hf": export,
        "trainer.tensorboard": False,
    }
    if spec.phase == first:
        values["algorithm.lambda_decay"] = 0.0  # a constant CE weight through the distillation phase
    return [f"{k}={v}" for k, v in values.items()] + list(design.rl_overrides)


def train_all(out: str, design: StudyDesign, models: dict) -> None:
    """Every RL run in one ``tgpo train-many`` launch (finished runs are skipped by it)."""
    specs = run_specs(design)
    runs = [{"config": RECIPE, "overrides": run_overrides(s, design, out, models)} for s in specs]
    path = os.path.join(out, "runs.json")
    with open(path, "w") as f:
        json.dump(runs, f, indent=1)
    metrics_files = [RunDir(os.path.join(out, "rl", s.name)).metrics for s in specs]
    total = sum(
        design.switch_step
        if s.phase == "distill"
        else design.rl_steps - design.switch_step
        if s.phase
        else design.rl_steps
        for s in specs
    )
    run_stage(
        f"{len(specs)} RL runs",
        tgpo("train-many", path, nproc=2),
        os.path.join(out, "rl.log"),
        metrics_files,
        total,
    )


def main(argv=None) -> int:
    p = command_parser("tgpo study", __doc__)
    p.add_argument("--out", default="runs/study")
    p.add_argument("--design", default=DESIGN, help="the study's design file (default: the shipped one)")
    p.add_argument("--quick", action="store_true", help="one seed, tiny step counts: a test of the plumbing")
    p.add_argument("--seeds", type=int, help="seeds 1..N instead of the design's")
    args = p.parse_args(argv)
    design = load_design(args.design, args.quick, args.seeds)
    os.makedirs(args.out, exist_ok=True)
    print(f"[1/3] data, student and {len(design.teacher_fractions)} teachers in {args.out}", flush=True)
    models = make_models(args.out, design)
    print(f"[2/3] {len(run_specs(design))} RL runs in one launch", flush=True)
    train_all(args.out, design, models)
    print("[3/3] results", flush=True)
    from tgpo_megatron.toy.report import collect, compute_minutes, plot, report

    summary = collect(args.out, design, models)
    plot(summary, design, args.out)
    command = "tgpo study " + " ".join(argv if argv is not None else sys.argv[1:])
    text = report(summary, design, models, command.strip(), compute_minutes(args.out))
    with open(os.path.join(args.out, "study.md"), "w") as f:
        f.write(text)
    with open(os.path.join(args.out, "study.json"), "w") as f:
        json.dump({"design": asdict(design), "models": models, "results": summary}, f, indent=1)
    print(text)
    return 0
