"""The TGPO objective library: every objective of the paper on vocabulary-parallel logits.

A Megatron user calls ``compute_loss`` from the loss function of their ``forward_step`` with this rank's
vocabulary shard of the logits; full logits are never gathered.

The registry and the coefficients (``LossConfig``) import without torch; the tensor code loads on first use, so a recipe
validates in an environment without torch (the launcher's, on a login node).
"""

from __future__ import annotations

import importlib

from tgpo_megatron.losses.aggregation import LOSS_AGG_MODES, LOSS_SCALES, loss_aggregation, mini_batch_aggregation
from tgpo_megatron.losses.coefficients import LossConfig, linear_decay
from tgpo_megatron.losses.registry import ALGORITHM_NAMES, ALGORITHMS, Algorithm

_TENSOR_API = {
    "compute_loss": "compute",
    "grpo_advantages": "advantages",
    "teacher_stats": "vocab_parallel",
    "token_stats": "vocab_parallel",
    "TeacherStats": "vocab_parallel",
}

__all__ = [
    "ALGORITHM_NAMES",
    "ALGORITHMS",
    "Algorithm",
    "LOSS_AGG_MODES",
    "LOSS_SCALES",
    "LossConfig",
    "linear_decay",
    "loss_aggregation",
    "mini_batch_aggregation",
    *_TENSOR_API,
]


def __getattr__(name: str):
    if name in _TENSOR_API:
        return getattr(importlib.import_module(f"{__name__}.{_TENSOR_API[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
