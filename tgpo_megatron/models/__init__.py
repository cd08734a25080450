"""Model families on Megatron-Core: architectures from HF config.json, model building, HF<->Megatron weights,
checkpoints."""
from __future__ import annotations

import torch

from tgpo_megatron.models.arch import ModelArch, UnsupportedModelError, load_arch
from tgpo_megatron.models.bridge import export_hf_weights, load_hf_weights
from tgpo_megatron.models.builder import TransformerImpl, build_gpt_model, padded_vocab_size
from tgpo_megatron.models.checkpoint import CheckpointError, load_checkpoint_arch, load_model, save_model
from tgpo_megatron.parallel import Layout

__all__ = [
    "CheckpointError", "Layout", "ModelArch", "UnsupportedModelError", "build_from_hf", "build_gpt_model",
    "export_hf_weights", "load_arch", "load_checkpoint_arch", "load_hf_weights", "load_model",
    "padded_vocab_size", "save_model",
]


def build_from_hf(hf_dir: str, layout: Layout, pg_collection, *, dtype: torch.dtype = torch.float32,
                  transformer_impl: TransformerImpl = "local", vocab_divisible_by: int = 128,
                  progress: bool = False):
    """This rank's stage of the HF model in ``hf_dir``, built for ``layout`` and filled with its weights."""
    model = build_gpt_model(load_arch(hf_dir), layout, pg_collection, dtype=dtype,
                            transformer_impl=transformer_impl, vocab_divisible_by=vocab_divisible_by)
    load_hf_weights(model, hf_dir, pg_collection, progress=progress)
    return model
