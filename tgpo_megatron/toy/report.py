"""The results of ``tgpo study``: accuracy curves and gaps per method and seed, mean ± standard error, the verdict
rules (fixed before any run, docs/study.md), the tables, figures and ``study.md``."""

from __future__ import annotations

import math
import os
import platform
import time
from dataclasses import replace

from tgpo_megatron.run.layout import EXIT_CODE, RunDir, read_metrics
from tgpo_megatron.toy.demo import ACCURACY
from tgpo_megatron.toy.design import (
    LARGE,
    SEQUENTIAL,
    SEQUENTIAL_PHASES,
    SMALL,
    RunSpec,
    StudyDesign,
    run_specs,
    without_teacher,
)


def curve_of(out: str, spec: RunSpec, design: StudyDesign, start_accuracy: float) -> dict:
    """Held-out accuracy by step (keys are the steps as strings, as in study.json; step 0: the student), the
    step-1 gap and the training reward, for one method and seed."""
    if spec.method == SEQUENTIAL:
        first, second = (
            read_metrics(os.path.join(out, "rl", replace(spec, phase=p).name)) for p, _ in SEQUENTIAL_PHASES
        )
        rows = first + [{**r, "step": r["step"] + design.switch_step} for r in second]
    else:
        rows = read_metrics(os.path.join(out, "rl", spec.name))
    return {
        "accuracy": {"0": start_accuracy} | {str(r["step"]): r[ACCURACY] for r in rows if ACCURACY in r},
        "gap_step1": rows[0].get("gap/reverse_kl_k1"),
        "mismatch_step1": rows[0].get("gap/mismatch_ratio"),
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
        steps = next(iter(seeds.values()))["accuracy"]
        accuracy = {step: mean_se([c["accuracy"][step] for c in seeds.values()]) for step in steps}
        gaps = [c["gap_step1"] for c in seeds.values() if c["gap_step1"] is not None]
        mismatches = [c["mismatch_step1"] for c in seeds.values() if c["mismatch_step1"] is not None]
        summary[key] = {
            "accuracy": accuracy,
            "gap_step1": mean_se(gaps) if gaps else None,
            "mismatch_step1": mean_se(mismatches) if mismatches else None,
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
                    points.append((curve["gap_step1"], curve["accuracy"][str(design.rl_steps)]))
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
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    # the design's axis, then the argmax mismatch, which TGPO's loss reads (added after the first full study)
    for axis, (key, label) in zip(
        axes,
        (
            ("gap_step1", "step-1 gap/reverse_kl_k1 (nats/token)"),
            ("mismatch_step1", "step-1 gap/mismatch_ratio (share of tokens)"),
        ),
    ):
        for method in design.ladder_methods:
            xs, ys, xe, ye = [], [], [], []
            for fraction in design.teacher_fractions:
                r = method_at(summary, method, fraction)
                if r is None or r[key] is None:
                    continue
                (gx, sx), (ay, sy) = r[key], r["accuracy"][str(design.rl_steps)]
                xs, ys = xs + [gx], ys + [ay]
                xe, ye = xe + [0 if math.isnan(sx) else sx], ye + [0 if math.isnan(sy) else sy]
            axis.errorbar(xs, ys, xerr=xe, yerr=ye, marker="o", capsize=3, label=method)
        axis.set(xlabel=label)
        axis.grid(alpha=0.3)
        axis.legend()
    axes[0].set(ylabel=f"accuracy at step {design.rl_steps}", title="teacher ladder (the design's axis)")
    axes[1].set_title("the same runs against the argmax mismatch")
    fig.tight_layout()
    fig.savefig(ladder, dpi=120)
    plt.close(fig)
    return [claims, ladder]


def observed_seed_sd(summary: dict, design: StudyDesign) -> float | None:
    """The pooled standard deviation over seeds of the final accuracy (what the power estimate assumed 0.03)."""
    squares, dof = 0.0, 0
    for r in summary.values():
        finals = [c["accuracy"][str(design.rl_steps)] for c in r["seeds"].values()]
        if len(finals) > 1:
            mean = sum(finals) / len(finals)
            squares += sum((v - mean) ** 2 for v in finals)
            dof += len(finals) - 1
    return math.sqrt(squares / dof) if dof else None


def compute_minutes(out: str) -> float:
    """The sum over every run (the models' fine-tunings and the RL runs) of its time from its config to its exit
    code: the study's compute even when it was interrupted and continued, or its report rebuilt later. Each
    launch's start-up (about a minute) and the models' greedy evaluations come on top."""
    import glob

    total = 0.0
    for done in glob.glob(os.path.join(out, "**", EXIT_CODE), recursive=True):
        config = RunDir(os.path.dirname(done)).config
        if os.path.exists(config):
            total += os.path.getmtime(done) - os.path.getmtime(config)
    return total / 60


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
        f"Generated by `{command}`, whose runs took {minutes:.0f} minutes in all on {platform.machine()} with "
        f"{os.cpu_count()} cores ({platform.platform()}), {time.strftime('%Y-%m-%d')}. Held-out greedy accuracy on "
        f"{design.test_problems} test problems (vLLM, temperature 0, the trainer's evaluation); mean ± standard "
        f"error over {len(design.seeds)} seed(s) {design.seeds}. A difference is called only when it exceeds "
        "twice its standard error (the rule was fixed before the runs).",
        "",
        "## Design (tgpo_megatron/toy/recipes/study.yaml, fixed before any run)",
        "",
        f"- RL: {design.rl_steps} steps per run, evaluation every {design.eval_every}; every run is "
        "`tgpo_megatron/toy/recipes/tiny_cpu.yaml` (lr 3e-4, 16 prompts × 8 rollouts, λ0 1.0 decaying by 0.0067 a "
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
    lines += [
        "",
        paragraphs["ladder"],
        "",
        "![ladder](study_ladder.png)",
        "",
        "The right panel (added after the first full study, not one of the pre-registered tests) puts the same "
        "runs against the step-1 `gap/mismatch_ratio`: the share of the student's tokens where the teacher's "
        "argmax differs, which is what TGPO's cross-entropy term reads.",
        "",
    ]
    return "\n".join(lines)
