"""``tgpo demo`` (``make demo``): TGPO's claim at toy scale, through the real system, on a laptop CPU.

    tgpo demo                 # full: about 10 minutes on 2 cores (9.9 measured on 2026-12-02, README)
    tgpo demo --quick         # smoke version (about 2 minutes, in runs/demo_quick): every stage, tiny step counts

Stages (all through the project's own commands; the RL runs are 2-process `tgpo train` jobs with Megatron
student and teacher and vLLM rollouts):
1. data: 3-digit addition with a scratchpad; 20,000 training problems, 300 held-out test problems;
2. `tgpo sft` a teacher that writes `,` between columns and a smaller student that writes `;` (side by side): a
   teacher-student gap in *style* that does not change what is correct (both read both styles);
3. the student is the first snapshot of its fine-tuning whose greedy accuracy reaches 10% (a weak student
   that sometimes earns reward); the same student starts every algorithm;
4. `grpo`, `rkl` and `tgpo_reg` from that student, same steps, same learning rate (fixed in advance), one
   after another in one `tgpo train-many` launch;
5. a table (held-out greedy accuracy, reward, gap probes), a plot, and the HF export of the best student.

Nothing here depends on the algorithm: every run uses one recipe and differs only in ``algorithm.name``.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from tgpo_megatron.cli import command_parser
from tgpo_megatron.run.layout import RunDir, read_metrics

ALGORITHMS = ("grpo", "rkl", "tgpo_reg")
# shipped in the package (examples/recipes/tiny_cpu.yaml links to it), so `tgpo demo` runs from an installed copy
RECIPE = os.path.join(os.path.dirname(__file__), "recipes", "tiny_cpu.yaml")
STUDENT_SHAPE = dict(hidden_size=64, intermediate_size=256, num_attention_heads=2, num_key_value_heads=2)
WEAK_STUDENT_ACCURACY = 0.10
EVAL_NAME = "add3_heldout"
ACCURACY = f"eval/{EVAL_NAME}/pass@1"


@dataclass(frozen=True)
class Schedule:
    teacher_sft_steps: int
    student_sft_steps: int
    snapshot_every: int
    rl_steps: int
    eval_every: int
    train_problems: int
    test_problems: int


FULL = Schedule(
    teacher_sft_steps=1400,
    student_sft_steps=800,  # a weak student appears by step ~400 (10-27% accuracy); 1600 steps went unused
    snapshot_every=50,
    rl_steps=80,
    eval_every=20,
    train_problems=20000,
    test_problems=300,
)
QUICK = Schedule(
    teacher_sft_steps=40,
    student_sft_steps=40,
    snapshot_every=20,
    rl_steps=4,
    eval_every=2,
    train_problems=2000,
    test_problems=32,
)


def run_stage(
    desc: str, cmd: list, log_path: str, metrics_paths: list[str], total: int, threads: int = 0, bar_position: int = 0
) -> None:
    """Run ``cmd`` with its output in ``log_path`` and a progress bar fed by the metrics files it writes;
    ``threads`` > 0 caps its intra-op threads (for stages that run side by side)."""
    from tqdm import tqdm

    def done() -> int:
        return sum(_count_lines(path) for path in metrics_paths)

    env = {**os.environ, "OMP_NUM_THREADS": str(threads)} if threads else None
    with open(log_path, "w") as log, tqdm(total=total, desc=desc, unit="step", position=bar_position) as bar:
        job = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        while job.poll() is None:
            time.sleep(0.5)
            bar.update(done() - bar.n)
        bar.update(done() - bar.n)
    if job.returncode != 0:
        with open(log_path) as f:
            tail = f.read()[-4000:]
        raise SystemExit(f"{desc} failed (exit {job.returncode}); log: {log_path}\n{tail}")


def _count_lines(path: str) -> int:
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return sum(1 for line in f if line.strip())


def tgpo(*args, nproc: int = 1) -> list:
    launcher = ["-m", "torch.distributed.run", f"--nproc-per-node={nproc}", "--standalone"] if nproc > 1 else []
    return [sys.executable, *launcher, "-m", "tgpo_megatron.cli", *map(str, args)]


def generate_texts(model_dir: str, problems, samples: int = 1, temperature: float = 0.0, seed: int = 0) -> list:
    """``samples`` responses per problem (greedy at temperature 0), decoded as the trainer decodes them, with
    transformers (independent of the trainer's vLLM path)."""
    import torch
    from transformers import AutoModelForCausalLM

    from tgpo_megatron.data.tokenizer import ResponseDecoder, load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    prompts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": p.prompt}], add_generation_prompt=True, tokenize=False
        )
        + "<think>\n"
        for p in problems
    ]
    ids = torch.tensor([tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts])
    torch.manual_seed(seed)
    with torch.no_grad():
        out = model.generate(
            ids,
            max_new_tokens=24,
            do_sample=temperature > 0,
            temperature=temperature if temperature > 0 else None,
            top_k=None,
            num_return_sequences=samples,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    decoder = ResponseDecoder.for_model(tokenizer, model_dir)
    texts = [decoder.decode(row) for row in out[:, ids.shape[1] :].tolist()]
    return [texts[i * samples : (i + 1) * samples] for i in range(len(problems))]


def accuracy_of(texts: list, problems) -> float:
    """The share of correct responses (training judge) over every problem's samples."""
    from tgpo_megatron.rewards.math import score_response

    scores = [score_response(t, p.answer)[0] for ts, p in zip(texts, problems) for t in ts]
    return sum(scores) / len(scores)


def greedy_accuracy(model_dir: str, problems) -> float:
    """Held-out greedy accuracy with transformers (independent of the trainer's vLLM path)."""
    return accuracy_of(generate_texts(model_dir, problems), problems)


def make_task(out: str, schedule: Schedule):
    from tgpo_megatron.data.synthetic import problem_rows, sample_problems, write_rows
    from tgpo_megatron.models.tiny import save_char_model

    data, models = os.path.join(out, "data"), os.path.join(out, "models")
    train = sample_problems(schedule.train_problems, seed=1, digits=3)
    test = sample_problems(schedule.test_problems, seed=2, digits=3, exclude=frozenset((p.a, p.b) for p in train))
    write_rows(problem_rows(train, separator=","), os.path.join(data, "train.parquet"))  # prompts + `,` style
    write_rows(problem_rows(train, separator=";"), os.path.join(data, "train_semicolon.parquet"))
    write_rows(problem_rows(test), os.path.join(data, "test.parquet"))
    for name, shape, seed in (("teacher_init", {}, 0), ("student_init", STUDENT_SHAPE, 1)):
        save_char_model(os.path.join(models, name), seed=seed, **shape)
    return test


def sft_stage(
    out: str,
    name: str,
    init: str,
    data: str,
    steps: int,
    snapshot_every: int,
    seed: int = 1,
    threads: int = 0,
    bar_position: int = 0,
    keep_finished: bool = False,
) -> str:
    run_dir = os.path.join(out, "sft", name)
    if keep_finished and RunDir(run_dir).read_exit_code() == 0:
        return run_dir  # a continued study: the name says what the run is
    shutil.rmtree(run_dir, ignore_errors=True)
    # Padded micro-batches: the task's sequences are all ~35 tokens, so padding costs little, while packed
    # rows of 64 short sequences cost per-sequence attention and RoPE work on CPU (0.26 against 0.13 s per
    # step, docs/benchmarks.md). The RL stage packs, as the recipe does.
    run_stage(
        f"sft {name}",
        tgpo(
            "sft",
            "--config",
            RECIPE,
            f"student.hf_path={init}",
            "student.tp=1",
            f"data.train_files=[{data}]",
            f"trainer.output_dir={run_dir}",
            f"trainer.steps={steps}",
            f"trainer.seed={seed}",
            f"data.seed={seed}",
            "trainer.prompts_per_step=128",
            "trainer.lr=2e-3",
            "trainer.lr_warmup_steps=100",
            "trainer.micro_batch_tokens=8192",
            "trainer.sequence_packing=false",
            f"trainer.save_every={steps}",
            f"sft.export_every={snapshot_every}",
            "sft.swap_tokens=[[',', ';']]",
            "sft.swap_prob=0.5",
            "trainer.tensorboard=false",
        ),
        os.path.join(out, f"sft_{name}.log"),
        [RunDir(run_dir).metrics],
        steps,
        threads,
        bar_position,
    )
    return run_dir


def fine_tune_side_by_side(out: str, fine_tunings: dict[str, tuple], keep_finished: bool = False) -> dict[str, str]:
    """Independent fine-tunings ``{name: (init, data, steps, snapshot every[, seed])}``, two at a time on one core each
    (faster on 2 cores than one after another on both), in the given order; their run directories. With
    ``keep_finished``, a run of that name that finished is kept (the name must then say what the run is)."""
    bars: queue.Queue = queue.Queue()  # the two progress-bar lines, each held by the fine-tuning drawing on it
    for position in (0, 1):
        bars.put(position)

    def fine_tune(name: str) -> str:
        position = bars.get()
        try:
            return sft_stage(
                out, name, *fine_tunings[name], threads=1, bar_position=position, keep_finished=keep_finished
            )
        finally:
            bars.put(position)

    with ThreadPoolExecutor(2) as pool:
        return dict(zip(fine_tunings, pool.map(fine_tune, fine_tunings)))


def pick_student(sft_dir: str, test, threshold: float = WEAK_STUDENT_ACCURACY) -> tuple[str, float, list]:
    """The first snapshot at or above ``threshold`` accuracy (the last one if none reaches it)."""
    snapshots = sorted(d for d in os.listdir(sft_dir) if d.startswith("hf_step"))
    curve = []
    for name in snapshots:
        accuracy = greedy_accuracy(os.path.join(sft_dir, name), test)
        curve.append((int(name.removeprefix("hf_step")), accuracy))
        if accuracy >= threshold:
            return os.path.join(sft_dir, name), accuracy, curve
    return os.path.join(sft_dir, snapshots[-1]), curve[-1][1], curve


def rl_overrides(
    algorithm: str, student: str, teacher: str, data: str, train_file: str, run_dir: str, steps: int, eval_every: int
) -> dict[str, object]:
    """The demo recipe's overrides for one RL run on the task in ``data``; the study adds its own on top."""
    return {
        "algorithm.name": algorithm,
        "student.hf_path": student,
        "teacher.hf_path": teacher,
        "data.train_files": f"[{os.path.join(data, train_file)}]",
        "eval.datasets": f"[{{name: {EVAL_NAME}, path: {os.path.join(data, 'test.parquet')}, n: 1}}]",
        "eval.every_n_steps": eval_every,
        "trainer.output_dir": run_dir,
        "trainer.steps": steps,
        "trainer.save_every": steps,
    }


def rl_stage(out: str, student: str, teacher: str, schedule: Schedule) -> dict[str, str]:
    """Every algorithm's RL run, one after another in one ``tgpo train-many`` launch; their run directories."""
    data = os.path.join(out, "data")
    dirs = {a: os.path.join(out, "rl", a) for a in ALGORITHMS}
    runs = []
    for algorithm, run_dir in dirs.items():
        shutil.rmtree(run_dir, ignore_errors=True)
        overrides = rl_overrides(
            algorithm, student, teacher, data, "train.parquet", run_dir, schedule.rl_steps, schedule.eval_every
        )
        runs.append({"config": RECIPE, "overrides": [f"{k}={v}" for k, v in overrides.items()]})
    path = os.path.join(out, "rl_runs.json")
    with open(path, "w") as f:
        json.dump(runs, f, indent=1)
    run_stage(
        f"rl {', '.join(ALGORITHMS)}",
        tgpo("train-many", path, nproc=2),
        os.path.join(out, "rl.log"),
        [RunDir(d).metrics for d in dirs.values()],
        schedule.rl_steps * len(dirs),
    )
    return dirs


def summarize(run_dir: str, start_accuracy: float) -> dict:
    """One run's curves; its held-out accuracy starts at step 0 with the student's own (``start_accuracy``)."""
    rows = read_metrics(run_dir)
    window = max(1, min(20, len(rows) // 4))
    evals = [(0, start_accuracy)] + [(r["step"], r[ACCURACY]) for r in rows if ACCURACY in r]
    return {
        "rows": rows,
        "evals": evals,
        "final_accuracy": evals[-1][1] if evals else float("nan"),
        "reward_first": sum(r["reward/mean"] for r in rows[:window]) / window,
        "reward_last": sum(r["reward/mean"] for r in rows[-window:]) / window,
        "window": window,
        "gap_first": rows[0].get("gap/reverse_kl_k1"),
        "gap_last": rows[-1].get("gap/reverse_kl_k1"),
        "mismatch_first": rows[0].get("gap/mismatch_ratio"),
        "mismatch_last": rows[-1].get("gap/mismatch_ratio"),
    }


def plot(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for algorithm, s in results.items():
        steps = [r["step"] for r in s["rows"]]
        rewards = [r["reward/mean"] for r in s["rows"]]
        smooth = [
            sum(rewards[max(0, i - 9) : i + 1]) / len(rewards[max(0, i - 9) : i + 1]) for i in range(len(rewards))
        ]
        left.plot(steps, smooth, label=algorithm)
        right.plot([e[0] for e in s["evals"]], [e[1] for e in s["evals"]], marker="o", label=algorithm)
    left.set(xlabel="step", ylabel="training reward (10-step mean)", title="reward")
    right.set(xlabel="step", ylabel="held-out greedy accuracy", title="accuracy")
    for axis in (left, right):
        axis.legend()
        axis.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def table(results: dict, student_accuracy: float) -> str:
    lines = [
        f"Student at the start: held-out greedy accuracy {student_accuracy:.3f}.",
        "",
        "| algorithm | held-out accuracy (final) | reward, first → last steps | gap/reverse_kl_k1 first → last "
        "| gap/mismatch_ratio first → last |",
        "|---|---|---|---|---|",
    ]
    fmt = lambda x: "n/a" if x is None else f"{x:.2f}"
    for algorithm, s in results.items():
        lines.append(
            f"| {algorithm} | {s['final_accuracy']:.3f} | {s['reward_first']:.3f} → {s['reward_last']:.3f} "
            f"(means of {s['window']} steps) | {fmt(s['gap_first'])} → {fmt(s['gap_last'])} | "
            f"{fmt(s['mismatch_first'])} → {fmt(s['mismatch_last'])} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = command_parser("tgpo demo", __doc__)
    p.add_argument("--out", help="output directory (default: runs/demo, or runs/demo_quick with --quick)")
    p.add_argument("--quick", action="store_true", help="every stage with tiny step counts (a smoke test)")
    args = p.parse_args(argv)
    args.out = args.out or ("runs/demo_quick" if args.quick else "runs/demo")  # a smoke test keeps the demo's
    schedule = QUICK if args.quick else FULL
    start = time.time()
    os.makedirs(args.out, exist_ok=True)
    print(f"[1/5] data and tiny models in {args.out}", flush=True)
    test = make_task(args.out, schedule)
    models, data = os.path.join(args.out, "models"), os.path.join(args.out, "data")
    print("[2/5] supervised fine-tuning: teacher (style ','), student (style ';')", flush=True)
    runs = fine_tune_side_by_side(
        args.out,
        {  # name: (init, data, steps, snapshot every)
            "teacher": (
                os.path.join(models, "teacher_init"),
                os.path.join(data, "train.parquet"),
                schedule.teacher_sft_steps,
                schedule.teacher_sft_steps,
            ),
            "student": (
                os.path.join(models, "student_init"),
                os.path.join(data, "train_semicolon.parquet"),
                schedule.student_sft_steps,
                schedule.snapshot_every,
            ),
        },
    )
    teacher, student_dir = RunDir(runs["teacher"]).hf, runs["student"]
    teacher_accuracy = greedy_accuracy(teacher, test)
    student, student_accuracy, curve = pick_student(student_dir, test)
    # where examples/recipes/tiny_cpu.yaml expects them, so the recipe runs as is after `make demo`
    for name, source in (("teacher", teacher), ("student", student)):
        shutil.rmtree(os.path.join(models, name), ignore_errors=True)
        shutil.copytree(source, os.path.join(models, name))
    teacher, student = os.path.join(models, "teacher"), os.path.join(models, "student")
    print(
        f"[3/5] teacher accuracy {teacher_accuracy:.3f}; student: the step-{curve[-1][0]} snapshot, accuracy "
        f"{student_accuracy:.3f} (snapshots: {curve})",
        flush=True,
    )
    print(f"[4/5] RL from that student: {', '.join(ALGORITHMS)} for {schedule.rl_steps} steps each", flush=True)
    results = {a: summarize(d, student_accuracy) for a, d in rl_stage(args.out, student, teacher, schedule).items()}
    print("[5/5] results", flush=True)
    report = table(results, student_accuracy)
    best = max(ALGORITHMS, key=lambda a: results[a]["final_accuracy"])
    best_dir = os.path.join(args.out, "best_student_hf")
    shutil.rmtree(best_dir, ignore_errors=True)
    shutil.copytree(RunDir(os.path.join(args.out, "rl", best)).hf, best_dir)
    plot(results, os.path.join(args.out, "demo.png"))
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(f"Teacher held-out accuracy {teacher_accuracy:.3f}.\n\n{report}")
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(
            {
                "teacher_accuracy": teacher_accuracy,
                "student_step": curve[-1][0],
                "student_accuracy": student_accuracy,
                "student_snapshots": curve,
                "best": best,
                **{a: {k: v for k, v in s.items() if k != "rows"} for a, s in results.items()},
            },
            f,
            indent=1,
        )
    print(report)
    print(
        f"plot: {os.path.join(args.out, 'demo.png')}; best student ({best}) as HF: {best_dir}; "
        f"{(time.time() - start) / 60:.1f} minutes"
    )
    return 0
