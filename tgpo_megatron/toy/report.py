"""The results of ``tgpo study``: accuracy curves per run (both test sets, and pooled), the pre-registered tests
of docs/study_preregistration.md (paired t, Holm, non-inferiority), 95% intervals for everything else, the
figures and ``study.md``."""

from __future__ import annotations

import glob
import os
import platform
import time

from tgpo_megatron.run.layout import EXIT_CODE, RunDir, read_metrics
from tgpo_megatron.toy.design import NO_TEACHER, RunSpec, StudyDesign, run_specs
from tgpo_megatron.toy.stages import accuracy_of, generate_texts
from tgpo_megatron.toy.stats import holm, interval, non_inferiority, paired

TEST_SETS = ("add3_carry", "add3_nocarry")
NON_INFERIORITY_MARGIN = 0.03
ALPHA = 0.05
SEPARATORS = (",", ";")


def final_style(model_dir: str, problems) -> dict:
    """The greedy responses of a final student on the test problems: their accuracy (transformers, a check of
    the trainer's evaluation) and the share of ``,`` among the separators they write."""
    texts = generate_texts(model_dir, problems)
    pads = [t[0].split("</think>")[0] for t in texts]
    commas = sum(p.count(",") for p in pads)
    written = commas + sum(p.count(";") for p in pads)
    return {"accuracy": accuracy_of(texts, problems), "comma_share": commas / written if written else None}


def curve_of(out: str, spec: RunSpec, sizes: dict, start: dict) -> dict:
    """One run's accuracy by step (keys: the steps as strings; step 0 the student's), per test set and pooled
    over both, its step-1 gap probes and its all-wrong groups."""
    rows = read_metrics(os.path.join(out, "rl", spec.name))
    per_set = {name: {"0": start[name]} for name in TEST_SETS}
    for r in rows:
        for name in TEST_SETS:
            key = f"eval/{name}/pass@1"
            if key in r:
                per_set[name][str(r["step"])] = r[key]
    total = sum(sizes.values())
    pooled = {
        step: sum(per_set[name][step] * sizes[name] for name in TEST_SETS) / total
        for step in per_set[TEST_SETS[0]]
        if all(step in per_set[name] for name in TEST_SETS)
    }
    return {
        "accuracy": pooled,
        **{name: per_set[name] for name in TEST_SETS},
        "gap_step1": rows[0].get("gap/reverse_kl_k1"),
        "mismatch_step1": rows[0].get("gap/mismatch_ratio"),
        "none_correct": [r.get("reward/none_correct") for r in rows],
        "reward": [r["reward/mean"] for r in rows],
    }


def area(curve: dict) -> float:
    """The accuracy curve's mean height over the run (trapezoids over the evaluated steps)."""
    steps = sorted(int(s) for s in curve)
    if len(steps) < 2:
        return curve[str(steps[0])]
    total = sum((b - a) * (curve[str(a)] + curve[str(b)]) / 2 for a, b in zip(steps, steps[1:]))
    return total / (steps[-1] - steps[0])


def collect(out: str, design: StudyDesign, task: dict, models: dict) -> dict:
    """``{"method@cell": {seed: curve}}`` for every run, with the final students' style and accuracy."""
    sizes = {name: len(problems) for name, problems in task["tests"].items()}
    test = [p for name in TEST_SETS for p in task["tests"][name]]
    runs: dict = {}
    for spec in run_specs(design):
        start = models[f"student_s{spec.seed}"]["test_accuracy"]
        curve = curve_of(out, spec, sizes, start)
        curve["final"] = final_style(RunDir(os.path.join(out, "rl", spec.name)).hf, test)
        curve["area"] = area(curve["accuracy"])
        runs.setdefault(f"{spec.method}@{spec.cell}", {})[str(spec.seed)] = curve
    return runs


def finals(summary: dict, key: str, design: StudyDesign, field: str = "accuracy") -> list[float]:
    seeds = summary[key]
    return [seeds[str(s)][field][str(design.rl_steps)] for s in design.seeds]


# -- the pre-registered tests ---------------------------------------------------------------------------


def preregistered_tests(summary: dict, design: StudyDesign) -> dict:
    """H1, H2 (Holm), C1 (non-inferiority), C2 (one-sided) and C3 (interval) on the primary endpoint."""

    def diff(a: str, b: str):
        return paired(finals(summary, a, design), finals(summary, b, design))

    tgpo_large = "tgpo_reg@strong_large"
    comparisons = {
        "H1": diff(tgpo_large, f"grpo@{NO_TEACHER}"),
        "H2": diff(tgpo_large, "rkl@strong_large"),
        "C1": diff("rkl@strong_small", f"grpo@{NO_TEACHER}"),
        "C2": diff(tgpo_large, "tgpo_reg@peer_large"),
        "C3": diff("tgpo_reg@strong_small", tgpo_large),
    }
    if any(c is None for c in comparisons.values()):
        return {"comparisons": comparisons, "verdicts": {}}  # one seed (--quick): nothing to test
    primary = holm({h: comparisons[h].p_greater for h in ("H1", "H2")}, ALPHA)
    verdicts = {h: "supported" if primary[h] else "not supported" for h in ("H1", "H2")}
    verdicts["C1"] = non_inferiority(comparisons["C1"], NON_INFERIORITY_MARGIN)
    verdicts["C2"] = "supported" if comparisons["C2"].p_greater <= ALPHA else "not supported"
    verdicts["C3"] = "estimate only"
    return {"comparisons": comparisons, "verdicts": verdicts}


