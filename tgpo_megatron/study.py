"""``tgpo study``: the paper's claims at toy scale, with seeds and error bars, through the real trainer.

    tgpo study                     # the design in tgpo_megatron/recipes/study.yaml (about 90 minutes, 2 cores)
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

import argparse
import json
import math
import os
import platform
import random
import sys
import time
from dataclasses import asdict, dataclass, field, replace

from tgpo_megatron.config import from_dict, read_recipe
from tgpo_megatron.demo import RECIPE, Schedule, greedy_accuracy, make_task, pick_student, run_stage, sft_stage, tgpo
from tgpo_megatron.losses.registry import ALGORITHM_NAMES, ALGORITHMS

DESIGN = os.path.join(os.path.dirname(__file__), "recipes", "study.yaml")
EVAL_NAME = "add3_heldout"
ACCURACY = f"eval/{EVAL_NAME}/pass@1"
LARGE, SMALL = 1.0, 0.0
SEQUENTIAL = "sequential"
SEQUENTIAL_PHASES = (("distill", "teacher_ce"), ("grpo", "grpo"))
"""The sequential baseline's runs: (directory, algorithm), the first for ``switch_step`` steps."""


@dataclass(frozen=True)
class StudyDesign:
    """What the study runs (``recipes/study.yaml`` says why each number is what it is)."""

    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    rl_steps: int = 60
    eval_every: int = 20
    switch_step: int = 20
    teacher_fractions: list[float] = field(default_factory=lambda: [0.0, 0.33, 0.67, 1.0])
    claim_methods: list[str] = field(default_factory=lambda: ["grpo", "rkl", "kdrl", "tgpo_reg", "sequential", "luffy"])
    ladder_methods: list[str] = field(default_factory=lambda: ["rkl", "kdrl", "tgpo_reg"])
    train_problems: int = 20000
    test_problems: int = 1000
    teacher_sft_steps: int = 1400
    student_sft_steps: int = 1600
    snapshot_every: int = 50
    weak_student_accuracy: float = 0.10
    rl_overrides: list[str] = field(default_factory=list)
    """Further overrides of every RL run (``--quick``: smaller steps)."""

    def __post_init__(self):
        if not self.seeds:
            raise ValueError("seeds: give at least one")
        if self.rl_steps % self.eval_every or self.switch_step % self.eval_every:
            raise ValueError(
                f"eval_every={self.eval_every} must divide rl_steps={self.rl_steps} and "
                f"switch_step={self.switch_step} (the sequential baseline is evaluated at the same steps)"
            )
        if not 0 < self.switch_step < self.rl_steps:
            raise ValueError(f"switch_step={self.switch_step} must lie inside the {self.rl_steps} RL steps")
        if LARGE not in self.teacher_fractions or SMALL not in self.teacher_fractions:
            raise ValueError("teacher_fractions must hold 0.0 (small gap) and 1.0 (large gap)")
        methods = {*ALGORITHM_NAMES, SEQUENTIAL}
        unknown = sorted(set(self.claim_methods + self.ladder_methods) - methods)
        if unknown:
            raise ValueError(f"unknown methods {unknown}; choose from {sorted(methods)}")

    def schedule(self) -> Schedule:
        return Schedule(
            teacher_sft_steps=self.teacher_sft_steps,
            student_sft_steps=self.student_sft_steps,
            snapshot_every=self.snapshot_every,
            rl_steps=self.rl_steps,
            eval_every=self.eval_every,
            train_problems=self.train_problems,
            test_problems=self.test_problems,
        )


QUICK = dict(
    rl_steps=4,
    eval_every=2,
    switch_step=2,
    train_problems=2000,
    test_problems=32,
    teacher_sft_steps=30,
    student_sft_steps=30,
    snapshot_every=10,
    rl_overrides=["trainer.prompts_per_step=4", "rollout.n=4"],
)


