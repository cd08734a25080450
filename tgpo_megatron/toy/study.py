"""``tgpo study``: does TGPO beat GRPO when the teacher knows something the student does not? Study v2 of the
paper's claim at toy scale, with seeds and pre-registered tests, through the real trainer.

    tgpo study                     # the design in toy/recipes/study.yaml (its time: docs/study.md)
    tgpo study --quick             # every stage with tiny step counts: a test of the plumbing, not of the science
    tgpo study --seeds 3 --out runs/study3

On the demo's task (3-digit addition on a scratchpad), the skill at stake is the carry. Stages:
1. data: training, validation and test problems (the test set as two sets, with and without a carry);
2. the pilot (seed 0): the smallest share of carry problems in the student's fine-tuning whose student earns
   a sampled carry reward in the design's band on the validation split;
3. the models: two strong teachers (every problem; styles ``;`` and ``,``), and per seed a student (carry-free
   problems plus that share, style ``;``) and its peer (the same in the ``,`` style);
4. the λ probe: one step of ``teacher_ce`` and one of ``grpo`` from the pilot's student; λ0 puts the teacher
   term at ``probe_fraction`` of the policy gradient;
5. every RL run (grpo; rkl and tgpo_reg with each strong teacher; tgpo_reg with the peer) in one
   ``tgpo train-many`` launch; 6. the report (docs/study_preregistration.md's tests) and figures.

Writes ``OUT/study.json``, ``OUT/study.md`` and the figures; run the same command again to continue an
interrupted study (finished models and runs are kept).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
from dataclasses import asdict

from tgpo_megatron.cli import command_parser
from tgpo_megatron.losses.registry import ALGORITHMS
from tgpo_megatron.run.layout import RunDir, read_metrics
from tgpo_megatron.toy.design import DESIGN, PROBE_CELL, TEACHERS, RunSpec, StudyDesign, load_design, run_specs
from tgpo_megatron.toy.stages import (
    RECIPE,
    STUDENT_SHAPE,
    accuracy_of,
    fine_tune_side_by_side,
    generate_texts,
    run_stage,
    sft_stage,
    tgpo,
)

TEST_SETS = ("add3_carry", "add3_nocarry")

# -- data -----------------------------------------------------------------------------------------------


def make_data(out: str, design: StudyDesign) -> dict:
    """The problems (train, validation, test; disjoint) and the files every stage reads."""
    from tgpo_megatron.data.synthetic import problem_rows, sample_problems, write_rows

    data = os.path.join(out, "data")
    train = sample_problems(design.train_problems, seed=1)
    seen = frozenset((p.a, p.b) for p in train)
    validation = sample_problems(design.validation_problems, seed=3, exclude=seen)
    seen |= frozenset((p.a, p.b) for p in validation)
    test = sample_problems(design.test_problems, seed=2, exclude=seen)
    write_rows(problem_rows(train, separator=","), os.path.join(data, "train.parquet"))
    write_rows(problem_rows(train, separator=";"), os.path.join(data, "train_semicolon.parquet"))
    tests = {"add3_carry": [p for p in test if p.has_carry], "add3_nocarry": [p for p in test if not p.has_carry]}
    for name, problems in tests.items():
        write_rows(problem_rows(problems), os.path.join(data, f"{name}.parquet"))
    return {"train": train, "validation": validation, "tests": tests, "dir": data}


def student_data(task: dict, share: float, seed: int, separator: str) -> str:
    """Every carry-free training problem and carry problems making ``share`` of the rows (drawn by ``seed``)."""
    from tgpo_megatron.data.synthetic import problem_rows, write_rows

    free = [p for p in task["train"] if not p.has_carry]
    carry = [p for p in task["train"] if p.has_carry]
    count = round(share * len(free) / (1 - share))
    chosen = free + random.Random(seed).sample(carry, count)
    name = f"student_c{share:.4f}_s{seed}{'_comma' if separator == ',' else ''}.parquet"
    return write_rows(problem_rows(chosen, separator=separator), os.path.join(task["dir"], name))


def carry_reward(model_dir: str, task: dict, samples: int, seed: int) -> float:
    """Sampled (temperature 1, as the rollouts) reward on the validation split's carry problems."""
    problems = [p for p in task["validation"] if p.has_carry]
    return accuracy_of(generate_texts(model_dir, problems, samples, temperature=1.0, seed=seed), problems)


def validation_accuracy(model_dir: str, task: dict) -> float:
    return accuracy_of(generate_texts(model_dir, task["validation"]), task["validation"])


# -- models ---------------------------------------------------------------------------------------------


def _init(out: str, name: str, seed: int, shape: dict) -> str:
    from tgpo_megatron.models.tiny import save_char_model

    path = os.path.join(out, "models", name)
    if not os.path.exists(path):
        save_char_model(path, seed=seed, **shape)
    return path