HYPOTHESES = {
    "H1": "tgpo_reg(strong, large) > grpo",
    "H2": "tgpo_reg(strong, large) > rkl(strong, large)",
    "C1": f"rkl(strong, small) not below grpo by more than {NON_INFERIORITY_MARGIN}",
    "C2": "tgpo_reg(strong, large) > tgpo_reg(peer, large)",
    "C3": "style cost: tgpo_reg(strong, small) − tgpo_reg(strong, large)",
}


def tests_table(result: dict) -> str:
    lines = [
        "| | hypothesis | difference [95% interval] | one-sided p | verdict |",
        "|---|---|---|---|---|",
    ]
    for name, text in HYPOTHESES.items():
        c = result["comparisons"][name]
        p = "–" if c is None or name in ("C1", "C3") else f"{c.p_greater:.3f}"
        lines.append(f"| {name} | {text} | {'n/a' if c is None else c} | {p} | {result['verdicts'].get(name, 'n/a')} |")
    return "\n".join(lines)


# -- tables and figures ---------------------------------------------------------------------------------


def fmt(values: list[float]) -> str:
    mean, low, high = interval(values)
    return f"{mean:.3f} [{low:.3f}, {high:.3f}]" if len(values) > 1 else f"{mean:.3f}"


def cell_table(summary: dict, design: StudyDesign) -> str:
    steps = [str(s) for s in range(0, design.rl_steps + 1, design.eval_every)]
    lines = [
        "| run | " + " | ".join(f"step {s}" for s in steps) + " | carry | no carry | area | step-1 reverse KL | "
        "step-1 mismatch | all-wrong groups, first → last 20 steps | `,` share |",
        "|---|" + "---|" * (len(steps) + 7),
    ]
    for key, seeds in summary.items():
        per_step = [fmt([seeds[str(x)]["accuracy"][s] for x in design.seeds]) for s in steps]
        sets = [fmt(finals(summary, key, design, name)) for name in TEST_SETS]
        areas = fmt([seeds[str(x)]["area"] for x in design.seeds])
        probes = []
        for field in ("gap_step1", "mismatch_step1"):
            values = [seeds[str(x)][field] for x in design.seeds if seeds[str(x)][field] is not None]
            probes.append(fmt(values) if values else "–")
        window = min(20, design.rl_steps)
        first = [sum(seeds[str(x)]["none_correct"][:window]) / window for x in design.seeds]
        last = [sum(seeds[str(x)]["none_correct"][-window:]) / window for x in design.seeds]
        probes.append(f"{fmt(first)} → {fmt(last)}")
        shares = [seeds[str(x)]["final"]["comma_share"] for x in design.seeds]
        style = fmt([v for v in shares if v is not None]) if any(v is not None for v in shares) else "–"
        lines.append(f"| {key} | " + " | ".join(per_step + sets + [areas, *probes, style]) + " |")
    return "\n".join(lines)


DIFFERENCES = (  # the pre-registered contrasts, drawn as paired differences by step
    ("tgpo_reg@strong_large", f"grpo@{NO_TEACHER}"),
    ("tgpo_reg@strong_large", "tgpo_reg@peer_large"),
    ("rkl@strong_small", f"grpo@{NO_TEACHER}"),
    ("tgpo_reg@strong_small", "tgpo_reg@strong_large"),
)


