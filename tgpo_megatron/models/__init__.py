"""Model families on Megatron-Core: model building from an architecture (``config.arch``), HF<->Megatron
weights, checkpoints. Everything loads on first use."""

from __future__ import annotations

import importlib

_API = {
    "export_hf_weights": "bridge",
    "load_hf_weights": "bridge",
    "TransformerImpl": "builder",
    "build_from_hf": "builder",
    "build_gpt_model": "builder",
    "build_model": "builder",
    "CheckpointError": "checkpoint",
    "load_checkpoint_arch": "checkpoint",
    "load_model": "checkpoint",
    "save_model": "checkpoint",
}

__all__ = list(_API)


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(f"{__name__}.{_API[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
