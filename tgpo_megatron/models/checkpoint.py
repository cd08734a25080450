"""Megatron ``dist_checkpointing`` save/load for models, resharding across TP/PP on load.

A checkpoint directory holds the sharded tensors (torch_dist format, global shapes, so it loads at any
TP/PP) plus ``hf_config.json``, the architecture it was built from, so that tools can rebuild the model
without being told what it is.
"""

from __future__ import annotations

import json
import os

import torch.distributed as dist
from megatron.core import dist_checkpointing
from torch.distributed.checkpoint.api import CheckpointException

from tgpo_megatron.config.arch import ModelArch, arch_from_hf_config
from tgpo_megatron.errors import UserError
from tgpo_megatron.models.hf_export import hf_config_dict

ARCH_FILE = "hf_config.json"


class CheckpointError(UserError):
    """A checkpoint directory is missing, not a Megatron checkpoint, or incomplete."""


def save_model(model, ckpt_dir: str) -> None:
    """Save this rank's stage of ``model`` into ``ckpt_dir`` (collective over the model's ranks).

    Callers must run under ``if __name__ == "__main__":``: the torch_dist writer starts a spawn manager.
    """
    if dist.get_rank() == 0:
        os.makedirs(ckpt_dir, exist_ok=True)
    dist.barrier()
    dist_checkpointing.save(model.sharded_state_dict(), ckpt_dir)
    if dist.get_rank() == 0:
        with open(os.path.join(ckpt_dir, ARCH_FILE), "w") as f:
            json.dump(hf_config_dict(model.arch), f, indent=2)
    dist.barrier()


def check_checkpoint_dir(ckpt_dir: str) -> None:
    """Raise a one-line ``CheckpointError`` if ``ckpt_dir`` cannot be a complete model checkpoint."""
    if not os.path.isdir(ckpt_dir):
        raise CheckpointError(f"{ckpt_dir}: checkpoint directory does not exist")
    if not dist_checkpointing.check_is_distributed_checkpoint(ckpt_dir):
        raise CheckpointError(
            f"{ckpt_dir}: not a Megatron distributed checkpoint (metadata.json missing: wrong path or an "
            "interrupted save)"
        )
    if not os.path.exists(os.path.join(ckpt_dir, ".metadata")):
        raise CheckpointError(f"{ckpt_dir}: checkpoint is truncated (.metadata missing)")


def load_checkpoint_arch(ckpt_dir: str) -> ModelArch:
    check_checkpoint_dir(ckpt_dir)
    path = os.path.join(ckpt_dir, ARCH_FILE)
    if not os.path.exists(path):
        raise CheckpointError(f"{ckpt_dir}: {ARCH_FILE} missing; cannot tell which architecture was saved")
    with open(path) as f:
        return arch_from_hf_config(json.load(f))


def load_model(model, ckpt_dir: str) -> None:
    """Load ``ckpt_dir`` into this rank's stage of ``model``, whatever TP/PP it was saved with."""
    check_checkpoint_dir(ckpt_dir)
    request = model.sharded_state_dict()
    try:
        state = dist_checkpointing.load(request, ckpt_dir)
    except (Exception, CheckpointException) as e:  # DCP's report is a BaseException spanning many lines
        raise CheckpointError(f"{ckpt_dir}: checkpoint is incomplete or corrupt ({_describe(e)})") from e
    # a training checkpoint also holds the optimizer's common state, which comes back with the model's
    model.load_state_dict({key: value for key, value in state.items() if key in request})


def _describe(error: BaseException) -> str:
    """One line for a load failure; for DCP's multi-rank report, the first failing rank's own error."""
    where = ""
    if isinstance(error, CheckpointException) and error.failures:
        rank, failure = min(error.failures.items(), key=lambda item: item[0])
        error = failure[0] if isinstance(failure, tuple) else failure  # (exception, traceback frames)
        where = f" on rank {rank}"
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}{': ' + text[0] if text else ''}{where}"
