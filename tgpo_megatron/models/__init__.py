"""Model families on Megatron-Core: architectures from HF config.json, model building, HF<->Megatron weights,
checkpoints.

``arch`` (config.json) imports without torch, so recipes and memory plans are checked where torch is not
installed (a login node); everything else loads on first use.
"""

from __future__ import annotations

import importlib

_API = {
    "ModelArch": "arch",
    "UnsupportedModelError": "arch",
    "load_arch": "arch",
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

__all__ = ["Layout", *_API]


def __getattr__(name: str):
    if name == "Layout":
        from tgpo_megatron.parallel import Layout

        return Layout
    if name in _API:
        return getattr(importlib.import_module(f"{__name__}.{_API[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