def _cached(out: str, name: str, make) -> dict:
    path = os.path.join(out, f"{name}.json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    result = make()
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    return result


def pilot(out: str, design: StudyDesign, task: dict) -> dict:
    """The carry share: the smallest of the grid whose seed-0 student's sampled carry reward lies in the band,
    else the one closest to the band's middle (docs/study_preregistration.md)."""
    low, high = design.pilot_band
    tried = {}
    seed = design.pilot_seed
    for share in design.carry_shares:
        run = sft_stage(
            out,
            f"pilot_c{share:.4f}",
            _init(out, f"student_init_s{seed}", seed, STUDENT_SHAPE),
            student_data(task, share, seed, ";"),
            design.student_sft_steps,
            design.student_sft_steps,
            seed,
            keep_finished=True,
        )
        path = RunDir(run).hf
        tried[f"{share:.4f}"] = {"path": path, "carry_reward": carry_reward(path, task, design.pilot_samples, seed)}
        if low <= tried[f"{share:.4f}"]["carry_reward"] <= high:
            break
    inside = [s for s, t in tried.items() if low <= t["carry_reward"] <= high]
    middle = (low + high) / 2
    chosen = inside[0] if inside else min(tried, key=lambda s: abs(tried[s]["carry_reward"] - middle))
    return {"share": float(chosen), "in_band": bool(inside), "student": tried[chosen]["path"], "tried": tried}


def make_models(out: str, design: StudyDesign, task: dict, share: float) -> dict:
    """The strong teachers and every seed's student and peer that the design's cells use (the longest
    fine-tunings first)."""
    teacher_init = _init(out, "teacher_init", 0, {})
    used = {TEACHERS[cell][0] for cell in design.cells}
    fine_tunings = {  # run name: (init, data, steps, snapshot every, seed); the longest first
        f"strong_{style}": (
            teacher_init,
            os.path.join(task["dir"], data),
            design.teacher_sft_steps,
            design.teacher_sft_steps,
            design.pilot_seed,
        )
        for style, data in (("semicolon", "train_semicolon.parquet"), ("comma", "train.parquet"))
        if f"strong_{style}" in used
    }
    keys = {name: name for name in fine_tunings}  # run name: model name
    twins = (("student", ";"), ("peer", ",")) if "peer" in used else (("student", ";"),)
    for seed in design.seeds:
        init = _init(out, f"student_init_s{seed}", seed, STUDENT_SHAPE)
        for twin, separator in twins:
            name = f"{twin}_c{share:.4f}_s{seed}"  # the share in the name: kept runs are this one
            keys[name] = f"{twin}_s{seed}"
            data = student_data(task, share, seed, separator)
            fine_tunings[name] = (init, data, design.student_sft_steps, design.student_sft_steps, seed)
    runs = fine_tune_side_by_side(out, fine_tunings, keep_finished=True)
    models = {}
    for name, run in runs.items():
        path, seed = RunDir(run).hf, fine_tunings[name][4]
        models[keys[name]] = {
            "path": path,
            "validation_accuracy": validation_accuracy(path, task),
            "carry_reward": carry_reward(path, task, design.pilot_samples, seed),
            "test_accuracy": {n: accuracy_of(generate_texts(path, ps), ps) for n, ps in task["tests"].items()},
        }
    return models


def teacher_path(spec: RunSpec, models: dict) -> str:
    model, twin = TEACHERS[spec.cell]
    return models[f"{model}_s{spec.seed}" if twin else model]["path"]


# -- the λ probe and the runs ---------------------------------------------------------------------------


def rl_overrides(design: StudyDesign, task: dict, student: str, teacher: str, algorithm: str, run_dir: str):
    sets = ", ".join(
        f"{{name: {name}, path: {os.path.join(task['dir'], name + '.parquet')}, n: 1}}" for name in TEST_SETS
    )
    values = {
        "algorithm.name": algorithm,
        "student.hf_path": student,
        "teacher.hf_path": teacher if ALGORITHMS[algorithm].uses_teacher else "",
        "data.train_files": f"[{os.path.join(task['dir'], 'train.parquet')}]",
        "eval.datasets": f"[{sets}]",
        "eval.every_n_steps": design.eval_every,
        "trainer.output_dir": run_dir,
        "trainer.steps": design.rl_steps,
        "trainer.save_every": design.rl_steps,
        "trainer.tensorboard": False,
    }
    return values


def probe(out: str, design: StudyDesign, task: dict, chosen: dict, models: dict) -> dict:
    """One step of ``teacher_ce`` (λ 1) and one of ``grpo`` from the pilot's student on identical rollouts:
    λ0 = ``probe_fraction`` x their gradient norms' ratio; λ reaches 0 at ``lambda_zero_step``."""

    def make():
        teacher = models[TEACHERS[PROBE_CELL][0]]["path"]
        runs, dirs = [], {}
        for algorithm in ("teacher_ce", "grpo"):
            dirs[algorithm] = os.path.join(out, "probe", algorithm)
            shutil.rmtree(dirs[algorithm], ignore_errors=True)
            values = rl_overrides(design, task, chosen["student"], teacher, algorithm, dirs[algorithm])
            values |= {"trainer.steps": 1, "eval.every_n_steps": 0, "trainer.seed": design.pilot_seed}
            values |= {"data.seed": design.pilot_seed, "algorithm.lambda_init": 1.0, "algorithm.lambda_decay": 0.0}
            runs.append({"config": RECIPE, "overrides": [f"{k}={v}" for k, v in values.items()] + design.rl_overrides})
        path = os.path.join(out, "probe_runs.json")
        with open(path, "w") as f:
            json.dump(runs, f, indent=1)
        metrics = [RunDir(d).metrics for d in dirs.values()]
        run_stage("λ probe", tgpo("train-many", path, nproc=2), os.path.join(out, "probe.log"), metrics, 2)
        norms = {a: read_metrics(d)[0]["optim/grad_norm"] for a, d in dirs.items()}
        lambda_init, decay = design.lambda_schedule(design.probe_fraction * norms["grpo"] / norms["teacher_ce"])
        return {"grad_norm": norms, "lambda_init": lambda_init, "lambda_decay": decay}

    return _cached(out, "probe", make)


def run_overrides(spec: RunSpec, design: StudyDesign, out: str, task: dict, models: dict, probed) -> list:
    teacher = "" if spec.teacher is None else teacher_path(spec, models)
    student = models[f"student_s{spec.seed}"]["path"]
    values = rl_overrides(design, task, student, teacher, spec.method, os.path.join(out, "rl", spec.name))
    values |= {
        "trainer.seed": spec.seed,
        "data.seed": spec.seed,
        "trainer.export_hf": True,  # the final student, for its style share
    }
    if probed is not None:
        values |= {"algorithm.lambda_init": probed["lambda_init"], "algorithm.lambda_decay": probed["lambda_decay"]}
    return [f"{k}={v}" for k, v in values.items()] + list(design.rl_overrides)


def train_all(out: str, design: StudyDesign, task: dict, models: dict, probed: dict | None = None) -> None:
    """Every RL run in one ``tgpo train-many`` launch (finished runs are skipped by it), with the λ schedule of
    ``probed`` (default: the recipe's)."""
    specs = run_specs(design)
    runs = [{"config": RECIPE, "overrides": run_overrides(s, design, out, task, models, probed)} for s in specs]
    path = os.path.join(out, "runs.json")
    with open(path, "w") as f:
        json.dump(runs, f, indent=1)
    metrics = [RunDir(os.path.join(out, "rl", s.name)).metrics for s in specs]
    run_stage(
        f"{len(specs)} RL runs",
        tgpo("train-many", path, nproc=2),
        os.path.join(out, "rl.log"),
        metrics,
        design.rl_steps * len(specs),
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
    print(f"[1/6] data in {args.out}", flush=True)
    task = make_data(args.out, design)
    print(f"[2/6] pilot: the carry share, from {design.carry_shares}", flush=True)
    chosen = _cached(args.out, "pilot", lambda: pilot(args.out, design, task))
    print(f"[3/6] models: 2 strong teachers, a student and a peer per seed (carry share {chosen['share']})", flush=True)
    models = _cached(args.out, "models", lambda: make_models(args.out, design, task, chosen["share"]))
    print("[4/6] λ probe", flush=True)
    probed = probe(args.out, design, task, chosen, models)
    print(f"[5/6] {len(run_specs(design))} RL runs in one launch (λ0 {probed['lambda_init']:.4g})", flush=True)
    train_all(args.out, design, task, models, probed)
    print("[6/6] results", flush=True)
    from tgpo_megatron.toy.report import collect, compute_minutes, plot, report

    summary = collect(args.out, design, task, models)
    plot(summary, design, os.path.join(args.out, "study_v2.png"))
    command = "tgpo study " + " ".join(argv if argv is not None else sys.argv[1:])
    context = {"pilot": chosen, "probe": probed, "models": models}
    text = report(summary, design, context, command.strip(), compute_minutes(args.out))
    with open(os.path.join(args.out, "study.md"), "w") as f:
        f.write(text)
    with open(os.path.join(args.out, "study.json"), "w") as f:
        json.dump({"design": asdict(design), **context, "results": summary}, f, indent=1)
    print(text)
    return 0
