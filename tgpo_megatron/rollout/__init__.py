"""Rollouts: the engine interface, vLLM colocated with the trainer, and refitting it from the student."""

from __future__ import annotations

from typing import Optional

import torch

from tgpo_megatron.rollout.base import Completion, RefitStats, RolloutEngine, SamplingSpec
from tgpo_megatron.rollout.refit import RefitError, check_plan

__all__ = [
    "Completion",
    "RefitError",
    "RefitStats",
    "RolloutEngine",
    "SamplingSpec",
    "VLLMEngine",
    "refit_from_megatron",
]


def refit_from_megatron(engine, model, pg_collection, dtype: Optional[torch.dtype] = None) -> RefitStats:
    """Check the student's export plan against the engine's model, then stream the weights into it."""
    from tgpo_megatron.models.bridge import export_hf_weights, export_plan

    check_plan(export_plan(model, pg_collection), engine.expected_weights)
    return engine.update_weights(export_hf_weights(model, pg_collection, dtype))


def __getattr__(name):
    if name == "VLLMEngine":  # vLLM is imported only by whoever asks for the engine
        from tgpo_megatron.rollout.vllm_engine import VLLMEngine

        return VLLMEngine
    raise AttributeError(name)