def load_design(path: str, quick: bool, seeds: int | None) -> StudyDesign:
    design = from_dict(StudyDesign, read_recipe(path), "")
    if quick:
        design = replace(design, seeds=design.seeds[:1], **QUICK)
    if seeds is not None:
        design = replace(design, seeds=list(range(1, seeds + 1)))
    return design


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
    teachers = {}
    for fraction in design.teacher_fractions:
        name = f"teacher_{fraction:.2f}"
        rows = teacher_data(data, fraction)
        steps = design.teacher_sft_steps
        run = sft_stage(out, name, os.path.join(models, "teacher_init"), rows, steps, steps)
        teachers[f"{fraction:.2f}"] = {
            "path": os.path.join(run, "hf"),
            "accuracy": greedy_accuracy(os.path.join(run, "hf"), test),
        }
    student_run = sft_stage(
        out,
        "student",
        os.path.join(models, "student_init"),
        os.path.join(data, "train_semicolon.parquet"),
        design.student_sft_steps,
        design.snapshot_every,
    )
    student, accuracy, curve = pick_student(student_run, test, design.weak_student_accuracy)
    result = {"student": {"path": student, "accuracy": accuracy, "snapshots": curve}, "teachers": teachers}
    with open(made, "w") as f:
        json.dump(result, f, indent=1)
    return result


# -- the runs -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunSpec:
    method: str
    fraction: float | None  # the teacher's; None for grpo (no teacher)
    seed: int
    phase: str = ""  # of the sequential baseline (SEQUENTIAL_PHASES)

    @property
    def name(self) -> str:
        teacher = "" if self.fraction is None else f"/teacher_{self.fraction:.2f}"
        return f"{self.method}{teacher}/seed{self.seed}" + (f"/{self.phase}" if self.phase else "")


def without_teacher(method: str) -> bool:
    """A method that reads neither a teacher nor traces in its style: one run per seed serves every teacher."""
    spec = ALGORITHMS.get(method)
    return spec is not None and not spec.uses_teacher and not spec.off_policy_traces


def run_specs(design: StudyDesign) -> list[RunSpec]:
    specs = []
    for seed in design.seeds:
        specs += [RunSpec(m, None, seed) for m in design.claim_methods if without_teacher(m)]
        for fraction in design.teacher_fractions:
            claim = fraction in (SMALL, LARGE)
            for method in design.claim_methods if claim else design.ladder_methods:
                if method == SEQUENTIAL:
                    specs += [RunSpec(method, fraction, seed, phase) for phase, _ in SEQUENTIAL_PHASES]
                elif not without_teacher(method):
                    specs.append(RunSpec(method, fraction, seed))
    return specs