def plot(summary: dict, design: StudyDesign, path: str) -> str:
    """Accuracy by step (all problems, with a carry, without; mean and 95% interval over seeds) and the
    pre-registered contrasts as paired differences with their 95% intervals (one seed: the training reward)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(20, 4.2))
    for axis, (field, title) in zip(
        axes, (("accuracy", "all test problems"), ("add3_carry", "with a carry"), ("add3_nocarry", "without"))
    ):
        for key, seeds in summary.items():
            steps = sorted(int(s) for s in next(iter(seeds.values()))[field])
            bands = [interval([seeds[str(x)][field][str(s)] for x in design.seeds]) for s in steps]
            axis.plot(steps, [b[0] for b in bands], marker="o", label=key)
            axis.fill_between(steps, [b[1] for b in bands], [b[2] for b in bands], alpha=0.1)
        axis.set(title=title, xlabel="RL step", ylim=(0, 1))
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("greedy accuracy" + (" (mean, 95% interval over seeds)" if len(design.seeds) > 1 else ""))
    axes[0].legend(fontsize=8)
    right = axes[3]
    if len(design.seeds) == 1:
        plot_reward(right, summary, str(design.seeds[0]))
        return _save(fig, path)
    for a, b in DIFFERENCES:
        if a not in summary or b not in summary:
            continue
        steps = sorted(int(s) for s in next(iter(summary[a].values()))["accuracy"])
        values = [
            paired(*[[summary[k][str(x)]["accuracy"][str(s)] for x in design.seeds] for k in (a, b)]) for s in steps
        ]
        if any(v is None for v in values):
            continue
        right.plot(steps, [v.mean for v in values], marker="o", label=f"{a} − {b}")
        right.fill_between(steps, [v.low for v in values], [v.high for v in values], alpha=0.15)
    right.axhline(0, color="black", linewidth=0.8)
    right.set(title="paired differences (95% interval)", xlabel="RL step")
    right.grid(alpha=0.3)
    right.legend(fontsize=7)
    return _save(fig, path)


def plot_reward(axis, summary: dict, seed: str, window: int = 10) -> None:
    for key, seeds in summary.items():
        reward = seeds[seed]["reward"]
        means = [sum(reward[max(0, i - window + 1) : i + 1]) / min(i + 1, window) for i in range(len(reward))]
        axis.plot(range(1, len(reward) + 1), means, label=key)
    axis.set(title=f"training reward ({window}-step mean)", xlabel="RL step", ylim=(0, 1))
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)


def _save(fig, path: str) -> str:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def observed_sd(summary: dict, design: StudyDesign) -> float | None:
    """The SD over seeds of the primary comparisons' paired differences (the power estimate assumed 0.035)."""
    result = preregistered_tests(summary, design)
    sds = [c.sd for name, c in result["comparisons"].items() if c is not None and name in ("H1", "H2")]
    return sum(sds) / len(sds) if sds else None


def compute_minutes(out: str) -> float:
    """The sum over every run (the models' fine-tunings, the probe and the RL runs) of its time from its config
    to its exit code: the study's compute even when it was interrupted and continued. Each launch's start-up
    (about a minute) and the models' evaluations come on top."""
    total = 0.0
    for done in glob.glob(os.path.join(out, "**", EXIT_CODE), recursive=True):
        config = RunDir(os.path.dirname(done)).config
        if os.path.exists(config):
            total += os.path.getmtime(done) - os.path.getmtime(config)
    return total / 60


def report(summary: dict, design: StudyDesign, context: dict, command: str, minutes: float) -> str:
    result = preregistered_tests(summary, design)
    sd = observed_sd(summary, design)
    pilot, probed, models = context["pilot"], context["probe"], context["models"]
    tried = ", ".join(f"{s}: {t['carry_reward']:.3f}" for s, t in pilot["tried"].items())
    students = "; ".join(
        f"seed {s}: validation {models[f'student_s{s}']['validation_accuracy']:.3f}, carry reward "
        f"{models[f'student_s{s}']['carry_reward']:.3f} (peer {models[f'peer_s{s}']['validation_accuracy']:.3f})"
        for s in design.seeds
    )
    teachers = ", ".join(f"{n} {models[n]['validation_accuracy']:.3f}" for n in ("strong_semicolon", "strong_comma"))
    machine = f"{platform.machine()} with {os.cpu_count()} cores ({platform.platform()})"
    return "\n".join(
        [
            "# `tgpo study` v2: does TGPO beat GRPO when the teacher knows something the student does not?",
            "",
            f"Generated by `{command}`, whose runs took {minutes:.0f} minutes in all on {machine}, "
            f"{time.strftime('%Y-%m-%d')}. Pre-registered in docs/study_preregistration.md (hypotheses, tests, "
            "margins, power); the design file is tgpo_megatron/toy/recipes/study.yaml. Greedy accuracy on the "
            f"test problems (step 0: the student with transformers; later steps: the trainer's vLLM evaluation); "
            f"means with 95% t-intervals over {len(design.seeds)} seed(s) {design.seeds}; differences paired by seed.",
            "",
            f"## The pre-registered tests (primary endpoint: accuracy on every test problem at step {design.rl_steps})",
            "",
            tests_table(result),
            "",
            f"Holm over H1 and H2 at family-wise α = {ALPHA}. Observed SD of the primary paired differences: "
            + ("n/a" if sd is None else f"{sd:.3f} (the power estimate assumed 0.035)."),
            "",
            "## Models and coefficients",
            "",
            f"- Pilot (seed {design.pilot_seed}): sampled carry reward on the validation split by carry share: "
            f"{tried}; chosen {pilot['share']} ({'in' if pilot['in_band'] else 'outside'} the band "
            f"{design.pilot_band}).",
            f"- Students and peers: {students}. Strong teachers (validation accuracy): {teachers}.",
            f"- λ probe: grad_norm(grpo) {probed['grad_norm']['grpo']:.4g}, grad_norm(teacher_ce) "
            f"{probed['grad_norm']['teacher_ce']:.4g}: λ0 = {probed['lambda_init']:.4g}, decaying by "
            f"{probed['lambda_decay']:.4g} a step to 0 at step {design.lambda_zero_step}.",
            "",
            "## Every run",
            "",
            "Pooled accuracy by step; the final accuracy on each test set; the area under the curve (its mean "
            "height); the step-1 gap probes; the share of `,` among the separators the final students write.",
            "",
            cell_table(summary, design),
            "",
            "![study v2](study_v2.png)",
            "",
        ]
    )
