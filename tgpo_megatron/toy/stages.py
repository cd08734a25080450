"""The toy experiments' stages, shared by ``tgpo demo`` and ``tgpo study``: every stage runs one of the project's
own commands (``tgpo sft``, ``tgpo train-many``) in a subprocess with a progress bar fed by its metrics file, and
the models are checked with transformers, independently of the trainer's vLLM path."""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from tgpo_megatron.run.layout import RunDir

# shipped in the package (examples/recipes/tiny_cpu.yaml links to it), so `tgpo demo` runs from an installed copy
RECIPE = os.path.join(os.path.dirname(__file__), "recipes", "tiny_cpu.yaml")
STUDENT_SHAPE = dict(hidden_size=64, intermediate_size=256, num_attention_heads=2, num_key_value_heads=2)


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