def run_overrides(spec: RunSpec, design: StudyDesign, out: str, models: dict) -> list[str]:
    data = os.path.join(out, "data")
    student = models["student"]["path"]
    teacher = "" if spec.fraction is None else models["teachers"][f"{spec.fraction:.2f}"]["path"]
    train = os.path.join(data, "train.parquet")
    steps, algorithm, export = design.rl_steps, spec.method, False
    (first, distill), (second, then) = SEQUENTIAL_PHASES
    if spec.phase == first:
        steps, algorithm, export = design.switch_step, distill, True
    elif spec.phase == second:
        steps, algorithm = design.rl_steps - design.switch_step, then
        student = os.path.join(out, "rl", replace(spec, phase=first).name, "hf")
    if ALGORITHMS[algorithm].off_policy_traces:  # the dataset's solutions in the teacher's style
        train = os.path.join(data, "train.parquet" if spec.fraction == LARGE else "train_semicolon.parquet")
    if not ALGORITHMS[algorithm].uses_teacher:
        teacher = ""
    values = {
        "algorithm.name": algorithm,
        "student.hf_path": student,
        "teacher.hf_path": teacher,
        "data.train_files": f"[{train}]",
        "eval.datasets": f"[{{name: {EVAL_NAME}, path: {os.path.join(data, 'test.parquet')}, n: 1}}]",
        "eval.every_n_steps": design.eval_every,
        "trainer.output_dir": os.path.join(out, "rl", spec.name),
        "trainer.steps": steps,
        "trainer.save_every": steps,
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
    metrics_files = [os.path.join(out, "rl", s.name, "metrics.jsonl") for s in specs]
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


# -- results --------------------------------------------------------------------------------------------


def read_metrics(run_dir: str) -> list[dict]:
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def curve_of(out: str, spec: RunSpec, design: StudyDesign, start_accuracy: float) -> dict:
    """Held-out accuracy by step (step 0: the student), step-1 gap, for one method and seed."""
    if spec.method == SEQUENTIAL:
        first, second = (
            read_metrics(os.path.join(out, "rl", replace(spec, phase=p).name)) for p, _ in SEQUENTIAL_PHASES
        )
        rows = first + [{**r, "step": r["step"] + design.switch_step} for r in second]
    else:
        rows = read_metrics(os.path.join(out, "rl", spec.name))
    return {
        "accuracy": [[0, start_accuracy]] + [[r["step"], r[ACCURACY]] for r in rows if ACCURACY in r],
        "gap_step1": rows[0].get("gap/reverse_kl_k1"),
        "reward": [r["reward/mean"] for r in rows],
    }


def mean_se(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, float("nan")
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)


def collect(out: str, design: StudyDesign, models: dict) -> dict:
    start = models["student"]["accuracy"]
    per_seed: dict = {}
    for spec in run_specs(design):
        if spec.phase == SEQUENTIAL_PHASES[1][0]:
            continue
        key = f"{spec.method}@{'none' if spec.fraction is None else f'{spec.fraction:.2f}'}"
        per_seed.setdefault(key, {})[spec.seed] = curve_of(out, replace(spec, phase=""), design, start)
    summary = {}
    for key, seeds in per_seed.items():
        steps = [s for s, _ in next(iter(seeds.values()))["accuracy"]]
        accuracy = {step: mean_se([dict(map(tuple, c["accuracy"]))[step] for c in seeds.values()]) for step in steps}
        gaps = [c["gap_step1"] for c in seeds.values() if c["gap_step1"] is not None]
        summary[key] = {
            "accuracy": {str(k): v for k, v in accuracy.items()},
            "gap_step1": mean_se(gaps) if gaps else None,
            "seeds": seeds,
        }
    return summary


def method_at(summary: dict, method: str, fraction: float) -> dict | None:
    return summary.get(f"{method}@none" if without_teacher(method) else f"{method}@{fraction:.2f}")


def difference(summary: dict, design: StudyDesign, a: str, b: str, fraction: float):
    """``a - b`` in final accuracy and its standard error (None when either was not run)."""
    ra, rb = method_at(summary, a, fraction), method_at(summary, b, fraction)
    if ra is None or rb is None:
        return None
    (ma, sa), (mb, sb) = ra["accuracy"][str(design.rl_steps)], rb["accuracy"][str(design.rl_steps)]
    return ma - mb, math.sqrt(sa**2 + sb**2)


def called(estimate) -> int | None:
    """The rule fixed before any result: +1 / -1 when the estimate exceeds twice its standard error either way,
    0 when it does not, None without an error bar (one seed) or an estimate."""
    if estimate is None or math.isnan(estimate[1]):
        return None
    value, se = estimate
    return 1 if value > 2 * se else -1 if value < -2 * se else 0


def compare(summary: dict, design: StudyDesign, a: str, b: str, fraction: float) -> str:
    estimate = difference(summary, design, a, b, fraction)
    if estimate is None:
        return f"{a} vs {b}: not run"
    verdict = {None: "one seed: no error bar", 1: f"{a} higher", -1: f"{b} higher", 0: "not distinguishable"}
    return f"{a} − {b} = {estimate[0]:+.3f} ± {estimate[1]:.3f} ({verdict[called(estimate)]})"


def verdict(conditions: list[int | None]) -> str:
    """Held when every condition is met; did not hold when one is contradicted by a called difference."""
    if any(c is None for c in conditions):
        return "**not decidable** (no error bars)"
    if all(c == 1 for c in conditions):
        return "**held**"
    if any(c == -1 for c in conditions):
        return "**did not hold**"
    return "**not decided at this power**"


def claim_paragraphs(summary: dict, design: StudyDesign, slopes: dict) -> dict[str, str]:
    """One paragraph per claim: the rule (fixed before any result), the numbers, the verdict."""
    n = design.rl_steps

    def at_least(estimate):  # "not below": met unless the difference is called negative
        c = called(estimate)
        return c if c is None else (1 if c >= 0 else -1)

    def acc(method, fraction):
        r = method_at(summary, method, fraction)
        return "not run" if r is None else fmt(r["accuracy"][str(n)])

    large_tr = difference(summary, design, "tgpo_reg", "rkl", LARGE)
    large_tg = difference(summary, design, "tgpo_reg", "grpo", LARGE)
    small_rg = difference(summary, design, "rkl", "grpo", SMALL)
    rkl_slope, tgpo_slope = slopes.get("rkl"), slopes.get("tgpo_reg")

    def show(slope):
        return "n/a" if slope is None else f"{slope[0]:+.3f} ± {slope[1]:.3f}"

    slope_fall = None if rkl_slope is None else called((-rkl_slope[0], rkl_slope[1]))
    slope_flat = None if tgpo_slope is None else at_least(tgpo_slope)
    out = {
        "claim 1": f"Rule: with the large-gap teacher, tgpo_reg above rkl and not below grpo. At step {n}: tgpo_reg "
        f"{acc('tgpo_reg', LARGE)}, rkl {acc('rkl', LARGE)}, grpo {acc('grpo', LARGE)}. Claim 1 "
        + verdict([called(large_tr), at_least(large_tg)])
        + ".",
        "claim 2": f"Rule: with the small-gap teacher, rkl not below grpo. At step {n}: rkl {acc('rkl', SMALL)}, "
        f"grpo {acc('grpo', SMALL)}, tgpo_reg {acc('tgpo_reg', SMALL)}. Claim 2 " + verdict([at_least(small_rg)]) + ".",
        "ladder": "Rule: rkl's final accuracy falls with the step-1 gap (negative slope) and tgpo_reg's does not. "
        f"Slopes (accuracy per nat): rkl {show(rkl_slope)}, tgpo_reg {show(tgpo_slope)}. The ladder "
        + verdict([slope_fall, slope_flat])
        + ".",
    }
    return out


def fmt(value: tuple[float, float]) -> str:
    mean, se = value
    return f"{mean:.3f}" if math.isnan(se) else f"{mean:.3f} ± {se:.3f}"


def claim_table(summary: dict, design: StudyDesign, fraction: float) -> str:
    steps = [str(s) for s in range(0, design.rl_steps + 1, design.eval_every)]
    lines = ["| method | " + " | ".join(f"step {s}" for s in steps) + " | step-1 gap/reverse_kl_k1 |"]
    lines.append("|---" * (len(steps) + 2) + "|")
    for method in design.claim_methods:
        r = method_at(summary, method, fraction)
        if r is not None:
            gap = "–" if r["gap_step1"] is None else fmt(r["gap_step1"])
            lines.append(f"| {method} | " + " | ".join(fmt(r["accuracy"][s]) for s in steps) + f" | {gap} |")
    return "\n".join(lines)


def ladder_slopes(summary: dict, design: StudyDesign) -> dict:
    """Per method, the least-squares slope of final accuracy on the step-1 gap over every (teacher, seed)."""
    slopes = {}
    for method in design.ladder_methods:
        points = []
        for fraction in design.teacher_fractions:
            r = method_at(summary, method, fraction)
            for curve in (r or {}).get("seeds", {}).values():
                if curve["gap_step1"] is not None:
                    points.append((curve["gap_step1"], dict(map(tuple, curve["accuracy"]))[design.rl_steps]))
        if len(points) > 2:
            mx, my = sum(x for x, _ in points) / len(points), sum(y for _, y in points) / len(points)
            sxx = sum((x - mx) ** 2 for x, _ in points)
            slope = sum((x - mx) * (y - my) for x, y in points) / sxx
            residual = sum((y - my - slope * (x - mx)) ** 2 for x, y in points) / (len(points) - 2)
            slopes[method] = (slope, math.sqrt(residual / sxx))
    return slopes


def plot(summary: dict, design: StudyDesign, out: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    claims = os.path.join(out, "study_claims.png")
    fig, axes = plt.subplots(2, 2, figsize=(12, 8), sharey="row")
    for column, (fraction, title) in enumerate(((LARGE, "claim 1: large gap"), (SMALL, "claim 2: small gap"))):
        top, bottom = axes[0][column], axes[1][column]
        for method in design.claim_methods:
            r = method_at(summary, method, fraction)
            if r is None:
                continue
            steps = sorted(int(s) for s in r["accuracy"])
            means = [r["accuracy"][str(s)][0] for s in steps]
            errors = [0 if math.isnan(r["accuracy"][str(s)][1]) else r["accuracy"][str(s)][1] for s in steps]
            top.errorbar(steps, means, yerr=errors, marker="o", capsize=3, label=method)
            rewards = [curve["reward"] for curve in r["seeds"].values()]
            mean_reward = [sum(values) / len(values) for values in zip(*rewards)]
            smooth = [
                sum(mean_reward[max(0, i - 9) : i + 1]) / len(mean_reward[max(0, i - 9) : i + 1])
                for i in range(len(mean_reward))
            ]
            bottom.plot(range(1, len(smooth) + 1), smooth, label=method)
        top.set(title=title, xlabel="RL step", ylabel="held-out greedy accuracy")
        bottom.set(xlabel="RL step", ylabel="training reward (10-step mean, mean over seeds)")
        for axis in (top, bottom):
            axis.grid(alpha=0.3)
            axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(claims, dpi=120)
    plt.close(fig)

    ladder = os.path.join(out, "study_ladder.png")
    fig, axis = plt.subplots(figsize=(6, 4))
    for method in design.ladder_methods:
        xs, ys, xe, ye = [], [], [], []
        for fraction in design.teacher_fractions:
            r = method_at(summary, method, fraction)
            if r is None or r["gap_step1"] is None:
                continue
            (gx, sx), (ay, sy) = r["gap_step1"], r["accuracy"][str(design.rl_steps)]
            xs, ys = xs + [gx], ys + [ay]
            xe, ye = xe + [0 if math.isnan(sx) else sx], ye + [0 if math.isnan(sy) else sy]
        axis.errorbar(xs, ys, xerr=xe, yerr=ye, marker="o", capsize=3, label=method)
    axis.set(xlabel="step-1 gap/reverse_kl_k1 (nats/token)", ylabel=f"accuracy at step {design.rl_steps}")
    axis.set_title("teacher ladder")
    axis.grid(alpha=0.3)
    axis.legend()
    fig.tight_layout()
    fig.savefig(ladder, dpi=120)
    plt.close(fig)
    return [claims, ladder]


def observed_seed_sd(summary: dict, design: StudyDesign) -> float | None:
    """The pooled standard deviation over seeds of the final accuracy (what the power estimate assumed 0.03)."""
    squares, dof = 0.0, 0
    for r in summary.values():
        finals = [dict(map(tuple, c["accuracy"]))[design.rl_steps] for c in r["seeds"].values()]
        if len(finals) > 1:
            mean = sum(finals) / len(finals)
            squares += sum((v - mean) ** 2 for v in finals)
            dof += len(finals) - 1
    return math.sqrt(squares / dof) if dof else None


def compute_minutes(out: str) -> float:
    """From the first data file to the last metrics line: the study's time even when its report is rebuilt
    later by running the command again."""
    import glob

    first = min(os.path.getmtime(p) for p in glob.glob(os.path.join(out, "data", "*")))
    last = max(os.path.getmtime(p) for p in glob.glob(os.path.join(out, "rl", "**", "metrics.jsonl"), recursive=True))
    return (last - first) / 60


def report(summary: dict, design: StudyDesign, models: dict, command: str, minutes: float) -> str:
    slopes = ladder_slopes(summary, design)
    sd = observed_seed_sd(summary, design)
    final = design.rl_steps
    large = [
        compare(summary, design, *pair, LARGE)
        for pair in (
            ("tgpo_reg", "rkl"),
            ("tgpo_reg", "grpo"),
            ("rkl", "grpo"),
            ("sequential", "tgpo_reg"),
            ("luffy", "tgpo_reg"),
        )
    ]
    small = [
        compare(summary, design, *pair, SMALL)
        for pair in (
            ("rkl", "grpo"),
            ("tgpo_reg", "grpo"),
            ("tgpo_reg", "rkl"),
            ("sequential", "tgpo_reg"),
            ("luffy", "tgpo_reg"),
        )
    ]
    paragraphs = claim_paragraphs(summary, design, slopes)
    teachers = ", ".join(f"{f}: {t['accuracy']:.3f}" for f, t in models["teachers"].items())
    lines = [
        "# `tgpo study`: the paper's claims at toy scale",
        "",
        f"Generated by `{command}`, which computed for {minutes:.0f} minutes on {platform.machine()} with "
        f"{os.cpu_count()} cores ({platform.platform()}), {time.strftime('%Y-%m-%d')}. Held-out greedy accuracy on "
        f"{design.test_problems} test problems (vLLM, temperature 0, the trainer's evaluation); mean ± standard "
        f"error over {len(design.seeds)} seed(s) {design.seeds}. A difference is called only when it exceeds "
        "twice its standard error (the rule was fixed before the runs).",
        "",
        "## Design (tgpo_megatron/recipes/study.yaml, fixed before any run)",
        "",
        f"- RL: {design.rl_steps} steps per run, evaluation every {design.eval_every}; every run is "
        "`tgpo_megatron/recipes/tiny_cpu.yaml` (lr 3e-4, 16 prompts × 8 rollouts, λ0 1.0 decaying by 0.0067 a "
        f"step) with the run's algorithm, teacher, seed and data; extra overrides: {design.rl_overrides or 'none'}.",
        f"- Sequential baseline: `teacher_ce` (the teacher term alone, λ 1) for {design.switch_step} steps, then "
        f"`grpo` from its result for {design.rl_steps - design.switch_step}.",
        f"- Student: the `;`-style SFT snapshot, accuracy {models['student']['accuracy']:.3f}. Teachers (share of "
        f"the other style in their SFT data: accuracy): {teachers}. Fraction 1.0 is claim 1's teacher (large "
        "gap), 0.0 claim 2's (small gap).",
        "- LUFFY learns from the dataset's solutions written in the teacher's style (no teacher model); its "
        "training reward counts that trace (one of the G slots, always correct), so its reward curve starts 1/G "
        "above the others.",
        "- Power: see the design file. Observed seed-to-seed SD of the final accuracy (pooled): "
        + ("n/a (one seed)" if sd is None else f"{sd:.3f}")
        + " (the estimate assumed 0.03).",
        "",
        "## Claim 1: with a large gap, RKL fails and TGPO does not",
        "",
        claim_table(summary, design, LARGE),
        "",
        "Comparisons at step " + f"{final}: " + "; ".join(large) + ".",
        "",
        paragraphs["claim 1"],
        "",
        "## Claim 2: with a small gap, RKL works",
        "",
        claim_table(summary, design, SMALL),
        "",
        "Comparisons at step " + f"{final}: " + "; ".join(small) + ".",
        "",
        paragraphs["claim 2"],
        "",
        "![claims](study_claims.png)",
        "",
        "## The teacher ladder",
        "",
        "| method | "
        + " | ".join(f"teacher {f:.2f}: gap → accuracy" for f in design.teacher_fractions)
        + " | slope (accuracy per nat) |",
        "|---" * (len(design.teacher_fractions) + 2) + "|",
    ]
    for method in design.ladder_methods:
        cells = []
        for fraction in design.teacher_fractions:
            r = method_at(summary, method, fraction)
            cells.append(
                "–"
                if r is None or r["gap_step1"] is None
                else f"{fmt(r['gap_step1'])} → {fmt(r['accuracy'][str(final)])}"
            )
        slope = slopes.get(method)
        lines.append(
            f"| {method} | "
            + " | ".join(cells)
            + f" | {'–' if slope is None else f'{slope[0]:+.3f} ± {slope[1]:.3f}'} |"
        )
    lines += ["", paragraphs["ladder"], "", "![ladder](study_ladder.png)", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="tgpo study",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
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
