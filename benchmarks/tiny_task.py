"""The set-up the trainer benchmarks share: the tiny CPU recipe, a random student and teacher that speak the
synthetic task's character tokenizer, and 2,000 training problems, in a fresh temporary directory."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

RECIPE = os.path.join(os.path.dirname(__file__), "..", "examples", "recipes", "tiny_cpu.yaml")
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", "--standalone"]


def tiny_task(prefix: str) -> tuple[str, dict[str, str], str]:
    """``(root, {"student": dir, "teacher": dir}, train parquet)``."""
    from tgpo_megatron.data.synthetic import problem_rows, sample_problems, write_rows
    from tgpo_megatron.models.tiny import save_char_model

    root = tempfile.mkdtemp(prefix=prefix)
    models = {
        name: save_char_model(os.path.join(root, name), seed=seed) for name, seed in (("student", 0), ("teacher", 1))
    }
    data = write_rows(problem_rows(sample_problems(2000, seed=1)), os.path.join(root, "train.parquet"))
    return root, models, data


def train_tiny(models: dict[str, str], data: str, out: str, steps: int, **overrides) -> None:
    """``tgpo train`` of the tiny recipe on 2 processes with ``tiny_task``'s models and data, one checkpoint at the
    end, no evaluation and no export; ``overrides``: more recipe keys."""
    values = {
        "student.hf_path": models["student"],
        "teacher.hf_path": models["teacher"],
        "data.train_files": f"[{data}]",
        "trainer.output_dir": out,
        "trainer.steps": steps,
        "trainer.save_every": steps,
        "trainer.export_hf": "false",
        "eval.every_n_steps": 0,
        **overrides,
    }
    cmd = [*TORCHRUN, "-m", "tgpo_megatron.cli", "train", "--config", RECIPE, *(f"{k}={v}" for k, v in values.items())]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
