"""The training command a launcher runs for a recipe, rendered in one place.

``examples/launch_nemo_run.py`` runs what this renders; ``slurm/*.sh`` spell the same command out for their
readers, and a test renders it from the same recipe and compares the two, so that they cannot drift. This
module imports without torch: the launcher runs in its own environment on a login node.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from typing import Optional, Sequence

from tgpo_megatron.config import Config, load_config
from tgpo_megatron.errors import UserError
from tgpo_megatron.run.layout import RunDir

RENDEZVOUS_PORT = 29500
WARN_BEFORE_TIME_LIMIT_S = 900
"""How long before the time limit the trainer is asked to checkpoint and stop: meant to hold one step of the
70B recipe plus a checkpoint (an estimate, not measured; the Slurm headers use the same value)."""

TRAINING_ENV = {
    # Megatron's tensor-parallel layers rely on kernels being issued to the GPU in program order, which
    # CUDA guarantees only with one hardware queue per device.
    "CUDA_DEVICE_MAX_CONNECTIONS": "1",
    # frees the memory of tensors used by NCCL on another stream when the collective ends, not later
    "TORCH_NCCL_AVOID_RECORD_STREAMS": "1",
    # InfiniBand retry timeout 4.096 us x 2^22 (~17 s): rides out a switch hiccup on a 64-GPU job
    "NCCL_IB_TIMEOUT": "22",
    # PyTorch's cache grows and shrinks segments instead of keeping fixed ones, so a small tensor kept across a
    # step cannot pin a large freed segment that vLLM's wake then lacks (vLLM turns it off inside its own pools)
    "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True",
    "PYTHONUNBUFFERED": "1",
}


@dataclass(frozen=True)
class TrainingLaunch:
    """A recipe (plus dotted overrides) and the machines it states it needs (its ``launch`` section)."""

    recipe: str
    overrides: tuple[str, ...]
    config: Config

    @classmethod
    def from_recipe(cls, recipe: str, overrides: Sequence[str] = ()) -> "TrainingLaunch":
        """Load and validate the recipe, as the trainer will, so that a typo fails here and not in the queue."""
        return cls(recipe, tuple(overrides), load_config(recipe, list(overrides)))

    @property
    def nodes(self) -> int:
        return self.config.launch.nodes

    @property
    def gpus_per_node(self) -> int:
        return self.config.launch.gpus_per_node

    @property
    def output_dir(self) -> str:
        return self.config.trainer.output_dir

    @property
    def stop_file(self) -> str:
        return RunDir(self.output_dir).stop

    def require_shared_output_dir(self) -> None:
        """On a cluster the run directory must be an absolute path on a shared filesystem: every node writes
        its checkpoint shards there, and a requeued job must find them again."""
        if not os.path.isabs(self.output_dir):
            raise UserError(
                f"trainer.output_dir={self.output_dir!r} is relative; on a cluster pass an absolute "
                "path on the shared filesystem, e.g. trainer.output_dir=/lustre/$USER/runs/name"
            )

    def torchrun_argv(self, rendezvous_host: Optional[str] = None, rendezvous_id: str = "tgpo") -> list[str]:
        """torchrun for one node of the job; without ``rendezvous_host``, a single-node ``--standalone`` run."""
        if rendezvous_host is None:
            if self.nodes > 1:
                raise UserError(f"the recipe needs launch.nodes={self.nodes} nodes: launch it on a cluster")
            where = ["--standalone", "--nnodes", "1"]
        else:
            where = [
                "--nnodes",
                str(self.nodes),
                "--rdzv-backend",
                "c10d",
                "--rdzv-endpoint",
                f"{rendezvous_host}:{RENDEZVOUS_PORT}",
                "--rdzv-id",
                rendezvous_id,
            ]
        return [
            "torchrun",
            *where,
            "--nproc-per-node",
            str(self.gpus_per_node),
            "-m",
            "tgpo_megatron.cli",
            "train",
            "--config",
            self.recipe,
            *self.overrides,
        ]


def shell_join(argv: Sequence[str]) -> str:
    """Quote for bash, leaving ``$VARIABLE`` references to be expanded where the command runs."""
    return " ".join(f'"{a}"' if a.startswith("$") and '"' not in a else shlex.quote(a) for a in argv)
