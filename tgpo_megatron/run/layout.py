"""The run directory of ``tgpo train`` and ``tgpo sft``: the one owner of its file names, and their readers.

    RUN_DIR/config.yaml        the resolved recipe
    RUN_DIR/metrics.jsonl      one JSON object per step (read_metrics)
    RUN_DIR/tensorboard/       the same metrics for TensorBoard
    RUN_DIR/checkpoints/       iter_N/ and the `latest` pointer (run.checkpoints)
    RUN_DIR/eval/              evaluation reports
    RUN_DIR/hf/                the student as a Hugging Face directory, at the end
    RUN_DIR/exit_code          the outcome (errors.py's codes), for the job script: torchrun reports 1 for any
    RUN_DIR/STOP               written by a launcher: checkpoint at the end of the step and stop

slurm/train_job.sh spells ``exit_code``, ``STOP`` and ``checkpoints/latest`` out for its readers (a test
renders them from here). Imports without torch: the launchers use it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Optional

from tgpo_megatron.errors import UserError

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
TENSORBOARD = "tensorboard"
CHECKPOINTS = "checkpoints"
EVAL = "eval"
HF = "hf"
EXIT_CODE = "exit_code"
STOP = "STOP"


@dataclass(frozen=True)
class RunDir:
    """The paths of one run directory."""

    path: str

    @property
    def config(self) -> str:
        return os.path.join(self.path, CONFIG)

    @property
    def metrics(self) -> str:
        return os.path.join(self.path, METRICS)

    @property
    def tensorboard(self) -> str:
        return os.path.join(self.path, TENSORBOARD)

    @property
    def checkpoints(self) -> str:
        return os.path.join(self.path, CHECKPOINTS)

    @property
    def eval(self) -> str:
        return os.path.join(self.path, EVAL)

    @property
    def hf(self) -> str:
        return os.path.join(self.path, HF)

    @property
    def exit_code(self) -> str:
        return os.path.join(self.path, EXIT_CODE)

    @property
    def stop(self) -> str:
        return os.path.join(self.path, STOP)

    def read_exit_code(self) -> Optional[int]:
        """The recorded outcome, or None if the run never recorded one."""
        try:
            with open(self.exit_code) as f:
                return int(f.read().strip())
        except FileNotFoundError:
            return None

    def write_exit_code(self, code: int) -> None:
        """Record ``code`` for the job script (the job's rank 0 only: every rank ends alike, or torchrun ends
        them; with a separate rollout placement ``RANK`` is the rank within a side, ``TGPO_JOB_RANK`` the job's)."""
        if os.environ.get("TGPO_JOB_RANK", os.environ.get("RANK", "0")) != "0" or not os.path.isdir(self.path):
            return
        with open(self.exit_code + ".tmp", "w") as f:
            f.write(f"{code}\n")
        os.replace(self.exit_code + ".tmp", self.exit_code)

    def clear_exit_code(self) -> None:
        """At the start (rank 0): an earlier run's outcome must not pass for this one's if this one is killed."""
        if os.path.exists(self.exit_code):
            os.remove(self.exit_code)


def read_metrics(path: str) -> list[dict]:
    """The metrics a run logged, one dict per step: ``path`` is its run directory or its metrics file."""
    file = RunDir(path).metrics if os.path.isdir(path) else path
    if not os.path.isfile(file):
        raise UserError(f"{file} not found (give a run directory or its {METRICS})")
    rows = []
    with open(file) as f:
        for number, line in enumerate(f, start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise UserError(f"{file} line {number}: not valid JSON ({e.msg})") from None
    return rows
