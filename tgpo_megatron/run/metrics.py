"""Metrics: one JSON line per step always, TensorBoard by default, wandb when asked; one console line.

Only rank 0 writes (``NullLogger`` elsewhere), so the loop never asks which rank it is on.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from contextlib import contextmanager
from typing import Optional

from tgpo_megatron.run.layout import RunDir

log = logging.getLogger(__name__)


class Timer:
    """``with timer("generate"): ...`` accumulates ``timing/generate`` seconds."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, phase: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            key = f"timing/{phase}"
            self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - start


class NullLogger:
    def log(self, step: int, metrics: dict) -> None:
        pass

    def close(self) -> None:
        pass


class MetricsLogger:
    def __init__(
        self,
        run_dir: str,
        tensorboard: bool = True,
        wandb_project: Optional[str] = None,
        config: Optional[dict] = None,
        resume_step: int = 0,
    ):
        self.path = RunDir(run_dir).metrics
        _truncate_after(self.path, resume_step)
        self.tb = self.wandb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:  # the tensorboard package itself is what is missing
                raise ImportError(
                    "TensorBoard logging needs `pip install tensorboard` (or set trainer.tensorboard=false)"
                ) from e
            self.tb = SummaryWriter(RunDir(run_dir).tensorboard, purge_step=resume_step + 1)
        if wandb_project:
            try:
                import wandb
            except ImportError as e:
                raise ImportError("trainer.wandb_project is set: pip install wandb") from e
            self.wandb = wandb.init(
                project=wandb_project,
                config=config,
                dir=run_dir,
                resume="allow",
                name=os.path.basename(os.path.abspath(run_dir)),
            )

    def log(self, step: int, metrics: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
        if self.tb is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self.tb.add_scalar(key, value, step)
            self.tb.flush()
        if self.wandb is not None:
            self.wandb.log(metrics, step=step)
        log.info(console_line(step, metrics))

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def _truncate_after(path: str, step: int) -> None:
    """Drop lines of steps after ``step`` (written by a run that died before checkpointing them)."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
    with open(path, "w") as f:
        f.writelines(lines)


CONSOLE = (
    ("reward/mean", "reward", ".3f"),
    ("loss/total", "loss", ".4f"),
    ("loss/nll", "nll", ".4f"),
    ("rollout/response_length", "len", ".1f"),
    ("gap/reverse_kl_k1", "gap", ".2f"),
    ("gap/mismatch_ratio", "mismatch", ".2f"),
    ("loss/lambda", "λ", ".3g"),
    ("optim/grad_norm", "|g|", ".3g"),
    ("timing/step", "s", ".2f"),
)


def console_line(step: int, metrics: dict) -> str:
    """``step 3 | reward 0.412 | loss 0.0812 | ...`` with whichever of the usual keys are present."""
    parts = [f"step {step}"] + [f"{label} {metrics[key]:{fmt}}" for key, label, fmt in CONSOLE if key in metrics]
    if metrics.get("optim/skipped"):
        parts.append("update skipped")
    return " | ".join(parts)
